"""The Dagster layer on real instances and real warehouses: assets, checks, sensors."""

from __future__ import annotations

import json
from datetime import date

import dagster as dg
import polars as pl
import pytest

from ev_assets.definitions import defs
from ev_assets.defs.forecast import transformer_overload_forecast
from ev_assets.defs.ingest.assets import ev_charging_events, ev_charging_sessions
from ev_assets.defs.ingest.sensors import ev_feed_sensor
from ev_assets.defs.planning import (
    RANGE_END,
    RANGE_START,
    daily_load_sensor,
    grid_load_by_day,
    premise_ev_profile,
    snapshot_run_requests,
    transformer_planning_queue,
)
from ev_assets.defs.reference import reference_tables
from ev_assets.defs.resources import FeedResource, PipelineConfig, ReferenceResource, WarehouseResource
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import (
    EV_CHARGING_EVENTS,
    EV_CHARGING_SESSIONS,
    EV_INGEST_BATCHES,
    EV_LOAD_DAYS_PENDING,
    TRANSFORMER_DAILY_LOAD,
)

from .conftest import simulate


@pytest.fixture
def resources(env):
    return {
        "warehouse": WarehouseResource(url=env["EV_WAREHOUSE_URL"]),
        "feed_landing": FeedResource(landing_dir=str(env["EV_FEED_DIR"]), max_files_per_batch=20, settle_seconds=0),
        "reference": ReferenceResource(reference_dir=str(env["EV_REFERENCE_DIR"])),
        "pipeline_config": PipelineConfig(),
    }


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def load_reference(resources, instance):
    result = dg.materialize([reference_tables], resources=resources, instance=instance)
    assert result.success


def ingest(resources, instance, request: dg.RunRequest):
    return dg.materialize(
        [ev_charging_events, ev_charging_sessions],
        resources=resources,
        instance=instance,
        run_config=request.run_config,
        tags=request.tags,
    )


def sensor_result(instance, resources, cursor=None, sensor=ev_feed_sensor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
    return sensor(context)


def test_feed_sensor_loads_new_reference_data_before_events(env, small_utility, resources, instance):
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    (request,) = sensor_result(instance, resources).run_requests
    assert request.job_name == "reference_job" and request.run_key.startswith("reference:")
    # While that run has not finished, no ingest run starts (its events would miss the reference).
    instance.create_run_for_job(
        defs.resolve_job_def("reference_job"),
        tags={"dagster/run_key": request.run_key},
        status=dg.DagsterRunStatus.STARTED,
    )
    waiting = sensor_result(instance, resources)
    assert not waiting.run_requests and "waiting for the reference load" in waiting.skip_reason.skip_message
    load_reference(resources, instance)
    requests = sensor_result(instance, resources).run_requests
    assert requests and {r.job_name for r in requests} == {"ingest_job"}
    # New extracts in the folder (a correction): loaded again, first.
    (env["EV_REFERENCE_DIR"] / "meters.csv").write_text((env["EV_REFERENCE_DIR"] / "meters.csv").read_text() + "")
    with open(env["EV_REFERENCE_DIR"] / "feeders.csv", "a") as f:
        f.write("FDR-NEW-01,SUB-001,12.47,2024-01-01,\n")
    assert [r.job_name for r in sensor_result(instance, resources).run_requests] == ["reference_job"]


def test_definitions_load():
    repo = defs.get_repository_def()
    assert {"ingest_job", "daily_load_job", "reference_job", "sessions_job"} <= {j.name for j in repo.get_all_jobs()}
    assert {s.name for s in repo.sensor_defs} == {
        "ev_feed_sensor",
        "daily_load_sensor",
        "dead_run_sensor",
        "failed_run_sensor",
        "vendor_gap_sensor",
    }


def batch_config(request: dg.RunRequest) -> dict:
    return request.run_config["ops"]["ev_charging_events"]["config"]


def landing_state(landing) -> dict[str, tuple[int, bytes]]:
    """Every file under the landing folder (the archive included): its inode change time and bytes."""
    return {
        str(p.relative_to(landing)): (p.stat().st_ctime_ns, p.read_bytes()) for p in landing.rglob("*") if p.is_file()
    }


def test_a_batch_travels_in_run_config_as_a_few_typed_fields_not_its_file_list(env, small_utility, resources, instance):
    """A batch of thousands of files is its id and span in run config (no field typed Any, no list
    of paths), and the step re-derives exactly the planned files from the landing folder."""
    from dagster._config import ConfigTypeKind

    from ev_assets.defs.ingest.assets import IngestBatchConfig

    fields = IngestBatchConfig.to_config_schema().as_field().config_type.fields
    for name, field in fields.items():
        config_type = field.config_type
        while config_type.kind == ConfigTypeKind.NONEABLE:
            config_type = config_type.inner_type
        assert config_type.kind != ConfigTypeKind.ANY, name
    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=2)
    wide = {**resources, "feed_landing": FeedResource(landing_dir=str(env["EV_FEED_DIR"]), settle_seconds=0)}
    (request,) = sensor_result(instance, wide).run_requests
    landed = len(list(env["EV_FEED_DIR"].glob("*.json")))
    config = batch_config(request)
    assert config["file_count"] == landed > 20 and len(json.dumps(config)) < 300
    result = ingest(wide, instance, request)
    assert result.success
    meta = result.asset_materializations_for_node("ev_charging_events")[0].metadata
    assert meta["files_read"].value == landed and meta["files_archived"].value == landed
    assert meta["files_as_planned"].value is True


