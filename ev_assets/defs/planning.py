"""Planning area: daily transformer, feeder and substation load and their 15-minute profiles, its
sensor, schedule and backfills; the premise EV profile and transformer planning queue snapshots, which
follow the daily load (the daily-load sensor asks for them once it has nothing left to load), and
their daily schedules (a safety net).

Which days to recompute is read from the warehouse (ev_load_days_pending: days whose sessions
changed), not from run history: whoever paired the sessions, and whatever died since, the sensor
asks for exactly the days still queued, and a computed day leaves the queue in the transaction that
computed it.
"""

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl

from ev_assets import pipeline
from ev_assets.core.batching import contiguous_spans
from ev_assets.defs import charts
from ev_assets.defs.forecast import forecast_job
from ev_assets.defs.ingest.assets import ev_charging_sessions
from ev_assets.defs.metadata import markdown_table, rounded, table_asset_spec, table_metadata
from ev_assets.defs.partitions import (
    DAILY_PARTITIONS,
    PARTITIONS_TIMEZONE,
    days_outside_partitions,
    days_within_partitions,
    outside_partitions_message,
)
from ev_assets.defs.resources import PipelineConfig, WarehouseResource
from ev_assets.defs.runs import IN_FLIGHT, daily_snapshot_schedule, record_worker, retry_when_transient
from ev_assets.settings import Settings
from ev_assets.warehouse import tables

LOAD_SPECS = pipeline.DAILY_LOAD_TABLES
INTERVAL_SPECS = pipeline.INTERVAL_LOAD_TABLES
MAX_DAYS_PER_RUN = 31
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


@dg.multi_asset(
    specs=[
        table_asset_spec(spec, "planning", deps=[ev_charging_sessions])
        for spec in (*LOAD_SPECS.values(), *INTERVAL_SPECS.values())
    ],
    partitions_def=DAILY_PARTITIONS,
    # A backfill of a year is a dozen range runs, not 365 runs; a month per run keeps each
    # run's write transaction (and the database lock it holds) short.
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_DAYS_PER_RUN),
    check_specs=[
        dg.AssetCheckSpec(
            "energy_balances_across_levels",
            asset="substation_daily_load",
            description=(
                "Per day, the kWh of transformers (with a known feeder) add up to the feeders', and the feeders' "
                "(with a known substation) to the substations'. Catches attribution that loses or doubles load."
            ),
        ),
        dg.AssetCheckSpec(
            "profile_max_equals_peak",
            asset="transformer_interval_load",
            description=(
                "For every transformer-day written, the largest kw of its 15-minute profile (as written) equals "
                "its peak_kw in transformer_daily_load; a day with peak_kw 0 has no profile row."
            ),
        ),
    ],
)
def grid_load_by_day(context: dg.AssetExecutionContext, warehouse: WarehouseResource, pipeline_config: PipelineConfig):
    """Per transformer, feeder and substation and local day: sessions, EVs, kWh and the 15-minute
    coincident peak kW. Each partition (or range) is replaced in one transaction."""
    key_range = context.partition_key_range
    first, last = date.fromisoformat(key_range.start), date.fromisoformat(key_range.end)
    record_worker(context)
    # The check's read too, before anything is yielded: the database lost after the commit retries
    # the step (the range is recomputed and replaced: the same rows) without a materialization
    # reported twice.
    with retry_when_transient(context):
        report = pipeline.update_daily_load(
            warehouse.get(),
            pipeline_config.settings(),
            first,
            last,
            chunk_days=pipeline_config.resolved().load_chunk_days,
        )
        mismatches = pipeline.profile_peak_mismatches(warehouse.get(), first, last)
    span = {"first_day": first.isoformat(), "last_day": last.isoformat()}
    settings = pipeline_config.settings()
    for level, spec in LOAD_SPECS.items():
        frame, busiest = report.frames[level], report.busiest_profiles[level]
        extra = {**span, **planning_pictures(level, frame, busiest, settings.timezone, settings.power_factor)}
        yield dg.MaterializeResult(asset_key=spec.name, metadata=table_metadata(spec, report.rows[level], **extra))
        interval_spec = INTERVAL_SPECS[level]
        extra = {**span}
        if report.top_intervals[level].height:
            extra["top_intervals"] = dg.MetadataValue.md(
                readable_intervals(report.top_intervals[level], settings.timezone)
            )
        yield dg.MaterializeResult(
            asset_key=interval_spec.name, metadata=table_metadata(interval_spec, report.interval_rows[level], **extra)
        )
    yield dg.AssetCheckResult(
        asset_key="transformer_interval_load",
        check_name="profile_max_equals_peak",
        passed=mismatches.is_empty(),
        metadata={
            "transformer_days": report.rows["transformer"],
            "mismatches": mismatches.height,
            **(
                {"first_mismatches": dg.MetadataValue.md(markdown_table(mismatches.head(10)))}
                if mismatches.height
                else {}
            ),
        },
    )
    balance = load_balance(report.frames)
    yield dg.AssetCheckResult(
        asset_key="substation_daily_load",
        check_name="energy_balances_across_levels",
        passed=balance["largest_gap_kwh"] <= 1e-6 * max(1.0, balance["substation_kwh"]),
        metadata=balance,
    )


