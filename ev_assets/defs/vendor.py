"""Vendor area: batch-export backfills by received day (UTC), landing as payload files that the
feed sensor ingests like any other (message identity makes what the stream already delivered a
duplicate)."""

import json

import dagster as dg

from ev_assets.defs.metadata import OWNERS
from ev_assets.defs.resources import FeedResource
from ev_assets.settings import Settings
from ev_assets.vendor.client import VendorClient, received_day_tokens


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
        return VendorClient(self.base_url, self.subscription_id, self.subscriber_id, self.token_url, self.client_id, self.client_secret)


RECEIVED_DAYS = dg.DailyPartitionsDefinition(
    start_date=Settings().partitions_start.isoformat(), timezone="UTC", fmt="%Y-%m-%d"
)


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
def vendor_export_files(context: dg.AssetExecutionContext, vendor: VendorResource, feed_landing: FeedResource) -> dg.MaterializeResult:
    day = RECEIVED_DAYS.time_window_for_partition_key(context.partition_key).start.date()
    with vendor.client() as client:
        paths = client.export_to_landing(
            received_day_tokens(day),
            feed_landing.path,
            filetype=vendor.filetype,
            label=f"export-{day.isoformat()}",
            deadline_s=vendor.poll_deadline_s,
            first_wait_s=vendor.first_poll_s,
        )
    records = sum(len(json.loads(p.read_bytes())["EVChargingEvents"]) for p in paths)
    return dg.MaterializeResult(metadata={"files": len(paths), "records": records, "file_names": [p.name for p in paths][:50]})


vendor_export_job = dg.define_asset_job("vendor_export_job", selection=[vendor_export_files])

nightly_gap_fill = dg.build_schedule_from_partitioned_job(
    vendor_export_job,
    hour_of_day=3,
    minute_of_hour=15,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Requests yesterday's received day (UTC) from the vendor's batch export (off until the vendor is configured).",
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
