"""Sessions step: re-pair the sessions that committed batches' events can change, and queue the days
whose load they touch.

What to pair is read from the warehouse (the batches the ingest step queued in ev_batches_pending,
in the transaction that committed their events), not from the run that asks: a batch whose run
died after its events were committed is paired by the next run, whoever starts it. Pairing a batch,
recording it as paired (ev_batch_pairing), taking it off the queue and queueing its days happen in
one transaction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ev_assets.core import events, pairing, quality
from ev_assets.core.enrich import ATTRIBUTION_COLUMNS
from ev_assets.pipeline.config import PipelineSettings, utc_now
from ev_assets.warehouse.store import IN_CHUNK, Warehouse, chunked, empty_frame, shard_of, shards_of, try_shard_lock
from ev_assets.warehouse.tables import (
    EV_BATCH_PAIRING,
    EV_BATCHES_PENDING,
    EV_CHARGING_EVENTS,
    EV_CHARGING_SESSIONS,
    EV_LOAD_DAYS_PENDING,
    EV_METERS_PENDING,
)


@dataclass
class SessionsReport:
    sessions_written: int = 0
    sessions_replaced: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    touched_dates: list[date] = field(default_factory=list)
    duration_agreement: dict[str, float | int] = field(default_factory=dict)
    written: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=EV_CHARGING_SESSIONS.polars_schema))
    batches: list[str] = field(default_factory=list)

    def merged(self, other: SessionsReport) -> SessionsReport:
        """Both reports' counts together (the written frame and duration agreement are this one's)."""
        self.sessions_written += other.sessions_written
        self.sessions_replaced += other.sessions_replaced
        self.statuses = dict(Counter(self.statuses) + Counter(other.statuses))
        self.touched_dates = sorted(set(self.touched_dates) | set(other.touched_dates))
        return self


def pair_pending_batches(
    warehouse: Warehouse, settings: PipelineSettings, *, max_batches: int = 50, now: datetime | None = None
) -> SessionsReport:
    """Pair every committed batch not paired yet (oldest first, up to `max_batches`): the sessions
    their events can change are replaced, the batches recorded as paired and the days whose load
    changed queued, in one transaction.

    The transaction locks the write-lock shards of the batches' meters only (PostgreSQL), so the
    pairing of one shard's batches runs beside the ingest or pairing of another's. The meters are
    read before the lock: a committed batch's events never change meter. Which of the batches are
    still waiting is read again under it (another run may have paired some meanwhile)."""
    now = now or utc_now()
    warehouse.ensure_timezone(settings.timezone)  # before the lock: it may write the first time
    chosen = batches_awaiting_pairing(warehouse, limit=max_batches)
    if not chosen:
        return SessionsReport()
    meters = warehouse.read_in(EV_CHARGING_EVENTS, "batch_id", chosen, columns=("meter_id",))["meter_id"]
    shards = shards_of(meters.unique())
    with warehouse.transaction(shards=shards) as conn:
        waiting = set(
            warehouse.read_in(EV_BATCHES_PENDING, "batch_id", chosen, conn=conn, columns=("batch_id",))["batch_id"]
        )
        pending = [batch for batch in chosen if batch in waiting]
        if not pending:
            return SessionsReport()
        # What the window and the duration agreement need of the batches' events, no more.
        changed = warehouse.read_in(
            EV_CHARGING_EVENTS, "batch_id", pending, conn=conn, columns=("message_id", "meter_id", "message_time")
        )
        report = _repair_in(warehouse, conn, changed, settings, now)
        time_out_open_starts(warehouse, conn, settings, now, shards=shards)
        paired = pl.DataFrame({"batch_id": pending, "sessions_written": report.sessions_written, "paired_at": now})
        warehouse.insert(conn, EV_BATCH_PAIRING, paired)
        warehouse.delete_in(conn, EV_BATCHES_PENDING, "batch_id", pending)
        queue_load_days(warehouse, conn, report.touched_dates, now)
    report.batches = pending
    return report


def batches_awaiting_pairing(warehouse: Warehouse, *, conn=None, limit: int | None = None) -> list[str]:
    """Batches in the ledger whose events have not been paired yet, oldest first: the queue the
    ingest step fills and the pairing empties (ev_batches_pending), which holds only those, not an
    anti-join of the whole ledger, which grows with every batch ever ingested."""
    q = warehouse.table(EV_BATCHES_PENDING).c
    return warehouse.scalars(sa.select(q.batch_id).order_by(q.queued_at, q.batch_id).limit(limit), conn=conn)


def _repair_in(
    warehouse: Warehouse, conn, changed: pl.DataFrame, settings: PipelineSettings, now: datetime
) -> SessionsReport:
    window = pairing.pairing_window(changed, settings.max_session)
    if window is None:
        return SessionsReport()
    # A range of the primary key (meter|type|time) per meter and type; the filter drops the few
    # microseconds the millisecond ids let in before read_from.
    in_window = warehouse.read_id_ranges(
        EV_CHARGING_EVENTS,
        "message_id",
        *events.message_id_range(window.meter_ids, window.read_from, window.read_to),
        conn=conn,
        columns=PAIRING_COLUMNS,
    ).filter(pl.col("message_time").is_between(window.read_from, window.read_to))
    # Each meter's open start before the window and end after it, however far: long sessions.
    edges = edge_events(warehouse, conn, window)
    edge_ids = pairing.edge_session_ids(edges)
    stored = pl.concat([in_window, edges]).unique("message_id", keep="first")
    paired = pair(stored, settings, now)
    fresh = EV_CHARGING_SESSIONS.conform(pairing.anchored_within(paired, window, edge_ids))

    previous = replaced_sessions(warehouse, conn, window, edge_ids, settings.timezone)
    replaced, written = _write_changed(warehouse, conn, previous, fresh)
    return SessionsReport(
        sessions_written=written.height,
        sessions_replaced=replaced,
        statuses=dict(Counter(fresh["status"].to_list())),
        touched_dates=load_dates_of(_changed(previous, fresh), settings.timezone),
        duration_agreement=pairing.duration_agreement(
            fresh.filter(pl.col("end_message_id").is_in(changed["message_id"].implode())),
            settings.bounds.duration_unit_seconds,
        ),
        written=written,
    )


def _write_changed(warehouse: Warehouse, conn, previous: pl.DataFrame, fresh: pl.DataFrame) -> tuple[int, pl.DataFrame]:
    """Replace the stored sessions `previous` with `fresh`, writing only what differs: a stored
    session that re-pairs to the same row (updated_at aside) stays as it is. A window holds each
    meter's sessions of the last max_session too, mostly unchanged; rewriting them cost a write
    in every index of the table, a dead row each in PostgreSQL, and an updated_at that said they
    changed when they had not. Returns (sessions deleted, rows written).

    Deleted by primary key, the very rows just read: the caller's transaction holds the write
    lock, so they are still exactly the sessions it replaces."""
    # Only sessions stored under the same id can be the same: compare those whole (a batch's new
    # sessions, most of them, are not compared at all).
    stored_again = fresh.join(previous.select("session_id"), on="session_id", how="semi").select(_STORED_CONTENT)
    same = stored_again.join(previous.select(_STORED_CONTENT), on=list(_STORED_CONTENT), how="semi", nulls_equal=True)
    unchanged = same["session_id"].implode()
    stale = previous.filter(~pl.col("session_id").is_in(unchanged))["session_id"]
    written = fresh.filter(~pl.col("session_id").is_in(unchanged))
    replaced = warehouse.delete_in(conn, EV_CHARGING_SESSIONS, "session_id", stale)
    warehouse.insert(conn, EV_CHARGING_SESSIONS, written)
    return replaced, written


def replaced_sessions(
    warehouse: Warehouse, conn, window: pairing.PairingWindow, edge_ids: list[str], timezone: str | None = None
) -> pl.DataFrame:
    """The stored sessions a re-pairing of the window replaces, every column but updated_at (what
    _write_changed compares): those of the window's meters anchored in [write_from, write_to]
    (their start; their end when they have no start), and those the edge events anchor.

    Three reads, each an index seek per meter or per id, so the cost follows the window, not the
    meters' history: starts on a range of the primary key per meter (`meter|start time`: no index
    of its own on (meter_id, start_time), which every batch would also write), end_only sessions
    on the partial index of those by (meter_id, end_time), edge sessions on the primary key. One
    predicate `meter_id IN (...) AND (start BETWEEN ... OR ... OR session_id IN ...)` can only
    seek on meter_id in PostgreSQL, which then reads every session the meters ever had."""
    s = warehouse.table(EV_CHARGING_SESSIONS).c
    starts = pairing.session_id_range(window.meter_ids, window.write_from, window.write_to)
    # `start_time IS NULL` as the partial index of end_only sessions states it: a planner uses a
    # partial index only where the query implies the index's predicate.
    end_only = sa.and_(s.start_time.is_(None), s.end_time.between(window.write_from, window.write_to))
    if timezone is not None:
        # An end_only session's event_date is its end's local date (`timezone`, the warehouse's):
        # the bound prunes the months of PostgreSQL's partitions (0022), whose every month an IN
        # list of meters is otherwise sought in.
        tz = ZoneInfo(timezone)
        end_days = (window.write_from.astimezone(tz).date(), window.write_to.astimezone(tz).date())
        end_only = sa.and_(end_only, s.event_date.between(*end_days))
    frames = [
        warehouse.read_id_ranges(EV_CHARGING_SESSIONS, "session_id", *starts, conn=conn, columns=_STORED_CONTENT),
        warehouse.read_in(
            EV_CHARGING_SESSIONS, "meter_id", window.meter_ids, end_only, conn=conn, columns=_STORED_CONTENT
        ),
        warehouse.read_in(EV_CHARGING_SESSIONS, "session_id", edge_ids, conn=conn, columns=_STORED_CONTENT),
    ]
    return pl.concat(frames).unique("session_id", keep="first", maintain_order=True)


# What pairing (core.pairing.pair_sessions, edge_session_ids) reads of an event: the sessions step
# reads these columns of the window's events, not whole rows.
PAIRING_COLUMNS = (
    "message_id",
    "message_type",
    "meter_id",
    "message_time",
    "message_date",
    "charge_w",
    "charge_duration",
    "charge_energy_wh",
    *ATTRIBUTION_COLUMNS,
)


def pair(events_: pl.DataFrame, settings: PipelineSettings, now: datetime) -> pl.DataFrame:
    """The pairing and quality stages with the pipeline's settings."""
    paired = pairing.pair_sessions(
        events_, max_session=settings.max_session, updated_at=now, charge_w_tolerance=settings.charge_w_tolerance
    )
    return quality.flag_sessions(
        paired,
        charge_w_max=settings.bounds.charge_w_max,
        charge_w_tolerance=settings.charge_w_tolerance,
        duration_unit_seconds=settings.bounds.duration_unit_seconds if settings.duration_unit_verified else None,
    )


