"""Planning area: daily transformer, feeder and substation load, its sensor, schedule and backfills."""


import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl

from ev_assets import pipeline, settings
from ev_assets.core.batching import contiguous_spans
from ev_assets.defs.ingest import ev_charging_sessions
from ev_assets.defs.metadata import WAREHOUSE_POOL, markdown_table, table_asset_spec, table_metadata, touched_dates_of
from ev_assets.defs.resources import PipelineConfig, WarehouseResource
from ev_assets.warehouse.tables import REFERENCE_TABLES

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


daily_load_job = dg.define_asset_job(
    "daily_load_job",
    selection=dg.AssetSelection.assets(daily_load),
    description="Daily transformer, feeder and substation load for a day or a range of days.",
)

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def daily_load_run_requests(days: list[date], key_prefix: str) -> list[dg.RunRequest]:
    """One run per contiguous span of days: a range run over the daily partitions."""
    return [
        dg.RunRequest(
            run_key=f"{key_prefix}:{first.isoformat()}..{last.isoformat()}",
            tags={RANGE_START: first.isoformat(), RANGE_END: last.isoformat()},
        )
        for first, last in contiguous_spans(days)
    ]


def clip_to_partitions(days: list[date]) -> list[date]:
    first = date.fromisoformat(settings.PARTITIONS_START_DATE)
    last = datetime.now(ZoneInfo(settings.timezone())).date() + timedelta(days=1)
    return [d for d in days if first <= d <= last]


# Materializations whose metadata lists the load days they changed.
TOUCHING_ASSETS = [ev_charging_sessions.key, dg.AssetKey(REFERENCE_TABLES["meters"].name)]


def touched_days_since(instance: dg.DagsterInstance, after_storage_id: int | None) -> tuple[list[date], int | None]:
    days: set[date] = set()
    newest = after_storage_id
    for key in TOUCHING_ASSETS:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after_storage_id), limit=10_000, ascending=True
        )
        for record in result.records:
            newest = max(newest or 0, record.storage_id)
            if record.asset_materialization:
                days.update(touched_dates_of(record.asset_materialization.metadata))
    return sorted(days), newest


@dg.sensor(
    job=daily_load_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests the daily-load partitions that new sessions touched, late days included.",
)
def daily_load_sensor(context: dg.SensorEvaluationContext):
    state = json.loads(context.cursor) if context.cursor else {}
    days, newest = touched_days_since(context.instance, state.get("storage_id"))
    cursor = json.dumps({"storage_id": newest})
    days = clip_to_partitions(days)
    if not days:
        return dg.SensorResult(skip_reason="no session changes since the last evaluation", cursor=cursor)
    return dg.SensorResult(run_requests=daily_load_run_requests(days, f"sessions@{newest}"), cursor=cursor)


@dg.schedule(
    cron_schedule="30 2 * * *",
    job=daily_load_job,
    execution_timezone=settings.timezone(),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly: recompute the last three local days, which late end messages may still change.",
)
def nightly_daily_load(context: dg.ScheduleEvaluationContext):
    today = context.scheduled_execution_time.astimezone(ZoneInfo(settings.timezone())).date()
    return daily_load_run_requests([today - timedelta(days=n) for n in (3, 2, 1)], f"nightly:{today}")


