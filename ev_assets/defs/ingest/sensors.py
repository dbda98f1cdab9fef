"""The ingest area's sensor: the feed sensor's tick turns the decisions of
`ev_assets.defs.ingest.requests` into run requests and a cursor."""

import dagster as dg

from ev_assets.core.batching import FeedCursor
from ev_assets.defs.ingest.jobs import ingest_job, sessions_job
from ev_assets.defs.ingest.requests import PAIR_FOR_TAG, feed_run_requests, pairing_run_request
from ev_assets.defs.reference import reference_job
from ev_assets.defs.resources import FeedResource, ReferenceResource, WarehouseResource
from ev_assets.settings import Settings


@dg.sensor(
    jobs=[ingest_job, sessions_job, reference_job],
    minimum_interval_seconds=Settings().feed_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Polls EV_FEED_DIR for new payload files (one ingest run per micro-batch) and EV_REFERENCE_DIR for new "
        "extracts (loaded before the events that need them); asks for a sessions run when committed batches wait "
        "for pairing and no run is on its way to pair them."
    ),
)
def ev_feed_sensor(
    context: dg.SensorEvaluationContext,
    feed_landing: FeedResource,
    reference: ReferenceResource,
    warehouse: WarehouseResource,
):
    # No cursor at all (a first tick, or a lost cursor): a full scan, the file ledger decides.
    cursor = FeedCursor.from_json(context.cursor) if context.cursor else None
    requests, batches, reason = feed_run_requests(context.instance, feed_landing, reference, warehouse, cursor)
    if not requests and (pairing := pairing_run_request(context.instance, warehouse)) is not None:
        requests, reason = (
            [pairing],
            (
                f"pairing {pairing.tags[PAIR_FOR_TAG]} and the batches before it, committed by a run that ended "
                "before pairing them"
            ),
        )
    context.log.info(reason)
    if not requests:
        return dg.SensorResult(skip_reason=reason, cursor=context.cursor)
    new_cursor = FeedCursor.at(batches[-1].files[-1]).to_json() if batches else context.cursor
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)
