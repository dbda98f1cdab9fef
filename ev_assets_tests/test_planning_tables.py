"""Issue 12: the planning tables, each from a small hand-made feed whose figures are computed by
hand (time zone UTC, power factor 0.9)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from ev_assets import pipeline
from ev_assets.warehouse.tables import (
    FEEDER_INTERVAL_LOAD,
    REF_TRANSFORMERS,
    TRANSFORMER_DAILY_LOAD,
    TRANSFORMER_INTERVAL_LOAD,
)

from .test_session_quality import NOW, Feed, at, end, start

DAY = date(2024, 6, 3)


def rate_t1(warehouse, kva: float = 10.0) -> None:
    """T1 rated `kva` (10 kVA: 9 kW at power factor 0.9) from 2024-01-01."""
    row = {"transformer_id": "T1", "feeder_id": "F1", "kva_rating": kva, "phase": "A",
           "effective_from": date(2024, 1, 1), "effective_to": None}  # fmt: skip
    with warehouse.transaction() as conn:
        warehouse.insert(conn, REF_TRANSFORMERS, pl.DataFrame([row], schema=REF_TRANSFORMERS.polars_schema))


# Four trusted sessions on T1 (each draws its ChargeW for its whole length: even load):
#   M1 7.2 kW 18:00-19:00, M2 6 kW 18:30-19:30, M3 3 kW 18:40-19:00, M4 8 kW 21:00-21:30.
# By hand, 15-minute averages (kW) and EVs:
#   18:00 7.2 (1), 18:15 7.2 (1), 18:30 7.2 + 6 + 3 x 5/15 = 14.2 (3), 18:45 7.2 + 6 + 3 = 16.2 (3),
#   19:00 6 (1), 19:15 6 (1), 21:00 8 (1), 21:15 8 (1).
HAND_PROFILE = [
    (at(3, 18), 7.2, 1), (at(3, 18, 15), 7.2, 1), (at(3, 18, 30), 14.2, 3), (at(3, 18, 45), 16.2, 3),
    (at(3, 19), 6.0, 1), (at(3, 19, 15), 6.0, 1), (at(3, 21), 8.0, 1), (at(3, 21, 15), 8.0, 1),
]  # fmt: skip


@pytest.fixture
def feed(warehouse, tmp_path):
    return Feed(warehouse, tmp_path, pipeline.PipelineSettings(timezone="UTC", planning_threshold=0.6))


def send_hand_sessions(feed) -> None:
    feed.send(
        [
            start("M1", at(3, 18), 7200), end("M1", at(3, 19), 7200, 1),
            start("M2", at(3, 18, 30), 6000), end("M2", at(3, 19, 30), 6000, 1),
            start("M3", at(3, 18, 40), 3000), end("M3", at(3, 19), 1000, 0.33),
            start("M4", at(3, 21), 8000), end("M4", at(3, 21, 30), 4000, 0.5),
        ]
    )  # fmt: skip


def test_interval_profile_and_overload_by_hand(feed):
    rate_t1(feed.warehouse)
    send_hand_sessions(feed)
    report = pipeline.update_daily_load(feed.warehouse, feed.settings, DAY, DAY, now=NOW)
    profile = feed.warehouse.read(TRANSFORMER_INTERVAL_LOAD).sort("interval_start")
    assert profile["transformer_id"].to_list() == ["T1"] * 8
    assert profile["load_date"].to_list() == [DAY] * 8
    assert profile["interval_start"].to_list() == [ts for ts, _, _ in HAND_PROFILE]
    assert profile["kw"].to_list() == pytest.approx([kw for _, kw, _ in HAND_PROFILE])
    assert profile["kva"].to_list() == pytest.approx([kw / 0.9 for _, kw, _ in HAND_PROFILE])
    assert profile["ev_count"].to_list() == [n for _, _, n in HAND_PROFILE]
    # T1 is on F1 (whose substation is unknown): F1's profile is T1's.
    assert report.interval_rows == {"transformer": 8, "feeder": 8, "substation": 0}
    feeder = feed.warehouse.read(FEEDER_INTERVAL_LOAD).sort("interval_start")
    assert feeder["kw"].to_list() == pytest.approx(profile["kw"].to_list())

    day = feed.warehouse.read(TRANSFORMER_DAILY_LOAD).row(0, named=True)
    assert (day["peak_kw"], day["peak_interval_start"], day["energy_kwh"]) == (pytest.approx(16.2), at(3, 18, 45), pytest.approx(18.2))
    assert day["peak_kw"] == pytest.approx(profile["kw"].max())
    # Rating 10 kVA x 0.9 = 9 kW: 18:30 (14.2) and 18:45 (16.2) exceed it: 30 min,
    # (5.2 + 7.2) x 0.25 h = 3.1 kWh.
    assert (day["minutes_above_rating"], day["kwh_above_rating"]) == (30, pytest.approx(3.1))
    # Threshold 60 % of 9 kW = 5.4 kW: 18:00-19:30 (6 intervals) and 21:00-21:30 (2) exceed it:
    # 120 min, longest 90 min; excess (1.8 + 1.8 + 8.8 + 10.8 + 0.6 + 0.6 + 2.6 + 2.6) x 0.25 = 7.4 kWh.
    assert (day["planning_threshold"], day["minutes_above_threshold"], day["longest_above_threshold_minutes"]) == (0.6, 120, 90)
    assert day["kwh_above_threshold"] == pytest.approx(7.4)
    assert pipeline.profile_peak_mismatches(feed.warehouse, DAY, DAY).is_empty()

    # Recomputing the day replaces its profile (no duplicates, same figures).
    pipeline.update_daily_load(feed.warehouse, feed.settings, DAY, DAY, now=NOW)
    again = feed.warehouse.read(TRANSFORMER_INTERVAL_LOAD).sort("interval_start")
    assert again.drop("updated_at").equals(profile.drop("updated_at"))


def test_overload_is_null_without_a_rating_and_zero_below_it(feed):
    send_hand_sessions(feed)  # T1 not in the reference data
    pipeline.update_daily_load(feed.warehouse, feed.settings, DAY, DAY, now=NOW)
    day = feed.warehouse.read(TRANSFORMER_DAILY_LOAD).row(0, named=True)
    assert day["kva_rating"] is None and day["minutes_above_rating"] is None and day["longest_above_threshold_minutes"] is None

    from ev_assets.core import load_profile

    daily = pl.DataFrame({"transformer_id": ["T1"], "load_date": [DAY], "kva_rating": [100.0]})
    profile = pl.DataFrame({"transformer_id": ["T1"], "load_date": [DAY], "interval_start": [at(3, 18)], "kw": [5.0]})
    out = load_profile.overload_exposure(profile, daily, power_factor=0.9, planning_threshold=1.0).row(0, named=True)
    assert (out["minutes_above_rating"], out["kwh_above_rating"], out["longest_above_threshold_minutes"]) == (0, 0.0, 0)


def test_check_finds_a_profile_that_disagrees_with_the_peak(feed):
    send_hand_sessions(feed)
    pipeline.update_daily_load(feed.warehouse, feed.settings, DAY, DAY, now=NOW)
    t = feed.warehouse.table(TRANSFORMER_INTERVAL_LOAD)
    with feed.warehouse.transaction() as conn:
        conn.execute(t.update().where(t.c.interval_start == at(3, 18, 45)).values(kw=1.0))
    bad = pipeline.profile_peak_mismatches(feed.warehouse, DAY, DAY)
    assert bad.select("transformer_id", "load_date").rows() == [("T1", DAY)]
    assert bad["profile_max_kw"].item() == pytest.approx(14.2)


def test_sparkline_marks_the_hours_with_load():
    from ev_assets.defs.metadata import profile_sparkline

    profile = pl.DataFrame({"interval_start": [at(3, 18), at(3, 18, 15)], "kw": [8.0, 4.0]})
    text = profile_sparkline(profile, DAY, "UTC", "T1")
    line = text.split("```\n")[1].splitlines()[0]
    assert len(line) == 96 and line[72:74] == "█▄" and line.replace("█▄", "").strip() == ""