def test_sensor_batches_new_files_once(env, small_utility, resources, instance):
    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=2)
    first = sensor_result(instance, resources)
    assert len(first.run_requests) >= 2  # 20 files a batch: a backlog is a few runs
    keys = [r.run_key for r in first.run_requests]
    assert len(set(keys)) == len(keys)
    spans = sorted(
        (c["first_arrived_ns"], c["first_file"], c["last_arrived_ns"], c["last_file"], c["file_count"])
        for c in map(batch_config, first.run_requests)
    )
    assert sum(s[-1] for s in spans) == len(list(env["EV_FEED_DIR"].glob("*.json")))
    assert all(a[2:4] < b[0:2] for a, b in zip(spans, spans[1:], strict=False))  # consecutive spans, no overlap

    # Same files again with the cursor: nothing new. Without it: the same batches, same run keys.
    assert not sensor_result(instance, resources, cursor=first.cursor).run_requests
    assert [r.run_key for r in sensor_result(instance, resources).run_requests] == keys


def test_sensor_waits_for_files_to_settle(env, small_utility, resources, instance):
    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    first = sensor_result(instance, resources)
    newest = sorted(env["EV_FEED_DIR"].glob("*.json"))[-1]
    late = newest.with_name("ev_zz_late.json")
    late.write_bytes(newest.read_bytes())
    waiting = {
        **resources,
        "feed_landing": FeedResource(landing_dir=str(env["EV_FEED_DIR"]), max_files_per_batch=20, settle_seconds=3600),
    }
    assert not sensor_result(instance, waiting, cursor=first.cursor).run_requests
    (request,) = sensor_result(instance, resources, cursor=first.cursor).run_requests
    config = batch_config(request)
    assert (config["first_file"], config["last_file"], config["file_count"]) == (late.name, late.name, 1)


def test_sensor_skips_files_the_ledger_holds(env, small_utility, resources, instance):
    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    for request in sensor_result(instance, resources).run_requests:
        assert ingest(resources, instance, request).success
    # A lost cursor (a new instance, a restart) does not bring processed files back.
    assert not sensor_result(instance, resources, cursor=None).run_requests


def test_redelivered_file_under_a_known_name_is_read_again(env, small_utility, resources, instance):
    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    for request in sensor_result(instance, resources).run_requests:
        assert ingest(resources, instance, request).success
    # Read files leave the landing folder for its dated archive.
    assert not list(env["EV_FEED_DIR"].glob("*.json"))
    archived = sorted((env["EV_FEED_DIR"] / "archive").glob("*/*.json"))
    # The agent re-sends a file under the same name with a corrected record added.
    target = env["EV_FEED_DIR"] / archived[0].name
    payload = json.loads(archived[0].read_text())
    extra = dict(payload["EVChargingEvents"][0], MeterID="9999999999", ChargeStartTime="2024-06-03T12:00:00.00Z")
    extra.update(
        ChargeW="7200",
        ChargeEndTime=None,
        ChargeDuration=None,
        ChargeEnergy=None,
        ReceivedTime="2024-06-03T12:00:05.00Z",
    )
    payload["EVChargingEvents"].append(extra)
    target.write_text(json.dumps(payload))
    requests = sensor_result(instance, resources).run_requests
    assert [(batch_config(r)["first_file"], batch_config(r)["file_count"]) for r in requests] == [(target.name, 1)]
    assert ingest(resources, instance, requests[0]).success
    ledger = Warehouse(env["EV_WAREHOUSE_URL"]).read(EV_INGEST_BATCHES).sort("processed_at").row(-1, named=True)
    # The records already accepted from the first delivery are recognised as duplicates.
    assert (ledger["accepted"], ledger["duplicates"], ledger["rejected"]) == (
        1,
        len(payload["EVChargingEvents"]) - 1,
        0,
    )


