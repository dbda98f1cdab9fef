"""Issue 12 item 4: transformer_planning_queue, its risk score computed by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from ev_assets.core import planning_queue as pq

NOW = datetime(2024, 6, 5, 12, tzinfo=UTC)
SCHEMA = {
    "transformer_id": pl.String,
    "load_date": pl.Date,
    "feeder_id": pl.String,
    "kva_rating": pl.Float64,
    "utilization": pl.Float64,
    "minutes_above_rating": pl.Int64,
    "loss_of_life_h": pl.Float64,
    "ev_count": pl.Int64,
}


def d(day: int) -> date:
    return date(2024, 6, day) if day > 0 else date(2024, 5, 31)


def daily(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def test_risk_score_and_rank_by_hand():
    # Window of 4 days ending 06-04: 06-01..06-04; earlier half 06-01..06-02, later 06-03..06-04.
    rows = daily(
        [
            ("T1", d(0), "F1", 10.0, 9.0, 900, 99.0, 50),  # 05-31: outside the window
            ("T1", d(1), "F1", 10.0, 0.8, 0, 12.0, 2),
            ("T1", d(4), "F1", 10.0, 1.5, 120, 36.0, 5),
            ("T2", d(3), "F2", None, None, None, None, 3),  # unrated
            ("T3", d(2), "F1", 25.0, 0.5, 0, 6.0, 1),
        ]
    )
    q = pq.planning_queue(rows, as_of=d(4), window_days=4, updated_at=NOW)
    by_id = {r["transformer_id"]: r for r in q.to_dicts()}
    # T1: u = 1.5; h = (120 / 60) / 4 = 0.5; L = 48 / (24 x 4) = 0.5; g = 5 - 2 = 3 (x 0.1).
    t1 = by_id["T1"]
    assert (t1["peak_utilization"], t1["hours_over_rating"], t1["loss_of_life_h"]) == (1.5, 2.0, 48.0)
    assert (t1["ev_count_first_half"], t1["ev_count_second_half"], t1["ev_count_growth"]) == (2, 5, 3)
    assert t1["risk_score"] == pytest.approx(1.5 + 0.5 + 0.5 + 0.3)
    assert (t1["days_with_load"], t1["window_first_day"], t1["window_last_day"]) == (2, d(1), d(4))
    # T2: no rating: its null terms count 0; g = 3 - 0.
    t2 = by_id["T2"]
    assert t2["peak_utilization"] is None and t2["hours_over_rating"] is None and t2["loss_of_life_h"] is None
    assert t2["risk_score"] == pytest.approx(0.3)
    # T3: u = 0.5, h = 0, L = 6 / 96, g = 0 - 1.
    assert by_id["T3"]["risk_score"] == pytest.approx(0.5 + 6 / 96 - 0.1)
    assert q.select("transformer_id", "rank").rows() == [("T1", 1), ("T3", 2), ("T2", 3)]

    # Weights from settings: only the loss of life counts.
    only_life = pq.planning_queue(rows, as_of=d(4), window_days=4, weights=pq.RiskWeights(0, 0, 1, 0), updated_at=NOW)
    assert only_life.select("transformer_id", "risk_score").rows() == [("T1", 0.5), ("T3", 6 / 96), ("T2", 0.0)]


def test_years_to_likely_overload_enter_as_their_inverse():
    # as_of 2024-06-04. T1 likely overloads in 2025 (1 year: + 1.0), T3 in 2027 (3 years: + 1/3),
    # T2 has no likely overload (+ 0); a forecast year at or before as_of's clips to 1 year.
    rows = daily([(t, d(4), None, 10.0, 0.5, 0, 0.0, 1) for t in ("T1", "T2", "T3", "T4")])
    years = pl.DataFrame(
        {"transformer_id": ["T1", "T3", "T4"], "first_year_p50": [2025, 2027, 2024]},
        schema={"transformer_id": pl.String, "first_year_p50": pl.Int64},
    )
    q = pq.planning_queue(rows, as_of=d(4), window_days=2, updated_at=NOW, first_overload_years=years)
    by_id = {r["transformer_id"]: r for r in q.to_dicts()}
    assert {t: by_id[t]["years_to_likely_overload"] for t in by_id} == {"T1": 1, "T2": None, "T3": 3, "T4": 1}
    base = 0.5 + 0.1 * 1  # u, and g = 1 - 0 (the only day is in the later half)
    assert by_id["T1"]["risk_score"] == pytest.approx(base + 1.0)
    assert by_id["T2"]["risk_score"] == pytest.approx(base)
    assert by_id["T3"]["risk_score"] == pytest.approx(base + 1 / 3)
    # Its weight from settings: 0 leaves the score as it was without a forecast.
    off = pq.planning_queue(
        rows,
        as_of=d(4),
        window_days=2,
        weights=pq.RiskWeights(overload_soon=0.0),
        updated_at=NOW,
        first_overload_years=years,
    )
    assert off["risk_score"].to_list() == pytest.approx([base] * 4)


def test_ties_rank_by_transformer_id():
    rows = daily([("TB", d(4), None, 10.0, 1.0, 0, 0.0, 1), ("TA", d(4), None, 10.0, 1.0, 0, 0.0, 1)])
    q = pq.planning_queue(rows, as_of=d(4), window_days=2, updated_at=NOW)
    assert q.select("transformer_id", "rank").rows() == [("TA", 1), ("TB", 2)]


def test_refresh_planning_queue_from_the_daily_load(warehouse, tmp_path):
    from ev_assets import pipeline
    from ev_assets.warehouse.tables import (
        TRANSFORMER_DAILY_LOAD,
        TRANSFORMER_OVERLOAD_FORECAST,
        TRANSFORMER_PLANNING_QUEUE,
    )

    from .test_planning_tables import DAY, rate_t1, send_hand_sessions
    from .test_session_quality import Feed

    settings = pipeline.PipelineSettings(timezone="UTC")
    feed = Feed(warehouse, tmp_path, settings)
    assert pipeline.refresh_planning_queue(warehouse, settings, now=NOW).rows == 0  # no daily load yet
    rate_t1(warehouse)
    send_hand_sessions(feed)
    pipeline.update_daily_load(warehouse, settings, DAY, DAY, now=NOW)
    report = pipeline.refresh_planning_queue(warehouse, settings, now=NOW)
    assert (report.rows, report.as_of) == (1, DAY)
    day = warehouse.read(TRANSFORMER_DAILY_LOAD).row(0, named=True)
    row = warehouse.read(TRANSFORMER_PLANNING_QUEUE).row(0, named=True)
    # The hand feed: peak 16.2 kW / 0.9 / 10 kVA = 1.8; 30 min over the rating; 4 EVs on the
    # window's last day (its later half): growth 4; window 90 days ending on DAY.
    assert (row["transformer_id"], row["rank"], row["window_last_day"]) == ("T1", 1, DAY)
    assert row["window_first_day"] == date(2024, 3, 6)
    assert row["peak_utilization"] == pytest.approx(1.8)
    assert row["hours_over_rating"] == pytest.approx(0.5)
    assert row["loss_of_life_h"] == pytest.approx(day["loss_of_life_h"])
    assert (row["ev_count_first_half"], row["ev_count_second_half"], row["ev_count_growth"]) == (0, 4, 4)
    expected = 1.8 + 0.5 / 90 + day["loss_of_life_h"] / (24 * 90) + 0.1 * 4
    assert row["risk_score"] == pytest.approx(expected)
    assert row["years_to_likely_overload"] is None  # no forecast yet
    # A refresh replaces the snapshot, and takes the forecast's base scenario (not the others).
    forecast_rows = pl.DataFrame(
        {
            "transformer_id": ["T1"] * 3,
            "scenario": ["base", "base", "high"],
            "year": [2025, 2026, 2025],
            "premises": [4] * 3,
            "evs_now": [4] * 3,
            "expected_evs": [4.0] * 3,
            "first_year_p50": [2026, 2026, 2025],
            "as_of_date": [DAY] * 3,
            "updated_at": [NOW] * 3,
        }
    )
    nulls = [
        pl.lit(None).alias(c) for c in TRANSFORMER_OVERLOAD_FORECAST.column_names if c not in forecast_rows.columns
    ]
    with warehouse.transaction() as conn:
        conformed = TRANSFORMER_OVERLOAD_FORECAST.conform(forecast_rows.with_columns(nulls))
        warehouse.insert(conn, TRANSFORMER_OVERLOAD_FORECAST, conformed)
    assert pipeline.refresh_planning_queue(warehouse, settings, now=NOW).rows == 1
    queue = warehouse.read(TRANSFORMER_PLANNING_QUEUE)
    assert queue.height == 1
    assert queue["years_to_likely_overload"].to_list() == [2026 - DAY.year]
    assert queue["risk_score"][0] == pytest.approx(expected + 1.0 / (2026 - DAY.year))


def test_the_asset_materializes_the_queue_with_its_top_rows(warehouse, warehouse_url, tmp_path):
    import dagster as dg

    from ev_assets import pipeline
    from ev_assets.defs.planning import transformer_planning_queue
    from ev_assets.defs.resources import PipelineConfig, WarehouseResource

    from .test_planning_tables import DAY, rate_t1, send_hand_sessions
    from .test_session_quality import Feed

    settings = pipeline.PipelineSettings(timezone="UTC")
    rate_t1(warehouse)
    send_hand_sessions(Feed(warehouse, tmp_path, settings))
    pipeline.update_daily_load(warehouse, settings, DAY, DAY, now=NOW)
    resources = {"warehouse": WarehouseResource(url=warehouse_url), "pipeline_config": PipelineConfig(timezone="UTC")}
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([transformer_planning_queue], resources=resources, instance=instance)
    assert result.success
    (event,) = result.asset_materializations_for_node("transformer_planning_queue")
    assert event.metadata["as_of_date"].value == DAY.isoformat()
    assert "T1" in event.metadata["top_rows"].value
