"""Daily-load step: recompute the planning aggregates of a range of local days."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import polars as pl
import sqlalchemy as sa

from ev_assets.core import load_profile, planning_queue, transformer_aging
from ev_assets.core.enrich import as_of_join
from ev_assets.pipeline.config import PipelineSettings, utc_now
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


@dataclass
class LoadReport:
    rows: dict[str, int] = field(default_factory=dict)
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    # Per level: the 15-minute profile rows written (interval_rows) and the frames.
    interval_rows: dict[str, int] = field(default_factory=dict)
    interval_frames: dict[str, pl.DataFrame] = field(default_factory=dict)


def update_daily_load(
    warehouse: Warehouse,
    settings: PipelineSettings,
    first_day: date,
    last_day: date,
    *,
    now: datetime | None = None,
) -> LoadReport:
    """Recompute the daily load and the 15-minute profile of every level for local days
    first..last (delete, then insert), with the transformers' overload exposure and aging."""
    warehouse.ensure_timezone(settings.timezone)
    now = now or utc_now()
    s = warehouse.table(EV_CHARGING_SESSIONS).c
    lookback = timedelta(days=math.ceil(settings.max_session / timedelta(days=1)))
    report = LoadReport()
    # Read and write in one transaction: a session committed meanwhile waits for it, and the days
    # it queues stay queued (they are deleted here only together with the load computed from them).
    with warehouse.transaction() as conn:
        complete = warehouse.read(
            EV_CHARGING_SESSIONS,
            sa.and_(s.status == "complete", s.event_date.between(first_day - lookback, last_day)),
            conn=conn,
        )
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
                transformers = warehouse.read_in(REF_TRANSFORMERS, "transformer_id", daily["transformer_id"], conn=conn)
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
                )
            frames[level] = spec.conform(daily)
            profiles[level] = INTERVAL_LOAD_TABLES[level].conform(profile)
        for level, spec in DAILY_LOAD_TABLES.items():
            warehouse.delete(conn, spec, warehouse.column(spec, "load_date").between(first_day, last_day))
            report.rows[level] = warehouse.insert(conn, spec, frames[level])
            interval_spec = INTERVAL_LOAD_TABLES[level]
            warehouse.delete(conn, interval_spec, warehouse.column(interval_spec, "load_date").between(first_day, last_day))
            report.interval_rows[level] = warehouse.insert(conn, interval_spec, profiles[level])
        warehouse.delete(conn, EV_LOAD_DAYS_PENDING, warehouse.column(EV_LOAD_DAYS_PENDING, "load_date").between(first_day, last_day))
    report.frames = frames
    report.interval_frames = profiles
    return report


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
            daily_spec, warehouse.column(daily_spec, "load_date").between(first_day, last_day), conn=conn,
            columns=[*key, "peak_kw"],
        )  # fmt: skip
        maxima_rows = conn.execute(maxima_query).fetchall()
    maxima = pl.DataFrame(
        maxima_rows, schema={"transformer_id": pl.String, "load_date": pl.Date, "profile_max_kw": pl.Float64}, orient="row"
    )
    both = daily.select(*key, "peak_kw").join(maxima, on=key, how="full", coalesce=True)
    return both.with_columns(pl.col("peak_kw").fill_null(0.0), pl.col("profile_max_kw").fill_null(0.0)).filter(
        (pl.col("peak_kw") - pl.col("profile_max_kw")).abs() > 1e-9 * pl.max_horizontal(pl.col("peak_kw"), pl.lit(1.0))
    ).sort(key)


@dataclass
class QueueReport:
    rows: int = 0
    as_of: date | None = None
    top: pl.DataFrame | None = None


def refresh_planning_queue(warehouse: Warehouse, settings: PipelineSettings, *, now: datetime | None = None) -> QueueReport:
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
            daily, as_of=as_of, window_days=settings.planning_window_days, weights=settings.risk_weights, updated_at=now
        )
        report.rows = warehouse.insert(conn, TRANSFORMER_PLANNING_QUEUE, TRANSFORMER_PLANNING_QUEUE.conform(queue))
    report.as_of = as_of
    report.top = queue.head(10)
    return report