def test_ingest_run_materializes_events_sessions_and_checks(env, small_utility, resources, instance):
    load_reference(resources, instance)
    truth = simulate(small_utility, env["EV_FEED_DIR"], days=2)
    requests = sensor_result(instance, resources).run_requests
    results = [ingest(resources, instance, r) for r in requests]
    assert all(r.success for r in results)

    checks = [e for r in results for e in r.get_asset_check_evaluations()]
    assert checks and all(c.passed for c in checks if c.check_name in ("batch_reconciles", "schema_conforms"))
    events_meta = results[0].asset_materializations_for_node("ev_charging_events")[0].metadata
    assert events_meta["dagster/row_count"].value > 0
    assert isinstance(events_meta["dagster/column_schema"].value, dg.TableSchema)

    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    # Row counts are carried forward from batch to batch, and stay exact.
    last = results[-1]
    for node, spec in (("ev_charging_events", EV_CHARGING_EVENTS), ("ev_charging_sessions", EV_CHARGING_SESSIONS)):
        assert last.asset_materializations_for_node(node)[0].metadata["dagster/row_count"].value == wh.count(spec)
    stored = wh.read(EV_CHARGING_SESSIONS)
    # Every simulated session is complete once its end arrived (all ends are in the feed).
    assert stored.filter(pl.col("status") == "complete").height == truth.height
    joined = truth.join(stored, on=["meter_id", "start_time"], how="left", suffix="_stored")
    assert joined.filter(pl.col("end_time") != pl.col("end_time_stored")).is_empty()
    assert (joined["energy_wh"] - joined["energy_wh_stored"]).abs().max() < 1e-6
    ledger = wh.read(EV_INGEST_BATCHES)
    assert ledger.height == len(requests) and ledger["reconciled"].all()

    # The daily-load sensor asks for exactly the days the sessions touched (queued in the
    # warehouse), as range runs; the same queue gives the same run key, so no second run.
    load_sensor = sensor_result(instance, resources, sensor=daily_load_sensor)
    assert len(load_sensor.run_requests) == 1
    tags = load_sensor.run_requests[0].tags
    assert tags[RANGE_START] == "2024-06-03" and tags[RANGE_END] >= "2024-06-04"
    again = sensor_result(instance, resources, sensor=daily_load_sensor)
    assert [r.run_key for r in again.run_requests] == [load_sensor.run_requests[0].run_key]
    # Once computed, the days leave the queue; the snapshots older than the daily load follow it,
    # once each (the same daily load, the same run keys), and then nothing more is asked for.
    assert dg.materialize([grid_load_by_day], tags=tags, resources=resources, instance=instance).success
    snapshots = sensor_result(instance, resources, sensor=daily_load_sensor).run_requests
    # The queue ranks by the forecast's years to overload: it waits for the forecast's refresh.
    assert {r.job_name for r in snapshots} == {"premise_profile_job", "forecast_job"}
    again = sensor_result(instance, resources, sensor=daily_load_sensor).run_requests
    assert [r.run_key for r in again] == [r.run_key for r in snapshots]
    assert dg.materialize(
        [premise_ev_profile, transformer_overload_forecast], resources=resources, instance=instance
    ).success
    queue = sensor_result(instance, resources, sensor=daily_load_sensor).run_requests
    assert [r.job_name for r in queue] == ["planning_queue_job"]
    assert dg.materialize([transformer_planning_queue], resources=resources, instance=instance).success
    assert not sensor_result(instance, resources, sensor=daily_load_sensor).run_requests
    # A later daily load refreshes the per-load snapshots, never the ten-year forecast (its daily
    # schedule does); `run`, with no schedule, asks for it only when last refreshed before today.
    assert dg.materialize([grid_load_by_day], tags=tags, resources=resources, instance=instance).success
    after_load = sensor_result(instance, resources, sensor=daily_load_sensor).run_requests
    assert {r.job_name for r in after_load} == {"premise_profile_job", "planning_queue_job"}
    assert {r.job_name for r in snapshot_run_requests(instance, daily_due=True)} == {r.job_name for r in after_load}


