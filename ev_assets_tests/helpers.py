"""Helpers shared by the integration tests."""

from __future__ import annotations

import polars as pl

from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import ALL_TABLES

# Columns that record when a row was written, not what it says.
_WRITE_TIMES = {
    "ingested_at",
    "updated_at",
    "read_at",
    "processed_at",
    "quarantined_at",
    "replayed_at",
    "paired_at",
    "queued_at",
}


def snapshot(warehouse: Warehouse, *, ignore_write_times: bool = False) -> dict[str, pl.DataFrame]:
    """Every table's rows, sorted, to compare a warehouse before and after."""
    out = {}
    for spec in ALL_TABLES:
        frame = warehouse.read(spec)
        if ignore_write_times:
            frame = frame.drop([c for c in frame.columns if c in _WRITE_TIMES])
        sortable = [c for c, t in frame.schema.items() if t != pl.Binary]
        out[spec.name] = frame.sort(sortable, nulls_last=True)
    return out


def assert_same_tables(before: dict[str, pl.DataFrame], after: dict[str, pl.DataFrame]) -> None:
    for name, frame in before.items():
        assert frame.equals(after[name]), f"{name} changed"


def complete_inside(truth: pl.DataFrame, first, last) -> pl.DataFrame:
    """Simulated sessions that started and ended inside [first, last] (UTC datetimes)."""
    return truth.filter(pl.col("start_time") >= first, pl.col("end_time") <= last)


def upgraded_warehouse(url: str) -> Warehouse:
    """A warehouse on `url`, upgraded to the code's schema first (`ev-awareness db upgrade`)."""
    from ev_assets.warehouse import migrate

    migrate.upgrade(url)
    return Warehouse(url)
