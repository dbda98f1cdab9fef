"""Operations area: runs whose worker died, and failed runs a person must look at.

Who retries what (README "Operations"): a step retries itself on transient database errors
(`metadata.retry_when_transient`); the daemon's run retries (`run_retries` in dagster.yaml, written
by `ev-awareness init`) re-execute a run that failed otherwise, including one failed below because
its worker died. What remains to do is always read from the warehouse, so a retry, or any later run,
finishes the work of a dead one.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

from ev_assets.defs.metadata import WORKER_TAG

ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def process_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a killed child its parent has not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("State:"):
                return "Z" not in line.split(":", 1)[1]
    return True


def fail_dead_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Mark failed the runs still STARTED whose worker process on this host is gone (kill -9, a
    crash): with the default run launcher, run monitoring cannot see a dead worker, and a run left
    STARTED forever would never be retried. Returns the runs marked failed."""
    host = socket.gethostname()
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=ACTIVE)):
        worker = run.tags.get(WORKER_TAG, "")
        worker_host, _, pid = worker.rpartition(":")
        if worker_host != host or not pid.isdigit() or process_alive(int(pid)):
            continue
        instance.report_run_failed(run, f"Run worker {worker} is gone (killed or crashed): marked failed so it can be retried.")
        failed.append(run)
    return failed


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed the runs left STARTED by a worker process that died, so the daemon retries them.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext):
    dead = fail_dead_runs(context.instance)
    for run in dead:
        context.log.warning(f"run {run.run_id} ({run.job_name}) lost its worker: marked failed")
    return dg.SkipReason(f"{len(dead)} runs whose worker died marked failed" if dead else "no run lost its worker")


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Says, for each failed run, whether the daemon retries it and what to do when retries are exhausted.",
)
def failed_run_sensor(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    retrying = run.tags.get("dagster/will_retry") == "true"
    what = f"batch {run.tags['ev/batch_id']}" if "ev/batch_id" in run.tags else run.job_name
    if retrying:
        context.log.warning(f"run {run.run_id} ({what}) failed: the daemon retries it ({context.failure_event.message})")
    else:
        context.log.error(
            f"run {run.run_id} ({what}) failed and will not be retried: {context.failure_event.message} "
            "Its work stays pending in the warehouse (ev-awareness status); fix the cause, then `ev-awareness run` "
            "or re-execute the run in the UI."
        )