def test_daily_load_partition_and_range(env, small_utility, resources, instance):
    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=2)
    for request in sensor_result(instance, resources).run_requests:
        assert ingest(resources, instance, request).success
    one = dg.materialize([grid_load_by_day], partition_key="2024-06-03", resources=resources, instance=instance)
    assert one.success
    checks = {c.check_name: c for c in one.get_asset_check_evaluations()}
    assert set(checks) == {"energy_balances_across_levels", "profile_max_equals_peak"}
    balance = checks["energy_balances_across_levels"]
    assert balance.passed
    # The 15-minute profile's daily maximum is peak_kw for every transformer-day written.
    profile_check = checks["profile_max_equals_peak"]
    assert profile_check.passed and profile_check.metadata["transformer_days"].value > 0
    assert balance.metadata["substation_kwh"].value > 0
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    day = wh.read(TRANSFORMER_DAILY_LOAD)
    assert set(day["load_date"].to_list()) == {date(2024, 6, 3)} and day.height > 0
    first = day.sort("transformer_id")

    # A range run (what the sensor and backfills launch) writes each day once; rerunning it changes
    # nothing but the write time.
    range_tags = {RANGE_START: "2024-06-03", RANGE_END: "2024-06-05"}
    for _ in range(2):
        result = dg.materialize([grid_load_by_day], tags=range_tags, resources=resources, instance=instance)
        assert result.success
    days = wh.read(TRANSFORMER_DAILY_LOAD)
    assert set(days["load_date"].to_list()) == {date(2024, 6, 3), date(2024, 6, 4), date(2024, 6, 5)}
    again = days.filter(pl.col("load_date") == date(2024, 6, 3)).sort("transformer_id")
    assert first.drop("updated_at").equals(again.drop("updated_at"))
    assert days.select(pl.struct("transformer_id", "load_date").is_unique().all()).item()


def test_sessions_rebuild_in_chunks_equals_incremental_pairing(env, small_utility, resources, instance):
    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    for request in sensor_result(instance, resources).run_requests:
        assert ingest(resources, instance, request).success
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    before = wh.read(EV_CHARGING_SESSIONS).drop("updated_at").sort("session_id")
    # A click on Materialize in the UI (default config): nothing is pending, nothing changes.
    clicked = dg.materialize(
        [ev_charging_sessions], resources=resources, instance=instance, selection=[ev_charging_sessions]
    )
    assert clicked.success
    assert clicked.asset_materializations_for_node("ev_charging_sessions")[0].metadata["sessions_written"].value == 0
    # A full rebuild, 7 meters per transaction, gives the same sessions.
    chunked = {**resources, "pipeline_config": PipelineConfig(rebuild_chunk_meters=7)}
    rebuilt = dg.materialize(
        [ev_charging_sessions],
        resources=chunked,
        instance=instance,
        selection=[ev_charging_sessions],
        run_config={"ops": {"ev_charging_sessions": {"config": {"mode": "rebuild"}}}},
    )
    assert rebuilt.success
    assert wh.read(EV_CHARGING_SESSIONS).drop("updated_at").sort("session_id").equals(before)


def test_events_committed_by_a_dead_run_are_paired_by_the_next(env, small_utility, resources, instance):
    """A run that died after its events step committed left the batch unpaired: the next sessions
    run, whatever started it, pairs it (the work is read from the warehouse, not the run)."""
    load_reference(resources, instance)
    truth = simulate(small_utility, env["EV_FEED_DIR"], days=1)
    for request in sensor_result(instance, resources).run_requests:
        only_events = dg.materialize(
            [ev_charging_events, ev_charging_sessions],
            selection=[ev_charging_events],
            resources=resources,
            instance=instance,
            run_config=request.run_config,
            tags=request.tags,
        )
        assert only_events.success
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    assert wh.count(EV_CHARGING_SESSIONS) == 0
    assert dg.materialize(
        [ev_charging_sessions], resources=resources, instance=instance, selection=[ev_charging_sessions]
    ).success
    assert wh.read(EV_CHARGING_SESSIONS).filter(pl.col("status") == "complete").height == truth.height