def edge_events(warehouse: Warehouse, conn, window: pairing.PairingWindow) -> pl.DataFrame:
    """Per meter of the window: its latest start before write_from, if that is its last event
    there, and its earliest end after write_to, if that is its first event there (at equal times
    the start, resp. the end, is the edge).

    A seek per meter, message type and edge on the primary key (meter|type|time), so the cost
    follows the batch's meters, not the length of their history (`_nearest_events`)."""
    before = _nearest_events(warehouse, conn, window.meter_ids, window.write_from, before=True)
    after = _nearest_events(warehouse, conn, window.meter_ids, window.write_to, before=False)
    time = pl.col("message_time")
    return pl.concat(
        [
            empty_frame(EV_CHARGING_EVENTS, PAIRING_COLUMNS),
            before.filter(time == time.max().over("meter_id"), pl.col("message_type") == "start"),
            after.filter(time == time.min().over("meter_id"), pl.col("message_type") == "end"),
        ]
    )


def _nearest_events(warehouse: Warehouse, conn, meters: list[str], bound: datetime, *, before: bool) -> pl.DataFrame:
    """Per meter and message type, the stored event nearest `bound` strictly before it (or after).

    Ids keep the millisecond, times the microsecond: the id at the bound's millisecond may be a
    message at or past the bound itself. Those prefixes are asked once more with that id left out,
    which finds the next one out: always strictly beyond the bound."""
    prefixes, low, _ = events.message_id_range(meters, bound, bound)
    nearest = {"below": before, "columns": PAIRING_COLUMNS}
    found = warehouse.read_nearest_ids(conn, EV_CHARGING_EVENTS, "message_id", prefixes, low, **nearest)
    beyond = pl.col("message_time") < bound if before else pl.col("message_time") > bound
    inside = found.filter(~beyond)
    if inside.is_empty():
        return found
    again = [events.message_id_prefix(m, k) for m, k in inside.select("meter_id", "message_type").rows()]
    further = warehouse.read_nearest_ids(conn, EV_CHARGING_EVENTS, "message_id", again, low, inclusive=False, **nearest)
    return pl.concat([found.filter(beyond), further])