TOP_ROWS = 5
_TOP_COLUMNS = {
    "transformer": (
        "transformer_id",
        "load_date",
        "peak_kw",
        "peak_kva",
        "kva_rating",
        "utilization",
        "minutes_above_threshold",
        "kwh_above_threshold",
        "hot_spot_max_c",
        "loss_of_life_h",
        "ev_count",
    ),
    "feeder": ("feeder_id", "load_date", "peak_kw", "energy_kwh", "ev_count", "session_count"),
    "substation": ("substation_id", "load_date", "peak_kw", "energy_kwh", "ev_count", "session_count"),
}


def planning_pictures(
    level: str, daily: pl.DataFrame, busiest_profile: pl.DataFrame, tz: str, power_factor: float
) -> dict:
    """What a planner looks at in the UI: the top rows by peak (a markdown table, rounded) and the
    15-minute profile of the most loaded asset-day (`busiest_profile`, LoadReport.busiest_profiles)
    as a chart in local time, against the transformer's rating in kW."""
    if daily.is_empty():
        return {}
    key = LOAD_SPECS[level].primary_key[0]
    top = pipeline.by_peak(daily, key).head(TOP_ROWS).select(_TOP_COLUMNS[level])
    out = {"top_rows": dg.MetadataValue.md(markdown_table(rounded(top)))}
    if busiest_profile.height:
        asset, day, peak = busiest_profile[key][0], busiest_profile["load_date"][0], busiest_profile["kw"].max()
        rating_kw = None
        if "kva_rating" in daily.columns:
            rated = daily.filter((pl.col(key) == asset) & (pl.col("load_date") == day))["kva_rating"]
            rating_kw = float(rated[0]) * power_factor if rated.len() and rated[0] is not None else None
        title = f"{level} {asset} on {day}: 15-minute EV load (peak {peak:,.2f} kW)"
        png = charts.profile_chart_png(busiest_profile, day, tz, title, rating_kw)
        out["busiest_profile"] = dg.MetadataValue.md(f"**{title}**\n\n" + charts.markdown_image(png, title))
    return out


def readable_intervals(intervals: pl.DataFrame, tz: str) -> str:
    """The largest 15-minute intervals as a markdown table: local start times, labelled, rounded."""
    local = f"interval_start ({tz})"
    shown = intervals.drop("updated_at").with_columns(
        pl.col("interval_start").dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d %H:%M").alias(local)
    )
    return markdown_table(rounded(shown.select(local, pl.exclude("interval_start", local))))


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
    selection=dg.AssetSelection.assets(grid_load_by_day),
    description="Daily transformer, feeder and substation load for a day or a range of days.",
)


