"""`ev-awareness run --workers N` (issue 29): on PostgreSQL the daily load of the days paired so far
runs beside the ingest of the next batches, in worker processes, and every table equals a serial
run's; on SQLite (one writer) the option is refused with a reason."""

from __future__ import annotations

import pytest
from polars.testing import assert_frame_equal

from ev_assets.warehouse.store import Warehouse
from ev_assets_tests.conftest import _postgres_database
from ev_assets_tests.test_concurrency import comparable
from ev_assets_tests.test_end_to_end import cli, run_cli

FEED = ("simulate", "--start", "2024-06-03", "--days", "2", "--seed", "5")


def test_workers_need_postgresql(env):
    if not env["EV_WAREHOUSE_URL"].startswith("sqlite"):
        pytest.skip("the SQLite half")
    done = run_cli(env, "run", "--workers", "2")
    assert done.returncode == 2 and "--workers needs PostgreSQL" in done.stdout, done.stdout + done.stderr


def test_two_workers_equal_a_serial_run(env, tmp_path):
    if not env["EV_WAREHOUSE_URL"].startswith("postgresql"):
        pytest.skip("SQLite takes one writer: --workers is PostgreSQL's")
    # Small batches, so the feed is several ingest runs and the loads have days to run beside them.
    env = {**env, "EV_BATCH_MAX_FILES": "20"}
    serial_url, drop = _postgres_database()
    try:
        serial = {
            **env,
            "EV_WAREHOUSE_URL": serial_url,
            "EV_FEED_DIR": tmp_path / "serial_landing",
            "DAGSTER_HOME": tmp_path / "serial_home",
        }
        for project in (env, serial):
            project["EV_FEED_DIR"].mkdir(exist_ok=True)
            project["DAGSTER_HOME"].mkdir(exist_ok=True)
            cli(project, "init")
            cli(project, *FEED)
        cli(serial, "run")
        out = cli(env, "run", "--workers", "2")
        assert "ingest" in out and "daily load" in out and "FAILED" not in out, out
        ingest_runs = int(out.split("ingest")[1].split("runs")[0])
        assert ingest_runs >= 3, out  # several batches: the loads had something to run beside
        parallel_wh, serial_wh = Warehouse(env["EV_WAREHOUSE_URL"]), Warehouse(serial_url)
        try:
            (parallel, parallel_summary), (expected, expected_summary) = comparable(parallel_wh), comparable(serial_wh)
        finally:
            parallel_wh.dispose()
            serial_wh.dispose()
        assert parallel_summary == expected_summary
        assert parallel["transformer_daily_load"].height > 0 and parallel["ev_charging_sessions"].height > 0
        for name, frame in expected.items():
            if name.startswith("ev_load_days_pending"):
                continue
            # Floats to 1e-9: a day loaded in pieces starts from its day before as stored.
            assert_frame_equal(parallel[name], frame, check_exact=False, rel_tol=1e-9, abs_tol=1e-9), name
        assert parallel["ev_load_days_pending"].is_empty()
        # Nothing is left for another run: a second one has nothing to do.
        assert "FAILED" not in cli(env, "run", "--workers", "2")
    finally:
        drop()