def time_out_open_starts(
    warehouse: Warehouse, conn, settings: PipelineSettings, now: datetime, *, shards: list[int] | None = None
) -> int:
    """Mark start_only sessions older than max_session as timed_out (indexed on status, start_time).
    Neither status counts in the load, so no day changes.

    `shards` (PostgreSQL): the write-lock shards the caller's transaction holds. An open start of a
    meter in another shard is timed out too if its shard's lock can be had at once
    (`pg_try_advisory_xact_lock`: no wait, so the lock order cannot deadlock); a shard another
    writer holds is left to the next pairing. So an open start times out even if its meter never
    sends again. The candidates are few (each open start times out once): they are read and their
    meters' shards computed here. SQLite's single writer takes them all."""
    s = warehouse.table(EV_CHARGING_SESSIONS)
    expired = sa.and_(s.c.status == "start_only", s.c.start_time < now - settings.max_session)
    if shards is not None and warehouse.dialect != "sqlite":
        candidates = conn.execute(sa.select(s.c.session_id, s.c.meter_id).where(expired)).all()
        of_shard = {sid: shard_of(meter) for sid, meter in candidates}
        held = set(shards)
        held |= {shard for shard in sorted(set(of_shard.values()) - held) if try_shard_lock(conn, shard)}
        ids = [sid for sid, shard in of_shard.items() if shard in held]
        timed_out = 0
        for chunk in chunked(ids, IN_CHUNK):
            result = conn.execute(
                s.update().where(expired, s.c.session_id.in_(chunk)).values(status="timed_out", updated_at=now)
            )
            timed_out += result.rowcount or 0
        return timed_out
    result = conn.execute(s.update().where(expired).values(status="timed_out", updated_at=now))
    return result.rowcount or 0


