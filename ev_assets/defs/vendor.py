"""Vendor area: batch-export backfills by received day (UTC), landing as payload files that the
feed sensor ingests like any other (message identity makes what the stream already delivered a
duplicate), and the gap each export filled.

Why the gap is a separate asset (`vendor_export_gap`, with its checks) and not a check on
`vendor_export_files`: the export asset only lands files; the feed sensor ingests them in later
runs, so a check run with the export (the only time Dagster runs an asset's own checks) would
count before anything of the export is in the warehouse. The export asset records its job id and
file count in the warehouse (ev_vendor_exports: data the gap is computed from, so not asset
metadata, which a wiped instance or a pruned event log would lose); `vendor_gap_sensor` (and
`ev-awareness run`) asks for the day's `vendor_export_gap` once the file ledger holds every one of
those files, one run per export job (the run key).
"""

import json
from datetime import date

import dagster as dg

from ev_assets import pipeline
from ev_assets.defs.metadata import OWNERS
from ev_assets.defs.partitions import PARTITIONS_START
from ev_assets.defs.resources import FeedResource, WarehouseResource
from ev_assets.settings import Settings
from ev_assets.vendor.client import VendorClient, received_day_tokens
from ev_assets.vendor.export_files import FILE_TYPES


class VendorResource(dg.ConfigurableResource):
    """The vendor's batch API. Configured from EV_VENDOR_* environment variables as `EnvVar`s in
    the code location (the client secret is never written into run configuration)."""

    base_url: str
    subscription_id: str
    subscriber_id: str
    token_url: str
    client_id: str
    client_secret: str
    filetype: str = "Parquet"
    poll_deadline_s: float = 1800.0
    first_poll_s: float = 5.0

    def client(self) -> VendorClient:
        return VendorClient(
            self.base_url, self.subscription_id, self.subscriber_id, self.token_url, self.client_id, self.client_secret
        )


RECEIVED_DAYS = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START.isoformat(), timezone="UTC", fmt="%Y-%m-%d")


class ExportConfig(dg.Config):
    """`filetype`: Parquet, Orc, Json or Csv; empty: the vendor resource's (`ev-awareness backfill --format`)."""

    filetype: str = ""


def export_file_prefix(day: date | str, job_id: str) -> str:
    """The names of an export's landing files start with this (`export-<day>-<jobId>-<n>.json`)."""
    return f"export-{day}-{job_id}-"


