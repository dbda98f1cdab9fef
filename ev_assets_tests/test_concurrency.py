"""Exactly once whatever runs at the same time (issue 9): two OS processes ingest overlapping
files and pair their sessions at once, and the tables equal those of a serial run.

Nothing but the database serialises them (no Dagster pool here): `Warehouse.transaction()` takes
the database's write lock (PostgreSQL advisory lock, SQLite BEGIN IMMEDIATE), and every read that
decides a write happens inside it. The fresh-database variant also starts both on a database
without tables (the DDL race of two CLI runs started together).
"""

from __future__ import annotations

import multiprocessing
import shutil
import traceback
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ev_assets import pipeline
from ev_assets.core import feed
from ev_assets.core.batching import plan_batches
from ev_assets.warehouse import migrate
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import (
    EV_BATCH_PAIRING,
    EV_CHARGING_EVENTS,
    EV_CHARGING_SESSIONS,
    EV_EVENT_COMMITS,
    EV_FEED_FILES,
    EV_INGEST_BATCHES,
    EV_QUARANTINED_FILES,
    EV_REJECTED_MESSAGES,
)

from .conftest import _postgres_database, simulate
from .helpers import snapshot

Batches = list[tuple[str, list[str]]]

# Columns that legitimately depend on which process won a message, file or batch.
_WINNER_COLUMNS = {
    EV_CHARGING_EVENTS.name: ["batch_id", "file_name", "record_index"],
    EV_FEED_FILES.name: ["batch_id"],
    EV_REJECTED_MESSAGES.name: ["batch_id"],
    EV_QUARANTINED_FILES.name: ["batch_id"],
    # Pairing takes every batch waiting at that moment: which run paired which batch varies.
    EV_BATCH_PAIRING.name: ["sessions_written"],
}
_LEDGER_COUNTS = [
    "files_read",
    "files_parsed",
    "files_repaired",
    "files_quarantined",
    "files_already_read",
    "records_read",
    "accepted",
    "duplicates",
    "rejected",
]


def run_batches(url: str, batches: Batches, upgrade: bool = False) -> None:
    """What one ingest run does per batch: ingest it, then re-pair its sessions (after `db upgrade`
    when asked: two processes upgrading a fresh database together)."""
    settings = pipeline.PipelineSettings()
    if upgrade:
        migrate.upgrade(url)
    warehouse = Warehouse(url)
    try:
        for batch_id, paths in batches:
            assert pipeline.ingest_batch(warehouse, batch_id, [Path(p) for p in paths], settings).reconciled
            pipeline.pair_pending_batches(warehouse, settings)
    finally:
        warehouse.dispose()


def _worker(jobs, start, results) -> None:
    """A spawned process that runs the batches it is sent, each job starting together with the
    other worker's (the barrier), until it is sent None."""
    while (job := jobs.get()) is not None:
        url, batches, upgrade = job
        try:
            start.wait(timeout=60)
            run_batches(url, batches, upgrade)
            results.put("ok")
        except BaseException:
            results.put(traceback.format_exc())


@pytest.fixture(scope="module")
def two_processes():
    """Two OS processes (spawned once per module: importing the package costs seconds), and a
    function that runs one workload in each, at the same time."""
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    queues = [ctx.Queue(), ctx.Queue()]
    procs = [ctx.Process(target=_worker, args=(q, start, results), daemon=True) for q in queues]
    for proc in procs:
        proc.start()

    def run(url: str, workloads: list[Batches], upgrade: bool = False) -> None:
        for queue, batches in zip(queues, workloads, strict=True):
            queue.put((url, batches, upgrade))
        outcomes = [results.get(timeout=120) for _ in procs]
        assert outcomes == ["ok"] * len(procs), "\n".join(outcomes)

    yield run
    for queue in queues:
        queue.put(None)
    for proc in procs:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()


