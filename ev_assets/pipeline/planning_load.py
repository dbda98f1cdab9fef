"""Daily-load step: recompute the planning aggregates of a range of local days."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import polars as pl
import sqlalchemy as sa

from ev_assets.core import load_profile, planning_queue, transformer_aging
from ev_assets.core.enrich import as_of_join
from ev_assets.pipeline.config import PipelineSettings, utc_now
from ev_assets.pipeline.forecast import BASE_SCENARIO
from ev_assets.pipeline.sessions import queue_load_days
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import (
    EV_CHARGING_SESSIONS,
    EV_LOAD_DAYS_PENDING,
    FEEDER_DAILY_LOAD,
    FEEDER_INTERVAL_LOAD,
    REF_TRANSFORMERS,
    SUBSTATION_DAILY_LOAD,
    SUBSTATION_INTERVAL_LOAD,
    TRANSFORMER_DAILY_LOAD,
    TRANSFORMER_INTERVAL_LOAD,
    TRANSFORMER_OVERLOAD_FORECAST,
    TRANSFORMER_PLANNING_QUEUE,
    TableSpec,
)

DAILY_LOAD_TABLES: dict[str, TableSpec] = {
    "transformer": TRANSFORMER_DAILY_LOAD,
    "feeder": FEEDER_DAILY_LOAD,
    "substation": SUBSTATION_DAILY_LOAD,
}
# The 15-minute profiles, written by the same step in the same transaction as the daily load.
INTERVAL_LOAD_TABLES: dict[str, TableSpec] = {
    "transformer": TRANSFORMER_INTERVAL_LOAD,
    "feeder": FEEDER_INTERVAL_LOAD,
    "substation": SUBSTATION_INTERVAL_LOAD,
}


# Rows of each level's 15-minute profile kept in the report for people to look at (the asset's
# metadata): the largest intervals of the range.
TOP_INTERVALS = 5


@dataclass
class LoadReport:
    # Per level: the daily rows written (rows) and their frames, for the whole range (small: one
    # row per asset and day).
    rows: dict[str, int] = field(default_factory=dict)
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    # Per level: the 15-minute profile rows written. The profiles themselves are written chunk by
    # chunk and not kept (a month of 20,000 transformers is 660,000 rows): the report keeps the
    # largest intervals (top_intervals) and the profile of the asset-day with the highest peak_kw
    # (busiest_profiles).
    interval_rows: dict[str, int] = field(default_factory=dict)
    top_intervals: dict[str, pl.DataFrame] = field(default_factory=dict)
    busiest_profiles: dict[str, pl.DataFrame] = field(default_factory=dict)
    chunks: int = 0
    # The day after the range was queued again: its start state (this range's last end state) moved.
    next_day_queued: bool = False


def day_chunks(first_day: date, last_day: date, chunk_days: int) -> list[tuple[date, date]]:
    """first..last cut into consecutive spans of at most `chunk_days` days."""
    if chunk_days < 1:
        raise ValueError(f"chunk_days must be at least 1; got {chunk_days}")
    spans = []
    while first_day <= last_day:
        end = min(last_day, first_day + timedelta(days=chunk_days - 1))
        spans.append((first_day, end))
        first_day = end + timedelta(days=1)
    return spans


def update_daily_load(
    warehouse: Warehouse,
    settings: PipelineSettings,
    first_day: date,
    last_day: date,
    *,
    now: datetime | None = None,
    chunk_days: int = load_profile.DEFAULT_CHUNK_DAYS,
) -> LoadReport:
    """Recompute the daily load and the 15-minute profile of every level for local days
    first..last (delete, then insert), with the transformers' overload exposure and aging.

    The days are computed and written `chunk_days` at a time, inside one transaction: a day's load
    depends only on the sessions that overlap it, so the result is the same for any chunk size,
    and memory follows the chunk, not the range (a month of 20,000 transformers: about 17 MB a
    day of intervals and profiles)."""
    warehouse.ensure_timezone(settings.timezone)
    now = now or utc_now()
    report = LoadReport()
    daily: dict[str, list[pl.DataFrame]] = {level: [] for level in DAILY_LOAD_TABLES}
    tops: dict[str, list[pl.DataFrame]] = {level: [] for level in DAILY_LOAD_TABLES}
    busiest: dict[str, list[pl.DataFrame]] = {level: [] for level in DAILY_LOAD_TABLES}
    # Read and write in one transaction, under the locks of its days and of the day before (whose
    # end-of-day thermal state the first day starts from): two ranges that share no day run at once
    # (PostgreSQL), as does the pairing, which locks meter shards. A session committed meanwhile
    # re-queues its days with a later queued_at (sessions.queue_load_days): the queue entries read
    # here, before the sessions, are deleted only if they are still the same, so such a day stays
    # queued and is computed again.
    days = [first_day + timedelta(days=n) for n in range(-1, (last_day - first_day).days + 1)]
    with warehouse.transaction(days=days) as conn, ThreadPoolExecutor(max_workers=1) as computer:
        pending = warehouse.column(EV_LOAD_DAYS_PENDING, "load_date")
        queued = warehouse.read(EV_LOAD_DAYS_PENDING, pending.between(first_day, last_day), conn=conn)
        # The range's sessions are read once (a month of 20,000 meters: 50,000 rows); what takes
        # memory is their 15-minute intervals, made a chunk at a time.
        complete = complete_sessions_for_days(warehouse, conn, settings, first_day, last_day)
        transformers = warehouse.read_in(
            REF_TRANSFORMERS, "transformer_id", complete["transformer_id"].drop_nulls().unique(), conn=conn
        )

        def compute(
            span: tuple[date, date], initial_state: pl.DataFrame | None
        ) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
            overlapping = complete.filter(pl.col("event_date").is_between(*start_dates(settings, *span)))
            return compute_days(settings, overlapping, transformers, *span, now, initial_state)

        # Heat carries over midnight: the first day starts from the end state of the day before as
        # written (null where that day was not computed), each later chunk from the last day of
        # the chunk before it.
        day_before = warehouse.read(
            TRANSFORMER_DAILY_LOAD,
            warehouse.column(TRANSFORMER_DAILY_LOAD, "load_date") == first_day - timedelta(days=1),
            conn=conn,
        ).select("transformer_id", "load_date", *transformer_aging.END_STATE_COLUMNS)

        # The last day's end state as stored before this run: if it changes, the day after starts
        # from another state, so it is queued again (below) when it has a load of its own.
        last_before = warehouse.read(
            TRANSFORMER_DAILY_LOAD,
            warehouse.column(TRANSFORMER_DAILY_LOAD, "load_date") == last_day,
            conn=conn,
        ).select("transformer_id", *transformer_aging.END_STATE_COLUMNS)

        spans = day_chunks(first_day, last_day, chunk_days)
        # The next chunk is computed (polars, outside the GIL) while this one is written (SQLite):
        # one chunk ahead at most, so memory still follows the chunk (two of them, not the range).
        ahead = computer.submit(compute, spans[0], day_before) if spans else None
        for index, (chunk_first, chunk_last) in enumerate(spans):
            frames, profiles = ahead.result()
            if index + 1 < len(spans):
                last = frames["transformer"].filter(pl.col("load_date") == chunk_last)
                ahead = computer.submit(compute, spans[index + 1], last)
            for level, spec in DAILY_LOAD_TABLES.items():
                warehouse.delete(conn, spec, warehouse.column(spec, "load_date").between(chunk_first, chunk_last))
                report.rows[level] = report.rows.get(level, 0) + warehouse.insert(conn, spec, frames[level])
                interval_spec = INTERVAL_LOAD_TABLES[level]
                warehouse.delete(
                    conn, interval_spec, warehouse.column(interval_spec, "load_date").between(chunk_first, chunk_last)
                )
                written = warehouse.insert(conn, interval_spec, profiles[level])
                report.interval_rows[level] = report.interval_rows.get(level, 0) + written
                daily[level].append(frames[level])
                tops[level].append(_top_intervals(level, profiles[level]))
                busiest[level].append(_busiest_day_profile(level, frames[level], profiles[level]))
            report.chunks += 1
        delete_queue_entries(warehouse, conn, queued)
        last_after = daily["transformer"][-1].filter(pl.col("load_date") == last_day) if daily["transformer"] else None
        if end_state_changed(last_before, last_after) and _has_load(warehouse, conn, last_day + timedelta(days=1)):
            queue_load_days(warehouse, conn, [last_day + timedelta(days=1)], now)
            report.next_day_queued = True
    for level, spec in DAILY_LOAD_TABLES.items():
        report.frames[level] = pl.concat(daily[level]).sort(spec.primary_key[0], "load_date")
        report.top_intervals[level] = _top_intervals(level, pl.concat(tops[level]))
        report.busiest_profiles[level] = _busiest_day_profile(level, report.frames[level], pl.concat(busiest[level]))
    return report


# How far (°C) an end-of-day rise may move before the day after is computed again. A start
# state's effect on a day decays as e^(-t/τ_TO) (τ_TO about 3 h: e^-8 over 24 h), so a change
# ripples through a few later days and stops here; what it leaves is below the tables' 1e-6
# rounding (the digest test) instead of a recomputation of every later day for a last-bit change.
END_STATE_TOLERANCE_C = 1e-9


def end_state_changed(before: pl.DataFrame, after: pl.DataFrame | None) -> bool:
    """Whether a day's end-of-day thermal state (END_STATE_COLUMNS per transformer) differs between
    two computations: another set of transformers, or a rise moved by more than the tolerance."""
    after = after if after is not None else before.clear()
    if before.is_empty() and after.is_empty():
        return False
    columns = list(transformer_aging.END_STATE_COLUMNS)
    joined = before.select("transformer_id", *columns).join(
        after.select("transformer_id", *columns), on="transformer_id", how="full", suffix="_after", coalesce=True
    )
    moved = [(pl.col(c) - pl.col(f"{c}_after")).abs().fill_nan(0.0) > END_STATE_TOLERANCE_C for c in columns] + [
        pl.col(c).is_null() != pl.col(f"{c}_after").is_null() for c in columns
    ]
    return bool(joined.select(pl.any_horizontal(moved).any()).item())


def _has_load(warehouse: Warehouse, conn: sa.Connection, day: date) -> bool:
    load_date = warehouse.column(TRANSFORMER_DAILY_LOAD, "load_date")
    query = sa.select(sa.literal(1)).select_from(warehouse.table(TRANSFORMER_DAILY_LOAD)).where(load_date == day)
    return bool(warehouse.scalars(query.limit(1), conn=conn))


def delete_queue_entries(warehouse: Warehouse, conn: sa.Connection, queued: pl.DataFrame) -> int:
    """Take these ev_load_days_pending rows off the queue, each only if its queued_at is still the
    one read (a day queued again meanwhile stays queued)."""
    table = warehouse.table(EV_LOAD_DAYS_PENDING)
    deleted = 0
    for load_date, queued_at in queued.select("load_date", "queued_at").rows():
        condition = sa.and_(table.c.load_date == load_date, table.c.queued_at == queued_at)
        deleted += warehouse.delete(conn, EV_LOAD_DAYS_PENDING, condition)
    return deleted


def start_dates(settings: PipelineSettings, first_day: date, last_day: date) -> tuple[date, date]:
    """The local start dates (event_date) of the sessions that can charge on days first..last: from
    the longest session before first_day up to last_day."""
    return first_day - timedelta(days=math.ceil(settings.max_session / timedelta(days=1))), last_day


def complete_sessions_for_days(
    warehouse: Warehouse, conn: sa.Connection, settings: PipelineSettings, first_day: date, last_day: date
) -> pl.DataFrame:
    """The complete sessions that can charge on local days first..last: those whose local start
    date (event_date) lies from the longest session before first_day up to last_day.

    The same days as a range of start_time (UTC, a day wider on each side: any time zone's local
    day lies within it) let the (status, start_time) index seek to them; on status alone it
    would read every complete session ever stored."""
    s = warehouse.table(EV_CHARGING_SESSIONS).c
    first, last_day = start_dates(settings, first_day, last_day)
    earliest = datetime.combine(first - timedelta(days=1), time.min, tzinfo=UTC)
    latest = datetime.combine(last_day + timedelta(days=2), time.min, tzinfo=UTC)
    return warehouse.read(
        EV_CHARGING_SESSIONS,
        sa.and_(
            s.status == "complete",
            s.start_time >= earliest,
            s.start_time < latest,
            s.event_date.between(first, last_day),
        ),
        conn=conn,
    )


def compute_days(
    settings: PipelineSettings,
    complete: pl.DataFrame,
    transformers: pl.DataFrame,
    first_day: date,
    last_day: date,
    now: datetime,
    initial_state: pl.DataFrame | None = None,
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
    """The daily rows and the 15-minute profile of every level for local days first..last, as the
    tables take them, from `complete`: the complete sessions that can overlap those days (those
    that start up to the longest session before them), and `transformers`: the ref_transformers
    rows (every version) of their transformers, and `initial_state`: the transformer rows of the
    day before first_day (their end-of-day rises start first_day's aging; None: that day
    unknown, each transformer's first day starts from its own daily cycle). Pure: no database."""
    intervals = load_profile.interval_loads(
        complete, load_shape=settings.load_shape, idle_ratio=settings.load_shape_idle_ratio
    )
    # Each interval's local date, and each level's 15-minute sums, computed once for both
    # tables of the level (the daily peak is the profile's maximum by construction).
    intervals = load_profile.with_load_date(intervals, settings.timezone)
    frames, profiles = {}, {}
    span = {"tz": settings.timezone, "first_day": first_day, "last_day": last_day}
    days = {**span, "updated_at": now}
    for level, spec in DAILY_LOAD_TABLES.items():
        sums = load_profile.level_per_interval(intervals, level=level, **span)
        daily = load_profile.daily_load(intervals, complete, level=level, per_interval=sums, **days)
        profile = load_profile.interval_profile(
            intervals, level=level, power_factor=settings.power_factor, per_interval=sums, **days
        )
        if level == "transformer":
            daily = load_profile.with_transformer_rating(daily, transformers, power_factor=settings.power_factor)
            # The transformer's own aging overrides (null: the settings).
            daily = as_of_join(
                daily,
                transformers,
                left_on="transformer_id",
                right_on="transformer_id",
                date_col="load_date",
                columns={"base_load_scale": "base_load_scale", "ambient_c": "ambient_c"},
            )
            daily = load_profile.overload_exposure(
                profile, daily, power_factor=settings.power_factor, planning_threshold=settings.planning_threshold
            )
            daily = transformer_aging.daily_aging(
                profile,
                daily,
                tz=settings.timezone,
                base_load_pu=settings.base_load_pu,
                base_load_scale=settings.base_load_scale,
                ambient_c=settings.ambient_c,
                initial_state=initial_state,
            )
        frames[level] = spec.conform(daily)
        profiles[level] = INTERVAL_LOAD_TABLES[level].conform(profile)
    return frames, profiles


def by_peak(daily: pl.DataFrame, key: str) -> pl.DataFrame:
    """Daily rows from the highest peak_kw down (ties by key, then date: the same order however
    the range was chunked)."""
    return daily.sort(["peak_kw", key, "load_date"], descending=[True, False, False])


def _top_intervals(level: str, profile: pl.DataFrame) -> pl.DataFrame:
    """The TOP_INTERVALS largest kw of a profile (ties by key, then time: chunking changes nothing)."""
    key = INTERVAL_LOAD_TABLES[level].primary_key[0]
    return profile.sort(["kw", key, "interval_start"], descending=[True, False, False]).head(TOP_INTERVALS)


def _busiest_day_profile(level: str, daily: pl.DataFrame, profile: pl.DataFrame) -> pl.DataFrame:
    """The profile rows of the asset-day with the highest peak_kw in `daily` (on a tie, the first
    by key, then date: the same day however the range was chunked); empty when no day has load."""
    key = DAILY_LOAD_TABLES[level].primary_key[0]
    if daily.is_empty() or not daily["peak_kw"].max():
        return profile.clear()
    top = by_peak(daily, key).row(0, named=True)
    return profile.filter((pl.col(key) == top[key]) & (pl.col("load_date") == top["load_date"]))


def pending_load_days(warehouse: Warehouse) -> pl.DataFrame:
    """Days whose sessions changed since their daily load was computed (load_date, queued_at)."""
    return warehouse.read(EV_LOAD_DAYS_PENDING).sort("load_date")


def profile_peak_mismatches(warehouse: Warehouse, first_day: date, last_day: date) -> pl.DataFrame:
    """Transformer-days of first..last whose written 15-minute profile's maximum differs from their
    written peak_kw (beyond 1e-9 relative), read from one snapshot of the tables: empty when they
    agree. A day with peak_kw 0 (flagged load only) must have no profile row."""
    daily_spec, profile_spec = TRANSFORMER_DAILY_LOAD, TRANSFORMER_INTERVAL_LOAD
    key = ["transformer_id", "load_date"]
    p = warehouse.table(profile_spec).c
    # The database takes each transformer-day's maximum of the written kw (max is exact): one row
    # per day comes back instead of its whole profile (a month of 20,000 transformers: 42,000
    # rows, not 660,000 rows of every column).
    maxima_query = (
        sa.select(p.transformer_id, p.load_date, sa.func.max(p.kw).label("profile_max_kw"))
        .where(p.load_date.between(first_day, last_day))
        .group_by(p.transformer_id, p.load_date)
    )
    with warehouse.engine.connect() as conn:
        daily = warehouse.read(
            daily_spec,
            warehouse.column(daily_spec, "load_date").between(first_day, last_day),
            conn=conn,
            columns=[*key, "peak_kw"],
        )
        maxima_rows = conn.execute(maxima_query).fetchall()
    maxima = pl.DataFrame(
        maxima_rows,
        schema={"transformer_id": pl.String, "load_date": pl.Date, "profile_max_kw": pl.Float64},
        orient="row",
    )
    both = daily.select(*key, "peak_kw").join(maxima, on=key, how="full", coalesce=True)
    return (
        both.with_columns(pl.col("peak_kw").fill_null(0.0), pl.col("profile_max_kw").fill_null(0.0))
        .filter(
            (pl.col("peak_kw") - pl.col("profile_max_kw")).abs()
            > 1e-9 * pl.max_horizontal(pl.col("peak_kw"), pl.lit(1.0))
        )
        .sort(key)
    )


def _first_overload_years(warehouse: Warehouse, conn) -> pl.DataFrame:
    """Each transformer's first_year_p50 in the latest overload forecast, base scenario (one value
    per transformer: the forecast repeats it on every year's row); empty before the first forecast."""
    forecast = warehouse.table(TRANSFORMER_OVERLOAD_FORECAST)
    query = (
        sa.select(forecast.c.transformer_id, sa.func.min(forecast.c.first_year_p50).label("first_year_p50"))
        .where(forecast.c.scenario == BASE_SCENARIO, forecast.c.first_year_p50.is_not(None))
        .group_by(forecast.c.transformer_id)
    )
    rows = conn.execute(query).all()
    return pl.DataFrame(
        [tuple(r) for r in rows], schema={"transformer_id": pl.String, "first_year_p50": pl.Int64}, orient="row"
    )


@dataclass
class QueueReport:
    rows: int = 0
    as_of: date | None = None
    top: pl.DataFrame | None = None


def refresh_planning_queue(
    warehouse: Warehouse, settings: PipelineSettings, *, now: datetime | None = None
) -> QueueReport:
    """Replace transformer_planning_queue (delete, then insert, one transaction) from the
    transformer_daily_load rows of the window ending on its latest load_date
    (ev_assets.core.planning_queue)."""
    warehouse.ensure_timezone(settings.timezone)
    now = now or utc_now()
    report = QueueReport()
    daily_spec = TRANSFORMER_DAILY_LOAD
    load_date = warehouse.column(daily_spec, "load_date")
    with warehouse.transaction() as conn:
        as_of = warehouse.scalars(sa.select(sa.func.max(load_date)), conn=conn)[0]
        if isinstance(as_of, str):  # SQLite hands aggregates of dates back as text
            as_of = date.fromisoformat(as_of[:10])
        warehouse.delete(conn, TRANSFORMER_PLANNING_QUEUE, sa.true())
        if as_of is None:
            return report
        first, last = planning_queue.window(as_of, settings.planning_window_days)
        daily = warehouse.read(daily_spec, load_date.between(first, last), conn=conn)
        queue = planning_queue.planning_queue(
            daily,
            as_of=as_of,
            window_days=settings.planning_window_days,
            weights=settings.risk_weights,
            updated_at=now,
            first_overload_years=_first_overload_years(warehouse, conn),
        )
        report.rows = warehouse.insert(conn, TRANSFORMER_PLANNING_QUEUE, TRANSFORMER_PLANNING_QUEUE.conform(queue))
    report.as_of = as_of
    report.top = queue.head(10)
    return report
