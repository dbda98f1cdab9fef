"""Ingest area: landing files -> ev_charging_events -> ev_charging_sessions, the feed sensor and its jobs."""


import time
from pathlib import Path

import dagster as dg

from ev_assets import pipeline
from ev_assets.core import feed
from ev_assets.core.batching import Batch, FeedCursor, plan_batches, settled
from ev_assets.defs.metadata import (
    BATCH_TAG,
    OWNERS,
    TOUCHED_DATES,
    WAREHOUSE_POOL,
    running_row_count,
    schema_errors,
    table_metadata,
    touched_dates_metadata,
)
from ev_assets.defs.resources import FeedResource, PipelineConfig, WarehouseResource
from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, EV_CHARGING_SESSIONS, EV_FEED_FILES, REFERENCE_TABLES


class IngestBatchConfig(dg.Config):
    """The micro-batch the feed sensor named: its id (the run key) and its files, in order.

    A replay batch (`ev-awareness rejected replay`) names quarantined records instead of files:
    `replay_rejection_ids`, with their stored raw records, or with corrected ones from
    `replay_corrected_file` (an export whose records keep their `_rejection_id`).
    """

    batch_id: str
    files: list[str] = []
    replay_rejection_ids: list[str] = []
    replay_corrected_file: str | None = None


@dg.asset(
    description=EV_CHARGING_EVENTS.description,
    metadata={"dagster/column_schema": EV_CHARGING_EVENTS.dagster_schema(), "dagster/table_name": EV_CHARGING_EVENTS.name},
    group_name="ingest",
    owners=OWNERS,
    kinds={"polars", "pandera", "sqlalchemy"},
    deps=[spec.name for spec in REFERENCE_TABLES.values()],
    pool=WAREHOUSE_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "batch_reconciles",
            asset="ev_charging_events",
            blocking=True,
            description="records read = accepted + duplicates + rejected, and files read = parsed + quarantined + already read. Blocking: sessions are not paired from a batch that loses records.",
        ),
        dg.AssetCheckSpec(
            "schema_conforms",
            asset="ev_charging_events",
            blocking=True,
            description="The accepted rows conform to the table's pandera schema (types, nullability, ranges, unique message_id).",
        ),
        dg.AssetCheckSpec(
            "rejection_rate",
            asset="ev_charging_events",
            description="Share of the batch's records quarantined, against EV_REJECTION_RATE_WARN (warning).",
        ),
    ],
)
def ev_charging_events(
    context: dg.AssetExecutionContext,
    config: IngestBatchConfig,
    warehouse: WarehouseResource,
    pipeline_config: PipelineConfig,
):
    """Every accepted agent message, once. Reads the batch's landing files, validates every record
    against the feed contract (pandera), quarantines what fails with its reasons, drops duplicates
    and enriches the rest with the reference data as of the message date."""
    wh = warehouse.get()
    run_id = context.run.run_id
    if config.replay_rejection_ids:
        replays = pipeline.replay_selection(wh, config.replay_rejection_ids, config.replay_corrected_file)
        report = pipeline.replay_rejected(wh, pipeline_config.settings(), replays, config.batch_id, run_id=run_id)
    else:
        report = pipeline.ingest_batch(
            wh, config.batch_id, [Path(f) for f in config.files], pipeline_config.settings(), run_id=run_id
        )
    batch_rows = wh.read(EV_CHARGING_EVENTS, wh.column(EV_CHARGING_EVENTS, "batch_id") == config.batch_id)
    errors = schema_errors(EV_CHARGING_EVENTS, batch_rows)
    threshold = pipeline_config.rejection_rate_warn
    counts = report.counts()
    return dg.MaterializeResult(
        metadata=table_metadata(
            EV_CHARGING_EVENTS,
            running_row_count(context, EV_CHARGING_EVENTS, wh, added=report.accepted),
            batch_id=config.batch_id,
            **counts,
            rejection_codes=dg.MetadataValue.json(report.rejection_codes),
            message_types=dg.MetadataValue.json(report.message_types),
            enrichment=dg.MetadataValue.json(report.enrichment),
        ),
        check_results=[
            dg.AssetCheckResult(
                check_name="batch_reconciles",
                passed=report.reconciled,
                metadata=counts,
            ),
            dg.AssetCheckResult(
                check_name="schema_conforms",
                passed=errors is None,
                metadata={"rows_checked": batch_rows.height, "errors": errors or ""},
            ),
            dg.AssetCheckResult(
                check_name="rejection_rate",
                passed=report.rejection_rate <= threshold,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"rejection_rate": report.rejection_rate, "threshold": threshold},
            ),
        ],
    )


# --- sessions ----------------------------------------------------------------------------------


