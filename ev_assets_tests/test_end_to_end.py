"""End to end through the CLI, as a newcomer runs it: simulate, run, run again, status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import polars as pl

from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import (
    EV_CHARGING_SESSIONS,
    EV_INGEST_BATCHES,
    EV_REJECTED_MESSAGES,
    TRANSFORMER_DAILY_LOAD,
)

from .helpers import assert_same_tables, complete_inside, snapshot


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    """`ev-awareness ...` in its own process, with the test project's settings."""
    environment = {**os.environ, **{k: str(v) for k, v in env.items() if k.isupper()}, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "ev_assets.cli", *args], env=environment, capture_output=True, text=True, timeout=600
    )


def cli(env: dict, *args: str, expect: int = 0) -> str:
    done = run_cli(env, *args)
    assert done.returncode == expect, done.stdout + done.stderr
    return done.stdout


def test_simulate_run_twice_and_status(env):
    truth_path = env["tmp"] / "truth.parquet"
    cli(env, "init")
    cli(env, "simulate", "--start", "2024-06-03", "--days", "2", "--seed", "5", "--ground-truth", str(truth_path))
    out = cli(env, "run")
    assert "reference    1 runs, 1 ok" in out and "0 rejected" in out
    # Quiet by default: a few lines per stage, not the engine's log.
    assert len(out.splitlines()) < 15 and "DEBUG" not in out

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
    assert "pending: 0 files" in status and "0 batches to pair, 0 days of daily load" in status
    assert ": reconciles" in status
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


def _record(meter: str, kind: str, when: str, **values: str) -> dict:
    base = {
        "ServicePointID": "1000000001",
        "MeterID": meter,
        "MeterNumber": "M" + meter[-9:],
        "ESN": "1.23.456.7.890123.45.67.8901234567",
        "TransformerID": "4000000001-00000001",
        "PremiseID": "P0000000001",
        "ReceivedTime": when,
        "ChargeStartTime": None,
        "ChargeEndTime": None,
        "ChargeW": None,
        "ChargeDuration": None,
        "ChargeEnergy": None,
    }
    base["ChargeStartTime" if kind == "start" else "ChargeEndTime"] = when
    return {**base, **values}


def test_quarantine_export_correct_and_replay(env):
    # One session whose start claims 30 kW (over the default bound) and whose end carries a
    # timestamp without an offset: both quarantined; then fixed by configuration and by hand.
    start = _record("5550000001", "start", "2024-06-03T22:00:00.00Z", ChargeW="30000")
    end = _record("5550000001", "end", "2024-06-04T00:00:00.00", ChargeDuration="2", ChargeEnergy="60000")
    end["ReceivedTime"] = "2024-06-04T00:00:05.00Z"
    (env["EV_FEED_DIR"] / "bad.json").write_text(json.dumps({"EVChargingEvents": [start, end]}))
    cli(env, "init")
    assert "2 rejected" in cli(env, "run")
    listing = cli(env, "rejected", "list")
    assert "charge_w_implausible" in listing and "timestamp_without_offset" in listing

    # A wider bound releases the start; the end still fails.
    replayed = cli({**env, "EV_CHARGE_W_MAX": "40000"}, "rejected", "replay", "--code", "charge_w_implausible")
    assert "1 accepted" in replayed

    # The end is corrected by hand and replayed from the export.
    export = env["tmp"] / "fix.json"
    cli(env, "rejected", "export", "--out", str(export))
    payload = json.loads(export.read_text())
    (record,) = payload["EVChargingEvents"]
    record["ChargeEndTime"] = "2024-06-04T00:00:00.00Z"
    export.write_text(json.dumps(payload))
    assert "1 accepted" in cli(env, "rejected", "replay", "--file", str(export))

    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    rejected = wh.read(EV_REJECTED_MESSAGES)
    assert rejected["status"].to_list() == ["replayed", "replayed"]
    session = wh.read(EV_CHARGING_SESSIONS).row(0, named=True)
    assert (session["status"], session["energy_wh"], session["duration_h"]) == ("complete", 60000.0, 2.0)
    ledger = wh.read(EV_INGEST_BATCHES)
    assert ledger.height == 3 and ledger["reconciled"].all()
    assert ": reconciles" in cli(env, "status")
    assert cli(env, "rejected", "list").startswith("0 quarantined records")
    assert wh.count(TRANSFORMER_DAILY_LOAD) > 0


