"""Runs started outside the daemon (the CLI), through Dagster's public entry point `dg.execute_job`.

A request's run is executed in this process (the code location's in-process executor), recorded in
the instance with the sensor's run key and tags, the worker tag the dead-run sensor reads, and its
job's Python origin (`dg.build_reconstructable_job`: the code location's job, resolved from
`ev_assets.definitions`). A request whose run key already has a run that succeeded, or is still on
its way, is not run twice. A CLI run that fails is reported and redone by the next `ev-awareness
run` (its run key has no successful run); it is tagged `dagster/max_retries: 0`, because the daemon
cannot retry it (its retries need a code-server origin) and the UI should not promise it will.

Public only (issue 26): an earlier version created the run from the workspace's remote job
(`dagster._cli`, `dagster._grpc.impl.core_execute_run`) so the daemon could retry it. Measured on the
demo, it bought no time (BENCHMARKS.md "Private Dagster APIs"), so it went; the daemon leaves a CLI
run to the CLI (its runs carry no code-server origin, which the daemon's retries need).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from ev_assets.defs.runs import IN_FLIGHT, WORKER_TAG, this_worker

LAUNCHED_BY = "ev/launched_by"
RUN_KEY = "dagster/run_key"
MAX_RETRIES = "dagster/max_retries"


def location_job(job_name: str) -> dg.JobDefinition:
    """The code location's job, resources bound: what `dg.build_reconstructable_job` calls to
    rebuild it (in this process, and in any process re-executing the run from its origin)."""
    from ev_assets.definitions import defs

    return defs.resolve_job_def(job_name)


@contextmanager
def code_location(instance: dg.DagsterInstance) -> Iterator[None]:
    """The code location, imported once before the runs of a command (a clear error when it does
    not load)."""
    from ev_assets.definitions import defs

    defs.get_repository_def()  # resolves every job once: a definition error shows here, not mid-run
    yield None


def existing_run(instance: dg.DagsterInstance, run_key: str | None) -> dg.DagsterRun | None:
    """The latest run of a run key that succeeded or is still on its way (None: run it)."""
    if not run_key:
        return None
    statuses = [*IN_FLIGHT, dg.DagsterRunStatus.SUCCESS]
    runs = instance.get_runs(dg.RunsFilter(tags={RUN_KEY: run_key}, statuses=statuses), limit=1)
    return runs[0] if runs else None


def run_tags(request: dg.RunRequest) -> dict[str, str]:
    """What a CLI run carries: the request's tags and run key, who launched it, and the process
    executing it (the dead-run sensor fails a STARTED run whose worker process is gone)."""
    tags = {**request.tags, LAUNCHED_BY: "cli", WORKER_TAG: this_worker(), MAX_RETRIES: "0"}
    if request.run_key:
        tags[RUN_KEY] = request.run_key
    return tags


def execute(
    instance: dg.DagsterInstance,
    request: dg.RunRequest,
    job_name: str,
    on_event: Callable[[dg.DagsterEvent], None] | None = None,
    log_level: str = "WARNING",
) -> dg.DagsterRun:
    """Execute a request's run in this process; returns it as recorded at the end (SUCCESS or
    FAILURE). Its console
    log shows `log_level` and above (the full log is in the instance either way)."""
    job = dg.build_reconstructable_job("ev_assets.runner", "location_job", reconstructable_args=(job_name,))
    run_config = {**(request.run_config or {}), "loggers": {"console": {"config": {"log_level": log_level}}}}
    tags = run_tags(request)
    result = dg.execute_job(job, instance, run_config=run_config, tags=tags)
    if on_event is not None:
        for event in result.all_events:
            on_event(event)
    return instance.get_run_by_id(result.run_id)


def run_request(
    instance: dg.DagsterInstance,
    request: dg.RunRequest,
    job_name: str,
    on_event: Callable[[dg.DagsterEvent], None] | None = None,
    log_level: str = "WARNING",
) -> dg.DagsterRun:
    """Run one request unless its run key already has a run that succeeded or is on its way."""
    existing = existing_run(instance, request.run_key)
    if existing is not None:
        return existing
    return execute(instance, request, job_name, on_event, log_level)


# --- several runs at once (`ev-awareness run --workers N`) -----------------------------------------


def _execute_in_worker(request: dg.RunRequest, job_name: str, log_level: str) -> str:
    """A worker process's task: one request's run, in this process (the instance from DAGSTER_HOME,
    as the parent's). Returns the run id; the parent reads the run back from the instance."""
    instance = dg.DagsterInstance.get()
    return run_request(instance, request, job_name, None, log_level).run_id


class Workers:
    """N worker processes, each executing one run at a time with `run_request` (in that process:
    its worker tag is that process's, so the dead-run sensor can tell a killed worker's run).

    Processes, not threads: a run is mostly Python (Dagster's bookkeeping, the pipeline's frames
    hand over to polars only in stretches). Spawned, not forked: the parent holds a loaded code
    location and database connections, which a fork would share."""

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.size = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, request: dg.RunRequest, job_name: str, log_level: str = "WARNING"):
        return self._pool.submit(_execute_in_worker, request, job_name, log_level)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
