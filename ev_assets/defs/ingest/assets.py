"""The ingest area's assets: ev_charging_events (a micro-batch of landing files, or of quarantined
records on a replay) and ev_charging_sessions, with their checks and run config."""

from typing import Literal

import dagster as dg

from ev_assets import pipeline
from ev_assets.core import feed
from ev_assets.core.batching import BatchSpan, batch_id
from ev_assets.defs.metadata import (
    OWNERS,
    TOUCHED_DATES,
    running_row_count,
    schema_errors,
    table_definition_metadata,
    table_metadata,
    touched_dates_metadata,
)
from ev_assets.defs.partitions import days_outside_partitions, outside_partitions_message
from ev_assets.defs.resources import FeedResource, PipelineConfig, WarehouseResource
from ev_assets.defs.runs import record_worker, retry_when_transient, utc_day
from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, EV_CHARGING_SESSIONS, REFERENCE_TABLES


class IngestBatchConfig(dg.Config):
    """The micro-batch the feed sensor named: its id (the run key) and where its files stand in
    the landing folder (core.batching.BatchSpan). Without a batch (a reference_job run, a
    Materialize click) the step only attributes again the events of the meters a reference load
    queued.

    Why a span and not the files' paths (up to EV_MAX_FILES_PER_BATCH of them, which had to be
    typed Any to keep Dagster from checking each one, 0.24 s per config build for 8,836 paths): a
    run's config is built several times, shown in the UI and stored with the run. Why not a
    manifest table either: the sensor that plans a batch must write nothing (a tick is a read),
    and the step cannot write the list it has not been given. The span is a few typed fields the
    step re-derives the files from (the landing files between its ends the file ledger does not
    hold), and the batch id, a digest of those files' names and content, tells whether they are
    the planned ones (BatchSpan says why any difference is harmless). After the commit the file
    ledger (ev_feed_files) is the batch's manifest.

    A replay batch (`ev-awareness rejected replay`) names quarantined records instead of files:
    `replay_rejection_ids`, with their stored raw records, or with corrected ones from
    `replay_corrected_file` (an export whose records keep their `_rejection_id`). A replay is an
    operator's rare selection, so its ids are typed as what they are.
    """

    batch_id: str | None = None
    first_arrived_ns: int = 0
    first_file: str = ""
    last_arrived_ns: int = 0
    last_file: str = ""
    file_count: int = 0
    replay_rejection_ids: list[str] = []
    replay_corrected_file: str | None = None

    @property
    def span(self) -> BatchSpan:
        return BatchSpan(self.first_arrived_ns, self.first_file, self.last_arrived_ns, self.last_file, self.file_count)


