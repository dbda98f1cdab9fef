"""The asset graph: reference tables -> ev_charging_events -> ev_charging_sessions -> daily load.

Thin: each asset reads its inputs through the warehouse resource, calls a pipeline step (pure
stages + warehouse), and reports metadata and checks. No transformation logic lives here.
"""


import hashlib
from datetime import date
from pathlib import Path

import dagster as dg
import pandera.polars as pa
import polars as pl

from ev_assets import pipeline, settings
from ev_assets.resources import PipelineConfig, ReferenceResource, WarehouseResource
from ev_assets.tables import (
    EV_CHARGING_EVENTS,
    EV_CHARGING_SESSIONS,
    REFERENCE_TABLES,
    TableSpec,
)
from ev_assets.utility import read_utility

OWNERS = ["team:ev-data-platform"]
WAREHOUSE_POOL = "ev_warehouse"
BATCH_TAG = "ev/batch_id"
TOUCHED_DATES = "ev/touched_dates"
REFERENCE_VERSION = "ev/reference_sha256"


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


# --- reference ---------------------------------------------------------------------------------


def reference_version(directory: Path) -> str:
    """SHA-256 over the reference CSVs: the run command reloads them only when this changes."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.csv")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


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


@dg.multi_asset(
    specs=[table_asset_spec(spec, "reference") for spec in REFERENCE_TABLES.values()],
    pool=WAREHOUSE_POOL,
)
def reference_tables(
    context: dg.AssetExecutionContext,
    reference: ReferenceResource,
    warehouse: WarehouseResource,
    pipeline_config: PipelineConfig,
):
    """Load the utility's reference extracts (CSV) into the ref_* tables, replacing them, then
    enrich the accepted events that were waiting for meters the extracts did not know yet."""
    frames = read_utility(reference.path)
    counts, repaired = pipeline.load_reference(warehouse.get(), frames, pipeline_config.settings())
    version = reference_version(reference.path)
    context.log.info(f"reference loaded: {counts}; sessions re-paired after enrichment: {repaired.sessions_written}")
    for name, spec in REFERENCE_TABLES.items():
        extra = {REFERENCE_VERSION: version}
        if name == "meters":
            extra[TOUCHED_DATES] = touched_dates_metadata(repaired.touched_dates)
            extra["events_enriched_late"] = repaired.sessions_written
        yield dg.MaterializeResult(asset_key=spec.name, metadata=table_metadata(spec, counts[spec.name], **extra))


# --- ingest ------------------------------------------------------------------------------------


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
    schema_errors = _schema_errors(EV_CHARGING_EVENTS, batch_rows)
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
                passed=schema_errors is None,
                metadata={"rows_checked": batch_rows.height, "errors": schema_errors or ""},
            ),
            dg.AssetCheckResult(
                check_name="rejection_rate",
                passed=report.rejection_rate <= threshold,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"rejection_rate": report.rejection_rate, "threshold": threshold},
            ),
        ],
    )


def markdown_table(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, *rows])


def _schema_errors(spec: TableSpec, frame: pl.DataFrame) -> str | None:
    try:
        spec.pandera_schema().validate(frame, lazy=True)
        return None
    except pa.errors.SchemaErrors as errors:
        return str(errors.failure_cases.head(20))


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
    schema_errors = _schema_errors(EV_CHARGING_SESSIONS, report.written)
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
                passed=schema_errors is None,
                metadata={"errors": schema_errors or ""},
            ),
            dg.AssetCheckResult(
                check_name="duration_agreement",
                passed=agreement["share"] >= 0.9,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={**agreement, "unit": settings_.bounds.duration_unit},
            ),
        ],
    )


# --- planning load -----------------------------------------------------------------------------

DAILY_PARTITIONS = dg.DailyPartitionsDefinition(
    start_date=settings.PARTITIONS_START_DATE,
    timezone=settings.timezone(),
    end_offset=1,  # today's partition exists, so the load of the day in progress shows up
)
LOAD_SPECS = pipeline.DAILY_LOAD_TABLES


@dg.multi_asset(
    specs=[table_asset_spec(spec, "planning", deps=[ev_charging_sessions]) for spec in LOAD_SPECS.values()],
    partitions_def=DAILY_PARTITIONS,
    # A backfill of a year is one run over the range, not 365 runs.
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "energy_balances_across_levels",
            asset="substation_daily_load",
            description="Per day, the kWh of transformers (with a known feeder) add up to the feeders', and the feeders' (with a known substation) to the substations'. Catches attribution that loses or doubles load.",
        )
    ],
)
def daily_load(context: dg.AssetExecutionContext, warehouse: WarehouseResource, pipeline_config: PipelineConfig):
    """Per transformer, feeder and substation and local day: sessions, EVs, kWh and the 15-minute
    coincident peak kW. Each partition (or range) is replaced in one transaction."""
    key_range = context.partition_key_range
    first, last = date.fromisoformat(key_range.start), date.fromisoformat(key_range.end)
    report = pipeline.update_daily_load(warehouse.get(), pipeline_config.settings(), first, last)
    for level, spec in LOAD_SPECS.items():
        frame = report.frames[level]
        extra = {"first_day": first.isoformat(), "last_day": last.isoformat()}
        if level == "transformer" and frame.height:
            top = frame.sort("peak_kw", descending=True).head(5).select("transformer_id", "load_date", "peak_kw", "utilization")
            extra["busiest"] = dg.MetadataValue.md(markdown_table(top))
        yield dg.MaterializeResult(asset_key=spec.name, metadata=table_metadata(spec, report.rows[level], **extra))
    balance = load_balance(report.frames)
    yield dg.AssetCheckResult(
        asset_key="substation_daily_load",
        check_name="energy_balances_across_levels",
        passed=balance["largest_gap_kwh"] <= 1e-6 * max(1.0, balance["substation_kwh"]),
        metadata=balance,
    )


def load_balance(frames: dict[str, pl.DataFrame]) -> dict[str, float]:
    """kWh per level, each counted over the rows attributed to the level above."""
    transformer = frames["transformer"].filter(pl.col("feeder_id").is_not_null())["energy_kwh"].sum()
    feeder_all = frames["feeder"]["energy_kwh"].sum()
    feeder = frames["feeder"].filter(pl.col("substation_id").is_not_null())["energy_kwh"].sum()
    substation = frames["substation"]["energy_kwh"].sum()
    return {
        "transformer_kwh": float(transformer),
        "feeder_kwh": float(feeder_all),
        "substation_kwh": float(substation),
        "largest_gap_kwh": float(max(abs(transformer - feeder_all), abs(feeder - substation))),
    }


ALL_ASSETS = [reference_tables, ev_charging_events, ev_charging_sessions, daily_load]
