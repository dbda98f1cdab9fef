"""Reference area: the utility's extracts -> ref_* tables, and the schedule that reloads them."""

import hashlib
from pathlib import Path

import dagster as dg

from ev_assets import pipeline
from ev_assets.core.reference_extracts import read_reference_extracts
from ev_assets.defs.metadata import table_asset_spec, table_metadata
from ev_assets.defs.resources import PipelineConfig, ReferenceResource, WarehouseResource
from ev_assets.defs.runs import record_worker, retry_when_transient
from ev_assets.settings import Settings
from ev_assets.warehouse.tables import REFERENCE_TABLES

REFERENCE_VERSION = "ev/reference_sha256"


def reference_version(directory: Path) -> str | None:
    """SHA-256 over the reference CSVs (None when the folder holds none): the feed sensor reloads
    them when this differs from the version the warehouse records."""
    if not any(directory.glob("*.csv")):
        return None
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.csv")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dg.multi_asset(
    specs=[table_asset_spec(spec, "reference") for spec in REFERENCE_TABLES.values()],
)
def reference_tables(
    context: dg.AssetExecutionContext,
    reference: ReferenceResource,
    warehouse: WarehouseResource,
    pipeline_config: PipelineConfig,
):
    """Load the utility's reference extracts (CSV) into the ref_* tables, replacing them, and queue
    the meters whose attribution the change can alter (corrections dated in the past included):
    ev_charging_events attributes their events again, ev_charging_sessions re-pairs them."""
    version = reference_version(reference.path)
    if version is None:
        raise dg.Failure(
            f"no reference extracts (*.csv) in {reference.path}: put the utility's extracts there "
            "or set EV_REFERENCE_DIR (README, 'Reference data')"
        )
    frames = read_reference_extracts(reference.path)
    record_worker(context)
    with retry_when_transient(context):
        report = pipeline.load_reference(warehouse.get(), frames, pipeline_config.settings(), version=version)
    context.log.info(
        f"reference loaded: {report.rows}; {report.meters_queued} meters queued for re-attribution, "
        f"{report.days_queued} days for their daily load (rating changes)"
    )
    for name, spec in REFERENCE_TABLES.items():
        extra = {REFERENCE_VERSION: version}
        if name == "meters":
            extra.update(meters_queued=report.meters_queued, days_queued=report.days_queued)
        yield dg.MaterializeResult(asset_key=spec.name, metadata=table_metadata(spec, report.rows[spec.name], **extra))


# The reference load and its consequences, through the declared graph: the events of the queued
# meters are attributed again, then their sessions re-paired (the days they change are queued for
# the daily-load sensor).
reference_job = dg.define_asset_job(
    "reference_job",
    selection=dg.AssetSelection.assets(reference_tables)
    | dg.AssetSelection.assets("ev_charging_events", "ev_charging_sessions"),
    description=(
        "Reload the reference extracts, attribute again the events of the meters the change affects, re-pair "
        "their sessions."
    ),
)


@dg.schedule(
    cron_schedule="0 1 * * *",
    job=reference_job,
    execution_timezone=Settings().timezone,
    description="Nightly reload of the reference extracts (start it when the extracts arrive nightly).",
)
def nightly_reference(_context: dg.ScheduleEvaluationContext):
    return dg.RunRequest()
