"""How runs are tagged, told apart and retried: the tags a sensor, the CLI and the dead-run sensor
read, the statuses of a run still on its way, the worker tag, the retry of transient database errors."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import sqlalchemy as sa

from ev_assets.defs.partitions import PARTITIONS_TIMEZONE

BATCH_TAG = "ev/batch_id"
WORKER_TAG = "ev/worker"
# Step retries for transient database errors: 5 attempts over about a minute (2, 4, 8, 16, 32 s).
TRANSIENT_RETRIES = 5


def utc_day() -> str:
    return datetime.now(UTC).date().isoformat()


# Runs on their way: a request for the same work waits for them.
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def this_worker() -> str:
    """The WORKER_TAG value of this process: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record_worker(context: dg.AssetExecutionContext) -> None:
    """Tag the run with the host and process executing it, so a run left STARTED by a process that
    died (kill -9) can be told from one still working (`ev_assets.defs.operations.fail_dead_runs`)."""
    worker = this_worker()
    if context.run.tags.get(WORKER_TAG) != worker:
        context.instance.add_run_tags(context.run.run_id, {WORKER_TAG: worker})


@contextmanager
def retry_when_transient(context: dg.AssetExecutionContext) -> Iterator[None]:
    """Retry the step when the database was unreachable, locked or read-only for a while (the
    warehouse away, a failover): each step's work is one transaction, so a retry starts clean.
    Other errors fail the step at once; the daemon's run retries own what is left (README)."""
    try:
        yield
    except sa.exc.OperationalError as error:
        wait = 2 ** (context.retry_number + 1)
        context.log.warning(
            (
                f"transient database error, retry {context.retry_number + 1} of {TRANSIENT_RETRIES} in {wait} s: "
                f"{error.orig}"
            )
        )
        raise dg.RetryRequested(max_retries=TRANSIENT_RETRIES, seconds_to_wait=wait) from error


def daily_snapshot_schedule(name: str, cron: str, job, key_prefix: str, description: str) -> dg.ScheduleDefinition:
    """A snapshot refreshed once a local day, after the nightly daily load; run key = the day."""

    @dg.schedule(
        name=name,
        cron_schedule=cron,
        job=job,
        execution_timezone=PARTITIONS_TIMEZONE,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        day = context.scheduled_execution_time.astimezone(ZoneInfo(PARTITIONS_TIMEZONE)).date()
        return dg.RunRequest(run_key=f"{key_prefix}:{day.isoformat()}")

    return _schedule
