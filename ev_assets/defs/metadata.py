"""What every asset reports: table metadata, touched days, markdown tables, schema errors."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pandera.polars as pa
import polars as pl

from ev_assets.warehouse.tables import TableSpec

OWNERS = ["team:ev-data-platform"]
WAREHOUSE_POOL = "ev_warehouse"
BATCH_TAG = "ev/batch_id"
TOUCHED_DATES = "ev/touched_dates"


def table_metadata(spec: TableSpec, rows: int, **extra) -> dict:
    return {
        "dagster/row_count": rows,
        "dagster/column_schema": spec.dagster_schema(),
        "dagster/table_name": spec.name,
        **extra,
    }


def running_row_count(context: dg.AssetExecutionContext, spec: TableSpec, wh, *, added: int) -> int:
    """The table's row count: the last materialization's plus this run's net change. Counting the
    whole table each micro-batch would make its cost grow with history; the first
    materialization counts once. `ev-awareness status` always counts exactly."""
    latest = context.instance.get_latest_materialization_event(dg.AssetKey(spec.name))
    previous = latest.asset_materialization.metadata.get("dagster/row_count") if latest and latest.asset_materialization else None
    return previous.value + added if previous is not None else wh.count(spec)


def touched_dates_metadata(days: list[date]) -> dg.MetadataValue:
    return dg.MetadataValue.json([d.isoformat() for d in days])


def touched_dates_of(metadata: dict) -> list[date]:
    """The load days a materialization says it changed (none when it says nothing)."""
    entry = metadata.get(TOUCHED_DATES)
    return [date.fromisoformat(d) for d in entry.value] if entry is not None else []


def table_asset_spec(spec: TableSpec, group: str, deps: list | None = None) -> dg.AssetSpec:
    """The asset of a warehouse table, described from the table's declaration."""
    return dg.AssetSpec(
        spec.name,
        description=spec.description,
        group_name=group,
        owners=OWNERS,
        kinds={"polars", "sqlalchemy"},
        deps=deps or [],
        metadata={"dagster/column_schema": spec.dagster_schema(), "dagster/table_name": spec.name},
    )


def markdown_table(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, *rows])


def schema_errors(spec: TableSpec, frame: pl.DataFrame) -> str | None:
    try:
        spec.pandera_schema().validate(frame, lazy=True)
        return None
    except pa.errors.SchemaErrors as errors:
        return str(errors.failure_cases.head(20))