@dg.asset(
    description=EV_CHARGING_SESSIONS.description,
    metadata={"dagster/column_schema": EV_CHARGING_SESSIONS.dagster_schema(), "dagster/table_name": EV_CHARGING_SESSIONS.name},
    group_name="sessions",
    owners=OWNERS,
    kinds={"polars", "sqlalchemy"},
    deps=[ev_charging_events],
    pool=WAREHOUSE_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "schema_conforms",
            asset="ev_charging_sessions",
            blocking=True,
            description="The sessions written conform to the table's pandera schema.",
        ),
        dg.AssetCheckSpec(
            "duration_agreement",
            asset="ev_charging_sessions",
            description="Share of complete sessions whose reported ChargeDuration agrees with end - start in the configured unit (EV_DURATION_UNIT). Measured, not assumed (DOMAIN.md); warns below 90 %.",
        ),
    ],
)
def ev_charging_sessions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, pipeline_config: PipelineConfig
):
    """Charging sessions paired from start and end messages per meter. In a sensor run it re-pairs
    only what the batch can change (tag ev/batch_id); materialized by hand, it re-pairs everything."""
    wh = warehouse.get()
    batch_id = context.run.tags.get(BATCH_TAG)
    settings_ = pipeline_config.settings()
    report = pipeline.update_sessions(wh, settings_, batch_id=batch_id)
    errors = schema_errors(EV_CHARGING_SESSIONS, report.written)
    agreement = report.duration_agreement or {"sessions": 0, "agreeing": 0, "share": 1.0}
    return dg.MaterializeResult(
        metadata=table_metadata(
            EV_CHARGING_SESSIONS,
            running_row_count(context, EV_CHARGING_SESSIONS, wh, added=report.sessions_written - report.sessions_replaced),
            batch_id=batch_id or "all",
            sessions_written=report.sessions_written,
            sessions_replaced=report.sessions_replaced,
            statuses=dg.MetadataValue.json(report.statuses),
            **{TOUCHED_DATES: touched_dates_metadata(report.touched_dates)},
        ),
        check_results=[
            dg.AssetCheckResult(
                check_name="schema_conforms",
                passed=errors is None,
                metadata={"errors": errors or ""},
            ),
            dg.AssetCheckResult(
                check_name="duration_agreement",
                passed=agreement["share"] >= 0.9,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={**agreement, "unit": settings_.bounds.duration_unit},
            ),
        ],
    )


ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(ev_charging_events, ev_charging_sessions),
    description="One micro-batch of landing files: validate, quarantine, deduplicate, enrich, pair.",
)
sessions_job = dg.define_asset_job(
    "sessions_job",
    selection=dg.AssetSelection.assets(ev_charging_sessions),
    description="Re-pair sessions: for one batch (tag ev/batch_id, as after a replay) or, untagged, all of them.",
)
def ingest_run_request(batch: Batch) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=batch.batch_id,
        run_config={"ops": {"ev_charging_events": {"config": {"batch_id": batch.batch_id, "files": batch.paths}}}},
        tags={BATCH_TAG: batch.batch_id, "ev/files": str(len(batch.files)), "ev/messages": str(batch.messages)},
    )


def pending_batches(feed_res: FeedResource, warehouse: WarehouseResource, cursor: FeedCursor | None) -> list[Batch]:
    """Files after the cursor that the file ledger does not hold yet, grouped into batches.

    With a cursor (a sensor tick), only settled files count; without one (a full scan, as the CLI
    does), every file does. A file whose name the ledger holds is pending only if its content
    changed (a re-delivery under the same name); only those files are hashed, so the common case
    reads no bytes here.
    """
    files = feed.list_landing(feed_res.path)
    if cursor is not None:
        files = settled(cursor.after(files), now_ns=time.time_ns(), settle_ns=int(feed_res.settle_seconds * 1e9))
    if not files:
        return []
    ledger = warehouse.get().read_in(EV_FEED_FILES, "file_name", [f.name for f in files])
    known = set(ledger.select("file_name", "file_sha256").iter_rows())
    names = set(ledger["file_name"].to_list())
    todo = [f for f in files if f.name not in names or (f.name, feed.file_sha256(f.path)) not in known]
    return plan_batches(todo, max_files=feed_res.max_files_per_batch, max_messages=feed_res.max_messages_per_batch)


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls EV_FEED_DIR for new payload files; one ingest run per micro-batch.",
)
def ev_feed_sensor(context: dg.SensorEvaluationContext, feed_landing: FeedResource, warehouse: WarehouseResource):
    # No cursor at all (a first tick, or `ev-awareness run`): a full scan, the ledger decides.
    cursor = FeedCursor.from_json(context.cursor) if context.cursor else None
    batches = pending_batches(feed_landing, warehouse, cursor)
    if not batches:
        return dg.SensorResult(skip_reason="no new files in the landing folder", cursor=context.cursor)
    last = batches[-1].files[-1]
    return dg.SensorResult(run_requests=[ingest_run_request(b) for b in batches], cursor=FeedCursor.at(last).to_json())


