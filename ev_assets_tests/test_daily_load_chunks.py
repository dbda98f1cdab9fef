"""The daily load computes a range a few days at a time (EV_LOAD_CHUNK_DAYS) to bound its memory: a
day's load depends only on the sessions that overlap it, so every chunk size must write the same
rows as one pass over the range, across chunk boundaries (sessions charging past midnight) and a
DST change (2024-11-03 in America/New_York is 25 hours long)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from ev_assets import pipeline
from ev_assets.pipeline.planning_load import day_chunks
from ev_assets.warehouse.tables import EV_LOAD_DAYS_PENDING
from ev_assets_tests.conftest import simulate

NOW = datetime(2024, 11, 20, tzinfo=UTC)
FIRST, LAST = date(2024, 11, 1), date(2024, 11, 5)


def test_day_chunks_cover_the_range_once():
    assert day_chunks(FIRST, LAST, 2) == [
        (date(2024, 11, 1), date(2024, 11, 2)),
        (date(2024, 11, 3), date(2024, 11, 4)),
        (date(2024, 11, 5), date(2024, 11, 5)),
    ]
    assert day_chunks(FIRST, LAST, 31) == [(FIRST, LAST)]
    assert day_chunks(FIRST, FIRST, 1) == [(FIRST, FIRST)]
    with pytest.raises(ValueError, match="chunk_days"):
        day_chunks(FIRST, LAST, 0)


def _tables(warehouse) -> dict[str, pl.DataFrame]:
    specs = [*pipeline.DAILY_LOAD_TABLES.values(), *pipeline.INTERVAL_LOAD_TABLES.values()]
    return {spec.name: warehouse.read(spec).sort(list(spec.primary_key)) for spec in specs}


def test_every_chunk_size_writes_what_one_pass_writes(warehouse, small_utility, tmp_path):
    settings = pipeline.PipelineSettings(timezone="America/New_York")
    pipeline.load_reference(warehouse, small_utility, settings, now=NOW)
    landing = tmp_path / "landing"
    truth = simulate(small_utility, landing, days=5, seed=5, start=FIRST)
    pipeline.ingest_batch(warehouse, "chunks", sorted(landing.glob("*.json")), settings, now=NOW)
    pipeline.pair_pending_batches(warehouse, settings, now=NOW)
    # The feed does cross the boundaries the chunks cut at: sessions charging past local midnight.
    local = truth.with_columns(pl.col("start_time", "end_time").dt.convert_time_zone(settings.timezone).dt.date())
    assert local.filter(pl.col("start_time") != pl.col("end_time")).height > 0

    one_pass = pipeline.update_daily_load(warehouse, settings, FIRST, LAST, now=NOW, chunk_days=31)
    expected = _tables(warehouse)
    assert one_pass.chunks == 1
    assert expected["transformer_interval_load"].height > 0
    assert expected["transformer_daily_load"]["load_date"].n_unique() == 5

    for chunk_days in (1, 2, 3):
        report = pipeline.update_daily_load(warehouse, settings, FIRST, LAST, now=NOW, chunk_days=chunk_days)
        assert report.chunks == len(day_chunks(FIRST, LAST, chunk_days))
        for name, frame in _tables(warehouse).items():
            (
                assert_frame_equal(frame, expected[name], check_exact=False, rel_tol=1e-12, abs_tol=1e-12),
                (name, chunk_days),
            )
        assert report.rows == one_pass.rows and report.interval_rows == one_pass.interval_rows
        for level in pipeline.DAILY_LOAD_TABLES:
            assert_frame_equal(report.frames[level], one_pass.frames[level], check_exact=False, rel_tol=1e-12)
            assert_frame_equal(
                report.top_intervals[level], one_pass.top_intervals[level], check_exact=False, rel_tol=1e-12
            )
            assert_frame_equal(
                report.busiest_profiles[level], one_pass.busiest_profiles[level], check_exact=False, rel_tol=1e-12
            )
    # The busiest asset-day's profile is that day's whole profile, and its maximum is that day's peak.
    busiest = one_pass.busiest_profiles["transformer"]
    daily = one_pass.frames["transformer"]
    assert busiest["kw"].max() == pytest.approx(daily["peak_kw"].max())
    day = busiest.row(0, named=True)
    assert (
        busiest.height
        == expected["transformer_interval_load"]
        .filter((pl.col("transformer_id") == day["transformer_id"]) & (pl.col("load_date") == day["load_date"]))
        .height
    )


def test_days_computed_out_of_order_converge_to_one_pass(warehouse, small_utility, tmp_path):
    """Heat carries over midnight, so a day's load depends on the day before as stored. Days
    computed later first (a late message, a load run beside another) start from a state that is
    not final yet: recomputing a range whose last end state moves queues the day after when it
    has a load, and working the queue off gives what one pass over the whole range gives."""
    settings = pipeline.PipelineSettings(timezone="America/New_York")
    pipeline.load_reference(warehouse, small_utility, settings, now=NOW)
    landing = tmp_path / "landing"
    simulate(small_utility, landing, days=5, seed=5, start=FIRST)
    pipeline.ingest_batch(warehouse, "order", sorted(landing.glob("*.json")), settings, now=NOW)
    pipeline.pair_pending_batches(warehouse, settings, now=NOW)
    pipeline.update_daily_load(warehouse, settings, FIRST, LAST, now=NOW)
    expected = _tables(warehouse)
    with warehouse.transaction() as conn:
        for spec in [*pipeline.DAILY_LOAD_TABLES.values(), *pipeline.INTERVAL_LOAD_TABLES.values()]:
            warehouse.delete(conn, spec, sa.true())
        warehouse.delete(conn, EV_LOAD_DAYS_PENDING, sa.true())

    # The last three days first (the day before unknown: each starts from its own steady state).
    assert not pipeline.update_daily_load(warehouse, settings, date(2024, 11, 3), LAST, now=NOW).next_day_queued
    # Then the first two: their last end state is new, so the third day is queued again.
    assert pipeline.update_daily_load(warehouse, settings, FIRST, date(2024, 11, 2), now=NOW).next_day_queued
    assert pipeline.pending_load_days(warehouse)["load_date"].to_list() == [date(2024, 11, 3)]
    rounds = 0
    while not (queued := pipeline.pending_load_days(warehouse)).is_empty():
        day = queued["load_date"].min()
        pipeline.update_daily_load(warehouse, settings, day, day, now=NOW)
        rounds += 1
        assert rounds <= 5, "the recomputation must stop once the end states agree"
    for name, frame in _tables(warehouse).items():
        assert_frame_equal(frame, expected[name], check_exact=False, rel_tol=1e-8, abs_tol=1e-8), name
