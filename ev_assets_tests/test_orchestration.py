"""One orchestrator: CLI runs are recorded in the instance like the daemon's (run keys, tags, the
job's origin), a failed one is redone by the next run or the daemon's sensor; importing the code
location writes nothing; the real daemon loads the reference data before the events."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ev_assets import runner
from ev_assets.definitions import defs
from ev_assets.defs.ingest.sensors import ev_feed_sensor
from ev_assets.defs.planning import daily_load_sensor
from ev_assets.defs.resources import FeedResource, PipelineConfig, ReferenceResource, WarehouseResource
from ev_assets.settings import PROJECT_ROOT
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import (
    EV_CHARGING_EVENTS,
    EV_CHARGING_SESSIONS,
    FEEDER_DAILY_LOAD,
    SUBSTATION_DAILY_LOAD,
)

from .conftest import simulate
from .test_end_to_end import cli


def instance_at(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def test_importing_the_code_location_writes_nothing(tmp_path):
    """Importing ev_assets.definitions in an empty directory creates no file anywhere we can see
    and changes no environment variable."""
    # polars sets its allocator's variable when it loads: import the libraries first, then ours.
    code = (
        "import os, polars, dagster; before = dict(os.environ); import ev_assets.definitions as d; "
        "d.defs.get_repository_def(); assert dict(os.environ) == before, set(os.environ) ^ set(before)"
    )
    # Nothing inherited that the import could have set itself (the test process's own event logs
    # set Dagster's batching variable): the subprocess starts without it.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EV_") and k not in ("DAGSTER_HOME", "DAGSTER_EVENT_BATCH_SIZE")
    }
    watched = [tmp_path, PROJECT_ROOT / ".dagster_home", PROJECT_ROOT / "data"]
    before = {str(p) for root in watched if root.exists() for p in root.rglob("*")}
    home_existed = (PROJECT_ROOT / ".dagster_home").exists()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    after = {str(p) for root in watched if root.exists() for p in root.rglob("*")}
    assert after == before
    assert (PROJECT_ROOT / ".dagster_home").exists() == home_existed
    assert not any(tmp_path.iterdir())


def test_after_a_cli_run_the_daemons_sensors_ask_for_nothing(env, small_utility):
    cli(env, "init")
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    cli(env, "run")
    instance = instance_at(env["DAGSTER_HOME"])
    runs = instance.get_runs()
    assert {r.job_name for r in runs} == {
        "reference_job",
        "ingest_job",
        "daily_load_job",
        "premise_profile_job",
        "forecast_job",
        "planning_queue_job",
    }
    for run in runs:
        # Recorded with the job's origin (the code location's module), a run key and who ran it.
        assert run.is_success and run.job_code_origin is not None
        assert run.tags.get("dagster/run_key") and run.tags[runner.LAUNCHED_BY] == "cli"
    resources = {
        "warehouse": WarehouseResource(url=env["EV_WAREHOUSE_URL"]),
        "feed_landing": FeedResource(landing_dir=str(env["EV_FEED_DIR"]), settle_seconds=0),
        "reference": ReferenceResource(reference_dir=str(env["EV_REFERENCE_DIR"])),
        "pipeline_config": PipelineConfig(),
    }
    for sensor in (ev_feed_sensor, daily_load_sensor):
        context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
        assert not sensor(context).run_requests, sensor.name


def test_a_failed_cli_run_is_redone_by_the_next_run_and_asked_for_by_the_daemons_sensor(env, small_utility):
    """A CLI run carries no code-server origin, so the daemon's run retries cannot re-execute it:
    it says so (`dagster/max_retries: 0`, no "will retry" in the UI), and the work is redone from
    the warehouse's state instead: the feed sensor asks for it again (a CLI run's run key would not
    count as the sensor's anyway), and the next `ev-awareness run` does it."""
    cli(env, "init")
    meters = env["EV_REFERENCE_DIR"] / "meters.csv"
    good = meters.read_text()
    meters.write_text("this is not the meters extract\n")
    cli(env, "run", expect=1)
    instance = instance_at(env["DAGSTER_HOME"])
    (failed,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert failed.job_name == "reference_job"
    assert failed.tags[runner.MAX_RETRIES] == "0" and failed.tags.get("dagster/will_retry") != "true"

    meters.write_text(good)
    resources = {
        "warehouse": WarehouseResource(url=env["EV_WAREHOUSE_URL"]),
        "feed_landing": FeedResource(landing_dir=str(env["EV_FEED_DIR"]), settle_seconds=0),
        "reference": ReferenceResource(reference_dir=str(env["EV_REFERENCE_DIR"])),
        "pipeline_config": PipelineConfig(),
    }
    context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    requests = ev_feed_sensor(context).run_requests
    # The fixed extracts' key (a run key names the extracts' content, so a fix is new work).
    (asked,) = [r.run_key for r in requests if r.job_name == "reference_job"]

    cli(env, "run")
    (done,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS], job_name="reference_job"))
    assert done.tags["dagster/run_key"] == asked
    assert Warehouse(env["EV_WAREHOUSE_URL"]).count(EV_CHARGING_EVENTS) == 0  # nothing landed to ingest


@pytest.mark.parametrize("blank_warehouse_url", ["sqlite"], indirect=True)
def test_the_daemon_loads_the_reference_data_before_the_events(env, tmp_path):
    """`dagster-daemon` on a fresh instance, the committed reference folder, files landing: the
    events come out enriched and the feeder and substation tables filled, with no person."""
    from ev_assets.core.reference_extracts import read_reference_extracts
    from ev_assets.synthetic import simulator

    committed = PROJECT_ROOT / "data" / "reference"
    daemon_env = {
        **os.environ,
        **{k: str(v) for k, v in env.items() if k.isupper()},
        "EV_REFERENCE_DIR": str(committed),
        "EV_FEED_SENSOR_INTERVAL_S": "1",
        "EV_LOAD_SENSOR_INTERVAL_S": "1",
    }
    cli({**env, "EV_REFERENCE_DIR": committed}, "init")
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        env=daemon_env,
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        utility = read_reference_extracts(committed)
        sessions = simulator.simulate_sessions(utility, simulator_start(), 1, 3)
        simulator.write_feed(simulator.session_messages(sessions, 3), env["EV_FEED_DIR"])
        wh = Warehouse(env["EV_WAREHOUSE_URL"])
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if _table_has_rows(wh, SUBSTATION_DAILY_LOAD) and wh.count(EV_CHARGING_SESSIONS) >= sessions.height:
                break
            time.sleep(2)
        events = wh.read(EV_CHARGING_EVENTS)
        assert events.height == 2 * sessions.height, (tmp_path / "daemon.log").read_text()[-3000:]
        assert events.filter(pl.col("enrichment_status") != "enriched").is_empty()
        assert wh.count(FEEDER_DAILY_LOAD) > 0 and wh.count(SUBSTATION_DAILY_LOAD) > 0
    finally:
        os.killpg(daemon.pid, 15)
        daemon.wait(timeout=60)
        log.close()


def simulator_start():
    from datetime import date

    return date(2024, 6, 3)


def _table_has_rows(wh: Warehouse, spec) -> bool:
    try:
        return wh.count(spec) > 0
    except Exception:  # noqa: BLE001 - the table may not be readable while the first run creates it
        return False
