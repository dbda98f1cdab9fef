"""Write locks scoped to what a step writes (issue 29): on PostgreSQL two writers of disjoint meter
shards or days hold their locks at the same time, two of one shard or day serialise, and an
unscoped writer (a reference correction, a snapshot) excludes them all. The pairing locks the
shards of its batches' meters, the daily load its days; a day queued again while its load runs
stays queued. SQLite keeps one writer at a time."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
import sqlalchemy as sa

from ev_assets import pipeline
from ev_assets.core.contract import ContractResult
from ev_assets.core.feed import ParsedFile
from ev_assets.pipeline.ingest import write_shards
from ev_assets.pipeline.planning_load import delete_queue_entries
from ev_assets.pipeline.sessions import queue_load_days
from ev_assets.warehouse.store import WRITE_SHARDS, Warehouse, shard_of, shards_of
from ev_assets.warehouse.tables import EV_LOAD_DAYS_PENDING
from ev_assets_tests.conftest import simulate

NOW = datetime(2024, 6, 20, tzinfo=UTC)


def test_shards_are_stable_and_sorted():
    keys = ["MTR-000001", "MTR-000002", "MTR-000001", None]
    expected = sorted({zlib.crc32(k.encode()) % WRITE_SHARDS for k in ("MTR-000001", "MTR-000002")})
    assert shards_of(keys) == expected
    # A fixed value: a stable hash, never Python's per-process salted hash() of a str.
    assert shards_of(["MTR-000001"]) == [zlib.crc32(b"MTR-000001") % WRITE_SHARDS]
    assert all(0 <= s < WRITE_SHARDS for s in shards_of(f"M{i}" for i in range(1000)))


def test_a_batch_locks_its_meters_and_its_files_without_accepted_records():
    quarantined = ParsedFile("q.json", "ab" * 32, 2, "quarantined", [], "not JSON", b"{}", None)
    parsed = ParsedFile("p.json", "cd" * 32, 2, "parsed", [], None, b"", "{}")
    accepted = pl.DataFrame({"file_sha256": ["cd" * 32] * 3, "meter_id": ["M1", "M2", None]})
    result = ContractResult(accepted=accepted, rejected=pl.DataFrame())
    # The parsed file is covered by its records' meters; the quarantined one by its digest.
    assert write_shards([quarantined, parsed], result) == sorted(set(shards_of(["M1", "M2", "ab" * 32])))
    none_accepted = ContractResult(accepted=accepted.clear(), rejected=pl.DataFrame())
    assert write_shards([quarantined, parsed], none_accepted) == shards_of(["ab" * 32, "cd" * 32])


def _timed_out(exc: BaseException) -> bool:
    return "lock timeout" in str(exc).lower() or "LockNotAvailable" in type(getattr(exc, "orig", exc)).__name__


def test_disjoint_shards_write_at_once_the_same_shard_serialises(warehouse_url, monkeypatch):
    if not warehouse_url.startswith("postgresql"):
        pytest.skip("SQLite keeps a single writer (BEGIN IMMEDIATE): shards are PostgreSQL's")
    monkeypatch.setenv("EV_LOCK_WAIT_S", "0.5")
    first, second = Warehouse(warehouse_url), Warehouse(warehouse_url)
    a, b = 3, 17
    try:
        with first.transaction(shards=[a]) as held:
            held.execute(sa.text("SELECT 1"))
            # Another shard: taken at once while the first is held.
            with second.transaction(shards=[b]) as other:
                assert other.execute(sa.text("SELECT 1")).scalar_one() == 1
            # Days are another scope: taken at once beside a shard.
            with second.transaction(days=[date(2024, 6, 1)]) as other:
                assert other.execute(sa.text("SELECT 1")).scalar_one() == 1
            # The same shard, and every shard: each waits, then fails at the lock timeout.
            for shards in ([a], [b, a], None):
                with pytest.raises(sa.exc.OperationalError) as raised:
                    with second.transaction(shards=shards):
                        pass
                assert _timed_out(raised.value), raised.value
        # Released with the first transaction's commit.
        with second.transaction() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        first.dispose()
        second.dispose()


def test_sqlite_keeps_one_writer(warehouse_url, monkeypatch):
    if not warehouse_url.startswith("sqlite"):
        pytest.skip("the SQLite half")
    monkeypatch.setenv("EV_LOCK_WAIT_S", "0.2")
    first, second = Warehouse(warehouse_url), Warehouse(warehouse_url)
    a, b = 3, 17
    try:
        with first.transaction(shards=[a]):
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                with second.transaction(shards=[b]):
                    pass
    finally:
        first.dispose()
        second.dispose()


def test_days_overlap_serialise_and_an_unscoped_writer_excludes_them(warehouse_url, monkeypatch):
    if not warehouse_url.startswith("postgresql"):
        pytest.skip("SQLite keeps a single writer (BEGIN IMMEDIATE)")
    monkeypatch.setenv("EV_LOCK_WAIT_S", "0.5")
    first, second = Warehouse(warehouse_url), Warehouse(warehouse_url)
    june = [date(2024, 6, 1) + timedelta(days=n) for n in range(3)]
    try:
        with first.transaction(days=june):
            with second.transaction(days=[date(2024, 6, 10)]):
                pass
            for scope in ({"days": [june[-1], date(2024, 6, 4)]}, {}):
                with pytest.raises(sa.exc.OperationalError) as raised:
                    with second.transaction(**scope):
                        pass
                assert _timed_out(raised.value), raised.value
        with first.transaction():  # unscoped: the warehouse lock exclusively
            for scope in ({"days": [date(2024, 7, 1)]}, {"shards": [5]}):
                with pytest.raises(sa.exc.OperationalError) as raised:
                    with second.transaction(**scope):
                        pass
                assert _timed_out(raised.value), raised.value
    finally:
        first.dispose()
        second.dispose()


@pytest.fixture
def writer_and_holder(warehouse_url, monkeypatch):
    """Two writers on one PostgreSQL warehouse (a step's and one holding locks), a 1 s lock wait."""
    if not warehouse_url.startswith("postgresql"):
        pytest.skip("SQLite keeps a single writer (BEGIN IMMEDIATE)")
    monkeypatch.setenv("EV_LOCK_WAIT_S", "1")
    wh, holder = Warehouse(warehouse_url), Warehouse(warehouse_url)
    yield wh, holder
    wh.dispose()
    holder.dispose()


def _loaded(warehouse, small_utility, tmp_path, settings):
    pipeline.load_reference(warehouse, small_utility, settings, now=NOW)
    landing = tmp_path / "landing"
    simulate(small_utility, landing, days=2, seed=5, start=date(2024, 6, 1))
    return landing


def test_pairing_runs_while_another_shard_is_held(writer_and_holder, small_utility, tmp_path):
    """A batch whose meters all lie in even shards pairs while a writer holds every odd shard (and
    waits, then times out, while one holds an even shard it needs)."""
    wh, holder = writer_and_holder
    settings = pipeline.PipelineSettings()
    landing = _loaded(wh, small_utility, tmp_path, settings)
    files = sorted(landing.glob("*.json"))
    records = [record for f in files for record in json.loads(f.read_text())["EVChargingEvents"]]
    only_even = tmp_path / "even.json"
    even = [r for r in records if shard_of(r["MeterID"]) % 2 == 0]
    only_even.write_text(json.dumps({"EVChargingEvents": even}))
    pipeline.ingest_batch(wh, "even", [only_even], settings, now=NOW)
    odd = [s for s in range(WRITE_SHARDS) if s % 2]
    with holder.transaction(shards=odd):
        report = pipeline.pair_pending_batches(wh, settings, now=NOW)
    assert report.batches == ["even"] and report.sessions_written > 0
    # A batch with new events of an odd-shard meter waits while that shard is held.
    odd_meter = next(r["MeterID"] for r in records if shard_of(r["MeterID"]) % 2)
    with_odd = next(f for f in files if odd_meter in f.read_text())
    pipeline.ingest_batch(wh, "odd", [with_odd], settings, now=NOW)
    with holder.transaction(shards=[shard_of(odd_meter)]):
        with pytest.raises(sa.exc.OperationalError) as raised:
            pipeline.pair_pending_batches(wh, settings, now=NOW)
        assert _timed_out(raised.value), raised.value
    assert pipeline.pair_pending_batches(wh, settings, now=NOW).batches == ["odd"]


def test_a_day_queued_again_while_its_load_runs_stays_queued(warehouse):
    day, other = date(2024, 6, 1), date(2024, 6, 2)
    with warehouse.transaction() as conn:
        queue_load_days(warehouse, conn, [day, other], NOW)
    queued = warehouse.read(EV_LOAD_DAYS_PENDING)
    # Queued again (by a pairing beside the load), even with an earlier clock: a later queued_at.
    with warehouse.transaction() as conn:
        queue_load_days(warehouse, conn, [day], NOW - timedelta(hours=1))
    again = warehouse.read(EV_LOAD_DAYS_PENDING).filter(pl.col("load_date") == day)["queued_at"][0]
    assert again == NOW + timedelta(microseconds=1)
    with warehouse.transaction() as conn:
        assert delete_queue_entries(warehouse, conn, queued) == 1  # `other` only
    assert warehouse.read(EV_LOAD_DAYS_PENDING)["load_date"].to_list() == [day]


def test_the_daily_load_runs_while_an_ingest_holds_its_shards(writer_and_holder, small_utility, tmp_path):
    wh, holder = writer_and_holder
    settings = pipeline.PipelineSettings()
    landing = _loaded(wh, small_utility, tmp_path, settings)
    pipeline.ingest_batch(wh, "b", sorted(landing.glob("*.json")), settings, now=NOW)
    pipeline.pair_pending_batches(wh, settings, now=NOW)
    with holder.transaction(shards=list(range(WRITE_SHARDS))):
        report = pipeline.update_daily_load(wh, settings, date(2024, 6, 1), date(2024, 6, 2), now=NOW)
    assert report.rows["transformer"] > 0
    assert wh.read(EV_LOAD_DAYS_PENDING).filter(pl.col("load_date") <= date(2024, 6, 2)).is_empty()
