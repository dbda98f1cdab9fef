"""A landing file -> events, sessions, transformer state and messages, committed as one
transaction of the live state (`store`): the file marked read, its messages appended to the outbox,
the open sessions and transformer states updated, together or not at all.

The stages are the pipeline's own, so the live view and the record agree by construction:
- `feed.parse_payload` / `feed.records_frame` and `contract.apply_contract` (a file that is not a
  payload, or a record the contract rejects, is counted and logged with its reason, never published);
- `events.to_events` (the event id the warehouse keys on: meter|type|time) and
  `events.split_duplicates` against the recent events (a re-delivered message is published once);
- `enrich.attribute` on the warehouse's reference tables as the ingest step reads them
  (`pipeline.ingest.reference_for`): TransformerID, FeederID, SubstationID as of the event date;
- `pairing.pair_sessions` on each touched meter's recent events: an end carries the energy and
  duration of the session the sessions step will write, and the open sessions are pairing's
  `start_only` sessions (a start with no end yet, not older than EV_MAX_SESSION_H).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import sqlalchemy as sa

from ev_assets.core import enrich, events, feed, pairing
from ev_assets.core.contract import apply_contract
from ev_assets.live import messages
from ev_assets.live.messages import LiveRules
from ev_assets.live.store import (
    EVENT_SCHEMA,
    MQTT_CURSOR,
    OPEN_SESSION_SCHEMA,
    OUTBOX_RETENTION,
    LiveStore,
    Message,
)
from ev_assets.pipeline.ingest import reference_for
from ev_assets.pipeline.sessions import PAIRING_COLUMNS
from ev_assets.warehouse.migrate import SchemaError
from ev_assets.warehouse.store import Warehouse, empty_frame
from ev_assets.warehouse.tables import REF_FEEDERS, REF_METERS, REF_SERVICE_POINTS, REF_TRANSFORMERS

log = logging.getLogger("ev_assets.live")

# How long to wait before trying again a warehouse that could not be read.
WAREHOUSE_RETRY_S = 30.0


class ReferenceReader:
    """The reference tables of the warehouse (loaded there from EV_REFERENCE_DIR by the pipeline's
    reference asset), read per file for the rows its messages join to, as the ingest step does.

    A warehouse that is absent, not migrated or not answering is not fatal: events are published
    as the pipeline stores an event whose meter it does not know yet (`meter_unknown`: the
    reported identities, no feeder or substation), and the warehouse is tried again later."""

    def __init__(self, warehouse_url: str | None):
        self.warehouse_url = warehouse_url
        self._warehouse: Warehouse | None = None
        self._next_try = 0.0
        # The grid rows last read per transformer: used while the warehouse does not answer, so a
        # warehouse outage does not publish states without ratings (and flap them back after).
        self._grid_seen: dict[str, pl.DataFrame] = {}

    def _open(self) -> Warehouse | None:
        if self._warehouse is not None or not self.warehouse_url or time.monotonic() < self._next_try:
            return self._warehouse
        warehouse = Warehouse(self.warehouse_url)
        try:
            warehouse.check_schema()
        except (SchemaError, sa.exc.DBAPIError) as exc:
            log.warning("reference data unavailable (events go out as meter_unknown): %s", str(exc).splitlines()[0])
            warehouse.dispose()
            self._next_try = time.monotonic() + WAREHOUSE_RETRY_S
            return None
        self._warehouse = warehouse
        return warehouse

    def _read(self, read):
        warehouse = self._open()
        if warehouse is None:
            return None
        try:
            return read(warehouse)
        except sa.exc.DBAPIError as exc:
            log.warning("reference data could not be read: %s", str(exc).splitlines()[0])
            warehouse.dispose()
            self._warehouse, self._next_try = None, time.monotonic() + WAREHOUSE_RETRY_S
            return None

    def for_events(self, new_events: pl.DataFrame) -> dict[str, pl.DataFrame]:
        found = None if new_events.is_empty() else self._read(lambda wh: reference_for(wh, new_events))
        if found is None:
            return {
                "meters": empty_frame(REF_METERS),
                "service_points": empty_frame(REF_SERVICE_POINTS),
                "transformers": empty_frame(REF_TRANSFORMERS),
                "feeders": empty_frame(REF_FEEDERS),
            }
        return found

    def grid(self, transformer_ids: list[str], on: date) -> pl.DataFrame:
        """transformer_id, feeder_id, substation_id, kva_rating, base_load_scale as of `on`."""

        def read(wh: Warehouse) -> tuple[pl.DataFrame, pl.DataFrame]:
            transformers = wh.read_in(REF_TRANSFORMERS, "transformer_id", transformer_ids)
            return transformers, wh.read_in(REF_FEEDERS, "feeder_id", transformers["feeder_id"].drop_nulls())

        found = self._read(read) if transformer_ids else None
        if found is not None:
            for name, frame, key in (("transformers", found[0], "transformer_id"), ("feeders", found[1], "feeder_id")):
                seen = self._grid_seen.get(name, frame.clear())
                self._grid_seen[name] = pl.concat([seen, frame]).unique([key, "effective_from"], keep="last")
        elif self._grid_seen and self.warehouse_url:
            found = self._grid_seen["transformers"], self._grid_seen["feeders"]
        transformers, feeders = found or (empty_frame(REF_TRANSFORMERS), empty_frame(REF_FEEDERS))
        frame = pl.DataFrame(
            {"transformer_id": transformer_ids, "_on": [on] * len(transformer_ids)},
            schema={"transformer_id": pl.String, "_on": pl.Date},
        )
        frame = enrich.as_of_join(
            frame,
            transformers,
            left_on="transformer_id",
            right_on="transformer_id",
            date_col="_on",
            columns={"feeder_id": "feeder_id", "kva_rating": "kva_rating", "base_load_scale": "base_load_scale"},
        )
        frame = enrich.as_of_join(
            frame,
            feeders,
            left_on="feeder_id",
            right_on="feeder_id",
            date_col="_on",
            columns={"substation_id": "substation_id"},
        )
        return frame.drop("_on")

    def close(self) -> None:
        if self._warehouse is not None:
            self._warehouse.dispose()


@dataclass
class FileOutcome:
    name: str
    status: str  # parsed, repaired, quarantined, missing (gone before it was read), already (read before)
    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejection_codes: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class Processor:
    """Reads landing files into the live state. One per service; it is the state's only writer."""

    def __init__(
        self,
        store: LiveStore,
        reference: ReferenceReader,
        rules: LiveRules,
        consumers: tuple[str, ...] = (MQTT_CURSOR,),
    ):
        """`consumers`: the outbox cursors that must have delivered a message before it is deleted."""
        self.store, self.reference, self.rules, self.consumers = store, reference, rules, consumers

    def warm_up(self) -> None:
        """Run the parse and contract stages once on a made-up record, writing nothing: their first
        call in a process costs about a second (polars and pandera build their plans), which the
        first push after a start should not wait for."""
        now = datetime.now(UTC)
        record = {"MeterID": "warm-up", "ReceivedTime": now.isoformat(), "ChargeStartTime": now.isoformat()}
        for kind in (
            {"ChargeW": "7000"},
            {"ChargeEndTime": now.isoformat(), "ChargeDuration": "1", "ChargeEnergy": "1"},
        ):
            parsed = feed.parse_payload("warm-up.json", json.dumps({"EVChargingEvents": [record | kind]}).encode())
            apply_contract(feed.records_frame([parsed]), self.rules.bounds, now=now)

    # --- one landing file ----------------------------------------------------------------------

    def process_file(self, path: Path, now: datetime | None = None) -> FileOutcome:
        return self.process_files([path], now)[0]

    def process_files(self, paths: list[Path], now: datetime | None = None) -> list[FileOutcome]:
        """Read these landing files (in this order) into the state, in one transaction: all of them
        marked read with their messages in the outbox, or none. One contract call for all: its cost
        is mostly per call (pandera), so a burst of small pushes is read in one pass, not one by one."""
        now = now or datetime.now(UTC)
        parsed: list[feed.ParsedFile] = []
        outcomes: list[FileOutcome] = []
        for path in paths:
            try:
                content = path.read_bytes()
            except FileNotFoundError:
                # Archived by the pipeline (or removed) between the listing and now: the record has it.
                log.warning("%s: gone before the live service read it", path.name)
                outcomes.append(FileOutcome(path.name, "missing"))
                continue
            one = feed.parse_payload(path.name, content)
            if one.quarantined:
                log.warning("%s: quarantined, not published: %s", path.name, one.error)
            parsed.append(one)
        records = feed.records_frame(parsed)
        result = apply_contract(records, self.rules.bounds, now=now)
        rows = events.to_events(result.accepted, batch_id="live", tz=self.rules.timezone, ingested_at=now)
        # The duplicate rule's reference names the file a message came in (its "batch").
        rows = rows.with_columns(pl.col("file_name").alias("batch_id"))
        with self.store.transaction():
            outcomes += self._commit(parsed, records, result.rejected, rows, now)
        for outcome in outcomes:
            for code, n in outcome.rejection_codes.items():
                log.warning("%s: %d record(s) rejected, not published: %s", outcome.name, n, code)
        return outcomes

    def _commit(
        self,
        parsed: list[feed.ParsedFile],
        records: pl.DataFrame,
        rejected: pl.DataFrame,
        rows: pl.DataFrame,
        now: datetime,
    ) -> list[FileOutcome]:
        meters = rows["meter_id"].unique().sort().to_list()
        recent = self.store.events_of_meters(meters)
        before = self.store.open_sessions(meter_ids=meters)
        known = recent.filter(pl.col("message_id").is_in(rows["message_id"].implode())).select(
            "message_id", pl.col("file_name").alias("batch_id"), *events.CONTENT_TIMES, *events.CONTENT_NUMBERS
        )
        new, _, conflicts = events.split_duplicates(rows, known)
        enriched = enrich.attribute(new, self.reference.for_events(new), date_col="message_date").select(
            list(EVENT_SCHEMA)
        )
        published = self._with_sessions(meters, recent, enriched, now)
        self.store.insert_events(enriched)
        touched = set(before["transformer_id"].drop_nulls()) | set(enriched["transformer_id"].drop_nulls())
        touched |= set(self.store.open_sessions(meter_ids=meters)["transformer_id"].drop_nulls())
        out = messages.event_messages(published, self.rules) + self._transformer_messages(sorted(touched), now)
        self.store.append(out, now)
        return self._file_outcomes(
            parsed, records, pl.concat([rejected, conflicts], how="vertical_relaxed"), enriched, now
        )

    def _file_outcomes(
        self, parsed: list[feed.ParsedFile], records: pl.DataFrame, rejected: pl.DataFrame, enriched: pl.DataFrame, now
    ) -> list[FileOutcome]:
        """Each file's counts (records = accepted + duplicates + rejected, as the ingest ledger),
        marked read in the state."""
        per_file = {
            "records": dict(records.group_by("file_name").len().iter_rows()),
            "accepted": dict(enriched.group_by("file_name").len().iter_rows()),
            "rejected": dict(rejected.group_by("file_name").len().iter_rows()),
        }
        codes: dict[str, dict[str, int]] = {}
        for name, code, n in (
            rejected.select("file_name", pl.col("reason_codes").str.split(",").alias("code"))
            .explode("code")
            .group_by("file_name", "code")
            .len()
            .sort("file_name", "code")
            .iter_rows()
        ):
            codes.setdefault(name, {})[code] = n
        outcomes = []
        for p in parsed:
            counts = {k: v.get(p.name, 0) for k, v in per_file.items()}
            counts["duplicates"] = counts["records"] - counts["accepted"] - counts["rejected"]
            outcome = FileOutcome(p.name, p.status, **counts, rejection_codes=codes.get(p.name, {}), error=p.error)
            self.store.mark_file(p.name, p.sha256, p.status, counts, p.error, now)
            outcomes.append(outcome)
        return outcomes

    def _with_sessions(
        self, meters: list[str], recent: pl.DataFrame, enriched: pl.DataFrame, now: datetime
    ) -> pl.DataFrame:
        """Pair the touched meters' recent and new events; store their open sessions; return the
        new events with their session (start: its SessionID; end: the session it closes, or its own
        end_only session), in publishing order: event time, an end before a start at equal times."""
        window = pl.concat([recent.select(PAIRING_COLUMNS), enriched.select(PAIRING_COLUMNS)])
        sessions = pairing.pair_sessions(
            window, max_session=self.rules.max_session, updated_at=now, charge_w_tolerance=self.rules.charge_w_tolerance
        )
        self.store.replace_open_sessions(
            meters,
            sessions.filter(pl.col("status") == "start_only").select(list(OPEN_SESSION_SCHEMA)),
        )
        of_start = sessions.filter(pl.col("start_message_id").is_not_null()).select(
            pl.col("start_message_id").alias("message_id"), pl.col("session_id").alias("_start_session")
        )
        of_end = sessions.filter(pl.col("end_message_id").is_not_null()).select(
            pl.col("end_message_id").alias("message_id"),
            pl.col("session_id").alias("_end_session"),
            pl.col("status").alias("session_status"),
            pl.col("start_time").alias("session_start_time"),
            pl.col("end_time").alias("session_end_time"),
            pl.col("energy_wh").alias("session_energy_wh"),
            pl.col("duration_h").alias("session_duration_h"),
        )
        end_first = pl.when(pl.col("message_type") == "end").then(0).otherwise(1)
        return (
            enriched.join(of_start, on="message_id", how="left")
            .join(of_end, on="message_id", how="left")
            .with_columns(
                pl.when(pl.col("message_type") == "start")
                .then(pl.col("_start_session"))
                .otherwise(pl.col("_end_session"))
                .alias("session_id")
            )
            .sort("message_time", end_first, "message_id")
        )

    # --- transformer state and alerts ----------------------------------------------------------

    def _transformer_messages(self, transformer_ids: list[str], now: datetime) -> list[Message]:
        """Each transformer's state from its open sessions now, its alert decision, the messages
        for what changed, and the new state stored (inside the caller's transaction)."""
        if not transformer_ids:
            return []
        today = now.astimezone(ZoneInfo(self.rules.timezone)).date()
        states = messages.transformer_states(
            transformer_ids,
            self.store.open_sessions(transformer_ids=transformer_ids),
            self.reference.grid(transformer_ids, today),
            self.rules,
            now,
        )
        previous = self.store.transformers(transformer_ids)
        decided = messages.alert_decisions(states, {t: p["alert_active"] for t, p in previous.items()}, self.rules)
        out: list[Message] = []
        for row in decided.iter_rows(named=True):
            tid = row["transformer_id"]
            old = previous.get(tid)
            alert = old["alert"] if old else None
            state = messages.state_body(row, now, self.rules)
            if messages.state_changed(old and old["state"], state):
                out.append(Message("state", self.rules.topic(tid, "state"), state, retain=True, transformer_id=tid))
            else:
                state = old["state"]
            if row["raise"] or row["clear"]:
                alert = messages.alert_body(row, alert, now, self.rules)
                log.info(
                    "%s: overload alert %s (load %.3f pu)", tid, "raised" if row["raise"] else "cleared", row["load_pu"]
                )
                out.append(
                    Message(
                        "alert",
                        self.rules.topic(tid, "alert"),
                        alert,
                        retain=True,
                        transformer_id=tid,
                        event_id=alert["AlertID"],
                    )
                )
            self.store.put_transformer(tid, state, row["alert_active"], alert, now)
        return out

    # --- without a new file ----------------------------------------------------------------------

    def sweep(self, now: datetime | None = None) -> int:
        """Time out sessions open longer than EV_MAX_SESSION_H (pairing's `timed_out`), forget
        events too old to pair, delete messages delivered everywhere over OUTBOX_RETENTION ago, and
        evaluate every transformer again (its base load follows the local hour): one transaction.
        Returns the messages appended."""
        now = now or datetime.now(UTC)
        with self.store.transaction():
            open_now = self.store.open_sessions()
            expired = open_now.filter(pl.col("start_time") < now - self.rules.max_session)
            self.store.delete_open_sessions(expired["session_id"].to_list())
            self.store.prune_events(now - 2 * self.rules.max_session)
            self.store.prune_outbox(self.consumers, now - OUTBOX_RETENTION)
            ids = set(self.store.transformers()) | set(expired["transformer_id"].drop_nulls())
            out = self._transformer_messages(sorted(ids), now)
            self.store.append(out, now)
        return len(out)

    def republish(self, now: datetime | None = None) -> int:
        """Append every transformer's current state and alert to the outbox again (at start): after
        whatever older messages still wait there, so the broker's retained messages end on these."""
        now = now or datetime.now(UTC)
        with self.store.transaction():
            out = []
            for tid, current in sorted(self.store.transformers().items()):
                out.append(Message("state", self.rules.topic(tid, "state"), current["state"], True, tid))
                if current["alert"]:
                    alert = current["alert"]
                    out.append(Message("alert", self.rules.topic(tid, "alert"), alert, True, tid, alert["AlertID"]))
            self.store.append(out, now, republish=True)
        return len(out)