def test_a_run_on_its_way_in_another_process_is_not_reported_failed(env):
    """Two `ev-awareness run` at once: the second finds a batch's run already on its way in the
    first and leaves it to it. Its summary said `1 FAILED` for that run (seen with two runs on a
    month's feed), which had not failed; it must say the run is on its way elsewhere, and exit 0."""
    import socket

    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from ev_assets.definitions import defs
    from ev_assets.defs.ingest.jobs import ingest_job
    from ev_assets.defs.ingest.requests import feed_run_requests
    from ev_assets.defs.resources import FeedResource, ReferenceResource, WarehouseResource
    from ev_assets.defs.runs import WORKER_TAG
    from ev_assets.runner import RUN_KEY

    cli(env, "init")
    assert "reference    1 runs, 1 ok" in cli(env, "run")  # nothing to ingest yet
    cli(env, "simulate", "--start", "2024-06-03", "--days", "1", "--seed", "5")
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(env["DAGSTER_HOME"])))
    requests, _, _ = feed_run_requests(instance, FeedResource(), ReferenceResource(), WarehouseResource(), cursor=None)
    assert requests and all(r.job_name == ingest_job.name for r in requests)
    # The other process's run of the first batch: started, its worker (this test) alive.
    instance.create_run_for_job(
        defs.resolve_job_def(ingest_job.name),
        tags={RUN_KEY: requests[0].run_key, WORKER_TAG: f"{socket.gethostname()}:{os.getpid()}"},
        status=dg.DagsterRunStatus.STARTED,
    )
    out = cli(env, "run")
    assert "FAILED" not in out, out
    assert f"ingest       {len(requests)} runs, {len(requests) - 1} ok, 1 on its way in another process" in out, out


def _away(url: str, tmp) -> str:
    """The warehouse's URL as a process sees it while the database is away: a PostgreSQL server
    that does not answer (the same database on a port nothing listens on), a SQLite file that
    cannot be opened (a folder stands where the file should be)."""
    from sqlalchemy.engine import make_url

    from .receiver_server import free_port

    if url.startswith("sqlite"):
        (tmp / "unopenable.sqlite").mkdir()
        return f"sqlite:///{tmp / 'unopenable.sqlite'}"
    return make_url(url).set(port=free_port()).render_as_string(hide_password=False)


def test_a_run_while_the_warehouse_is_away_stops_with_one_clear_message_then_a_run_gets_everything(env):
    """The database away when `ev-awareness run` starts (seen with PostgreSQL cut for a minute
    between two runs): the command printed a 100-line traceback from the planning of its runs. It
    must stop with exit code 75 (try again later) and a message naming the setting, read nothing,
    and the next run, the database back, must take every file."""
    cli(env, "init")
    cli(env, "simulate", "--start", "2024-06-03", "--days", "1", "--seed", "5")
    landed = sorted(p.name for p in env["EV_FEED_DIR"].glob("*.json"))
    away = {**env, "EV_WAREHOUSE_URL": _away(env["EV_WAREHOUSE_URL"], env["tmp"])}
    for command in (("run",), ("status",)):
        done = run_cli(away, *command)
        said = done.stdout + done.stderr
        assert done.returncode == 75, said
        assert "Traceback" not in said and "EV_WAREHOUSE_URL" in said and "again" in said, said
        assert len(said.splitlines()) <= 8, said
    assert sorted(p.name for p in env["EV_FEED_DIR"].glob("*.json")) == landed  # nothing read or moved

    out = cli(env, "run")
    assert "0 rejected" in out and not list(env["EV_FEED_DIR"].glob("*.json")), out
    assert Warehouse(env["EV_WAREHOUSE_URL"]).count(EV_CHARGING_SESSIONS) > 0


def test_a_run_on_a_warehouse_without_the_schema_says_what_to_run_without_a_traceback(env):
    """A warehouse URL pointing at a database nobody upgraded (a new server, a typo in the path):
    the schema error's own message, which names the command to run, and exit code 1; it came out
    at the end of a traceback."""
    cli(env, "init")
    blank = {**env, "EV_WAREHOUSE_URL": f"sqlite:///{env['tmp'] / 'never_upgraded.sqlite'}"}
    done = run_cli(blank, "run")
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Traceback" not in said and "has no schema" in said and "ev-awareness db upgrade" in said, said