@dg.asset(
    partitions_def=RECEIVED_DAYS,
    group_name="vendor",
    owners=OWNERS,
    kinds={"httpx"},
    retry_policy=dg.RetryPolicy(max_retries=3, delay=60, backoff=dg.Backoff.EXPONENTIAL),
    description=(
        "The vendor's batch export of one received day (UTC, ReceivedTime in [day, day+1)), unpacked into "
        "the landing folder as JSON payload files (`export-<day>-<jobId>-<n>.json`). The feed sensor ingests "
        "them; what the stream already delivered counts as duplicates."
    ),
)
def vendor_export_files(
    context: dg.AssetExecutionContext,
    config: ExportConfig,
    vendor: VendorResource,
    feed_landing: FeedResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    day = RECEIVED_DAYS.time_window_for_partition_key(context.partition_key).start.date()
    filetype = config.filetype or vendor.filetype
    if filetype not in FILE_TYPES:
        raise dg.Failure(f"filetype {filetype!r}: one of {', '.join(FILE_TYPES)}")
    with vendor.client() as client:
        job_id, paths = client.export_job_to_landing(
            received_day_tokens(day),
            feed_landing.path,
            filetype=filetype,
            label=f"export-{day.isoformat()}",
            deadline_s=vendor.poll_deadline_s,
            first_wait_s=vendor.first_poll_s,
        )
    records = sum(len(json.loads(p.read_bytes())["EVChargingEvents"]) for p in paths)
    # After the files landed (their count is known only then). A step that dies between the two
    # leaves files the feed ingests like any other, and no export for the gap: its retry asks the
    # vendor for a new export, which is recorded.
    pipeline.record_export(
        warehouse.get(),
        job_id=job_id,
        received_day=day,
        file_prefix=export_file_prefix(day, job_id),
        files=len(paths),
        records=records,
        filetype=filetype,
    )
    return dg.MaterializeResult(
        metadata={
            "job_id": job_id,
            "filetype": filetype,
            "files": len(paths),
            "file_prefix": export_file_prefix(day, job_id),
            "records": records,
            "file_names": [p.name for p in paths][:50],
        }
    )


vendor_export_job = dg.define_asset_job("vendor_export_job", selection=[vendor_export_files])


# --- the gap each export filled -----------------------------------------------------------------


def latest_exports(warehouse: WarehouseResource, partitions: list[str] | None = None) -> dict[str, dict]:
    """Per received day (partition key), the newest export landed: its job_id, file_prefix and
    files, from the warehouse (ev_vendor_exports)."""
    days = None if partitions is None else [date.fromisoformat(p) for p in partitions]
    return {
        row["received_day"].isoformat(): row
        for row in pipeline.latest_exports(warehouse.get(), days).iter_rows(named=True)
    }


GAP_CHECKS = [
    dg.AssetCheckSpec(
        "export_reconciles",
        asset="vendor_export_gap",
        description=(
            "Every file the export landed is in the file ledger, and its records = accepted (the gap) + "
            "duplicates + rejected."
        ),
    ),
    dg.AssetCheckSpec(
        "stream_complete",
        asset="vendor_export_gap",
        description=(
            "The stream delivered every message of the received day the export holds (warning otherwise: "
            "`export_only` messages came by the export alone, the gap it filled)."
        ),
    ),
]


@dg.asset(
    partitions_def=RECEIVED_DAYS,
    group_name="vendor",
    owners=OWNERS,
    kinds={"sqlalchemy"},
    deps=[vendor_export_files, "ev_charging_events"],
    check_specs=GAP_CHECKS,
    description=(
        "Per received day (UTC), once the day's latest export was ingested: how many of the day's messages "
        "the stream delivered (`stream_delivered`), how many only the export brought (`export_only`: the gap "
        "it filled) and how many of the export's records were duplicates of what had arrived before "
        "(`export_duplicates`). Requested by `vendor_gap_sensor` when the file ledger holds every file of "
        "the export (the export asset only lands them; the feed sensor ingests them later)."
    ),
)
def vendor_export_gap(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    day_key = context.partition_key
    export = latest_exports(warehouse, [day_key]).get(day_key)
    if export is None:
        raise dg.Failure(
            f"no export of received day {day_key} has landed: materialize vendor_export_files for it first"
        )
    gap = pipeline.export_gap(
        warehouse.get(),
        RECEIVED_DAYS.time_window_for_partition_key(day_key).start.date(),
        export["file_prefix"],
        export["files"],
    )
    if not gap.ingested:
        raise dg.Failure(
            f"export {export['job_id']} of {day_key}: {gap.files_ingested} of its {gap.files_expected} files "
            "are ingested; "
            "the feed sensor (or `ev-awareness run`) ingests them, then the gap sensor asks again"
        )
    figures = {k: v for k, v in gap.as_dict().items() if k != "received_day"}
    reconciles = (
        gap.export_records == gap.export_accepted + gap.export_duplicates + gap.export_rejected
        and gap.export_duplicates >= 0
    )
    context.log.info(
        f"received day {day_key}: stream delivered {gap.stream_delivered:,}, the export alone {gap.export_only:,} "
        f"({gap.gap_share:.2%}); export {export['job_id']}: {gap.export_records:,} records = "
        f"{gap.export_accepted:,} new "
        f"+ {gap.export_duplicates:,} duplicates + {gap.export_rejected:,} rejected"
    )
    return dg.MaterializeResult(
        metadata={"job_id": export["job_id"], **figures},
        check_results=[
            dg.AssetCheckResult(
                check_name="export_reconciles", passed=reconciles, metadata={"job_id": export["job_id"], **figures}
            ),
            dg.AssetCheckResult(
                check_name="stream_complete",
                passed=gap.export_only == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "stream_delivered": gap.stream_delivered,
                    "export_only": gap.export_only,
                    "gap_share": gap.gap_share,
                    "export_duplicates": gap.export_duplicates,
                },
                description=f"{gap.export_only:,} of the day's {gap.day_messages:,} messages came by the export alone",
            ),
        ],
    )


vendor_gap_job = dg.define_asset_job("vendor_gap_job", selection=[vendor_export_gap])


def gap_run_requests(warehouse: WarehouseResource) -> tuple[list[dg.RunRequest], str]:
    """One `vendor_gap_job` run per received day whose latest export is wholly in the file ledger
    (run key: the export's job id, so each export is counted once), and why."""
    requests, waiting = [], []
    wh = warehouse.get()
    for day_key, export in latest_exports(warehouse).items():
        if pipeline.export_files_ingested(wh, export["file_prefix"]) < export["files"]:
            waiting.append(day_key)
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"gap:{day_key}:{export['job_id']}",
                job_name=vendor_gap_job.name,
                partition_key=day_key,
                tags={"dagster/partition": day_key, "ev/export_job_id": export["job_id"]},
            )
        )
    reason = f"{len(requests)} exports ingested" + (
        f"; waiting for the ingest of {', '.join(waiting)}" if waiting else ""
    )
    return requests, reason


@dg.sensor(
    jobs=[vendor_gap_job],
    minimum_interval_seconds=Settings().feed_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Asks for a received day's vendor_export_gap once the file ledger holds every file of the day's latest "
        "export (one run per export job)."
    ),
)
def vendor_gap_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    requests, reason = gap_run_requests(warehouse)
    if not requests:
        return dg.SkipReason(reason)
    return dg.SensorResult(run_requests=requests)


nightly_gap_fill = dg.build_schedule_from_partitioned_job(
    vendor_export_job,
    name="nightly_gap_fill",
    hour_of_day=3,
    minute_of_hour=15,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "Requests yesterday's received day (UTC) from the vendor's batch export (off until the vendor is configured)."
    ),
)


def vendor_resource_from_environment() -> VendorResource:
    return VendorResource(
        base_url=dg.EnvVar("EV_VENDOR_BASE_URL"),
        subscription_id=dg.EnvVar("EV_VENDOR_SUBSCRIPTION_ID"),
        subscriber_id=dg.EnvVar("EV_VENDOR_SUBSCRIBER_ID"),
        token_url=dg.EnvVar("EV_VENDOR_TOKEN_URL"),
        client_id=dg.EnvVar("EV_VENDOR_CLIENT_ID"),
        client_secret=dg.EnvVar("EV_VENDOR_CLIENT_SECRET"),
    )
