"""`BatchingSqliteEventLogStorage` and `BatchingPostgresEventLogStorage` must leave exactly what
Dagster's own event log (SQLite, dagster-postgres) leaves when it stores the same events one by
one: the run's log in order, the cross-run index (planned and done materializations, per asset and
partition) and each asset's latest run. Two real event logs of each kind (temporary folders, fresh
PostgreSQL databases), fed the batches Dagster hands over: a run's planned events at its creation
(every asset and partition of a range run, and its checks) and a step's per-partition
materializations."""

from __future__ import annotations

import logging
import time

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned
from dagster._core.events import (
    AssetMaterializationPlannedData,
    DagsterEvent,
    DagsterEventType,
    StepMaterializationData,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster_postgres.event_log import PostgresEventLogStorage

from ev_assets.dagster_event_log import BatchingPostgresEventLogStorage, BatchingSqliteEventLogStorage

from .conftest import BACKENDS, _postgres_database

JOB = "daily_load_job"
ASSETS = [dg.AssetKey("feeder_daily_load"), dg.AssetKey("transformer_daily_load")]
DAYS = ["2024-06-01", "2024-06-02", "2024-06-03"]


def _entry(run_id: str, event: DagsterEvent, at: float) -> EventLogEntry:
    return EventLogEntry(
        error_info=None,
        level=logging.DEBUG,
        user_message="",
        run_id=run_id,
        timestamp=at,
        job_name=JOB,
        dagster_event=event,
    )


def _planned(run_id: str, at: float) -> list[EventLogEntry]:
    """A range run's planned events as Dagster batches them at run creation: every asset and day,
    sorted by asset key, with a check's planned evaluation among them."""
    events = [
        DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value,
            job_name=JOB,
            event_specific_data=AssetMaterializationPlannedData(asset, partition=day),
            step_key="daily_load",
        )
        for asset in ASSETS[:1]
        for day in DAYS
    ]
    events.append(
        DagsterEvent(
            event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
            job_name=JOB,
            event_specific_data=AssetCheckEvaluationPlanned(asset_key=ASSETS[0], check_name="energy_balances"),
            step_key="daily_load",
        )
    )
    events += [
        DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value,
            job_name=JOB,
            event_specific_data=AssetMaterializationPlannedData(ASSETS[1], partition=day),
            step_key="daily_load",
        )
        for day in DAYS
    ]
    return [_entry(run_id, event, at + i / 1000) for i, event in enumerate(events)]


def _materialized(run_id: str, asset: dg.AssetKey, at: float) -> list[EventLogEntry]:
    """A step's per-partition materializations of one asset."""
    return [
        _entry(
            run_id,
            DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                job_name=JOB,
                event_specific_data=StepMaterializationData(dg.AssetMaterialization(asset, partition=day)),
                step_key="daily_load",
            ),
            at + i / 1000,
        )
        for i, day in enumerate(DAYS)
    ]


def _state(storage: SqliteEventLogStorage, run_ids: list[str]) -> dict:
    """What the UI and the sensors read back: each run's log in order, and per asset its latest
    run, its planned run per day, its materialized days and its latest materialization."""
    logs = {
        run_id: [
            (
                r.event_log_entry.dagster_event_type,
                r.event_log_entry.dagster_event.asset_key,
                r.event_log_entry.dagster_event.partition,
            )
            for r in storage.get_records_for_run(run_id).records
        ]
        for run_id in run_ids
    }
    assets = {}
    for record in storage.get_asset_records(ASSETS):
        key = record.asset_entry.asset_key
        latest = storage.get_latest_materialization_events([key])[key]
        assets[key] = {
            "last_run_id": record.asset_entry.last_run_id,
            "planned": {
                day: getattr(storage.get_latest_planned_materialization_info(key, day), "run_id", None) for day in DAYS
            },
            "materialized": storage.get_materialized_partitions(key),
            "latest": latest and (latest.run_id, latest.dagster_event.partition),
        }
    return {"logs": logs, "assets": assets}


@pytest.fixture(params=BACKENDS)
def event_logs(request, tmp_path):
    """(Dagster's own event log, ours) of one kind, each on its own fresh storage."""
    if request.param == "sqlite":
        yield SqliteEventLogStorage(str(tmp_path / "plain")), BatchingSqliteEventLogStorage(str(tmp_path / "batching"))
        return
    databases = [_postgres_database(), _postgres_database()]
    # dagster-postgres sends a NOTIFY with a bound parameter, which only psycopg2 can send.
    plain_url, batching_url = (
        sa.engine.make_url(url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
        for url, _ in databases
    )
    storages = PostgresEventLogStorage(plain_url), BatchingPostgresEventLogStorage(batching_url)
    yield storages
    for storage in storages:
        storage.dispose()
    for _, drop in databases:
        drop()


def test_batches_leave_what_dagsters_event_by_event_path_leaves(event_logs):
    plain, batching = event_logs
    now = time.time()
    first, second = "a" * 8 + "-0000-0000-0000-000000000001", "b" * 8 + "-0000-0000-0000-000000000002"
    batches = [
        _planned(first, now),
        _materialized(first, ASSETS[0], now + 1),
        _materialized(first, ASSETS[1], now + 2),
        # A later run plans the same days again: each asset's latest run moves to it.
        _planned(second, now + 3),
    ]
    for batch in batches:
        for event in batch:
            plain.store_event(event)
        batching.store_event_batch(batch)

    expected = _state(plain, [first, second])
    assert _state(batching, [first, second]) == expected
    # The comparison has something to compare: both runs' planned days, the first run's days done.
    for key in ASSETS:
        assert expected["assets"][key]["last_run_id"] == second
        assert expected["assets"][key]["planned"] == dict.fromkeys(DAYS, second)
        assert expected["assets"][key]["materialized"] == set(DAYS)
    assert len(expected["logs"][first]) == 7 + 6 and len(expected["logs"][second]) == 7


def test_a_run_creations_planned_events_are_written_as_batches(event_logs):
    """The planned events of a run over three days are written together, not one by one (Dagster's
    path: a new engine or connection, an insert and a commit per event, 2 to 3 s of every 31-day
    run's creation)."""
    _, storage = event_logs
    run_id = "c" * 8 + "-0000-0000-0000-000000000003"
    events = _planned(run_id, time.time())
    stored_one_by_one = []
    parent = type(storage).__mro__[2]  # Dagster's own class, after the batching mixin
    original = parent.store_event

    def counting_store_event(self, event):
        stored_one_by_one.append(event.dagster_event_type)
        return original(self, event)

    parent.store_event = counting_store_event
    try:
        storage.store_event_batch(events)
    finally:
        parent.store_event = original
    # Only the check's planned evaluation (its own table) goes Dagster's way.
    assert stored_one_by_one == [DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED]
    assert len(storage.get_records_for_run(run_id).records) == len(events)