def rebuild_sessions(
    warehouse: Warehouse, settings: PipelineSettings, *, chunk_meters: int = 2000, now: datetime | None = None
) -> SessionsReport:
    """Re-pair every meter's sessions from its events, `chunk_meters` meters per transaction, so
    memory follows the chunk, not the history. Changed days are queued for their daily load. (The
    meters are found in one pass over the events, as a rebuild reads them all anyway; each
    chunk's events and sessions are then ranges of the primary keys.)"""
    now = now or utc_now()
    warehouse.ensure_timezone(settings.timezone)
    ev = warehouse.table(EV_CHARGING_EVENTS).c
    meters = warehouse.scalars(sa.select(ev.meter_id).distinct().order_by(ev.meter_id))
    total = SessionsReport()
    for start in range(0, len(meters), chunk_meters):
        with warehouse.transaction() as conn:
            _repair_meters(warehouse, conn, meters[start : start + chunk_meters], settings, now, total)
    return total


def repair_reattributed_meters(
    warehouse: Warehouse, settings: PipelineSettings, *, chunk_meters: int = 2000, now: datetime | None = None
) -> SessionsReport:
    """Re-pair the sessions of the meters whose events were attributed again after a reference
    correction (ev_meters_pending, stage `pair`), a chunk per transaction that also takes them off
    the queue and queues the days whose load changed."""
    now = now or utc_now()
    warehouse.ensure_timezone(settings.timezone)
    total = SessionsReport()
    # Nothing queued, nothing locked (as reference.reattribute_pending_meters): the sessions step asks
    # every time, and the exclusive lock would make it wait for any daily load in flight.
    if not pending_meters(warehouse, "pair", limit=1):
        return total
    while True:
        with warehouse.transaction() as conn:
            chunk = pending_meters(warehouse, "pair", limit=chunk_meters, conn=conn)
            if not chunk:
                return total
            _repair_meters(warehouse, conn, chunk, settings, now, total)
            warehouse.delete_in(conn, EV_METERS_PENDING, "meter_id", chunk)


def pending_meters(warehouse: Warehouse, stage: str, *, limit: int | None = None, conn=None) -> list[str]:
    """Meters queued for re-attribution (`attribute`) or re-pairing (`pair`), in id order."""
    m = warehouse.table(EV_METERS_PENDING).c
    query = sa.select(m.meter_id).where(m.stage == stage).order_by(m.meter_id)
    return warehouse.scalars(query.limit(limit) if limit else query, conn=conn)


