"""Ingest step: a micro-batch of landing files (or of quarantined records, on a replay) into the
event table; every record accepted, a duplicate or quarantined, and the batch ledger proving it."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from ev_assets.core import enrich, events, feed
from ev_assets.core.contract import ContractResult, apply_contract
from ev_assets.pipeline.config import PipelineSettings, utc_now
from ev_assets.warehouse.store import IN_CHUNK, Warehouse, chunked, existing_values
from ev_assets.warehouse.tables import (
    EV_CHARGING_EVENTS,
    EV_FEED_FILES,
    EV_INGEST_BATCHES,
    EV_QUARANTINED_FILES,
    EV_REJECTED_MESSAGES,
    REF_FEEDERS,
    REF_METERS,
    REF_SERVICE_POINTS,
    REF_TRANSFORMERS,
)


@dataclass
class IngestReport:
    batch_id: str
    files_read: int = 0
    files_parsed: int = 0
    files_repaired: int = 0
    files_quarantined: int = 0
    files_already_read: int = 0
    records_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    # Of the rejected, records that conflict with an accepted message of the same identity.
    conflicts: int = 0
    rejection_codes: dict[str, int] = field(default_factory=dict)
    message_types: dict[str, int] = field(default_factory=dict)
    enrichment: dict[str, int] = field(default_factory=dict)

    @property
    def records_reconcile(self) -> bool:
        return self.records_read == self.accepted + self.duplicates + self.rejected

    @property
    def files_reconcile(self) -> bool:
        return self.files_read == self.files_parsed + self.files_quarantined + self.files_already_read

    @property
    def reconciled(self) -> bool:
        return self.records_reconcile and self.files_reconcile

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.records_read if self.records_read else 0.0

    def counts(self) -> dict[str, int]:
        """The ledger's counters, by name: what the ledger row and the asset metadata show."""
        return {name: getattr(self, name) for name in _LEDGER_COUNTS}

    def ledger_row(self, run_id: str | None, processed_at: datetime) -> pl.DataFrame:
        return pl.DataFrame(
            [{"batch_id": self.batch_id, "run_id": run_id, **self.counts(), "reconciled": self.reconciled, "processed_at": processed_at}]
        )


_LEDGER_COUNTS = (
    "files_read",
    "files_parsed",
    "files_repaired",
    "files_quarantined",
    "files_already_read",
    "records_read",
    "accepted",
    "duplicates",
    "rejected",
)


def ingest_batch(
    warehouse: Warehouse,
    batch_id: str,
    paths: list[Path],
    settings: PipelineSettings,
    *,
    run_id: str | None = None,
    now: datetime | None = None,
) -> IngestReport:
    """Read a micro-batch of landing files into the event table; every record ends up accepted,
    a duplicate or quarantined, and the batch ledger holds the counts."""
    now = now or utc_now()
    # The same file (name and content) twice in one batch is one file, read once.
    parsed = list({(f.name, f.sha256): f for f in (feed.parse_payload(p.name, p.read_bytes()) for p in paths)}.values())
    report = IngestReport(batch_id=batch_id, files_read=len(parsed))
    already = _already_read(warehouse, parsed)
    fresh = [p for p in parsed if (p.name, p.sha256) not in already]
    report.files_already_read = len(parsed) - len(fresh)
    report.files_quarantined = sum(p.quarantined for p in fresh)
    report.files_parsed = len(fresh) - report.files_quarantined
    report.files_repaired = sum(p.status == "repaired" for p in fresh)

    records = feed.records_frame(fresh)
    new_events, rejected_records = _judge(warehouse, records, report, settings, now)
    rejected = _rejected_rows(fresh, rejected_records, batch_id, now)

    if not fresh and _batch_recorded(warehouse, batch_id):
        return report  # a replay of a batch already ingested: nothing to write
    with warehouse.transaction() as conn:
        warehouse.insert(conn, EV_CHARGING_EVENTS, new_events)
        warehouse.insert(conn, EV_REJECTED_MESSAGES, rejected)
        warehouse.insert(conn, EV_QUARANTINED_FILES, _quarantined_rows(fresh, batch_id, now))
        warehouse.insert(conn, EV_FEED_FILES, _file_rows(fresh, records, batch_id, now))
        _record_in_ledger(warehouse, conn, report, run_id, now)
    return report


