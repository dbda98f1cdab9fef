"""Premise step: refresh the premise_ev_profile and new_evs snapshots from the sessions.

Bounded memory: the premises are listed by SQL (DISTINCT), then profiled PREMISE_CHUNK at a time,
each chunk's sessions read, profiled and written before the next is read. Everything happens in one
transaction (the write lock: no session changes between the chunks), so a reader sees the old
snapshot or the new one, never half of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
import sqlalchemy as sa

from ev_assets.core import load_profile, premise_profile
from ev_assets.pipeline.config import PipelineSettings, utc_now
from ev_assets.warehouse.store import Warehouse, chunked
from ev_assets.warehouse.tables import EV_CHARGING_SESSIONS, NEW_EVS, PREMISE_EV_PROFILE

PREMISE_CHUNK = 2_000


@dataclass
class PremiseReport:
    premises: int = 0
    new_evs: int = 0
    as_of: object = None
    # The first rows of each table, for the asset's metadata.
    top: dict[str, pl.DataFrame] = field(default_factory=dict)


def refresh_premise_profile(
    warehouse: Warehouse,
    settings: PipelineSettings,
    *,
    now: datetime | None = None,
    chunk_premises: int = PREMISE_CHUNK,
) -> PremiseReport:
    """Replace premise_ev_profile and new_evs (delete, then insert), chunk by chunk of premises."""
    warehouse.ensure_timezone(settings.timezone)
    now = now or utc_now()
    windows = premise_profile.parse_tou_windows(settings.tou_on_peak)
    s = warehouse.table(EV_CHARGING_SESSIONS).c
    trusted = sa.and_(s.status == "complete", s.quality_flags.is_(None), s.premise_id.is_not(None))
    report = PremiseReport()
    profiles, news = [], []
    with warehouse.transaction() as conn:
        premises = warehouse.scalars(
            sa.select(s.premise_id).where(trusted).distinct().order_by(s.premise_id), conn=conn
        )
        report.as_of = warehouse.scalars(sa.select(sa.func.max(s.event_date)).where(trusted), conn=conn)[0]
        if isinstance(report.as_of, str):  # SQLite hands aggregates of dates back as text
            report.as_of = datetime.fromisoformat(report.as_of).date()
        warehouse.delete(conn, PREMISE_EV_PROFILE, sa.true())
        warehouse.delete(conn, NEW_EVS, sa.true())
        for chunk in chunked(premises, chunk_premises):
            sessions = warehouse.read_in(EV_CHARGING_SESSIONS, "premise_id", chunk, where=trusted, conn=conn)
            intervals = load_profile.interval_loads(
                sessions,
                load_shape=settings.load_shape,
                idle_ratio=settings.load_shape_idle_ratio,
                keep=("premise_id",),
            )
            profile = premise_profile.premise_profile(
                sessions, intervals, tz=settings.timezone, windows=windows, updated_at=now
            )
            report.premises += warehouse.insert(conn, PREMISE_EV_PROFILE, profile)
            new = premise_profile.new_evs(profile, as_of=report.as_of, days=settings.new_ev_days, updated_at=now)
            report.new_evs += warehouse.insert(conn, NEW_EVS, new)
            profiles.append(profile.sort("sessions_per_week", descending=True).head(10))
            news.append(new.sort("first_charging_day", descending=True).head(10))
    if profiles:
        report.top["premise_ev_profile"] = pl.concat(profiles).sort("sessions_per_week", descending=True).head(10)
        report.top["new_evs"] = pl.concat(news).sort("first_charging_day", descending=True).head(10)
    return report
