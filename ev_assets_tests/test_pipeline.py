"""Pipeline steps against real warehouses: idempotency, late data, windows, re-enrichment."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import sqlalchemy as sa

from ev_assets import pipeline
from ev_assets.core import feed
from ev_assets.warehouse.tables import (
    EV_CHARGING_EVENTS,
    EV_CHARGING_SESSIONS,
    EV_FEED_FILES,
    REF_METERS,
    TRANSFORMER_DAILY_LOAD,
)

from .conftest import simulate
from .helpers import assert_same_tables, snapshot


def landing_files(folder):
    return [f.path for f in feed.list_landing(folder)]


NEW_TRANSFORMER = "4999999999-99999999"


def refed(utility: dict[str, pl.DataFrame], service_point: str, change) -> dict[str, pl.DataFrame]:
    """The reference data with `service_point` re-fed from a new transformer from `change` on (a
    GIS correction): its row closes on that day and a row on the new transformer opens."""
    points = utility["service_points"]
    moved = points.filter(pl.col("service_point_id") == service_point).with_columns(
        pl.lit(change).alias("effective_from"), pl.lit(NEW_TRANSFORMER).alias("transformer_id")
    )
    closed = points.with_columns(
        pl.when(pl.col("service_point_id") == service_point)
        .then(pl.lit(change))
        .otherwise(pl.col("effective_to"))
        .alias("effective_to")
    )
    transformers = utility["transformers"]
    new_tx = transformers.head(1).with_columns(pl.lit(NEW_TRANSFORMER).alias("transformer_id"))
    return {**utility, "service_points": pl.concat([closed, moved]), "transformers": pl.concat([transformers, new_tx])}


def apply_reference(warehouse, frames, settings) -> pipeline.SessionsReport:
    """What a reference_job run does: load the extracts, attribute the queued meters' events
    again (the events step), re-pair their sessions (the sessions step)."""
    pipeline.load_reference(warehouse, frames, settings)
    pipeline.reattribute_pending_meters(warehouse, settings)
    return pipeline.repair_reattributed_meters(warehouse, settings)


def test_same_file_twice_in_a_batch_is_read_once(warehouse, settings, small_utility, tmp_path):
    pipeline.load_reference(warehouse, small_utility, settings)
    simulate(small_utility, tmp_path, days=1)
    paths = landing_files(tmp_path)[:3]
    report = pipeline.ingest_batch(warehouse, "b", paths + paths[:1], settings)
    assert report.files_read == 3 and report.reconciled
    assert warehouse.count(EV_FEED_FILES) == 3


def test_batches_in_any_order_give_the_same_sessions(warehouse, settings, small_utility, tmp_path):
    """Starts and ends split across batches, the later batch first: pairing does not depend on the
    order batches arrive in, and replaying everything changes nothing."""
    pipeline.load_reference(warehouse, small_utility, settings)
    truth = simulate(small_utility, tmp_path, days=3)
    files = landing_files(tmp_path)
    thirds = [files[i::3] for i in range(3)]  # interleaved: every batch holds starts and ends of others
    for n, batch in enumerate(reversed(thirds)):
        assert pipeline.ingest_batch(warehouse, f"b{n}", batch, settings).reconciled
        pipeline.pair_pending_batches(warehouse, settings)
    stored = warehouse.read(EV_CHARGING_SESSIONS)
    assert stored["status"].to_list() == ["complete"] * truth.height
    assert stored.join(truth, on=["meter_id", "start_time", "end_time"], how="anti").is_empty()

    before = snapshot(warehouse, ignore_write_times=True)
    for n, batch in enumerate(thirds):
        pipeline.ingest_batch(warehouse, f"again{n}", batch, settings)
        pipeline.pair_pending_batches(warehouse, settings)
    after = snapshot(warehouse, ignore_write_times=True)
    # The replays are batches of their own (ledgered, and paired to no effect); nothing else changes.
    for ledger in ("ev_ingest_batches", "ev_batch_pairing"):
        after[ledger] = after[ledger].filter(~pl.col("batch_id").str.starts_with("again"))
    assert_same_tables(before, after)


def test_late_end_closes_an_open_session(warehouse, settings, small_utility, tmp_path):
    pipeline.load_reference(warehouse, small_utility, settings)
    truth = simulate(small_utility, tmp_path, days=1)
    files = landing_files(tmp_path)
    early, late = files[: len(files) // 2], files[len(files) // 2 :]
    pipeline.ingest_batch(warehouse, "early", early, settings)
    pipeline.pair_pending_batches(warehouse, settings)
    open_before = (
        warehouse.read(EV_CHARGING_SESSIONS).filter(pl.col("status").is_in(["start_only", "timed_out"])).height
    )
    assert open_before > 0
    pipeline.ingest_batch(warehouse, "late", late, settings)
    report = pipeline.pair_pending_batches(warehouse, settings)
    stored = warehouse.read(EV_CHARGING_SESSIONS)
    assert stored.height == truth.height and (stored["status"] == "complete").all()
    assert report.touched_dates  # the days whose load must be recomputed


def test_unknown_meter_is_enriched_when_the_reference_catches_up(warehouse, settings, small_utility, tmp_path):
    # The reference data lags: one meter is missing from the first extract.
    truth = simulate(small_utility, tmp_path, days=1)
    late_meter = truth["meter_id"][0]
    lagging = {**small_utility, "meters": small_utility["meters"].filter(pl.col("meter_id") != late_meter)}
    pipeline.load_reference(warehouse, lagging, settings)
    pipeline.ingest_batch(warehouse, "b", landing_files(tmp_path), settings)
    pipeline.pair_pending_batches(warehouse, settings)
    ev = warehouse.table(EV_CHARGING_EVENTS).c
    waiting = warehouse.read(EV_CHARGING_EVENTS, ev.meter_id == late_meter)
    assert set(waiting["enrichment_status"]) == {"meter_unknown"} and waiting["meter_key"].is_null().all()

    report = apply_reference(warehouse, small_utility, settings)
    enriched = warehouse.read(EV_CHARGING_EVENTS, ev.meter_id == late_meter)
    assert set(enriched["enrichment_status"]) == {"enriched"} and enriched["meter_key"].is_not_null().all()
    s = warehouse.table(EV_CHARGING_SESSIONS).c
    sessions = warehouse.read(EV_CHARGING_SESSIONS, s.meter_id == late_meter)
    assert set(sessions["enrichment_status"]) == {"enriched"} and sessions["feeder_id"].is_not_null().all()
    assert report.sessions_written == sessions.height
    assert warehouse.count(EV_CHARGING_EVENTS, ev.enrichment_status == "meter_unknown") == 0


def test_point_in_time_attribution_follows_the_event_date(warehouse, settings, small_utility, tmp_path):
    """A service point re-fed from another transformer: sessions before the change stay on the old
    transformer, sessions after it go to the new one."""
    truth = simulate(small_utility, tmp_path, days=3).with_columns(
        pl.col("start_time").dt.convert_time_zone(settings.timezone).dt.date().alias("local_date")
    )
    # A service point that charged on at least two different days; the GIS change falls between.
    days = truth.group_by("service_point_id").agg(
        pl.col("local_date").min().alias("first"), pl.col("local_date").max().alias("last")
    )
    sp, first_day = (
        days.filter(pl.col("last") > pl.col("first"))
        .sort("service_point_id")
        .select("service_point_id", "first")
        .row(0)
    )
    session = truth.filter(pl.col("service_point_id") == sp).sort("start_time").row(0, named=True)
    change = first_day + timedelta(days=1)
    reference = refed(small_utility, sp, change)
    pipeline.load_reference(warehouse, reference, settings)
    pipeline.ingest_batch(warehouse, "b", landing_files(tmp_path), settings)
    pipeline.pair_pending_batches(warehouse, settings)
    s = warehouse.table(EV_CHARGING_SESSIONS).c
    stored = warehouse.read(EV_CHARGING_SESSIONS, s.service_point_id == sp)
    before = stored.filter(pl.col("event_date") < change)
    after = stored.filter(pl.col("event_date") >= change)
    assert before.height > 0 and after.height > 0
    assert set(before["transformer_id"]) == {session["transformer_id"]}
    assert set(after["transformer_id"]) == {NEW_TRANSFORMER}
    assert warehouse.count(REF_METERS) == small_utility["meters"].height
    assert sa.inspect(warehouse.engine).has_table("ev_charging_sessions")


def test_a_backdated_transformer_correction_moves_the_sessions_and_days(warehouse, settings, small_utility, tmp_path):
    """The utility finds a service point hangs off another transformer since a date in the past:
    the events and sessions since that date move to it, the earlier ones stay, and exactly the days
    of the moved sessions are queued for their daily load (issue 10)."""
    truth = simulate(small_utility, tmp_path, days=3).with_columns(
        pl.col("start_time").dt.convert_time_zone(settings.timezone).dt.date().alias("local_date")
    )
    pipeline.load_reference(warehouse, small_utility, settings)
    pipeline.ingest_batch(warehouse, "b", landing_files(tmp_path), settings)
    pipeline.pair_pending_batches(warehouse, settings)
    for day in pipeline.pending_load_days(warehouse)["load_date"].to_list():
        pipeline.update_daily_load(warehouse, settings, day, day)
    assert pipeline.pending_load_days(warehouse).is_empty()

    days = truth.group_by("service_point_id").agg(
        pl.col("local_date").min().alias("first"), pl.col("local_date").max().alias("last")
    )
    sp, first_day = (
        days.filter(pl.col("last") > pl.col("first"))
        .sort("service_point_id")
        .select("service_point_id", "first")
        .row(0)
    )
    old_tx = truth.filter(pl.col("service_point_id") == sp)["transformer_id"][0]
    change = first_day + timedelta(days=1)
    corrected = refed(small_utility, sp, change)
    before = warehouse.read(EV_CHARGING_SESSIONS)

    apply_reference(warehouse, corrected, settings)
    after = warehouse.read(EV_CHARGING_SESSIONS)
    mine = after.filter(pl.col("service_point_id") == sp)
    assert set(mine.filter(pl.col("event_date") < change)["transformer_id"]) == {old_tx}
    assert set(mine.filter(pl.col("event_date") >= change)["transformer_id"]) == {NEW_TRANSFORMER}
    # Nobody else moved.
    others = ["session_id", "transformer_id", "energy_wh"]
    assert (
        after.filter(pl.col("service_point_id") != sp)
        .select(others)
        .sort("session_id")
        .equals(before.filter(pl.col("service_point_id") != sp).select(others).sort("session_id"))
    )
    # Exactly the local days the moved sessions span are queued, and their load follows.
    moved_sessions = mine.filter(pl.col("event_date") >= change)
    queued = pipeline.pending_load_days(warehouse)["load_date"].to_list()
    assert queued == pipeline.load_dates_of(moved_sessions, settings.timezone)
    for day in queued:
        pipeline.update_daily_load(warehouse, settings, day, day)
    load = warehouse.read(TRANSFORMER_DAILY_LOAD)
    assert load.filter(pl.col("transformer_id") == NEW_TRANSFORMER)["energy_kwh"].sum() > 0
    moved_kwh = moved_sessions["energy_wh"].sum() / 1000
    assert abs(load.filter(pl.col("transformer_id") == NEW_TRANSFORMER)["energy_kwh"].sum() - moved_kwh) < 1e-6