def comparable(warehouse: Warehouse) -> tuple[dict[str, pl.DataFrame], dict]:
    """Every table, without write times and without what depends on which process won; the
    batch ledger as its batch ids and summed counts."""
    tables = snapshot(warehouse, ignore_write_times=True)
    ledger = tables.pop(EV_INGEST_BATCHES.name)
    # One row per commit that wrote events: which process won a message decides how many commits
    # there are, so what must match is the numbering (1..N, no gap) and the events it counts.
    commits = tables.pop(EV_EVENT_COMMITS.name).sort("commit_seq")
    assert commits["commit_seq"].to_list() == list(range(1, commits.height + 1)), "commit numbers have a gap"
    for name, columns in _WINNER_COLUMNS.items():
        frame = tables[name].drop(columns)
        tables[name] = frame.sort([c for c, t in frame.schema.items() if t != pl.Binary], nulls_last=True)
    summary = {
        "batch_ids": sorted(ledger["batch_id"]),
        "all_reconciled": bool(ledger["reconciled"].all()),
        **{c: int(ledger[c].sum()) for c in _LEDGER_COUNTS},
        "committed_events": int(commits["event_count"].sum()),
    }
    return tables, summary


def _batches(files: list[Path], max_files: int) -> Batches:
    listed = [feed.FeedFile(p.name, p.parent, p.stat().st_size, i) for i, p in enumerate(files)]
    return [(b.batch_id, b.paths) for b in plan_batches(listed, max_files=max_files, max_messages=10**6)]


@pytest.fixture
def serial_url(warehouse_url, tmp_path):
    """A second database on the same backend, upgraded to the code's schema."""
    if warehouse_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'serial.sqlite'}"
        migrate.upgrade(url)
        yield url
        return
    url, drop = _postgres_database()
    migrate.upgrade(url)
    yield url
    drop()


@pytest.fixture
def fresh_url(warehouse_url, tmp_path):
    """A database on the same backend with no schema at all."""
    if warehouse_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.sqlite'}"
        return
    url, drop = _postgres_database()
    yield url
    drop()


@pytest.mark.parametrize("database", ["with_reference", "fresh"])
def test_two_concurrent_ingests_equal_a_serial_run(
    database, two_processes, warehouse_url, serial_url, fresh_url, small_utility, tmp_path
):
    landing = tmp_path / "landing"
    simulate(small_utility, landing, days=1)
    files = sorted(landing.glob("*.json"))
    assert len(files) >= 30
    # the same content under another name: a duplicate of every message in it, whoever reads first
    copy = landing / f"copy-of-{files[15].name}"
    shutil.copy(files[15], copy)
    first = _batches(files[:24] + [copy], max_files=4)
    # overlapping files in differently cut batches, reached at about the same time by both, and at
    # the end a batch the other process also runs (the same content-derived id: one writes it)
    second = _batches(files[1:] + [copy], max_files=3) + first[:1]

    if database == "with_reference":
        for url in (warehouse_url, serial_url):
            wh = Warehouse(url)
            pipeline.load_reference(wh, small_utility, pipeline.PipelineSettings())
            wh.dispose()

    if database == "fresh":  # both start on a database without tables, each upgrading it first
        warehouse_url = fresh_url
    two_processes(warehouse_url, [first, second], upgrade=database == "fresh")
    run_batches(serial_url, first)
    run_batches(serial_url, second)

    concurrent_wh, serial_wh = Warehouse(warehouse_url), Warehouse(serial_url)
    try:
        concurrent, concurrent_ledger = comparable(concurrent_wh)
        serial, serial_ledger = comparable(serial_wh)
        assert serial[EV_CHARGING_SESSIONS.name].height > 0
        assert serial[EV_CHARGING_EVENTS.name]["message_id"].is_unique().all()
        for name, frame in serial.items():
            # Floats to 1e-12: polars' float kernels can round the last bit differently with the
            # length of the frame, so a session's average_kw may differ by one ulp with the size of
            # the pairing window it was computed in (which batch re-paired it last).
            assert_frame_equal(concurrent[name], frame, rel_tol=1e-12, abs_tol=0.0), f"{name} differs"
        assert concurrent_ledger == serial_ledger
        assert concurrent_ledger["all_reconciled"] and concurrent_ledger["duplicates"] > 0
        totals = pipeline.ledger_totals(concurrent_wh)
        assert totals["reconciled"] and totals["accepted"] == totals["events_stored"]
    finally:
        concurrent_wh.dispose()
        serial_wh.dispose()