def daily_load_run_requests(days: list[date], key_suffix: str) -> list[dg.RunRequest]:
    """One range run per contiguous span of days (at most MAX_DAYS_PER_RUN days each)."""
    requests = []
    for first, last in contiguous_spans(days):
        while first <= last:
            end = min(last, first + timedelta(days=MAX_DAYS_PER_RUN - 1))
            requests.append(
                dg.RunRequest(
                    run_key=f"load:{first.isoformat()}..{end.isoformat()}@{key_suffix}",
                    job_name=daily_load_job.name,
                    tags={RANGE_START: first.isoformat(), RANGE_END: end.isoformat()},
                )
            )
            first = end + timedelta(days=1)
    return requests


def pending_load_run_requests(warehouse: WarehouseResource) -> tuple[list[dg.RunRequest], list[date]]:
    """Range runs for the days queued in the warehouse, and the queued days no partition can hold.

    The run key names the span and the latest change queued, so a tick repeats no request while
    its run is on its way, and a day changed again after its run started is asked for again.
    """
    queued = pipeline.pending_load_days(warehouse.get())
    if queued.is_empty():
        return [], []
    days = queued["load_date"].to_list()
    latest = queued["queued_at"].max()
    return daily_load_run_requests(
        days_within_partitions(days), latest.strftime("%Y%m%dT%H%M%S%f")
    ), days_outside_partitions(days)


@dg.schedule(
    cron_schedule="30 2 * * *",
    job=daily_load_job,
    execution_timezone=PARTITIONS_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly: recompute the last three local days (a safety net; late changes are queued as they happen).",
)
def nightly_daily_load(context: dg.ScheduleEvaluationContext):
    today = context.scheduled_execution_time.astimezone(ZoneInfo(PARTITIONS_TIMEZONE)).date()
    return daily_load_run_requests([today - timedelta(days=n) for n in (3, 2, 1)], f"nightly:{today}")


# --- EV adoption by premise: a daily snapshot ----------------------------------------------------

PREMISE_SPECS = (tables.PREMISE_EV_PROFILE, tables.NEW_EVS)


@dg.multi_asset(
    specs=[table_asset_spec(spec, "planning", deps=[ev_charging_sessions]) for spec in PREMISE_SPECS],
)
def premise_ev_profile(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, pipeline_config: PipelineConfig
):
    """premise_ev_profile (one row per premise with trusted sessions: first and last charging day,
    sessions per week, charger level, typical start hour, on-peak energy share) and new_evs (premises
    first seen in the last EV_NEW_EV_DAYS days): a snapshot of the whole history, computed premise
    chunk by premise chunk (bounded memory) and replaced in one transaction."""
    record_worker(context)
    with retry_when_transient(context):
        report = pipeline.refresh_premise_profile(warehouse.get(), pipeline_config.settings())
    counts = {"premise_ev_profile": report.premises, "new_evs": report.new_evs}
    for spec in PREMISE_SPECS:
        extra = snapshot_metadata(report.as_of, report.top.get(spec.name))
        yield dg.MaterializeResult(asset_key=spec.name, metadata=table_metadata(spec, counts[spec.name], **extra))


def snapshot_metadata(as_of, top: pl.DataFrame | None) -> dict:
    """What a daily snapshot shows in the UI: the day it is as of, and its top rows."""
    extra = {"as_of_date": as_of.isoformat() if as_of else None}
    if top is not None and top.height:
        shown = top.drop("updated_at").with_columns(pl.col(pl.Float64).round(3))
        extra["top_rows"] = dg.MetadataValue.md(markdown_table(shown))
    return extra


premise_profile_job = dg.define_asset_job(
    "premise_profile_job",
    selection=dg.AssetSelection.assets(premise_ev_profile),
    description="Refresh the premise_ev_profile and new_evs snapshots.",
)


daily_premise_profile = daily_snapshot_schedule(
    "daily_premise_profile",
    "0 4 * * *",
    premise_profile_job,
    "premises",
    "Daily: refresh the premise EV profile and new EVs (after the nightly daily load).",
)


# --- Transformer planning queue: a daily snapshot ------------------------------------------------


