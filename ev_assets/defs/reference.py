"""Reference area: the utility's extracts -> ref_* tables, and the schedule that reloads them."""


import hashlib
from pathlib import Path

import dagster as dg

from ev_assets import pipeline
from ev_assets.core.reference_extracts import read_reference_extracts
from ev_assets.defs.metadata import (
    TOUCHED_DATES,
    record_worker,
    retry_when_transient,
    table_asset_spec,
    table_metadata,
    touched_dates_metadata,
)
from ev_assets.defs.resources import PipelineConfig, ReferenceResource, WarehouseResource
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
    """Load the utility's reference extracts (CSV) into the ref_* tables, replacing them, then
    enrich the accepted events that were waiting for meters the extracts did not know yet."""
    version = reference_version(reference.path)
    if version is None:
        raise dg.Failure(
            f"no reference extracts (*.csv) in {reference.path}: put the utility's extracts there "
            "or set EV_REFERENCE_DIR (README, 'Reference data')"
        )
    frames = read_reference_extracts(reference.path)
    record_worker(context)
    with retry_when_transient(context):
        counts, repaired = pipeline.load_reference(warehouse.get(), frames, pipeline_config.settings(), version=version)
    context.log.info(f"reference loaded: {counts}; sessions re-paired after enrichment: {repaired.sessions_written}")
    for name, spec in REFERENCE_TABLES.items():
        extra = {REFERENCE_VERSION: version}
        if name == "meters":
            extra[TOUCHED_DATES] = touched_dates_metadata(repaired.touched_dates)
            extra["events_enriched_late"] = repaired.sessions_written
        yield dg.MaterializeResult(asset_key=spec.name, metadata=table_metadata(spec, counts[spec.name], **extra))


reference_job = dg.define_asset_job(
    "reference_job",
    selection=dg.AssetSelection.assets(reference_tables),
    description="Reload the utility's reference extracts and enrich events that waited for them.",
)

@dg.schedule(
    cron_schedule="0 1 * * *",
    job=reference_job,
    execution_timezone=Settings().timezone,
    description="Nightly reload of the reference extracts (start it when the extracts arrive nightly).",
)
def nightly_reference(_context: dg.ScheduleEvaluationContext):
    return dg.RunRequest()