def _repair_meters(
    warehouse: Warehouse, conn, meters: list[str], settings: PipelineSettings, now: datetime, total: SessionsReport
) -> None:
    """Replace all sessions of `meters` with those paired from all their events (inside the caller's
    transaction), queue the days whose load changed, and add the counts to `total`."""
    events_ = warehouse.read_id_ranges(EV_CHARGING_EVENTS, "message_id", *events.meter_prefixes(meters), conn=conn)
    fresh = EV_CHARGING_SESSIONS.conform(pair(events_, settings, now))
    every = pairing.session_id_range(meters)
    previous = warehouse.read_id_ranges(EV_CHARGING_SESSIONS, "session_id", *every, conn=conn, columns=_STORED_CONTENT)
    replaced, written = _write_changed(warehouse, conn, previous, fresh)
    total.sessions_replaced += replaced
    total.sessions_written += written.height
    touched = load_dates_of(_changed(previous, fresh), settings.timezone)
    queue_load_days(warehouse, conn, touched, now)
    total.touched_dates = sorted(set(total.touched_dates) | set(touched))
    total.statuses = dict(Counter(total.statuses) + Counter(fresh["status"].to_list()))


def queue_load_days(warehouse: Warehouse, conn, days: list[date], now: datetime) -> None:
    """Record (inside the caller's transaction) that these days' daily load must be recomputed.

    A day already queued gets a later queued_at (`now`, or a microsecond past the stored one when
    that is later): the daily load deletes a day's entry only if it still holds the queued_at it
    read before reading the sessions, so a change committed by a writer beside it (PostgreSQL:
    pairing and the daily load hold different locks) leaves the day queued, and the daily-load
    sensor's run key, which names the latest queued_at, asks for it again."""
    if not days:
        return
    if warehouse.dialect == "postgresql":
        table = warehouse.table(EV_LOAD_DAYS_PENDING)
        rows = [{"load_date": day, "queued_at": now} for day in sorted(set(days))]
        insert = postgresql.insert(table).values(rows)
        later = sa.case(
            (insert.excluded.queued_at > table.c.queued_at, insert.excluded.queued_at),
            else_=table.c.queued_at + sa.text("interval '1 microsecond'"),
        )
        conn.execute(insert.on_conflict_do_update(index_elements=["load_date"], set_={"queued_at": later}))
        return
    # SQLite: one writer at a time, so nothing changes between this delete and insert.
    stored = warehouse.read_in(EV_LOAD_DAYS_PENDING, "load_date", days, conn=conn)
    latest = stored["queued_at"].max() if stored.height else None
    queued_at = now if latest is None or now > latest else latest + timedelta(microseconds=1)
    warehouse.delete_in(conn, EV_LOAD_DAYS_PENDING, "load_date", days)
    warehouse.insert(conn, EV_LOAD_DAYS_PENDING, pl.DataFrame({"load_date": days, "queued_at": queued_at}))


# What a session's part in the daily load depends on: _changed compares these to queue load days.
_SESSION_CONTENT = (
    "session_id",
    "status",
    "start_time",
    "end_time",
    "energy_wh",
    "transformer_id",
    "feeder_id",
    "substation_id",
    "quality_flags",
)
# What makes a stored session the same as a re-paired one: every column but updated_at.
_STORED_CONTENT = tuple(c for c in EV_CHARGING_SESSIONS.column_names if c != "updated_at")


def _changed(previous: pl.DataFrame, fresh: pl.DataFrame) -> pl.DataFrame:
    """Sessions that differ between the two frames (in either), ignoring updated_at."""
    before = previous.select(_SESSION_CONTENT)
    after = fresh.select(_SESSION_CONTENT)
    keys = list(_SESSION_CONTENT)
    return pl.concat(
        [
            after.join(before, on=keys, how="anti", nulls_equal=True),
            before.join(after, on=keys, how="anti", nulls_equal=True),
        ]
    )


def load_dates_of(session_rows: pl.DataFrame, tz: str) -> list[date]:
    """Local days whose daily load these sessions are part of: the days each session spans."""
    spans = session_rows.filter(pl.col("start_time").is_not_null() | pl.col("end_time").is_not_null()).select(
        pl.date_ranges(
            pl.coalesce("start_time", "end_time").dt.convert_time_zone(tz).dt.date(),
            pl.coalesce("end_time", "start_time").dt.convert_time_zone(tz).dt.date(),
        ).alias("day")
    )
    return sorted(set(spans.explode("day")["day"].drop_nulls().to_list()))