@dg.multi_asset(
    specs=[
        table_asset_spec(
            tables.TRANSFORMER_PLANNING_QUEUE,
            "planning",
            deps=[
                dg.AssetKey(tables.TRANSFORMER_DAILY_LOAD.name),
                dg.AssetKey(tables.TRANSFORMER_OVERLOAD_FORECAST.name),
            ],
        )
    ],
)
def transformer_planning_queue(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, pipeline_config: PipelineConfig
):
    """Transformers ranked by the risk score over the last EV_PLANNING_WINDOW_DAYS days of
    transformer_daily_load (peak utilization, hours over rating, loss of life, EV growth) and the
    years to the overload forecast's first likely overload (weights EV_RISK_WEIGHT_*): a snapshot
    replaced in one transaction."""
    record_worker(context)
    spec = tables.TRANSFORMER_PLANNING_QUEUE
    with retry_when_transient(context):
        report = pipeline.refresh_planning_queue(warehouse.get(), pipeline_config.settings())
    extra = snapshot_metadata(report.as_of, report.top)
    return dg.MaterializeResult(asset_key=spec.name, metadata=table_metadata(spec, report.rows, **extra))


planning_queue_job = dg.define_asset_job(
    "planning_queue_job",
    selection=dg.AssetSelection.assets(transformer_planning_queue),
    description="Refresh the transformer_planning_queue snapshot.",
)


daily_planning_queue = daily_snapshot_schedule(
    "daily_planning_queue",
    "30 4 * * *",
    planning_queue_job,
    "queue",
    "Daily: re-rank the transformers (after the nightly daily load).",
)


# --- The snapshots follow the daily load ---------------------------------------------------------

# Each snapshot asset and the job that refreshes it. premise_ev_profile reads the sessions, not the
# daily load; refreshing it when the daily load changes is its debounce: every change to sessions
# queues its days, and the daily load runs once those days are loaded, not per micro-batch.
SNAPSHOT_JOBS = {
    tables.PREMISE_EV_PROFILE.name: premise_profile_job,
    tables.TRANSFORMER_PLANNING_QUEUE.name: planning_queue_job,
}
# The ten-year forecast follows no single load: a day more of history moves a ten-year view by
# nothing a planner acts on, and a refresh (three scenarios and the backtest) costs minutes of a
# 20,000-meter utility. Its schedule (daily_forecast) refreshes it once a local day; the load sensor
# asks for it only while it was never materialized (a new deployment), and `ev-awareness run`, which
# has no schedule, also once it was last refreshed before today (the schedule's due refresh).
DAILY_SNAPSHOT_JOBS = {tables.TRANSFORMER_OVERLOAD_FORECAST.name: forecast_job}
# Snapshots a snapshot reads besides the daily load: the queue ranks by the forecast's years to
# overload, so it waits for a forecast refresh on its way and follows each one.
SNAPSHOT_INPUTS = {tables.TRANSFORMER_PLANNING_QUEUE.name: (tables.TRANSFORMER_OVERLOAD_FORECAST.name,)}
SNAPSHOT_RUN_KEY = "snapshot"


def latest_materialization_timestamp(instance: dg.DagsterInstance, asset_name: str) -> float | None:
    """When the asset was last materialized (any partition), from the instance's event log."""
    event = instance.get_latest_materialization_event(dg.AssetKey(asset_name))
    return event.timestamp if event else None