@dg.asset(
    description=EV_CHARGING_EVENTS.description,
    metadata=table_definition_metadata(EV_CHARGING_EVENTS),
    group_name="ingest",
    owners=OWNERS,
    kinds={"polars", "pandera", "sqlalchemy"},
    deps=[spec.name for spec in REFERENCE_TABLES.values()],
    check_specs=[
        dg.AssetCheckSpec(
            "batch_reconciles",
            asset="ev_charging_events",
            blocking=True,
            description=(
                "records read = accepted + duplicates + rejected, and files read = parsed + quarantined + "
                "already read. Verified inside the batch's transaction before it commits (a batch that does not "
                "hold is rolled back: BatchRejected fails the step and nothing reaches the tables); reported "
                "here, and blocking as a second guard."
            ),
        ),
        dg.AssetCheckSpec(
            "schema_conforms",
            asset="ev_charging_events",
            blocking=True,
            description=(
                "The batch's rows in the table conform to its pandera schema (types, nullability, ranges, unique "
                "message_id). The rows the step inserts are validated inside the batch's transaction, before it "
                "commits, like batch_reconciles; here the table's rows under the batch id are counted: when they "
                "are exactly the rows validated, that validation is reported; any other count (a re-executed "
                "batch, a row written under the batch by something else) reads the batch's stored rows back and "
                "validates them."
            ),
        ),
        dg.AssetCheckSpec(
            "rejection_rate",
            asset="ev_charging_events",
            description="Share of the batch's records quarantined, against EV_REJECTION_RATE_WARN (warning).",
        ),
        dg.AssetCheckSpec(
            "reference_loaded",
            asset="ev_charging_events",
            description=(
                "The reference data is loaded and the batch's meters are known to it (warning: unknown meters "
                "are accepted as meter_unknown and enriched once the reference data arrives)."
            ),
        ),
    ],
)
def ev_charging_events(
    context: dg.AssetExecutionContext,
    config: IngestBatchConfig,
    warehouse: WarehouseResource,
    feed_landing: FeedResource,
    pipeline_config: PipelineConfig,
):
    """Every accepted agent message, once. Reads the batch's landing files, validates every record
    against the feed contract (pandera), quarantines what fails with its reasons, drops duplicates
    and enriches the rest with the reference data as of the message date."""
    wh = warehouse.get()
    run_id = context.run.run_id
    settings_ = pipeline_config.settings()
    record_worker(context)
    # The whole step, its reads after the commit included: the database lost between the commit
    # and the check's read must be retried like a lost transaction (the retry finds the batch
    # committed and writes nothing).
    with retry_when_transient(context):
        archived, as_planned = 0, True
        if config.batch_id is None:
            report = pipeline.IngestReport(batch_id="")
        elif config.replay_rejection_ids:
            replays = pipeline.replay_selection(wh, config.replay_rejection_ids, config.replay_corrected_file)
            report = pipeline.replay_rejected(wh, settings_, replays, config.batch_id, run_id=run_id)
        else:
            landing = feed.list_landing(feed_landing.path)
            files, committed_in_span, as_planned = batch_files(context, config, landing, wh)
            report = pipeline.ingest_batch(wh, config.batch_id, [f.path for f in files], settings_, run_id=run_id)
            # Committed: the batch's files leave the landing folder, which then holds only what is
            # still to read; with them, files an earlier run committed and died before moving (a
            # crash between a commit and this line is harmless: the ledger holds them, planning
            # skips them, and the next batch's step or `ev-awareness run` moves them). Leftovers
            # are looked for before the span only: what lies after it is later batches' (not
            # committed yet, as a rule), and a backlog's ledger lookup per step would grow with it.
            day = utc_day()
            archived = feed.archive_files([f.path for f in (*files, *committed_in_span)], feed_landing.path, day)
            first = (config.first_arrived_ns, config.first_file)
            before = [f for f in landing if f.position < first]
            archived += pipeline.archive_committed(wh, feed_landing.path, day, before)
        # Meters a reference load queued (a correction may reach back in time): their events again.
        reattributed = pipeline.reattribute_pending_meters(
            wh, settings_, chunk_meters=pipeline_config.resolved().rebuild_chunk_meters
        )
        rows_checked, verified, errors = stored_batch_conforms(wh, config.batch_id or "", report.accepted)
        reference_version = pipeline.loaded_reference_version(wh)
        # A batch an earlier attempt committed may have no materialization to count on from: the
        # table is counted (once, in that rare case).
        rows = (
            wh.count(EV_CHARGING_EVENTS)
            if report.committed_before
            else running_row_count(context, EV_CHARGING_EVENTS, wh, added=report.accepted)
        )
    threshold = pipeline_config.resolved().rejection_rate_warn
    counts = report.counts()
    unknown = report.enrichment.get("meter_unknown", 0)
    if reference_version is None:
        context.log.warning("no reference data is loaded: events are accepted as meter_unknown (EV_REFERENCE_DIR)")
    return dg.MaterializeResult(
        metadata=table_metadata(
            EV_CHARGING_EVENTS,
            rows,
            batch_id=config.batch_id or "",
            files_archived=archived,
            files_as_planned=as_planned,
            events_reattributed=reattributed,
            **counts,
            conflicts=report.conflicts,
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
                metadata={"rows_checked": rows_checked, "verified": verified, "errors": errors or ""},
            ),
            dg.AssetCheckResult(
                check_name="rejection_rate",
                passed=report.rejection_rate <= threshold,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"rejection_rate": report.rejection_rate, "threshold": threshold},
            ),
            dg.AssetCheckResult(
                check_name="reference_loaded",
                passed=reference_version is not None and unknown == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"reference_sha256": reference_version or "none loaded", "events_meter_unknown": unknown},
            ),
        ],
    )


def batch_files(
    context: dg.AssetExecutionContext, config: IngestBatchConfig, landing: list[feed.FeedFile], wh
) -> tuple[list[feed.FeedFile], list[feed.FeedFile], bool]:
    """The batch's files re-derived from its span in the landing folder (those the file ledger does
    not hold, as the sensor planned them), the span's files the ledger holds (committed: to
    archive), and whether the first are the planned ones. Another batch id than the planned one is
    said, not fatal: the difference is files another batch committed meanwhile, or one landed
    inside the span (BatchSpan)."""
    files, committed = pipeline.split_committed(wh, config.span.select(landing))
    derived = batch_id([(f.name, feed.file_sha256(f.path)) for f in files]) if files else "no files"
    if derived != config.batch_id:
        context.log.warning(
            f"batch {config.batch_id} ({config.file_count} files planned) now holds {len(files)} files not read "
            f"yet ({derived}): the others were committed by another batch meanwhile"
        )
    return files, committed, derived == config.batch_id


def stored_batch_conforms(wh, batch_id: str, inserted: int) -> tuple[int, str, str | None]:
    """schema_conforms of a batch's rows in the event table: (rows checked, how, errors or None).

    The `inserted` rows this step wrote were validated against the table's pandera schema inside
    the batch's transaction, before the commit (`ingest_batch` / `replay_rejected`: a failure rolls
    the batch back). When the table holds exactly that many rows under the batch id, they are those
    rows (the insert is all or nothing, and the batch id is the run's own), and reading them back
    would validate the same frame again (a month in one batch: 100,000 rows read for nothing). Any
    other count means rows this step did not validate: they are all read back and validated."""
    batch = wh.column(EV_CHARGING_EVENTS, "batch_id") == batch_id
    stored = wh.count(EV_CHARGING_EVENTS, batch)
    if stored == inserted:
        return stored, "before commit, the rows inserted (the table holds exactly those under the batch id)", None
    rows = wh.read(EV_CHARGING_EVENTS, batch)
    return (
        rows.height,
        f"stored rows read back ({stored} under the batch id, {inserted} inserted by this step)",
        schema_errors(EV_CHARGING_EVENTS, rows),
    )


