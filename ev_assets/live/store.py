"""The live service's durable state: one SQLite file of its own (EV_LIVE_STATE_PATH), not the
warehouse (the warehouse is the pipeline's record; this file is the live view's memory, and can be
deleted to start the view again from the landing folder).

Tables (created here, versioned by `PRAGMA user_version`):

- live_files: every landing file read (name, digest, outcome, counts): a file is read once.
- live_events: the recent accepted events (2 x EV_MAX_SESSION_H), enriched: what pairing and the
  duplicate rule look at, exactly as the sessions step reads its window of the event table.
- live_open_sessions: the sessions open now (pairing's `start_only`), per meter and transformer.
- live_transformers: per transformer its last published state and its alert state.
- live_outbox: every message to publish, with a sequence that only grows; appended in the same
  transaction that marks the landing file read, so a kill -9 at any point loses no message and
  writes none twice.
- live_cursors: per publisher (MQTT, each webhook URL) the last sequence it has delivered.

Every connection uses WAL (the publishers read while the processor writes) and synchronous=FULL:
a committed file stays committed through a power loss, as its landing file does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

SCHEMA_VERSION = 1
UTC_DATETIME = pl.Datetime("us", "UTC")
MQTT_CURSOR = "mqtt"
# Delivered messages are kept this long in the outbox (to look at), then deleted.
OUTBOX_RETENTION = timedelta(days=1)


def webhook_cursor(url: str) -> str:
    return f"webhook:{url}"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_files (
    file_name TEXT PRIMARY KEY,
    file_sha256 TEXT,
    status TEXT NOT NULL,
    records INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    error TEXT,
    processed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS live_events (
    message_id TEXT PRIMARY KEY,
    message_type TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    meter_number TEXT,
    esn TEXT,
    message_time TEXT NOT NULL,
    message_date TEXT NOT NULL,
    received_time TEXT NOT NULL,
    charge_start_time TEXT,
    charge_end_time TEXT,
    charge_w REAL,
    charge_duration REAL,
    charge_energy_wh REAL,
    meter_key INTEGER,
    service_point_id TEXT,
    premise_id TEXT,
    transformer_id TEXT,
    feeder_id TEXT,
    substation_id TEXT,
    enrichment_status TEXT NOT NULL,
    file_name TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS live_events_by_meter ON live_events (meter_id, message_time);
CREATE INDEX IF NOT EXISTS live_events_by_time ON live_events (message_time);
CREATE TABLE IF NOT EXISTS live_open_sessions (
    session_id TEXT PRIMARY KEY,
    meter_id TEXT NOT NULL,
    transformer_id TEXT,
    start_time TEXT NOT NULL,
    charge_w REAL NOT NULL,
    start_message_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS live_open_sessions_by_meter ON live_open_sessions (meter_id);
CREATE INDEX IF NOT EXISTS live_open_sessions_by_transformer ON live_open_sessions (transformer_id);
CREATE TABLE IF NOT EXISTS live_transformers (
    transformer_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    alert_active INTEGER NOT NULL DEFAULT 0,
    alert TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS live_outbox (
    sequence INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    retain INTEGER NOT NULL,
    transformer_id TEXT,
    event_id TEXT,
    republish INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS live_cursors (
    consumer TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL
);
"""

# live_events as polars reads it back: the columns pairing and the duplicate rule need.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "message_id": pl.String(),
    "message_type": pl.String(),
    "meter_id": pl.String(),
    "meter_number": pl.String(),
    "esn": pl.String(),
    "message_time": UTC_DATETIME,
    "message_date": pl.Date(),
    "received_time": UTC_DATETIME,
    "charge_start_time": UTC_DATETIME,
    "charge_end_time": UTC_DATETIME,
    "charge_w": pl.Float64(),
    "charge_duration": pl.Float64(),
    "charge_energy_wh": pl.Float64(),
    "meter_key": pl.Int64(),
    "service_point_id": pl.String(),
    "premise_id": pl.String(),
    "transformer_id": pl.String(),
    "feeder_id": pl.String(),
    "substation_id": pl.String(),
    "enrichment_status": pl.String(),
    "file_name": pl.String(),
}
OPEN_SESSION_SCHEMA: dict[str, pl.DataType] = {
    "session_id": pl.String(),
    "meter_id": pl.String(),
    "transformer_id": pl.String(),
    "start_time": UTC_DATETIME,
    "charge_w": pl.Float64(),
    "start_message_id": pl.String(),
}
_TIME_COLUMNS = {c for c, t in {**EVENT_SCHEMA, **OPEN_SESSION_SCHEMA}.items() if t == UTC_DATETIME}