def test_days_before_the_partitions_fail_loudly(env, small_utility, resources, instance, monkeypatch):
    from ev_assets.defs import partitions

    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    monkeypatch.setattr(partitions, "PARTITIONS_START", date(2024, 6, 4))
    results = [ingest(resources, instance, r) for r in sensor_result(instance, resources).run_requests]
    checks = [
        c for r in results for c in r.get_asset_check_evaluations() if c.check_name == "load_days_within_partitions"
    ]
    assert checks and not all(c.passed for c in checks)
    failed = next(c for c in checks if not c.passed)
    assert "2024-06-03" in failed.metadata["days_outside"].value
    assert "EV_PARTITIONS_START=2024-06-03" in failed.metadata["message"].value
    # The day stays queued (not dropped) and the sensor says why it cannot ask for it.
    load = sensor_result(instance, resources, sensor=daily_load_sensor)
    assert all(r.tags[RANGE_START] >= "2024-06-04" for r in load.run_requests)
    assert date(2024, 6, 3) in Warehouse(env["EV_WAREHOUSE_URL"]).read(EV_LOAD_DAYS_PENDING)["load_date"].to_list()


def events_schema_check(result):
    (check,) = [
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "schema_conforms" and c.asset_key == dg.AssetKey("ev_charging_events")
    ]
    return check


def test_schema_check_reports_the_validated_rows_and_reads_back_rows_it_did_not_write(
    env, small_utility, resources, instance
):
    """schema_conforms: a batch the step inserts reports the pre-commit validation of exactly those
    rows; a re-execution of the committed batch (its files archived, nothing inserted) reads the
    batch's stored rows back and validates them."""
    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    request = sensor_result(instance, resources).run_requests[0]
    first = ingest(resources, instance, request)
    accepted = first.asset_materializations_for_node("ev_charging_events")[0].metadata["accepted"].value
    check = events_schema_check(first)
    assert check.passed and accepted > 0
    assert check.metadata["rows_checked"].value == accepted and check.metadata["verified"].value.startswith(
        "before commit"
    )

    again = ingest(resources, instance, request)  # the same batch, committed and archived
    check = events_schema_check(again)
    assert check.passed and check.metadata["rows_checked"].value == accepted
    assert check.metadata["verified"].value.startswith("stored rows read back")


def test_failing_blocking_check_stops_pairing(env, small_utility, resources, instance):
    """A batch whose rows break the event table's schema must not reach the sessions: the blocking
    schema_conforms check fails and ev_charging_sessions is skipped in that run."""
    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    request = sensor_result(instance, resources).run_requests[0]
    batch_id = request.tags["ev/batch_id"]
    # A row written under this batch by something other than the contract (a manual fix gone wrong).
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    with wh.transaction() as conn:
        conn.execute(
            wh.table(EV_CHARGING_EVENTS).insert(),
            [
                {
                    "message_id": "bad|start|x",
                    "message_type": "bogus",
                    "meter_id": "bad",
                    "enrichment_status": "enriched",
                    "message_time": date(2024, 6, 3),
                    "message_date": date(2024, 6, 3),
                    "received_time": date(2024, 6, 3),
                    "charge_w": -5.0,
                    "batch_id": batch_id,
                    "file_name": "manual",
                    "record_index": 0,
                    "ingested_at": date(2024, 6, 3),
                }
            ],
        )
    result = dg.materialize(
        [ev_charging_events, ev_charging_sessions],
        resources=resources,
        instance=instance,
        run_config=request.run_config,
        tags=request.tags,
        raise_on_error=False,
    )
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["schema_conforms"].passed is False
    assert not result.asset_materializations_for_node("ev_charging_sessions")
    assert wh.count(EV_CHARGING_SESSIONS) == 0