def _judge(
    warehouse: Warehouse, records: pl.DataFrame, report: IngestReport, settings: PipelineSettings, now: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The contract and the duplicate rule on a batch's records: the new events to store, the
    rejected records (the contract's, then the conflicting duplicates), and the report's record
    counts filled in."""
    result: ContractResult = apply_contract(records, settings.bounds, now=now)
    new_events, report.duplicates, conflicts = _new_events(warehouse, result.accepted, report.batch_id, settings, now)
    rejected = pl.concat([result.rejected, conflicts], how="vertical_relaxed")
    report.records_read = records.height
    report.accepted = new_events.height
    report.rejected = rejected.height
    report.conflicts = conflicts.height
    report.rejection_codes = _code_counts(rejected)
    report.message_types = dict(Counter(new_events["message_type"].to_list()))
    report.enrichment = dict(Counter(new_events["enrichment_status"].to_list()))
    return new_events, rejected


def _record_in_ledger(warehouse: Warehouse, conn, report: IngestReport, run_id: str | None, now: datetime) -> None:
    """Write (or rewrite) the batch's ledger row, inside the batch's own transaction."""
    warehouse.delete(conn, EV_INGEST_BATCHES, warehouse.column(EV_INGEST_BATCHES, "batch_id") == report.batch_id)
    warehouse.insert(conn, EV_INGEST_BATCHES, report.ledger_row(run_id, now))


def _already_read(warehouse: Warehouse, parsed: list[feed.ParsedFile]) -> set[tuple[str, str]]:
    known = warehouse.read_in(EV_FEED_FILES, "file_sha256", [p.sha256 for p in parsed])
    return set(known.select("file_name", "file_sha256").iter_rows())


def _batch_recorded(warehouse: Warehouse, batch_id: str) -> bool:
    return warehouse.count(EV_INGEST_BATCHES, warehouse.column(EV_INGEST_BATCHES, "batch_id") == batch_id) > 0


def _new_events(
    warehouse: Warehouse, accepted: pl.DataFrame, batch_id: str, settings: PipelineSettings, now: datetime
) -> tuple[pl.DataFrame, int, pl.DataFrame]:
    """(new events, duplicates, conflicting duplicates as rejected records) of accepted records."""
    rows = events.to_events(accepted, batch_id=batch_id, tz=settings.timezone, ingested_at=now)
    known = warehouse.read_in(EV_CHARGING_EVENTS, "message_id", rows["message_id"])
    new, duplicates, conflicts = events.split_duplicates(rows, known)
    enriched = enrich.attribute(new, reference_for(warehouse, new), date_col="message_date")
    return EV_CHARGING_EVENTS.conform(enriched), duplicates, conflicts


def reference_for(warehouse: Warehouse, messages: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The reference rows these messages can join to: cost follows the batch, not the utility."""
    meters = warehouse.read_in(REF_METERS, "meter_id", messages["meter_id"].drop_nulls())
    points = warehouse.read_in(REF_SERVICE_POINTS, "service_point_id", meters["service_point_id"])
    transformer_ids = pl.concat([points["transformer_id"], messages["reported_transformer_id"]]).drop_nulls()
    transformers = warehouse.read_in(REF_TRANSFORMERS, "transformer_id", transformer_ids)
    feeders = warehouse.read_in(REF_FEEDERS, "feeder_id", transformers["feeder_id"])
    return {"meters": meters, "service_points": points, "transformers": transformers, "feeders": feeders}


def _rejected_rows(
    parsed: list[feed.ParsedFile], rejected: pl.DataFrame, batch_id: str, now: datetime
) -> pl.DataFrame:
    if rejected.is_empty():
        return pl.DataFrame(schema=EV_REJECTED_MESSAGES.polars_schema)
    with_raw = feed.raw_records(parsed, rejected)
    return EV_REJECTED_MESSAGES.conform(
        with_raw.with_columns(
            pl.concat_str(
                [pl.col("file_name"), pl.col("file_sha256").str.slice(0, 12), pl.col("record_index").cast(pl.String)],
                separator=":",
            ).alias("rejection_id"),
            pl.lit(batch_id).alias("batch_id"),
            pl.lit(now).alias("quarantined_at"),
            pl.lit("quarantined").alias("status"),
            pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("replayed_at"),
        )
    )


def _code_counts(rejected: pl.DataFrame) -> dict[str, int]:
    codes = rejected["reason_codes"].str.split(",").explode()
    return dict(sorted(Counter(codes.to_list()).items())) if codes.len() else {}


def _quarantined_rows(parsed: list[feed.ParsedFile], batch_id: str, now: datetime) -> pl.DataFrame:
    rows = [
        {
            "file_name": p.name,
            "file_sha256": p.sha256,
            "batch_id": batch_id,
            "size_bytes": p.size,
            "error": p.error,
            "content": p.content,
            "quarantined_at": now,
        }
        for p in parsed
        if p.quarantined
    ]
    return pl.DataFrame(rows, schema=EV_QUARANTINED_FILES.polars_schema)


def _file_rows(parsed: list[feed.ParsedFile], records: pl.DataFrame, batch_id: str, now: datetime) -> pl.DataFrame:
    per_file = dict(records.group_by("file_sha256").len().iter_rows())
    rows = [
        {
            "file_name": p.name,
            "file_sha256": p.sha256,
            "batch_id": batch_id,
            "size_bytes": p.size,
            "status": p.status,
            "records": per_file.get(p.sha256, 0),
            "read_at": now,
        }
        for p in parsed
    ]
    return pl.DataFrame(rows, schema=EV_FEED_FILES.polars_schema)


def replay_rejected(
    warehouse: Warehouse,
    settings: PipelineSettings,
    replays: pl.DataFrame,
    batch_id: str,
    *,
    run_id: str | None = None,
    now: datetime | None = None,
) -> IngestReport:
    """Put quarantined records through the same contract again, as batch `batch_id`.

    `replays` has rejection_id and raw_record (the stored record, or a corrected one). A record
    that now passes is accepted (or counted as a duplicate) and its rejection is marked replayed;
    one that still fails stays quarantined with its reasons brought up to date. The batch ledger
    counts the replay like any other batch.
    """
    now = now or utc_now()
    payload = '{"EVChargingEvents": [' + ",".join(replays["raw_record"].to_list()) + "]}"
    parsed = feed.parse_payload(f"{batch_id}.json", payload.encode())
    report = IngestReport(batch_id=batch_id, files_read=1)
    if parsed.quarantined:
        raise ValueError(f"replayed records are not valid JSON: {parsed.error}")
    report.files_parsed = 1
    new_events, rejected = _judge(warehouse, feed.records_frame([parsed]), report, settings, now)

    ids = replays.select("rejection_id", pl.int_range(pl.len(), dtype=pl.Int64).alias("record_index"))
    still = ids.join(rejected.select("record_index", "reason_codes", "reasons"), on="record_index")
    released = ids.join(still, on="record_index", how="anti")["rejection_id"]
    rej = warehouse.table(EV_REJECTED_MESSAGES)
    with warehouse.transaction() as conn:
        warehouse.insert(conn, EV_CHARGING_EVENTS, new_events)
        for chunk_ids in chunked(released.to_list(), IN_CHUNK):
            conn.execute(
                rej.update().where(rej.c.rejection_id.in_(chunk_ids)).values(status="replayed", replayed_at=now)
            )
        for rejection_id, codes, reasons in still.select("rejection_id", "reason_codes", "reasons").iter_rows():
            conn.execute(
                rej.update().where(rej.c.rejection_id == rejection_id).values(reason_codes=codes, reasons=reasons)
            )
        _record_in_ledger(warehouse, conn, report, run_id, now)
    return report


def replay_selection(
    warehouse: Warehouse, rejection_ids: list[str], corrected_file: str | None = None
) -> pl.DataFrame:
    """rejection_id and raw_record of the records to replay: as stored, or as corrected in an
    export file (`ev-awareness rejected export`) whose records keep their `_rejection_id`."""
    if corrected_file is None:
        stored = warehouse.read_in(EV_REJECTED_MESSAGES, "rejection_id", rejection_ids)
        return stored.select("rejection_id", "raw_record").sort("rejection_id")
    records = json.loads(Path(corrected_file).read_text())["EVChargingEvents"]
    wanted = set(rejection_ids)
    rows = [
        (record.pop("_rejection_id"), json.dumps(record.get("_record", record), ensure_ascii=False))
        for record in records
        if record.get("_rejection_id") in wanted
    ]
    return pl.DataFrame(rows, schema={"rejection_id": pl.String, "raw_record": pl.String}, orient="row")


def ledger_totals(warehouse: Warehouse) -> dict[str, int | bool]:
    """The batch ledger summed over all batches, and the proof that nothing was lost in total:
    records read = accepted + duplicates + rejected, and every accepted record is in the event
    table (events enter only through ledgered batches, replays included)."""
    b = warehouse.table(EV_INGEST_BATCHES).c
    sums = [sa.func.coalesce(sa.func.sum(b[name]), 0).label(name) for name in _LEDGER_COUNTS]
    with warehouse.engine.connect() as conn:
        totals = {k: int(v) for k, v in conn.execute(sa.select(*sums)).one()._mapping.items()}
    events = warehouse.count(EV_CHARGING_EVENTS)
    return {
        **totals,
        "batches": warehouse.count(EV_INGEST_BATCHES),
        "events_stored": events,
        "reconciled": totals["records_read"] == totals["accepted"] + totals["duplicates"] + totals["rejected"]
        and totals["accepted"] == events,
    }
