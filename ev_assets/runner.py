"""Runs started outside the daemon (the CLI), recorded exactly like the daemon's.

A run is created in the instance from the code location that `workspace.yaml` names, with that
location's origin, the sensor's run key and tags, then executed in this process (what the daemon's
run worker does in a subprocess). So the daemon can retry a CLI run that failed (run retries need
the origin), the UI shows it like any other, and a request whose run key already has a run that
succeeded, or is still on its way, is not run twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import dagster as dg
from dagster._cli.workspace.cli_target import (
    get_code_location_from_workspace,
    get_remote_job_from_remote_repo,
    get_remote_repository_from_code_location,
    get_workspace_from_cli_opts,
)
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.origin import JobPythonOrigin
from dagster._grpc.impl import core_execute_run
from dagster._utils.hosted_user_process import recon_job_from_origin
from dagster_shared.cli import WorkspaceOpts

from ev_assets.defs.runs import IN_FLIGHT, WORKER_TAG, this_worker
from ev_assets.settings import PROJECT_ROOT

LAUNCHED_BY = "ev/launched_by"
RUN_KEY = "dagster/run_key"


@contextmanager
def code_location_workspace(instance: dg.DagsterInstance, *, in_process: bool = True) -> Iterator:
    """The workspace of `workspace.yaml`, loaded in this process (no gRPC server to start), or as
    the daemon loads it (a code server, which the instance's run launcher needs)."""
    opts = WorkspaceOpts(workspace=[str(PROJECT_ROOT / "workspace.yaml")])
    with get_workspace_from_cli_opts(
        instance, version="", workspace_opts=opts, allow_in_process=in_process
    ) as workspace:
        yield workspace


def existing_run(instance: dg.DagsterInstance, run_key: str | None) -> dg.DagsterRun | None:
    """The latest run of a run key that succeeded or is still on its way (None: run it)."""
    if not run_key:
        return None
    statuses = [*IN_FLIGHT, dg.DagsterRunStatus.SUCCESS]
    runs = instance.get_runs(dg.RunsFilter(tags={RUN_KEY: run_key}, statuses=statuses), limit=1)
    return runs[0] if runs else None


def create_run(
    instance: dg.DagsterInstance, workspace, request: dg.RunRequest, job_name: str, log_level: str = "WARNING"
) -> dg.DagsterRun:
    """Create the run of a request in the instance, with the code location's origin. Its console
    log shows `log_level` and above (the full log is in the instance either way)."""
    location = get_code_location_from_workspace(workspace, None)
    repo = get_remote_repository_from_code_location(location, None)
    remote_job = location.get_job(
        JobSubsetSelector(location_name=location.name, repository_name=repo.name, job_name=job_name, op_selection=None)
    )
    get_remote_job_from_remote_repo(repo, job_name)  # a clear error when the job does not exist
    run_config = {**(request.run_config or {}), "loggers": {"console": {"config": {"log_level": log_level}}}}
    tags = {**remote_job.tags, **request.tags, LAUNCHED_BY: "cli"}
    if request.run_key:
        tags[RUN_KEY] = request.run_key
    plan = location.get_execution_plan(
        remote_job, run_config, step_keys_to_execute=None, known_state=None, instance=instance
    )
    snapshot = plan.execution_plan_snapshot
    return instance.create_run(
        job_name=job_name,
        run_id=None,
        run_config=run_config,
        resolved_op_selection=None,
        step_keys_to_execute=snapshot.step_keys_to_execute,
        op_selection=None,
        status=None,
        root_run_id=None,
        parent_run_id=None,
        tags=tags,
        job_snapshot=remote_job.job_snapshot,
        execution_plan_snapshot=snapshot,
        parent_job_snapshot=remote_job.parent_job_snapshot,
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
        asset_selection=None,
        asset_check_selection=None,
        asset_graph=repo.asset_graph,
    )


def execute(
    instance: dg.DagsterInstance, run: dg.DagsterRun, on_event: Callable[[DagsterEvent], None] | None = None
) -> dg.DagsterRun:
    """Execute a created run in this process, as the daemon's run worker would, and return it as
    recorded at the end (status SUCCESS or FAILURE)."""
    recon_job = recon_job_from_origin(cast(JobPythonOrigin, run.job_code_origin))
    instance.add_run_tags(run.run_id, {WORKER_TAG: this_worker()})
    instance.report_engine_event(
        f"Started process for run (pid: {os.getpid()}).", run, EngineEventData.in_process(os.getpid())
    )
    try:
        for event in core_execute_run(recon_job, run, instance, inject_env_vars=False):
            if on_event is not None:
                on_event(event)
    except Exception:  # noqa: BLE001 - core_execute_run records the failure in the event log first
        logging.getLogger("ev_assets").debug("run %s failed", run.run_id, exc_info=True)
    return instance.get_run_by_id(run.run_id)


def run_request(
    instance: dg.DagsterInstance,
    workspace,
    request: dg.RunRequest,
    job_name: str,
    on_event: Callable[[DagsterEvent], None] | None = None,
    log_level: str = "WARNING",
) -> dg.DagsterRun:
    """Run one request unless its run key already has a run that succeeded or is on its way."""
    existing = existing_run(instance, request.run_key)
    if existing is not None:
        return existing
    return execute(instance, create_run(instance, workspace, request, job_name, log_level), on_event)
