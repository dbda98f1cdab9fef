"""Reference step: replace the reference tables, then enrich the events that waited for them."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import sqlalchemy as sa

from ev_assets.core import enrich
from ev_assets.pipeline.config import PipelineSettings
from ev_assets.pipeline.ingest import reference_for
from ev_assets.pipeline.sessions import SessionsReport, repair_sessions_around
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, REFERENCE_TABLES

REFERENCE_VERSION_KEY = "reference_sha256"


def load_reference(
    warehouse: Warehouse,
    frames: dict[str, pl.DataFrame],
    settings: PipelineSettings,
    *,
    version: str | None = None,
    now: datetime | None = None,
) -> tuple[dict[str, int], SessionsReport]:
    """Replace the reference tables (recording the extracts' `version`), then enrich the events
    that were waiting for them (meters the reference data did not know yet) and re-pair their
    sessions."""
    counts = {}
    with warehouse.transaction() as conn:
        for name, spec in REFERENCE_TABLES.items():
            warehouse.delete(conn, spec, sa.true())
            counts[spec.name] = warehouse.insert(conn, spec, frames[name])
        if version is not None:
            warehouse.put_setting(conn, REFERENCE_VERSION_KEY, version)
    return counts, reenrich_waiting_events(warehouse, settings, now=now)


def loaded_reference_version(warehouse: Warehouse) -> str | None:
    """The version (SHA-256 of the extracts) of the reference data in the warehouse, if any."""
    return warehouse.get_setting(REFERENCE_VERSION_KEY)


def reenrich_waiting_events(
    warehouse: Warehouse, settings: PipelineSettings, *, now: datetime | None = None
) -> SessionsReport:
    ev = warehouse.table(EV_CHARGING_EVENTS).c
    with warehouse.transaction() as conn:  # the events read decide the events rewritten: under the lock
        waiting = warehouse.read(EV_CHARGING_EVENTS, ev.enrichment_status == "meter_unknown", conn=conn)
        if waiting.is_empty():
            return SessionsReport()
        enriched = EV_CHARGING_EVENTS.conform(
            enrich.attribute(waiting, reference_for(warehouse, waiting, conn=conn), date_col="message_date")
        ).filter(pl.col("enrichment_status") == "enriched")
        if enriched.is_empty():
            return SessionsReport()
        warehouse.delete_in(conn, EV_CHARGING_EVENTS, "message_id", enriched["message_id"])
        warehouse.insert(conn, EV_CHARGING_EVENTS, enriched)
    return repair_sessions_around(warehouse, enriched, settings, now=now)
