"""Jobs, sensors and schedules: how runs start.

- ev_feed_sensor: polls the landing folder, one ingest run per micro-batch (run key = batch id).
- daily_load_sensor: after ingest runs, requests the daily partitions they touched, late days
  included (AutomationCondition.eager() would only see the latest day).
- nightly_daily_load: recomputes the last days each night, for ends that arrived late.
"""


import json
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from ev_assets import feed, settings
from ev_assets.assets import (
    BATCH_TAG,
    REFERENCE_TABLES,
    daily_load,
    ev_charging_events,
    ev_charging_sessions,
    reference_tables,
    touched_dates_of,
)
from ev_assets.batching import Batch, FeedCursor, contiguous_spans, plan_batches, settled
from ev_assets.resources import FeedResource, WarehouseResource
from ev_assets.tables import EV_FEED_FILES

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
reference_job = dg.define_asset_job(
    "reference_job",
    selection=dg.AssetSelection.assets(reference_tables),
    description="Reload the utility's reference extracts and enrich events that waited for them.",
)
daily_load_job = dg.define_asset_job(
    "daily_load_job",
    selection=dg.AssetSelection.assets(daily_load),
    description="Daily transformer, feeder and substation load for a day or a range of days.",
)

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


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


@dg.schedule(
    cron_schedule="0 1 * * *",
    job=reference_job,
    execution_timezone=settings.timezone(),
    description="Nightly reload of the reference extracts (start it when the extracts arrive nightly).",
)
def nightly_reference(_context: dg.ScheduleEvaluationContext):
    return dg.RunRequest()

