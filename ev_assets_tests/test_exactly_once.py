"""Exactly once (issue 9): batch identity from content, an insert-only batch ledger, and blocking
checks before the commit. Small hand-made payloads, on every backend."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ev_assets import pipeline
from ev_assets.core import events, feed
from ev_assets.core.batching import plan_batches
from ev_assets.warehouse.tables import (
    ALL_TABLES,
    EV_CHARGING_EVENTS,
    EV_CHARGING_SESSIONS,
    EV_FEED_FILES,
    EV_INGEST_BATCHES,
    EV_WAREHOUSE_SETTINGS,
)

from .helpers import assert_same_tables, snapshot

NOW = datetime(2024, 6, 10, tzinfo=UTC)
T0 = datetime(2024, 6, 3, 14, 0, tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-4] + "Z"


def charge_messages(first: int, n: int) -> list[dict]:
    """n (start, end) pairs of distinct meters, i.e. 2 n records: complete sessions once paired."""
    out = []
    for i in range(first, first + n):
        start, end = T0 + timedelta(minutes=i), T0 + timedelta(minutes=i, hours=2)
        meter = {"MeterID": f"29{i:08d}", "ServicePointID": f"59{i:08d}", "TransformerID": "4000000002-1"}
        out.append(
            meter
            | {"ReceivedTime": _iso(start + timedelta(seconds=5)), "ChargeStartTime": _iso(start), "ChargeW": "7200"}
        )
        out.append(
            meter
            | {
                "ReceivedTime": _iso(end + timedelta(seconds=5)),
                "ChargeEndTime": _iso(end),
                "ChargeDuration": "2",
                "ChargeEnergy": "14400",
            }
        )
    return out


def write_payload(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"EVChargingEvents": records}))
    os.replace(tmp, path)


def the_batch(landing: Path):
    [batch] = plan_batches(feed.list_landing(landing), max_files=100, max_messages=10_000)
    return batch


def ingest(warehouse, batch, settings) -> pipeline.IngestReport:
    return pipeline.ingest_batch(warehouse, batch.batch_id, [f.path for f in batch.files], settings, now=NOW)


def test_same_name_resent_with_new_content_is_a_new_batch(warehouse, settings, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    path = landing / "agent-0001.json"
    write_payload(path, charge_messages(0, 15))  # 30 records
    first = the_batch(landing)
    assert ingest(warehouse, first, settings).accepted == 30
    ledger_before = warehouse.read(EV_INGEST_BATCHES)

    # The stream receiver writes the next payload under the same name: the 30 again, and 30 new.
    write_payload(path, charge_messages(0, 30))
    resent = the_batch(landing)
    assert resent.batch_id != first.batch_id  # content, not the name, names the batch
    report = ingest(warehouse, resent, settings)
    assert (report.records_read, report.accepted, report.duplicates, report.rejected) == (60, 30, 30, 0)

    ledger = warehouse.read(EV_INGEST_BATCHES)
    assert sorted(ledger["batch_id"]) == sorted([first.batch_id, resent.batch_id])
    # insert-only: the first batch's row is exactly as it was written
    assert ledger.filter(pl.col("batch_id") == first.batch_id).equals(ledger_before)
    assert ledger["accepted"].sum() == warehouse.count(EV_CHARGING_EVENTS) == 60
    assert pipeline.ledger_totals(warehouse)["reconciled"]
    assert warehouse.count(EV_FEED_FILES) == 2  # both contents of the name

    # A byte-identical re-send names the same batch again, and is a no-op.
    before = snapshot(warehouse)
    write_payload(path, charge_messages(0, 30))
    again = the_batch(landing)
    assert again.batch_id == resent.batch_id
    assert ingest(warehouse, again, settings).files_already_read == 1
    assert_same_tables(before, snapshot(warehouse))


def test_a_batch_id_reused_for_unread_content_is_refused(warehouse, settings, tmp_path):
    path = tmp_path / "agent-0001.json"
    write_payload(path, charge_messages(0, 2))
    pipeline.ingest_batch(warehouse, "b", [path], settings, now=NOW)
    before = snapshot(warehouse)
    write_payload(path, charge_messages(0, 3))
    with pytest.raises(pipeline.BatchRejected, match="already in the ledger"):
        pipeline.ingest_batch(warehouse, "b", [path], settings, now=NOW)
    assert_same_tables(before, snapshot(warehouse))


def _assert_no_trace(warehouse, batch_id, settings):
    # the sessions step of the failed batch finds nothing to pair either
    assert pipeline.pair_pending_batches(warehouse, settings).sessions_written == 0
    # Nothing but the time zone the warehouse recorded on its first step.
    data_tables = [spec for spec in ALL_TABLES if spec is not EV_WAREHOUSE_SETTINGS]
    assert {spec.name: warehouse.count(spec) for spec in data_tables} == {spec.name: 0 for spec in data_tables}


def test_a_batch_that_does_not_reconcile_leaves_no_trace(warehouse, settings, tmp_path, monkeypatch):
    path = tmp_path / "agent-0001.json"
    write_payload(path, charge_messages(0, 5) + [{"MeterID": "bad meter!", "ReceivedTime": "soon"}])
    split = events.split_duplicates

    def loses_a_record(rows, known):  # a stage bug: one record vanishes without being counted
        new, duplicates, conflicts = split(rows, known)
        return new.head(new.height - 1), duplicates, conflicts

    monkeypatch.setattr(events, "split_duplicates", loses_a_record)
    with pytest.raises(pipeline.BatchRejected, match=r"records_read 11 != accepted 9 \+ duplicates 0 \+ rejected 1"):
        pipeline.ingest_batch(warehouse, "lossy", [path], settings, now=NOW)
    _assert_no_trace(warehouse, "lossy", settings)

    # the same files, once the stage is fixed, are not "already read": they go in whole
    monkeypatch.setattr(events, "split_duplicates", split)
    report = pipeline.ingest_batch(warehouse, "fixed", [path], settings, now=NOW)
    assert (report.accepted, report.rejected, report.files_already_read) == (10, 1, 0)
    assert pipeline.pair_pending_batches(warehouse, settings).sessions_written == 5
    assert warehouse.count(EV_CHARGING_SESSIONS) == 5


def test_a_batch_that_breaks_the_schema_leaves_no_trace(warehouse, settings, tmp_path, monkeypatch):
    path = tmp_path / "agent-0001.json"
    write_payload(path, charge_messages(0, 3))
    to_events = events.to_events

    def mislabels(accepted, **kwargs):  # a stage bug: a message type the table does not allow
        return to_events(accepted, **kwargs).with_columns(pl.lit("stop").alias("message_type"))

    monkeypatch.setattr(events, "to_events", mislabels)
    with pytest.raises(pipeline.BatchRejected, match="ev_charging_events schema") as rejected:
        pipeline.ingest_batch(warehouse, "mislabelled", [path], settings, now=NOW)
    assert "isin" in str(rejected.value)
    _assert_no_trace(warehouse, "mislabelled", settings)


def test_a_batch_re_executed_after_its_files_were_archived_is_a_no_op(warehouse, settings, tmp_path):
    """A run that died after its batch committed and its files left for the archive, re-executed
    by the daemon's retry with the same config: the batch is in the ledger, so nothing is read
    (the files are gone) and nothing changes; it must not fail on the missing files."""
    landing = tmp_path / "landing"
    landing.mkdir()
    path = landing / "agent-0001.json"
    write_payload(path, charge_messages(0, 5))
    first = pipeline.ingest_batch(warehouse, "b1", [path], settings, now=NOW)
    assert first.accepted == 10
    feed.archive_files([path], landing, "2024-06-03")
    assert not path.exists()
    before = {spec.name: warehouse.count(spec) for spec in ALL_TABLES}
    again = pipeline.ingest_batch(warehouse, "b1", [path], settings, now=NOW)
    assert (again.accepted, again.records_read) == (0, 0)
    assert {spec.name: warehouse.count(spec) for spec in ALL_TABLES} == before
    # A file missing from a batch the ledger does not hold is still a loud error.
    with pytest.raises(FileNotFoundError):
        pipeline.ingest_batch(warehouse, "b2", [landing / "never-landed.json"], settings, now=NOW)


def test_files_another_writer_reads_while_a_batch_is_parsed_are_not_read_twice(
    warehouse, settings, tmp_path, monkeypatch
):
    """The contract runs outside the write lock on the files unread at that moment; a writer that
    commits one of them before this batch takes the lock leaves it to that writer: under the lock
    the batch keeps only its still-unread files' records, and counts the other as already read."""
    from ev_assets.pipeline import ingest as ingest_module

    a, b = tmp_path / "agent-a.json", tmp_path / "agent-b.json"
    write_payload(a, charge_messages(0, 3))  # 6 records
    write_payload(b, charge_messages(3, 2))  # 4 records
    contract = ingest_module.apply_contract
    raced = []

    def another_writer_commits_a_first(*args, **kwargs):
        result = contract(*args, **kwargs)
        if not raced:  # once: the other writer's own call goes through untouched
            raced.append(None)
            raced[0] = pipeline.ingest_batch(warehouse, "other", [a], settings, now=NOW)
        return result

    monkeypatch.setattr(ingest_module, "apply_contract", another_writer_commits_a_first)
    report = pipeline.ingest_batch(warehouse, "this", [a, b], settings, now=NOW)
    assert raced[0].accepted == 6
    assert (report.files_read, report.files_already_read, report.records_read, report.accepted) == (2, 1, 4, 4)
    assert warehouse.count(EV_CHARGING_EVENTS) == 10
    assert pipeline.ledger_totals(warehouse)["reconciled"]
    files = warehouse.read(EV_FEED_FILES)
    assert dict(zip(files["file_name"], files["batch_id"], strict=True)) == {
        "agent-a.json": "other",
        "agent-b.json": "this",
    }


def test_archive_committed_moves_only_what_the_file_ledger_holds(warehouse, settings, tmp_path):
    """Files a run committed and died before moving are archived; a file not read, and a file
    re-delivered under a committed name with new content, stay in the landing folder."""
    landing = tmp_path / "landing"
    landing.mkdir()
    committed, unread, redelivered = (landing / f"agent-{n}.json" for n in (1, 2, 3))
    write_payload(committed, charge_messages(0, 2))
    write_payload(redelivered, charge_messages(2, 2))
    pipeline.ingest_batch(warehouse, "b1", [committed, redelivered], settings, now=NOW)
    write_payload(unread, charge_messages(4, 2))
    write_payload(redelivered, charge_messages(6, 2))
    assert pipeline.archive_committed(warehouse, landing, "2024-06-10") == 1
    assert sorted(p.name for p in landing.glob("*.json")) == [unread.name, redelivered.name]
    assert [p.name for p in (landing / feed.ARCHIVE_DIR / "2024-06-10").glob("*.json")] == [committed.name]
    assert pipeline.archive_committed(warehouse, landing, "2024-06-10") == 0
