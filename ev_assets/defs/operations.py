"""Operations area: runs whose worker died, and failed runs a person must look at.

Who retries what (README "Operations"): a step retries itself on transient database errors
(`runs.retry_when_transient`); the daemon's run retries (`run_retries` in dagster.yaml, written
by `ev-awareness init`) re-execute a run that failed otherwise, including one failed below because
its worker died. What remains to do is always read from the warehouse, so a retry, or any later run,
finishes the work of a dead one.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

from ev_assets.defs.runs import BATCH_TAG, WORKER_TAG

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
        instance.report_run_failed(
            run, f"Run worker {worker} is gone (killed or crashed): marked failed so it can be retried."
        )
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


def exhausted_failures(instance: dg.DagsterInstance, limit: int = 200) -> list[dg.DagsterRun]:
    """Failed runs whose work nobody finished: no retry was made of them and no later run of their
    run key succeeded. What a person must look at (`ev-awareness status`, the failure sensor's log)."""
    exhausted = []
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]), limit=limit):
        if instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run.run_id}), limit=1):
            continue
        run_key = run.tags.get("dagster/run_key")
        succeeded = dg.RunsFilter(tags={"dagster/run_key": run_key}, statuses=[dg.DagsterRunStatus.SUCCESS])
        if run_key and instance.get_runs(succeeded, limit=1):
            continue
        exhausted.append(run)
    return exhausted


def failure_report(run: dg.DagsterRun) -> str:
    """One line on a failed run that will not be retried, and what to do."""
    what = f"batch {run.tags[BATCH_TAG]}" if BATCH_TAG in run.tags else run.job_name
    return (
        f"failed run {run.run_id[:8]} ({what}) {run.tags.get('dagster/run_key', '')}: retries exhausted; its "
        "work stays "
        "pending in the warehouse (ev-awareness status): see the run in the UI, fix the cause, then `ev-awareness run`"
    )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Says, for each failed run, whether the daemon retries it and what to do when retries are exhausted.",
)
def failed_run_sensor(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    if run.tags.get("dagster/will_retry") == "true":
        what = f"batch {run.tags[BATCH_TAG]}" if BATCH_TAG in run.tags else run.job_name
        context.log.warning(
            f"run {run.run_id} ({what}) failed: the daemon retries it ({context.failure_event.message})"
        )
    else:
        context.log.error(f"{failure_report(run)} ({context.failure_event.message})")
