"""End to end through the CLI, as a newcomer runs it: simulate, run, run again, status."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import polars as pl

from ev_assets.tables import EV_CHARGING_SESSIONS, TRANSFORMER_DAILY_LOAD
from ev_assets.warehouse import Warehouse

from .helpers import assert_same_tables, complete_inside, snapshot


def cli(env: dict, *args: str) -> str:
    environment = {**os.environ, **{k: str(v) for k, v in env.items() if k.isupper()}}
    done = subprocess.run(
        [sys.executable, "-m", "ev_assets.cli", *args], env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_simulate_run_twice_and_status(env):
    truth_path = env["tmp"] / "truth.parquet"
    cli(env, "simulate", "--start", "2024-06-03", "--days", "2", "--seed", "5", "--ground-truth", str(truth_path))
    out = cli(env, "run")
    assert "loaded the reference data" in out and "0 rejected" in out

    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    before = snapshot(wh)
    sessions = wh.read(EV_CHARGING_SESSIONS)
    assert wh.count(TRANSFORMER_DAILY_LOAD) > 0

    # Every simulated session that started and ended inside the span appears once, with the
    # simulator's start, end and energy.
    tz = ZoneInfo("America/New_York")
    inside = complete_inside(
        pl.read_parquet(truth_path),
        datetime(2024, 6, 3, tzinfo=tz).astimezone(UTC),
        datetime(2024, 6, 5, tzinfo=tz).astimezone(UTC),
    )
    assert inside.height > 0
    matched = inside.join(sessions, on=["meter_id", "start_time"], how="inner", suffix="_stored")
    assert matched.height == inside.height
    assert matched.filter(pl.col("status") != "complete").is_empty()
    assert (matched["end_time"] == matched["end_time_stored"]).all()
    assert (matched["energy_wh"] - matched["energy_wh_stored"]).abs().max() < 1e-6
    assert sessions["session_id"].is_unique().all()

    # The second run finds nothing to do and changes nothing.
    again = cli(env, "run")
    assert "no new files" in again
    assert_same_tables(before, snapshot(wh))

    status = cli(env, "status")
    assert "pending files" in status and " 0  (" in status
    top = cli(env, "top", "--limit", "3")
    assert "busiest transformers" in top

    # The next day arrives: its sessions join the first span's, nothing is lost or doubled.
    truth_next = env["tmp"] / "truth_next.parquet"
    cli(env, "simulate", "--start", "2024-06-05", "--days", "1", "--seed", "5", "--ground-truth", str(truth_next))
    cli(env, "run")
    after = wh.read(EV_CHARGING_SESSIONS)
    assert after["session_id"].is_unique().all()
    assert after.filter(pl.col("status") != "complete").is_empty()
    everything = pl.concat([pl.read_parquet(truth_path), pl.read_parquet(truth_next)])
    assert after.height == everything.height
    assert after.join(everything, on=["meter_id", "start_time", "end_time"], how="anti").is_empty()
