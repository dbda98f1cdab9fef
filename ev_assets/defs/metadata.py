"""What every asset reports: table metadata, touched days, markdown tables, schema errors. (How
runs are tagged, retried and told apart lives in `ev_assets.defs.runs`.)"""

from __future__ import annotations

from datetime import date

import dagster as dg
import pandera.polars as pa
import polars as pl

from ev_assets.warehouse.tables import TableSpec

OWNERS = ["team:ev-data-platform"]
TOUCHED_DATES = "ev/touched_dates"


def column_schema(spec: TableSpec) -> dg.TableSchema:
    """The table's columns as Dagster shows them, from its one declaration."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=c.type_name,
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in spec.columns
        ]
    )


def table_definition_metadata(spec: TableSpec) -> dict:
    """What an asset definition shows of its table before any materialization."""
    return {"dagster/column_schema": column_schema(spec), "dagster/table_name": spec.name}


def table_metadata(spec: TableSpec, rows: int, **extra) -> dict:
    return {"dagster/row_count": rows, **table_definition_metadata(spec), **extra}


def running_row_count(context: dg.AssetExecutionContext, spec: TableSpec, wh, *, added: int) -> int:
    """The table's row count: the last materialization's plus this run's net change. Counting the
    whole table each micro-batch would make its cost grow with history; the first
    materialization counts once. `ev-awareness status` always counts exactly."""
    latest = context.instance.get_latest_materialization_event(dg.AssetKey(spec.name))
    previous = (
        latest.asset_materialization.metadata.get("dagster/row_count")
        if latest and latest.asset_materialization
        else None
    )
    return previous.value + added if previous is not None else wh.count(spec)


def touched_dates_metadata(days: list[date]) -> dg.MetadataValue:
    return dg.MetadataValue.json([d.isoformat() for d in days])


def table_asset_spec(spec: TableSpec, group: str, deps: list | None = None) -> dg.AssetSpec:
    """The asset of a warehouse table, described from the table's declaration."""
    return dg.AssetSpec(
        spec.name,
        description=spec.description,
        group_name=group,
        owners=OWNERS,
        kinds={"polars", "sqlalchemy"},
        deps=deps or [],
        metadata=table_definition_metadata(spec),
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


# How many digits a person reads of each kind of figure; anything else a float keeps 3.
ROUNDING = {"kw": 2, "kva": 2, "utilization": 3}


def rounded(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame's floats rounded for reading: kW and kVA to 0.01, utilization to 0.001, the rest to 0.001."""
    digits = lambda name: next((d for part, d in ROUNDING.items() if part in name), 3)  # noqa: E731
    return frame.with_columns(pl.col(c).round(digits(c)) for c, dtype in frame.schema.items() if dtype == pl.Float64)
