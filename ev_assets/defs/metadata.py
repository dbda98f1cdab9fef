"""What every asset reports: table metadata, touched days, markdown tables, schema errors."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

import dagster as dg
import pandera.polars as pa
import polars as pl
import sqlalchemy as sa

from ev_assets.warehouse.tables import TableSpec

OWNERS = ["team:ev-data-platform"]
BATCH_TAG = "ev/batch_id"
TOUCHED_DATES = "ev/touched_dates"
WORKER_TAG = "ev/worker"
# Step retries for transient database errors: 5 attempts over about a minute (2, 4, 8, 16, 32 s).
TRANSIENT_RETRIES = 5


def utc_day() -> str:
    return datetime.now(UTC).date().isoformat()


# Runs on their way: a request for the same work waits for them.
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def this_worker() -> str:
    """The WORKER_TAG value of this process: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record_worker(context: dg.AssetExecutionContext) -> None:
    """Tag the run with the host and process executing it, so a run left STARTED by a process that
    died (kill -9) can be told from one still working (`ev_assets.defs.operations.fail_dead_runs`)."""
    worker = this_worker()
    if context.run.tags.get(WORKER_TAG) != worker:
        context.instance.add_run_tags(context.run.run_id, {WORKER_TAG: worker})


@contextmanager
def retry_when_transient(context: dg.AssetExecutionContext) -> Iterator[None]:
    """Retry the step when the database was unreachable, locked or read-only for a while (the
    warehouse away, a failover): each step's work is one transaction, so a retry starts clean.
    Other errors fail the step at once; the daemon's run retries own what is left (README)."""
    try:
        yield
    except sa.exc.OperationalError as error:
        wait = 2 ** (context.retry_number + 1)
        context.log.warning(
            (
                f"transient database error, retry {context.retry_number + 1} of {TRANSIENT_RETRIES} in {wait} s: "
                f"{error.orig}"
            )
        )
        raise dg.RetryRequested(max_retries=TRANSIENT_RETRIES, seconds_to_wait=wait) from error


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