# --- sessions ----------------------------------------------------------------------------------


class SessionsConfig(dg.Config):
    """What a sessions run does. `pending` (the default, and what every ingest run does): pair the
    committed batches not paired yet, which touches only their meters. `rebuild`: re-pair every
    meter from its events, EV_REBUILD_CHUNK_METERS meters per transaction (bounded memory)."""

    mode: Literal["pending", "rebuild"] = "pending"


@dg.asset(
    description=EV_CHARGING_SESSIONS.description,
    metadata=table_definition_metadata(EV_CHARGING_SESSIONS),
    group_name="sessions",
    owners=OWNERS,
    kinds={"polars", "sqlalchemy"},
    deps=[ev_charging_events],
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
            description=(
                "Share of complete sessions whose reported ChargeDuration agrees with end - start in the "
                "configured unit (EV_DURATION_UNIT). Measured, not assumed (DOMAIN.md); warns below 90 %."
            ),
        ),
        dg.AssetCheckSpec(
            "flagged_share",
            asset="ev_charging_sessions",
            description=(
                "Share of the complete sessions written that carry quality flags (impossible average power, "
                "overlaps, duration mismatch), against EV_FLAGGED_SHARE_WARN (warning). Flagged load is kept "
                "apart in the daily load tables."
            ),
        ),
        dg.AssetCheckSpec(
            "load_days_within_partitions",
            asset="ev_charging_sessions",
            description=(
                "Every local day whose load the sessions change lies within the daily partitions "
                "(EV_PARTITIONS_START .. tomorrow). A day outside them would get no daily load: this check fails "
                "and names the days."
            ),
        ),
    ],
)
def ev_charging_sessions(
    context: dg.AssetExecutionContext,
    config: SessionsConfig,
    warehouse: WarehouseResource,
    pipeline_config: PipelineConfig,
):
    """Charging sessions paired from start and end messages per meter. Pairs the committed batches
    not paired yet (whichever run ingested them, even one that died), or rebuilds all sessions."""
    wh = warehouse.get()
    resolved = pipeline_config.resolved()
    settings_ = pipeline_config.settings()
    record_worker(context)
    with retry_when_transient(context):
        if config.mode == "rebuild":
            report = pipeline.rebuild_sessions(wh, settings_, chunk_meters=resolved.rebuild_chunk_meters)
        else:
            report = pipeline.pair_pending_batches(wh, settings_)
            # Meters whose events a reference correction attributed again: all their sessions.
            report = report.merged(
                pipeline.repair_reattributed_meters(wh, settings_, chunk_meters=resolved.rebuild_chunk_meters)
            )
    errors = schema_errors(EV_CHARGING_SESSIONS, report.written)
    agreement = report.duration_agreement or {"sessions": 0, "agreeing": 0, "share": 1.0}
    flagged = flagged_share(report.written)
    outside = days_outside_partitions(report.touched_dates)
    if outside:
        context.log.error(outside_partitions_message(outside))
    return dg.MaterializeResult(
        metadata=table_metadata(
            EV_CHARGING_SESSIONS,
            wh.count(EV_CHARGING_SESSIONS)
            if config.mode == "rebuild"
            else running_row_count(
                context, EV_CHARGING_SESSIONS, wh, added=report.sessions_written - report.sessions_replaced
            ),
            mode=config.mode,
            batches_paired=dg.MetadataValue.json(report.batches),
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
            dg.AssetCheckResult(
                check_name="flagged_share",
                passed=flagged["share"] <= resolved.flagged_share_warn,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={**flagged, "threshold": resolved.flagged_share_warn},
            ),
            dg.AssetCheckResult(
                check_name="load_days_within_partitions",
                passed=not outside,
                metadata={
                    "days_outside": dg.MetadataValue.json([d.isoformat() for d in outside]),
                    "message": outside_partitions_message(outside) if outside else "",
                },
            ),
        ],
    )


def flagged_share(written) -> dict:
    """Complete sessions written, how many carry quality flags, their share, and the count per flag."""
    complete = written.filter(written["status"] == "complete")
    flags = complete["quality_flags"].drop_nulls()
    per_flag: dict[str, int] = {}
    for codes in flags.to_list():
        for code in codes.split(","):
            per_flag[code] = per_flag.get(code, 0) + 1
    share = flags.len() / complete.height if complete.height else 0.0
    return {
        "sessions": complete.height,
        "flagged": flags.len(),
        "share": share,
        "flags": dg.MetadataValue.json(per_flag),
    }
