"""Write locks scoped to shards (issue 29): on PostgreSQL two writers of disjoint shards hold
their locks at the same time, two of one shard serialise, and a writer of every shard (pairing,
the daily load, a reference correction) excludes them all. SQLite keeps one writer at a time."""

from __future__ import annotations

import zlib

import polars as pl
import pytest
import sqlalchemy as sa

from ev_assets.core.contract import ContractResult
from ev_assets.core.feed import ParsedFile
from ev_assets.pipeline.ingest import write_shards
from ev_assets.warehouse.store import WRITE_SHARDS, Warehouse, shards_of


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