def test_premise_profile_snapshot_and_planning_pictures(env, small_utility, resources, instance):
    from ev_assets.defs.planning import premise_ev_profile
    from ev_assets.warehouse.tables import PREMISE_EV_PROFILE

    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=2)
    for request in sensor_result(instance, resources).run_requests:
        assert ingest(resources, instance, request).success
    load = dg.materialize([grid_load_by_day], partition_key="2024-06-03", resources=resources, instance=instance)
    transformer = load.asset_materializations_for_node("grid_load_by_day")
    by_key = {m.asset_key.path[-1]: m.metadata for m in transformer}
    assert "top_rows" in by_key["transformer_daily_load"] and "busiest_profile" in by_key["transformer_daily_load"]
    assert "](data:image/png;base64," in by_key["transformer_daily_load"]["busiest_profile"].value
    assert "top_intervals" in by_key["transformer_interval_load"]

    result = dg.materialize([premise_ev_profile], resources=resources, instance=instance)
    assert result.success
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    sessions = wh.read(EV_CHARGING_SESSIONS).filter(
        (pl.col("status") == "complete") & pl.col("quality_flags").is_null() & pl.col("premise_id").is_not_null()
    )
    profile = wh.read(PREMISE_EV_PROFILE)
    assert profile.height == sessions["premise_id"].n_unique()
    assert profile["session_count"].sum() == sessions.height
    materialized = {m.asset_key.path[-1] for m in result.asset_materializations_for_node("premise_ev_profile")}
    assert materialized == {"premise_ev_profile", "new_evs"}


def test_the_warehouse_lost_after_a_batch_commit_retries_the_step_and_keeps_the_row_count_exact(
    env, small_utility, resources, instance, monkeypatch
):
    """The warehouse lost just after a batch's commit (seen with PostgreSQL cut for a minute under
    `ev-awareness run`: the step's read for its schema check was refused). The step failed at once,
    without the retries its transaction gets, and a re-execution finds the batch committed: it
    inserts nothing, and its row count must still be the table's, not the last count plus 0."""
    import sqlalchemy as sa
    from dagster._core.events import DagsterEventType

    from ev_assets.defs.ingest import assets as ingest_assets

    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    first, second = sensor_result(instance, resources).run_requests[:2]
    assert ingest(resources, instance, first).success

    read_for_the_check = ingest_assets.stored_batch_conforms
    refused = []

    def refused_once(*args, **kwargs):
        if not refused:  # the database away for this one read, back for the retry
            refused.append(True)
            raise sa.exc.OperationalError(
                "SELECT count(*) FROM ev_charging_events", {}, ConnectionRefusedError("connection refused")
            )
        return read_for_the_check(*args, **kwargs)

    monkeypatch.setattr(ingest_assets, "stored_batch_conforms", refused_once)
    result = ingest(resources, instance, second)
    assert refused and result.success
    assert DagsterEventType.STEP_UP_FOR_RETRY in {e.event_type for e in result.all_events}
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    meta = result.asset_materializations_for_node("ev_charging_events")[0].metadata
    assert meta["dagster/row_count"].value == wh.count(EV_CHARGING_EVENTS)
    assert all(
        c.passed
        for c in result.get_asset_check_evaluations()
        if c.check_name in ("batch_reconciles", "schema_conforms")
    )


def test_a_tick_and_status_change_nothing_on_disk_and_the_committing_step_archives(
    env, small_utility, resources, instance
):
    """A batch committed by a run that died before moving its files (the commit, then the crash):
    a sensor tick and `ev-awareness status` are reads, they leave the landing folder byte for byte
    as it was and do not plan the committed files again; the next batch's step archives its own
    files and those leftovers, and nothing else."""
    from ev_assets import cli, pipeline

    load_reference(resources, instance)
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    landing = env["EV_FEED_DIR"]
    first, *rest = sensor_result(instance, resources).run_requests
    assert rest
    from ev_assets.core import feed
    from ev_assets.defs.ingest.assets import IngestBatchConfig

    span = IngestBatchConfig(**batch_config(first)).span
    committed = [f.path for f in span.select(feed.list_landing(landing))]
    assert len(committed) == batch_config(first)["file_count"]
    # The died run's commit, without its step's archiving.
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    pipeline.ingest_batch(wh, first.run_key, committed, pipeline.PipelineSettings())
    before = landing_state(landing)
    result = sensor_result(instance, resources)
    assert landing_state(landing) == before
    planned = sum(batch_config(r)["file_count"] for r in result.run_requests)
    assert planned == len(before) - len(committed)
    cli.main(["status"])
    assert landing_state(landing) == before

    second = result.run_requests[0]
    meta = ingest(resources, instance, second).asset_materializations_for_node("ev_charging_events")[0].metadata
    assert meta["files_archived"].value == batch_config(second)["file_count"] + len(committed)
    assert not any(p.exists() for p in committed)
    left = {p.name for p in landing.glob("*.json")}
    assert len(left) == len(before) - len(committed) - batch_config(second)["file_count"]
    assert sum(batch_config(r)["file_count"] for r in sensor_result(instance, resources).run_requests) == len(left)