def iso(ts: datetime) -> str:
    """A UTC time as stored: ISO 8601 with microseconds and Z, so text order is time order."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class OutboxRow:
    sequence: int
    kind: str
    topic: str
    payload: str
    retain: bool
    transformer_id: str | None
    event_id: str | None
    republish: bool


@dataclass(frozen=True)
class Message:
    """A message before it has its sequence (the outbox gives it one)."""

    kind: str  # start, end, state, alert
    topic: str
    body: dict
    retain: bool
    transformer_id: str | None
    event_id: str | None = None


class LiveStore:
    """The state file. One instance per thread: a sqlite3 connection is not shared across threads."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: the driver never BEGINs on its own; `transaction` does, IMMEDIATE.
        self.conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise RuntimeError(f"{self.path}: live state schema {version}, this code reads {SCHEMA_VERSION}")
        if version == 0:
            # Every statement is IF NOT EXISTS: a start interrupted here is completed by the next one.
            # (executescript commits on its own, so it runs outside `transaction`.)
            self.conn.executescript(_SCHEMA)
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error): everything inside commits together."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # --- files ---------------------------------------------------------------------------------

    def processed_file_names(self) -> set[str]:
        return {name for (name,) in self.conn.execute("SELECT file_name FROM live_files")}

    def mark_file(self, name: str, sha256: str | None, status: str, counts: dict[str, int], error: str | None, now):
        self.conn.execute(
            "INSERT INTO live_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                sha256,
                status,
                counts.get("records", 0),
                counts.get("accepted", 0),
                counts.get("duplicates", 0),
                counts.get("rejected", 0),
                error,
                iso(now),
            ),
        )

    # --- events and sessions -------------------------------------------------------------------

    def events_of_meters(self, meter_ids: Sequence[str]) -> pl.DataFrame:
        return self._frame(
            "SELECT * FROM live_events WHERE meter_id IN ({})", list(meter_ids), EVENT_SCHEMA, in_list=True
        )

    def insert_events(self, frame: pl.DataFrame) -> None:
        self._insert("live_events", frame.select(list(EVENT_SCHEMA)))

    def prune_events(self, older_than: datetime) -> int:
        return self.conn.execute("DELETE FROM live_events WHERE message_time < ?", (iso(older_than),)).rowcount

    def open_sessions(
        self, *, meter_ids: Sequence[str] | None = None, transformer_ids: Sequence[str] | None = None
    ) -> pl.DataFrame:
        if meter_ids is not None:
            return self._frame(
                "SELECT * FROM live_open_sessions WHERE meter_id IN ({})", list(meter_ids), OPEN_SESSION_SCHEMA, True
            )
        if transformer_ids is not None:
            return self._frame(
                "SELECT * FROM live_open_sessions WHERE transformer_id IN ({})",
                list(transformer_ids),
                OPEN_SESSION_SCHEMA,
                True,
            )
        return self._frame("SELECT * FROM live_open_sessions", [], OPEN_SESSION_SCHEMA)

    def replace_open_sessions(self, meter_ids: Sequence[str], sessions: pl.DataFrame) -> None:
        self._delete_in("live_open_sessions", "meter_id", meter_ids)
        self._insert("live_open_sessions", sessions.select(list(OPEN_SESSION_SCHEMA)))

    def delete_open_sessions(self, session_ids: Sequence[str]) -> None:
        self._delete_in("live_open_sessions", "session_id", session_ids)

    # --- transformers --------------------------------------------------------------------------

    def transformers(self, transformer_ids: Sequence[str] | None = None) -> dict[str, dict]:
        """transformer_id -> {state: dict, alert_active: bool, alert: dict | None}."""
        query = "SELECT transformer_id, state, alert_active, alert FROM live_transformers"
        if transformer_ids is None:
            rows = self.conn.execute(query).fetchall()
        else:
            rows = self._rows_in(query + " WHERE transformer_id IN ({})", list(transformer_ids))
        return {
            tid: {
                "state": json.loads(state),
                "alert_active": bool(active),
                "alert": json.loads(alert) if alert else None,
            }
            for tid, state, active, alert in rows
        }

    def put_transformer(self, transformer_id: str, state: dict, alert_active: bool, alert: dict | None, now) -> None:
        self.conn.execute(
            "INSERT INTO live_transformers VALUES (?, ?, ?, ?, ?) ON CONFLICT (transformer_id) DO UPDATE SET "
            "state = excluded.state, alert_active = excluded.alert_active, alert = excluded.alert, "
            "updated_at = excluded.updated_at",
            (
                transformer_id,
                json.dumps(state, sort_keys=True),
                int(alert_active),
                json.dumps(alert, sort_keys=True) if alert else None,
                iso(now),
            ),
        )

    # --- the outbox ----------------------------------------------------------------------------

    def append(self, messages: Iterable[Message], now: datetime, *, republish: bool = False) -> list[int]:
        """Give each message the next sequence (inside the caller's transaction: one writer at a
        time, so max + 1 is the next) and store it with that sequence in its body."""
        (last,) = self.conn.execute("SELECT coalesce(max(sequence), 0) FROM live_outbox").fetchone()
        sequences = []
        for message in messages:
            last += 1
            body = {**message.body, "Sequence": last}
            self.conn.execute(
                "INSERT INTO live_outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    last,
                    message.kind,
                    message.topic,
                    json.dumps(body, separators=(",", ":")),
                    int(message.retain),
                    message.transformer_id,
                    message.event_id,
                    int(republish),
                    iso(now),
                ),
            )
            sequences.append(last)
        return sequences

    def outbox_after(self, sequence: int, limit: int, *, include_republished: bool = True) -> list[OutboxRow]:
        where = "" if include_republished else " AND republish = 0"
        rows = self.conn.execute(
            "SELECT sequence, kind, topic, payload, retain, transformer_id, event_id, republish FROM live_outbox "
            f"WHERE sequence > ?{where} ORDER BY sequence LIMIT ?",
            (sequence, limit),
        ).fetchall()
        return [OutboxRow(s, k, t, p, bool(r), tid, eid, bool(rp)) for s, k, t, p, r, tid, eid, rp in rows]

    def prune_outbox(self, consumers: Sequence[str], older_than: datetime) -> int:
        """Delete the messages every consumer has delivered and that are older than `older_than`;
        the newest row always stays, so the next sequence is still max + 1 (sequences never repeat)."""
        delivered = min(self.cursor(c) for c in consumers)
        return self.conn.execute(
            "DELETE FROM live_outbox WHERE sequence <= ? AND created_at < ? "
            "AND sequence < (SELECT max(sequence) FROM live_outbox)",
            (delivered, iso(older_than)),
        ).rowcount

    def last_sequence(self) -> int:
        return self.conn.execute("SELECT coalesce(max(sequence), 0) FROM live_outbox").fetchone()[0]

    def cursor(self, consumer: str) -> int:
        row = self.conn.execute("SELECT sequence FROM live_cursors WHERE consumer = ?", (consumer,)).fetchone()
        return row[0] if row else 0

    def set_cursor(self, consumer: str, sequence: int) -> None:
        """Record that `consumer` delivered every message up to `sequence` (autocommit: one statement)."""
        self.conn.execute(
            "INSERT INTO live_cursors VALUES (?, ?) ON CONFLICT (consumer) DO UPDATE SET sequence = excluded.sequence",
            (consumer, sequence),
        )

    # --- helpers -------------------------------------------------------------------------------

    def _rows_in(self, query: str, values: list, chunk: int = 500) -> list[tuple]:
        rows: list[tuple] = []
        for first in range(0, len(values), chunk):
            part = values[first : first + chunk]
            rows.extend(self.conn.execute(query.format(",".join("?" * len(part))), part).fetchall())
        return rows

    def _frame(self, query: str, values: list, schema: dict[str, pl.DataType], in_list: bool = False) -> pl.DataFrame:
        if in_list:
            rows = self._rows_in(query, values) if values else []
        else:
            rows = self.conn.execute(query, values).fetchall()
        text_schema = {c: (pl.String() if t in (UTC_DATETIME, pl.Date()) else t) for c, t in schema.items()}
        frame = pl.DataFrame(rows, schema=text_schema, orient="row")
        return frame.with_columns(
            *[
                pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC", time_unit="us")
                for c in _times(schema)
            ],
            *[pl.col(c).str.to_date("%Y-%m-%d") for c, t in schema.items() if t == pl.Date()],
        )

    def _insert(self, table: str, frame: pl.DataFrame) -> None:
        if frame.is_empty():
            return
        as_text = frame.with_columns(
            *[pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ") for c in frame.columns if c in _TIME_COLUMNS],
            *[pl.col(c).dt.strftime("%Y-%m-%d") for c, t in frame.schema.items() if t == pl.Date()],
        )
        placeholders = ",".join("?" * frame.width)
        self.conn.executemany(
            f"INSERT INTO {table} ({','.join(frame.columns)}) VALUES ({placeholders})", as_text.iter_rows()
        )

    def _delete_in(self, table: str, column: str, values: Sequence[str], chunk: int = 500) -> None:
        values = list(values)
        for first in range(0, len(values), chunk):
            part = values[first : first + chunk]
            self.conn.execute(f"DELETE FROM {table} WHERE {column} IN ({','.join('?' * len(part))})", part)


def _times(schema: dict[str, pl.DataType]) -> list[str]:
    return [c for c, t in schema.items() if t == UTC_DATETIME]
