"""Recovers by itself (issue 10): a warehouse away for a step's first attempt, kill -9 in each step,
the real daemon killed mid-batch and restarted, a landing folder that stays O(new files), and
thousands of queued days requested without losing one (issue 9 item 4).

The daemon tests run the real `dagster-daemon` as a subprocess in its own process group, with
1-second sensor intervals; they compare every table with a clean `ev-awareness run` on the same feed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.instance.ref import InstanceRef
from polars.testing import assert_frame_equal

from ev_assets import pipeline
from ev_assets.core import feed
from ev_assets.definitions import defs
from ev_assets.defs.ingest import requests as ingest_requests
from ev_assets.defs.planning import MAX_DAYS_PER_RUN, RANGE_END, RANGE_START, daily_load_sensor
from ev_assets.defs.resources import FeedResource, WarehouseResource
from ev_assets.settings import PROJECT_ROOT
from ev_assets.warehouse import migrate, tables
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import EV_CHARGING_SESSIONS, EV_LOAD_DAYS_PENDING

from .conftest import simulate
from .helpers import snapshot

DAEMON = Path(sys.executable).parent / "dagster-daemon"
COMMITTED_REFERENCE = PROJECT_ROOT / "data" / "reference"
# Columns that name the micro-batch or run that wrote a row: batch grouping depends on when files
# landed and which run got them, the content does not.
_BATCH_COLUMNS = {"batch_id", "run_id"}
# ev_batch_pairing.sessions_written counts the sessions of the pairing transaction, which pairs
# every batch waiting at the time: one or several, depending on timing.
_PAIRING_COLUMNS = {"sessions_written"}
_BATCH_TABLES = {"ev_ingest_batches", "ev_batch_pairing"}

# The daemon and CLI tests run on SQLite only (the write lock's PostgreSQL side is covered by
# test_concurrency); parametrizing the fixture that chooses the backend keeps them from running twice.
sqlite_only = pytest.mark.parametrize("blank_warehouse_url", ["sqlite"], indirect=True)


# --- helpers -------------------------------------------------------------------------------------


def instance_at(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def environment(env: dict, **extra) -> dict[str, str]:
    return {
        **os.environ,
        **{k: str(v) for k, v in env.items() if k.isupper()},
        "EV_FEED_SENSOR_INTERVAL_S": "1",
        "EV_LOAD_SENSOR_INTERVAL_S": "1",
        # A step waiting for a held lock fails after 5 s (not the default 60 s) and retries itself.
        "EV_LOCK_WAIT_S": "5",
        "COLUMNS": "200",
        **extra,
    }


def cli_process(env: dict, *args: str, **extra) -> subprocess.Popen:
    """`ev-awareness ...` in its own process group (so kill -9 takes all of it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ev_assets.cli", *args],
        env=environment(env, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def cli_run(env: dict, *args: str, expect: int | None = 0, **extra) -> tuple[str, float]:
    started = time.monotonic()
    proc = cli_process(env, *args, **extra)
    out, _ = proc.communicate(timeout=600)
    if expect is not None:
        assert proc.returncode == expect, out
    return out, time.monotonic() - started


def start_daemon(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(DAEMON), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        env=environment(env),
        cwd=PROJECT_ROOT,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


# Waits for the daemon are upper bounds, set for a 2-core machine shared with a second test worker
# and other suites: a passing test returns as soon as its condition holds (typically 10-60 s), so
# a generous bound costs nothing, and a failure prints where the pipeline stood (`progress`).
DAEMON_PATIENCE_S = 300


def wait_until(condition, timeout: float, what, poll: float = 0.5):
    """`condition()` once truthy, else fail after `timeout` s. `what` is a string or a callable
    giving one, called only on failure: the daemon's log as it is then, not when waiting began."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")


def step_events(instance: dg.DagsterInstance, run_id: str, event_type: DagsterEventType) -> set[str]:
    return {e.step_key for e in instance.all_logs(run_id, of_type=event_type)}


# Views as of their refresh time (the planning snapshots and the forecast's tables), refreshed after
# the record by their own runs: a clean run and a recovered daemon refresh them at other times.
SNAPSHOT_TABLES = {
    spec.name
    for spec in (
        tables.PREMISE_EV_PROFILE,
        tables.NEW_EVS,
        tables.TRANSFORMER_PLANNING_QUEUE,
        tables.EV_CHARGING_BEHAVIOR,
        tables.TRANSFORMER_OVERLOAD_FORECAST,
    )
}


def comparable(wh: Warehouse) -> dict[str, pl.DataFrame]:
    """Every table as `snapshot` gives it, without write times and the columns naming a batch or
    a run; the two per-batch tables reduce to their totals (the ledger's counts summed)."""
    out = {}
    for name, frame in snapshot(wh, ignore_write_times=True).items():
        if name in SNAPSHOT_TABLES:  # views as of their refresh time, refreshed after the record
            continue
        if name == "ev_event_commits":  # one row per commit: a retried run commits more often, same events
            continue
        frame = frame.drop(
            [c for c in frame.columns if c in _BATCH_COLUMNS or (name == "ev_batch_pairing" and c in _PAIRING_COLUMNS)]
        )
        if name in _BATCH_TABLES:
            frame = frame.select(pl.col(c).sum() for c, t in frame.schema.items() if t.is_numeric())
        out[name] = frame
    return out


def assert_tables_equal(clean: dict[str, pl.DataFrame], got: dict[str, pl.DataFrame]) -> None:
    """Equal row for row; floats to a relative 1e-9 (polars' parallel group sums may differ in the
    last bit between two runs over the same rows)."""
    for name, frame in clean.items():
        try:
            assert_frame_equal(frame, got[name], check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
        except AssertionError as error:
            raise AssertionError(f"{name} differs from a clean run's: {error}") from None


def fresh_env(base: dict, name: str) -> dict:
    """A second isolated project next to `base` (its own landing folder, warehouse and instance),
    with the same reference data."""
    root = base["tmp"] / name
    paths = {"EV_FEED_DIR": root / "landing", "DAGSTER_HOME": root / "dagster_home"}
    for path in paths.values():
        path.mkdir(parents=True)
    url = f"sqlite:///{root / 'ev.sqlite'}"
    migrate.upgrade(url)
    return {**base, **paths, "EV_WAREHOUSE_URL": url, "tmp": root}


def clean_run(env: dict, feed_files: Path, **extra) -> tuple[dict[str, pl.DataFrame], float]:
    """The tables and time of a clean `ev-awareness run` over a copy of the feed."""
    clean = fresh_env(env, "clean")
    for f in feed_files.glob("*.json"):
        shutil.copy2(f, clean["EV_FEED_DIR"] / f.name)
    cli_run(clean, "init")
    _, seconds = cli_run(clean, "run", **extra)
    return comparable(Warehouse(clean["EV_WAREHOUSE_URL"])), seconds


def land_one_by_one(files: list[Path], landing: Path, interval: float) -> threading.Thread:
    """Rename files into the landing folder one by one, as an agent's writer does."""

    def land():
        for f in files:
            f.rename(landing / f.name)
            time.sleep(interval)

    thread = threading.Thread(target=land, daemon=True)
    thread.start()
    return thread


def all_done(wh: Warehouse, landing: Path, sessions: int) -> bool:
    """Every file read and archived, every batch paired, every day loaded, the sessions there."""
    return (
        not list(landing.glob("*.json"))
        and not pipeline.batches_awaiting_pairing(wh)
        and pipeline.pending_load_days(wh).is_empty()
        and wh.count(EV_CHARGING_SESSIONS) >= sessions
    )


def no_run_in_flight(instance: dg.DagsterInstance) -> bool:
    return not instance.get_runs(
        dg.RunsFilter(
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
                dg.DagsterRunStatus.CANCELING,
            ]
        )
    )


def daemon_log(path: Path) -> str:
    return path.read_text()[-4000:] if path.exists() else ""


def progress(wh: Warehouse, env: dict, instance: dg.DagsterInstance, log: Path) -> str:
    """Where a daemon test stands, for its failure message: what is left, the runs and their
    statuses, the end of the daemon's log."""
    runs = [(r.job_name, r.status.value, r.tags.get("dagster/run_key", "")) for r in instance.get_runs(limit=20)]
    return (
        f"{len(list(env['EV_FEED_DIR'].glob('*.json')))} files in the landing folder, "
        f"{len(pipeline.batches_awaiting_pairing(wh))} batches to pair, "
        f"{pipeline.pending_load_days(wh).height} days to load, "
        f"{wh.count(EV_CHARGING_SESSIONS)} sessions; latest runs {runs}\n--- daemon log ---\n{daemon_log(log)}"
    )


# --- 1. a step whose first attempt fails completes under the daemon, with no person --------------


@sqlite_only
def test_a_run_whose_warehouse_is_locked_for_its_first_attempt_completes_under_the_daemon(env, small_utility):
    """The warehouse's write lock held by someone else for longer than the busy timeout (as root,
    chmod does not make SQLite read-only): the ingest step's first attempt fails with
    `database is locked`, the step retries itself, and every session ends up present."""
    staging = env["tmp"] / "staging"
    truth = simulate(small_utility, staging, days=1, seed=5)
    files = sorted(staging.glob("*.json"))
    clean, _ = clean_run(env, staging)

    cli_run(env, "init")
    log = env["tmp"] / "daemon.log"
    daemon = start_daemon(env, log)
    instance = instance_at(env["DAGSTER_HOME"])
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    try:
        half = len(files) // 2
        land_one_by_one(files[:half], env["EV_FEED_DIR"], 0.05).join()
        wait_until(
            lambda: all_done(wh, env["EV_FEED_DIR"], 1),
            DAEMON_PATIENCE_S,
            lambda: "the first half: " + progress(wh, env, instance, log),
        )

        # Someone holds the write lock (BEGIN EXCLUSIVE; WAL readers, like the sensors, go on).
        holder = sqlite3.connect(env["EV_WAREHOUSE_URL"].removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            land_one_by_one(files[half:], env["EV_FEED_DIR"], 0.05).join()

            def retried() -> list[str]:
                return [
                    r.run_id
                    for r in instance.get_runs()
                    if step_events(instance, r.run_id, DagsterEventType.STEP_UP_FOR_RETRY)
                ]

            # Held until a step's first attempt failed on it (EV_LOCK_WAIT_S, 5 s here).
            failed_once = wait_until(
                retried,
                DAEMON_PATIENCE_S,
                lambda: "a step attempt failing on the lock: " + progress(wh, env, instance, log),
                poll=1,
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        wait_until(
            lambda: all_done(wh, env["EV_FEED_DIR"], truth.height // 2),
            DAEMON_PATIENCE_S,
            lambda: "recovery: " + progress(wh, env, instance, log),
        )
        wait_until(lambda: no_run_in_flight(instance), 60, "runs to finish")
    finally:
        kill_group(daemon, signal.SIGTERM)

    for run_id in failed_once:
        assert instance.get_run_by_id(run_id).is_success, [e.user_message for e in instance.all_logs(run_id)][-6:]
    assert not instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert pipeline.ledger_totals(wh)["reconciled"]
    assert_tables_equal(clean, comparable(wh))


# --- 2. kill -9 in each step, then a normal run, equals a clean run -------------------------------


@pytest.fixture(scope="module")
def three_day_feed(tmp_path_factory):
    """Three days of the committed 2,000-meter utility (steps long enough to be caught running),
    in three micro-batches, and the tables and time of a clean `ev-awareness run` over it."""
    from ev_assets.core.reference_extracts import read_reference_extracts
    from ev_assets.synthetic import simulator

    root = tmp_path_factory.mktemp("three_day_feed")
    staging = root / "staging"
    sessions = simulator.simulate_sessions(read_reference_extracts(COMMITTED_REFERENCE), date(2024, 6, 3), 3, 9)
    simulator.write_feed(simulator.session_messages(sessions, 9), staging)
    batch = {"EV_BATCH_MAX_FILES": str(len(list(staging.glob("*.json"))) // 3 + 1)}
    base = {"EV_REFERENCE_DIR": COMMITTED_REFERENCE, "EV_TIMEZONE": "America/New_York", "tmp": root}
    clean, seconds = clean_run(base, staging, **batch)
    return {"staging": staging, "sessions": sessions, "batch": batch, "clean": clean, "seconds": seconds}


def run_until_step(env: dict, step: str, nth: int, batch: dict) -> subprocess.Popen:
    """Start `ev-awareness run -v` and return once `step` started for the `nth` time (read from its
    own log, as it happens), 0.1 s into the step."""
    proc = cli_process(env, "-v", "run", **batch)
    seen = 0
    for line in proc.stdout:
        if f" - {step} - STEP_START - " in line:
            seen += 1
            if seen == nth:
                time.sleep(0.1)
                return proc
    raise AssertionError(f"{step} never started {nth} times")


@sqlite_only
@pytest.mark.parametrize("step", ["ev_charging_events", "ev_charging_sessions", "grid_load_by_day"])
def test_kill_9_in_a_step_then_a_normal_run_equals_a_clean_run(env, step, three_day_feed):
    """`ev-awareness run` killed (kill -9, its whole process group) while `step` runs, in the
    second micro-batch for the ingest steps: the next `ev-awareness run` marks the dead run failed,
    finishes its work in about a clean run's time, and every table equals a clean run's."""
    feed_ = three_day_feed
    env = {**env, "EV_REFERENCE_DIR": COMMITTED_REFERENCE}
    for f in feed_["staging"].glob("*.json"):
        shutil.copy2(f, env["EV_FEED_DIR"] / f.name)
    cli_run(env, "init")
    instance = instance_at(env["DAGSTER_HOME"])

    proc = run_until_step(env, step, 1 if step == "grid_load_by_day" else 2, feed_["batch"])
    kill_group(proc)
    # Caught inside the step: its run is left STARTED, the step started and never finished.
    (killed,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    assert step in step_events(instance, killed.run_id, DagsterEventType.STEP_START)
    assert step not in step_events(instance, killed.run_id, DagsterEventType.STEP_SUCCESS)

    out, seconds = cli_run(env, "run", **feed_["batch"])
    assert "lost its worker: marked failed" in out, out
    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    assert seconds < 3 * feed_["seconds"], (seconds, feed_["seconds"])
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    assert all_done(wh, env["EV_FEED_DIR"], feed_["sessions"].height // 2)
    assert pipeline.ledger_totals(wh)["reconciled"]
    assert_tables_equal(feed_["clean"], comparable(wh))


# --- 3. the real daemon killed mid-batch and restarted --------------------------------------------


@sqlite_only
def test_the_daemon_killed_mid_batch_and_restarted_ends_like_a_clean_run(env, small_utility):
    """Files landing one by one under `dagster-daemon`; the daemon's whole process group (code
    server and run workers included) killed with kill -9 while a batch's sessions step runs (its
    events committed, not paired); files keep landing; a new daemon finishes the work: the dead
    run is failed by `dead_run_sensor`, the feed sensor asks for the pairing the warehouse says is
    waiting (whether or not the daemon's run retry comes), and the tables equal a clean run's."""
    staging = env["tmp"] / "staging"
    truth = simulate(small_utility, staging, days=2, seed=7)
    files = sorted(staging.glob("*.json"), key=lambda f: f.name)
    clean, _ = clean_run(env, staging)

    cli_run(env, "init")
    log = env["tmp"] / "daemon.log"
    instance = instance_at(env["DAGSTER_HOME"])
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    daemon = start_daemon(env, log)
    try:
        landing = land_one_by_one(files, env["EV_FEED_DIR"], 0.15)

        def pairing_running():
            for run in instance.get_runs(dg.RunsFilter(job_name="ingest_job", statuses=[dg.DagsterRunStatus.STARTED])):
                started = step_events(instance, run.run_id, DagsterEventType.STEP_START)
                if "ev_charging_sessions" in started and "ev_charging_sessions" not in step_events(
                    instance, run.run_id, DagsterEventType.STEP_SUCCESS
                ):
                    return run
            return None

        killed = wait_until(
            pairing_running,
            DAEMON_PATIENCE_S,
            lambda: "a sessions step: " + progress(wh, env, instance, log),
            poll=0.02,
        )
    finally:
        kill_group(daemon)
    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED

    daemon = start_daemon(env, log)
    try:
        landing.join()
        wait_until(
            lambda: all_done(wh, env["EV_FEED_DIR"], truth.height // 2),
            DAEMON_PATIENCE_S,
            lambda: "recovery: " + progress(wh, env, instance, log),
            poll=1,
        )
        wait_until(
            lambda: instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE,
            120,
            lambda: "dead_run_sensor to fail the dead run: " + progress(wh, env, instance, log),
            poll=1,
        )
        wait_until(lambda: no_run_in_flight(instance), 120, "runs (the retry included) to finish", poll=1)
    finally:
        kill_group(daemon, signal.SIGTERM)

    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    assert pipeline.ledger_totals(wh)["reconciled"]
    assert_tables_equal(clean, comparable(wh))


# --- 4. a sensor tick's cost stays flat as landed files accumulate -------------------------------


@sqlite_only
def test_a_tick_lists_and_hashes_only_new_files(env, small_utility, monkeypatch):
    staging = env["tmp"] / "staging"
    simulate(small_utility, staging, days=3, seed=4)
    files = sorted(staging.glob("*.json"), key=lambda f: f.name)
    chunks = [files[i::3] for i in range(3)]
    listed, hashed = [], []
    list_landing, file_sha256 = feed.list_landing, feed.file_sha256
    monkeypatch.setattr(feed, "list_landing", lambda d: listed.append(len(found := list_landing(d))) or found)
    monkeypatch.setattr(feed, "file_sha256", lambda p: hashed.append(p) or file_sha256(p))
    feed_res = FeedResource(landing_dir=str(env["EV_FEED_DIR"]), settle_seconds=0)
    wh_res = WarehouseResource(url=env["EV_WAREHOUSE_URL"])

    def tick() -> int:
        listed.clear(), hashed.clear()
        batches = ingest_requests.landing_batches_to_ingest(feed_res, wh_res, cursor=None)
        assert not hashed  # names the ledger never saw are not hashed
        return sum(len(b.files) for b in batches)

    cli_run(env, "init")
    ingested = 0
    for chunk in chunks:
        for f in chunk:
            shutil.copy2(f, env["EV_FEED_DIR"] / f.name)
        assert tick() == len(chunk) and listed == [len(chunk)]
        cli_run(env, "run")
        ingested += len(chunk)
        # Every processed file left the landing folder for the archive: the next tick lists none.
        assert not list(env["EV_FEED_DIR"].glob("*.json"))
        assert len(list((env["EV_FEED_DIR"] / feed.ARCHIVE_DIR).rglob("*.json"))) == ingested
        assert tick() == 0 and listed == [0]


# --- 5. thousands of queued days: every one requested, in ranges of at most 31 days --------------


def test_thousands_of_queued_days_are_all_requested_in_ranges(warehouse):
    """More than 10,000 days of changes queued (an outage): the sensor reads the queue, not a
    page of event records, and asks for every day within the partitions in range runs of at most
    31 days; days before the partitions are named, not dropped silently."""
    start = date(2010, 1, 1)
    days = [start + timedelta(days=n) for n in range((date(2024, 12, 31) - start).days + 1)]
    days = [d for d in days if d.day != 15]  # gaps: many contiguous spans
    early = [date(1995, 1, 1) + timedelta(days=n) for n in range(5_000)]  # before the partitions
    queued = early + days
    assert len(queued) > 10_000
    now = datetime.now(UTC)
    with warehouse.transaction() as conn:
        warehouse.insert(
            conn, EV_LOAD_DAYS_PENDING, pl.DataFrame({"load_date": queued, "queued_at": [now] * len(queued)})
        )

    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        resources={"warehouse": WarehouseResource(url=warehouse.url)},
        definitions=defs,
    )
    result = daily_load_sensor(context)
    requested: list[date] = []
    for request in result.run_requests:
        first, last = date.fromisoformat(request.tags[RANGE_START]), date.fromisoformat(request.tags[RANGE_END])
        assert first <= last and (last - first).days < MAX_DAYS_PER_RUN
        requested += [first + timedelta(days=n) for n in range((last - first).days + 1)]
    assert sorted(requested) == days  # every day within the partitions, once
    assert len({r.run_key for r in result.run_requests}) == len(result.run_requests)
    # The queue still holds every day until its load is computed.
    assert warehouse.count(EV_LOAD_DAYS_PENDING) == len(queued)
