"""What the feed sensor decides, as run requests: the batches of landing files to ingest, the
reference extracts to load before them, the pairing a dead run left. The sensor
(`ev_feed_sensor`) and `ev-awareness run` call these, so both decide the same way. Reads only:
planning writes nothing (the step that commits a batch archives its files)."""

import time

import dagster as dg

from ev_assets import pipeline
from ev_assets.core import feed
from ev_assets.core.batching import Batch, FeedCursor, plan_batches, settled
from ev_assets.defs.ingest.jobs import ingest_job, sessions_job
from ev_assets.defs.reference import reference_job, reference_version
from ev_assets.defs.resources import FeedResource, ReferenceResource, WarehouseResource
from ev_assets.defs.runs import BATCH_TAG, IN_FLIGHT


def batch_config(batch: Batch) -> dict:
    """The run config of the ingest step for `batch` (IngestBatchConfig's fields)."""
    span = batch.span
    return {
        "batch_id": batch.batch_id,
        "first_arrived_ns": span.first_arrived_ns,
        "first_file": span.first_name,
        "last_arrived_ns": span.last_arrived_ns,
        "last_file": span.last_name,
        "file_count": span.files,
    }


def ingest_run_request(batch: Batch) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=batch.batch_id,
        job_name=ingest_job.name,
        run_config={"ops": {"ev_charging_events": {"config": batch_config(batch)}}},
        tags={
            BATCH_TAG: batch.batch_id,
            "ev/files": str(len(batch.files)),
            "ev/messages": str(batch.messages),
            "ev/bytes": str(batch.bytes),
        },
    )


def replay_run_request(batch_id: str, rejection_ids: list[str], corrected_file: str | None = None) -> dg.RunRequest:
    """An ingest run of quarantined records (`ev-awareness rejected replay`): as stored, or as
    corrected in `corrected_file`; a batch like any other (ledger, checks, pairing)."""
    config: dict = {"batch_id": batch_id, "replay_rejection_ids": rejection_ids}
    if corrected_file is not None:
        config["replay_corrected_file"] = corrected_file
    return dg.RunRequest(
        run_key=batch_id,
        job_name=ingest_job.name,
        run_config={"ops": {"ev_charging_events": {"config": config}}},
        tags={BATCH_TAG: batch_id},
    )


def reference_run_request(version: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"reference:{version[:16]}", job_name=reference_job.name, tags={"ev/reference_sha256": version}
    )


def landing_files_to_ingest(
    feed_res: FeedResource, warehouse: WarehouseResource, cursor: FeedCursor | None
) -> list[feed.FeedFile]:
    """Files after the cursor that the file ledger does not hold yet, in arrival order.

    With a cursor (a sensor tick), only settled files count; without one (a full scan, as the CLI
    does), every file does. A file whose name the ledger holds is pending only if its content
    changed (a re-delivery under the same name); only those files are hashed, so the common case
    reads no bytes here. Files the ledger holds are left where they are: a tick and `status` are
    reads, and the step that commits a batch archives (defs.ingest.assets.ev_charging_events).
    """
    files = feed.list_landing(feed_res.path)
    if cursor is not None:
        files = settled(cursor.after(files), now_ns=time.time_ns(), settle_ns=int(feed_res.settle_seconds * 1e9))
    todo, _committed = pipeline.split_committed(warehouse.get(), files)
    return todo


def landing_batches_to_ingest(
    feed_res: FeedResource, warehouse: WarehouseResource, cursor: FeedCursor | None
) -> list[Batch]:
    """The files to ingest (landing_files_to_ingest) grouped into batches within the bounds."""
    return plan_batches(
        landing_files_to_ingest(feed_res, warehouse, cursor),
        max_files=feed_res.max_files,
        max_messages=feed_res.max_messages,
        max_bytes=feed_res.max_bytes,
    )


def reference_to_load(reference_res: ReferenceResource, warehouse: WarehouseResource) -> str | None:
    """The version of the reference extracts in the folder when the warehouse holds another one
    (or none): they must be loaded before the events that need them."""
    version = reference_version(reference_res.path)
    if version is None or version == pipeline.loaded_reference_version(warehouse.get()):
        return None
    return version


def feed_run_requests(
    instance: dg.DagsterInstance,
    feed_res: FeedResource,
    reference_res: ReferenceResource,
    warehouse: WarehouseResource,
    cursor: FeedCursor | None,
) -> tuple[list[dg.RunRequest], list[Batch], str]:
    """What the feed sensor asks for, and why (a sentence for the tick's log or skip reason).

    New reference extracts are loaded first: while their run has not succeeded, no ingest run
    starts (its events would be enriched with outdated reference data). A reference run that
    failed does not stall the feed: events are then accepted as they can be, and the reason is said.
    """
    version = reference_to_load(reference_res, warehouse)
    if version is not None:
        request = reference_run_request(version)
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": request.run_key}), limit=1)
        if not runs:
            return [request], [], f"loading reference extracts {version[:12]} before the events that need them"
        if not runs[0].is_finished:
            return [], [], f"waiting for the reference load {runs[0].run_id[:8]} to finish"
        if not runs[0].is_success:
            reason = f"reference load {runs[0].run_id[:8]} failed: ingesting without the new reference data"
        else:
            reason = ""
    else:
        reason = (
            ""
            if reference_version(reference_res.path)
            else (f"no reference extracts in {reference_res.path}: events are accepted as meter_unknown")
        )
    batches = landing_batches_to_ingest(feed_res, warehouse, cursor)
    requests = [ingest_run_request(b) for b in batches]
    said = (
        f"{len(batches)} batches of {sum(len(b.files) for b in batches)} new files"
        if batches
        else "no new files in the landing folder"
    )
    return requests, batches, "; ".join(x for x in (said, reason) if x)


PAIR_FOR_TAG = "ev/pair_for"


def pairing_run_request(instance: dg.DagsterInstance, warehouse: WarehouseResource) -> dg.RunRequest | None:
    """A sessions run for the batches committed but never paired (their run died or failed after
    the events step), when no ingest or sessions run is on its way to pair them. The warehouse
    says what waits, whatever became of the run that committed it; the run key counts the earlier
    attempts, so a pairing run that died too is asked for again (a used run key never is)."""
    waiting = pipeline.batches_awaiting_pairing(warehouse.get())
    if not waiting:
        return None
    for job_name in (ingest_job.name, sessions_job.name):
        if instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1):
            return None
    attempt = len(instance.get_runs(dg.RunsFilter(tags={PAIR_FOR_TAG: waiting[-1]})))
    return dg.RunRequest(
        run_key=f"pair:{waiting[-1]}:{attempt}", job_name=sessions_job.name, tags={PAIR_FOR_TAG: waiting[-1]}
    )
