"""Daily-load step: recompute the planning aggregates of a range of local days."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import polars as pl
import sqlalchemy as sa

from ev_assets.core import load_profile
from ev_assets.pipeline.config import PipelineSettings, utc_now
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import (
    EV_CHARGING_SESSIONS,
    FEEDER_DAILY_LOAD,
    REF_TRANSFORMERS,
    SUBSTATION_DAILY_LOAD,
    TRANSFORMER_DAILY_LOAD,
    TableSpec,
)

DAILY_LOAD_TABLES: dict[str, TableSpec] = {
    "transformer": TRANSFORMER_DAILY_LOAD,
    "feeder": FEEDER_DAILY_LOAD,
    "substation": SUBSTATION_DAILY_LOAD,
}


@dataclass
class LoadReport:
    rows: dict[str, int] = field(default_factory=dict)
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)


def update_daily_load(
    warehouse: Warehouse,
    settings: PipelineSettings,
    first_day: date,
    last_day: date,
    *,
    now: datetime | None = None,
) -> LoadReport:
    """Recompute the daily load of every level for local days first..last (delete, then insert)."""
    now = now or utc_now()
    s = warehouse.table(EV_CHARGING_SESSIONS).c
    lookback = timedelta(days=math.ceil(settings.max_session / timedelta(days=1)))
    report = LoadReport()
    frames = {}
    with warehouse.transaction() as conn:  # the sessions read decide the load written: under the lock
        complete = warehouse.read(
            EV_CHARGING_SESSIONS,
            sa.and_(s.status == "complete", s.event_date.between(first_day - lookback, last_day)),
            conn=conn,
        )
        intervals = load_profile.interval_loads(complete)
        for level, spec in DAILY_LOAD_TABLES.items():
            daily = load_profile.daily_load(
                intervals, complete, level=level, tz=settings.timezone, first_day=first_day, last_day=last_day, updated_at=now
            )
            if level == "transformer":
                transformers = warehouse.read_in(REF_TRANSFORMERS, "transformer_id", daily["transformer_id"], conn=conn)
                daily = load_profile.with_transformer_rating(daily, transformers, power_factor=settings.power_factor)
            frames[level] = spec.conform(daily)
        for level, spec in DAILY_LOAD_TABLES.items():
            warehouse.delete(conn, spec, warehouse.column(spec, "load_date").between(first_day, last_day))
            report.rows[level] = warehouse.insert(conn, spec, frames[level])
    report.frames = frames
    return report
