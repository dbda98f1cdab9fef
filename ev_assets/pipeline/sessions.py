"""Sessions step: re-pair the sessions a batch's events can change, and say which days' load
they touch."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime

import polars as pl
import sqlalchemy as sa

from ev_assets.core import pairing
from ev_assets.pipeline.config import PipelineSettings, utc_now
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, EV_CHARGING_SESSIONS


@dataclass
class SessionsReport:
    sessions_written: int = 0
    sessions_replaced: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    touched_dates: list[date] = field(default_factory=list)
    duration_agreement: dict[str, float | int] = field(default_factory=dict)
    written: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=EV_CHARGING_SESSIONS.polars_schema))


def update_sessions(
    warehouse: Warehouse, settings: PipelineSettings, *, batch_id: str | None, now: datetime | None = None
) -> SessionsReport:
    """Re-pair the sessions a batch's events can change (all sessions when batch_id is None)."""
    events_table = warehouse.table(EV_CHARGING_EVENTS)
    where = None if batch_id is None else events_table.c.batch_id == batch_id
    return repair_sessions_around(warehouse, warehouse.read(EV_CHARGING_EVENTS, where), settings, now=now)


def repair_sessions_around(
    warehouse: Warehouse, changed: pl.DataFrame, settings: PipelineSettings, *, now: datetime | None = None
) -> SessionsReport:
    """Re-pair the sessions of the meters and times of `changed` events (see PairingWindow)."""
    window = pairing.pairing_window(changed, settings.max_session)
    if window is None:
        return SessionsReport()
    ev = warehouse.table(EV_CHARGING_EVENTS).c
    s = warehouse.table(EV_CHARGING_SESSIONS).c
    anchored = sa.or_(
        s.start_time.between(window.write_from, window.write_to),
        sa.and_(s.start_time.is_(None), s.end_time.between(window.write_from, window.write_to)),
    )
    with warehouse.transaction() as conn:  # the events read decide the sessions written: under the lock
        stored = warehouse.read_in(
            EV_CHARGING_EVENTS, "meter_id", window.meter_ids, ev.message_time.between(window.read_from, window.read_to), conn=conn
        )
        paired = pairing.pair_sessions(stored, max_session=settings.max_session, updated_at=now or utc_now())
        fresh = EV_CHARGING_SESSIONS.conform(pairing.anchored_within(paired, window))
        previous = warehouse.read_in(EV_CHARGING_SESSIONS, "meter_id", window.meter_ids, anchored, conn=conn)
        replaced = warehouse.delete_in(conn, EV_CHARGING_SESSIONS, "meter_id", window.meter_ids, anchored)
        written = warehouse.insert(conn, EV_CHARGING_SESSIONS, fresh)
    changed_sessions = _changed(previous, fresh)
    return SessionsReport(
        sessions_written=written,
        sessions_replaced=replaced,
        statuses=dict(Counter(fresh["status"].to_list())),
        touched_dates=load_dates_of(changed_sessions, settings.timezone),
        duration_agreement=pairing.duration_agreement(
            fresh.filter(pl.col("end_message_id").is_in(changed["message_id"].implode())),
            settings.bounds.duration_unit_seconds,
        ),
        written=fresh,
    )


_SESSION_CONTENT = ("session_id", "status", "start_time", "end_time", "energy_wh", "transformer_id", "feeder_id", "substation_id")


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