def snapshot_run_requests(instance: dg.DagsterInstance, daily_due: bool = False) -> list[dg.RunRequest]:
    """A refresh of each snapshot materialized before the latest daily load (or never) or before
    a snapshot it reads (SNAPSHOT_INPUTS), once no daily-load run is on its way; of each daily
    snapshot (DAILY_SNAPSHOT_JOBS) never materialized or, with `daily_due`, last refreshed before
    today (local). A snapshot whose input is stale or being refreshed waits: the next call asks for
    it. The run key is the time of the change it follows (a daily snapshot's: the day): one refresh
    per change."""
    load_at = latest_materialization_timestamp(instance, tables.TRANSFORMER_DAILY_LOAD.name)
    if load_at is None or instance.get_runs(dg.RunsFilter(job_name=daily_load_job.name, statuses=IN_FLIGHT), limit=1):
        return []
    requests, waiting = [], set()
    today = datetime.now(ZoneInfo(PARTITIONS_TIMEZONE)).date()
    for asset_name, job in DAILY_SNAPSHOT_JOBS.items():
        refreshed_at = latest_materialization_timestamp(instance, asset_name)
        refreshed_day = (
            None if refreshed_at is None else datetime.fromtimestamp(refreshed_at, ZoneInfo(PARTITIONS_TIMEZONE)).date()
        )
        if refreshed_day is not None and not (daily_due and refreshed_day < today):
            continue
        waiting.add(asset_name)
        if not instance.get_runs(dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT), limit=1):
            requests.append(dg.RunRequest(job_name=job.name, run_key=f"{SNAPSHOT_RUN_KEY}:{asset_name}:{today}"))
    for asset_name, job in SNAPSHOT_JOBS.items():
        inputs = SNAPSHOT_INPUTS.get(asset_name, ())
        if any(i in waiting for i in inputs):
            continue
        changed_at = max([load_at, *(latest_materialization_timestamp(instance, i) or 0.0 for i in inputs)])
        refreshed_at = latest_materialization_timestamp(instance, asset_name)
        if refreshed_at is not None and refreshed_at >= changed_at:
            continue
        waiting.add(asset_name)
        if instance.get_runs(dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT), limit=1):
            continue
        requests.append(dg.RunRequest(job_name=job.name, run_key=f"{SNAPSHOT_RUN_KEY}:{asset_name}:{changed_at:.6f}"))
    return requests


# The sensor fills at most this many never-loaded days by itself; a longer gap (a history loaded,
# or EV_PARTITIONS_START moved back) is a backfill a person starts, never hundreds of runs unasked.
MAX_FILL_DAYS = 2 * MAX_DAYS_PER_RUN


def unloaded_days(instance: dg.DagsterInstance) -> list[date]:
    """Days of the daily partitions (to today) the daily load never materialized: a day with no
    charging is a day of zero load, not a missing one, once it is computed."""
    done = instance.get_materialized_partitions(dg.AssetKey(tables.TRANSFORMER_DAILY_LOAD.name))
    return [date.fromisoformat(k) for k in DAILY_PARTITIONS.get_partition_keys() if k not in done]


def fill_run_requests(instance: dg.DagsterInstance) -> tuple[list[dg.RunRequest], int]:
    """Range runs for the never-loaded days, when there are at most MAX_FILL_DAYS of them; else
    none, and how many wait for a backfill."""
    days = unloaded_days(instance)
    if len(days) > MAX_FILL_DAYS:
        return [], len(days)
    return daily_load_run_requests(days, "fill"), 0


def daily_load_sensor_requests(
    instance: dg.DagsterInstance, warehouse: WarehouseResource
) -> tuple[list[dg.RunRequest], list[date], str]:
    """What the daily-load sensor asks for: the queued days' range runs; when none is queued, the
    snapshot refreshes the latest daily load calls for (`snapshot_run_requests`). Also the days
    outside the partitions, and a sentence saying why nothing is asked for."""
    requests, outside = pending_load_run_requests(warehouse)
    if requests:
        return requests, outside, ""
    if outside:
        return [], outside, outside_partitions_message(outside)
    fills, waiting = fill_run_requests(instance)
    if fills:
        return fills, outside, ""
    snapshots = snapshot_run_requests(instance)
    said = "no day waits for its daily load, and the snapshots are current"
    if waiting:
        said += f"; {waiting:,} days were never loaded: more than {MAX_FILL_DAYS} is a backfill to start by hand"
    return snapshots, outside, "" if snapshots else said


@dg.sensor(
    jobs=[daily_load_job, *SNAPSHOT_JOBS.values(), *DAILY_SNAPSHOT_JOBS.values()],
    minimum_interval_seconds=Settings().load_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests the daily-load partitions whose sessions changed (ev_load_days_pending), late days included; "
    "once no day waits, refreshes the planning snapshots older than the latest daily load.",
)
def daily_load_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    requests, outside, reason = daily_load_sensor_requests(context.instance, warehouse)
    if outside:
        context.log.error(outside_partitions_message(outside))
    if not requests:
        return dg.SensorResult(skip_reason=reason)
    return dg.SensorResult(run_requests=requests)
