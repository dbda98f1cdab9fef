"""Reference step: replace the reference tables and queue what a change of them affects; and the
events step's share of it: attribute the queued meters' events again.

A reference load may correct the past (a meter found to hang off another transformer since last
spring): every event of a meter whose chain changed is attributed again, not only the events still
waiting for their meter. The work flows through declared assets and a queue in the warehouse
(ev_meters_pending): reference_tables queues the meters; ev_charging_events re-attributes their
events (stage attribute -> pair); ev_charging_sessions re-pairs their sessions and queues the days
whose load changed; the daily-load sensor recomputes exactly those days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl
import sqlalchemy as sa

from ev_assets.core import enrich, events
from ev_assets.pipeline.config import PipelineSettings, utc_now
from ev_assets.pipeline.ingest import reference_for
from ev_assets.pipeline.sessions import pending_meters, queue_load_days
from ev_assets.warehouse.store import IN_CHUNK, Warehouse, chunked
from ev_assets.warehouse.tables import (
    EV_CHARGING_EVENTS,
    EV_METERS_PENDING,
    REFERENCE_TABLES,
    TRANSFORMER_DAILY_LOAD,
)

REFERENCE_VERSION_KEY = "reference_sha256"


@dataclass
class ReferenceReport:
    rows: dict[str, int]
    meters_queued: int
    days_queued: int


def load_reference(
    warehouse: Warehouse,
    frames: dict[str, pl.DataFrame],
    settings: PipelineSettings,
    *,
    version: str | None = None,
    now: datetime | None = None,
) -> ReferenceReport:
    """Replace the reference tables (recording the extracts' `version`) and, in the same
    transaction, queue the meters whose attribution the change can alter (and the meters whose
    events waited for the reference data), plus the days of transformers whose rating changed."""
    now = now or utc_now()
    warehouse.ensure_timezone(settings.timezone)
    counts = {}
    with warehouse.transaction() as conn:
        old = {name: warehouse.read(spec, conn=conn) for name, spec in REFERENCE_TABLES.items()}
        for name, spec in REFERENCE_TABLES.items():
            warehouse.delete(conn, spec, sa.true())
            counts[spec.name] = warehouse.insert(conn, spec, frames[name])
        if version is not None:
            warehouse.put_setting(conn, REFERENCE_VERSION_KEY, version)
        new = {name: warehouse.read(spec, conn=conn) for name, spec in REFERENCE_TABLES.items()}
        affected = _with_events(warehouse, conn, enrich.meters_affected_by_change(old, new))
        meters_queued = _queue_meters(
            warehouse, conn, affected | set(_waiting_meters(warehouse, conn, new["meters"])), now
        )
        days = _days_of_rerated_transformers(warehouse, conn, old["transformers"], new["transformers"])
        queue_load_days(warehouse, conn, days, now)
    return ReferenceReport(rows=counts, meters_queued=meters_queued, days_queued=len(days))


def loaded_reference_version(warehouse: Warehouse) -> str | None:
    """The version (SHA-256 of the extracts) of the reference data in the warehouse, if any."""
    return warehouse.get_setting(REFERENCE_VERSION_KEY)


def reattribute_pending_meters(
    warehouse: Warehouse, settings: PipelineSettings, *, chunk_meters: int = 2000, now: datetime | None = None
) -> int:
    """Attribute again every event of the meters queued at stage `attribute`, a chunk of meters per
    transaction (memory follows the chunk); the meters move on to stage `pair`. Returns the number
    of events whose attribution changed."""
    now = now or utc_now()
    warehouse.ensure_timezone(settings.timezone)
    changed_total = 0
    # Nothing queued, nothing locked: every ingest step asks, and the exclusive lock below would make
    # it wait for any daily load in flight. Only a reference load (itself exclusive) queues meters, so
    # one it commits after this read is found by the next step.
    if not pending_meters(warehouse, "attribute", limit=1):
        return changed_total
    while True:
        with warehouse.transaction() as conn:
            chunk = pending_meters(warehouse, "attribute", limit=chunk_meters, conn=conn)
            if not chunk:
                return changed_total
            stored = warehouse.read_id_ranges(
                EV_CHARGING_EVENTS, "message_id", *events.meter_prefixes(chunk), conn=conn
            )
            again = EV_CHARGING_EVENTS.conform(
                enrich.attribute(stored, reference_for(warehouse, stored, conn=conn), date_col="message_date")
            )
            changed = again.join(stored, on=again.columns, how="anti", nulls_equal=True)
            if not changed.is_empty():
                warehouse.delete_in(conn, EV_CHARGING_EVENTS, "message_id", changed["message_id"])
                warehouse.insert(conn, EV_CHARGING_EVENTS, changed)
            m = warehouse.table(EV_METERS_PENDING)
            for part in chunked(chunk, IN_CHUNK):
                conn.execute(m.update().where(m.c.meter_id.in_(part)).values(stage="pair"))
            changed_total += changed.height


def _with_events(warehouse: Warehouse, conn, meters: list[str]) -> set[str]:
    """Those of `meters` that have events (a first load, or new meters, need no re-attribution):
    a seek per meter on the primary key (meter|type|time)."""
    meter_of = dict(zip(events.meter_id_prefixes(meters), meters, strict=True))
    return {meter_of[p] for p in warehouse.prefixes_with_rows(conn, EV_CHARGING_EVENTS, "message_id", meter_of)}


def _waiting_meters(warehouse: Warehouse, conn, meters: pl.DataFrame) -> list[str]:
    """Meters with events accepted before the reference data knew them, that it knows now."""
    ev = warehouse.table(EV_CHARGING_EVENTS).c
    waiting = warehouse.scalars(
        sa.select(ev.meter_id).where(ev.enrichment_status == "meter_unknown").distinct(), conn=conn
    )
    known = set(meters["meter_id"].to_list())
    return [m for m in waiting if m in known]


def _queue_meters(warehouse: Warehouse, conn, meters: set[str], now: datetime) -> int:
    if not meters:
        return 0
    ordered = sorted(meters)
    warehouse.delete_in(conn, EV_METERS_PENDING, "meter_id", ordered)
    warehouse.insert(
        conn, EV_METERS_PENDING, pl.DataFrame({"meter_id": ordered, "stage": "attribute", "queued_at": now})
    )
    return len(ordered)


def _days_of_rerated_transformers(warehouse: Warehouse, conn, old: pl.DataFrame, new: pl.DataFrame) -> list:
    """Days with load on transformers whose rating (or aging override: base_load_scale,
    ambient_c) changed: their utilization and aging must be recomputed even though no session moved."""
    ratings = ["transformer_id", "kva_rating", "base_load_scale", "ambient_c", "effective_from", "effective_to"]
    changed = pl.concat(
        [
            old.select(ratings).join(new.select(ratings), on=ratings, how="anti", nulls_equal=True),
            new.select(ratings).join(old.select(ratings), on=ratings, how="anti", nulls_equal=True),
        ]
    )["transformer_id"].unique()
    if changed.is_empty():
        return []
    t = warehouse.table(TRANSFORMER_DAILY_LOAD).c
    days = set()
    for part in chunked(sorted(changed.to_list()), IN_CHUNK):
        days.update(warehouse.scalars(sa.select(t.load_date).where(t.transformer_id.in_(part)).distinct(), conn=conn))
    return sorted(days)
