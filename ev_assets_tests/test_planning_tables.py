"""Issue 12: the planning tables, each from a small hand-made feed whose figures are computed by
hand (time zone UTC, power factor 0.9)."""

from __future__ import annotations

import io
from datetime import date, datetime

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
    row = {
        "transformer_id": "T1",
        "feeder_id": "F1",
        "kva_rating": kva,
        "phase": "A",
        "effective_from": date(2024, 1, 1),
        "effective_to": None,
    }
    with warehouse.transaction() as conn:
        warehouse.insert(conn, REF_TRANSFORMERS, pl.DataFrame([row], schema=REF_TRANSFORMERS.polars_schema))


# Four trusted sessions on T1 (each draws its ChargeW for its whole length: even load):
#   M1 7.2 kW 18:00-19:00, M2 6 kW 18:30-19:30, M3 3 kW 18:40-19:00, M4 8 kW 21:00-21:30.
# By hand, 15-minute averages (kW) and EVs:
#   18:00 7.2 (1), 18:15 7.2 (1), 18:30 7.2 + 6 + 3 x 5/15 = 14.2 (3), 18:45 7.2 + 6 + 3 = 16.2 (3),
#   19:00 6 (1), 19:15 6 (1), 21:00 8 (1), 21:15 8 (1).
HAND_PROFILE = [
    (at(3, 18), 7.2, 1),
    (at(3, 18, 15), 7.2, 1),
    (at(3, 18, 30), 14.2, 3),
    (at(3, 18, 45), 16.2, 3),
    (at(3, 19), 6.0, 1),
    (at(3, 19, 15), 6.0, 1),
    (at(3, 21), 8.0, 1),
    (at(3, 21, 15), 8.0, 1),
]


@pytest.fixture
def feed(warehouse, tmp_path):
    return Feed(warehouse, tmp_path, pipeline.PipelineSettings(timezone="UTC", planning_threshold=0.6))


def send_hand_sessions(feed) -> None:
    feed.send(
        [
            start("M1", at(3, 18), 7200),
            end("M1", at(3, 19), 7200, 1),
            start("M2", at(3, 18, 30), 6000),
            end("M2", at(3, 19, 30), 6000, 1),
            start("M3", at(3, 18, 40), 3000),
            end("M3", at(3, 19), 1000, 0.33),
            start("M4", at(3, 21), 8000),
            end("M4", at(3, 21, 30), 4000, 0.5),
        ]
    )


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
    assert (day["peak_kw"], day["peak_interval_start"], day["energy_kwh"]) == (
        pytest.approx(16.2),
        at(3, 18, 45),
        pytest.approx(18.2),
    )
    assert day["peak_kw"] == pytest.approx(profile["kw"].max())
    # Rating 10 kVA x 0.9 = 9 kW: 18:30 (14.2) and 18:45 (16.2) exceed it: 30 min,
    # (5.2 + 7.2) x 0.25 h = 3.1 kWh.
    assert (day["minutes_above_rating"], day["kwh_above_rating"]) == (30, pytest.approx(3.1))
    # Threshold 60 % of 9 kW = 5.4 kW: 18:00-19:30 (6 intervals) and 21:00-21:30 (2) exceed it:
    # 120 min, longest 90 min; excess (1.8 + 1.8 + 8.8 + 10.8 + 0.6 + 0.6 + 2.6 + 2.6) x 0.25 = 7.4 kWh.
    assert (day["planning_threshold"], day["minutes_above_threshold"], day["longest_above_threshold_minutes"]) == (
        0.6,
        120,
        90,
    )
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
    assert (
        day["kva_rating"] is None
        and day["minutes_above_rating"] is None
        and day["longest_above_threshold_minutes"] is None
    )

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


def test_the_busiest_profile_chart_is_a_png_in_local_time():
    from datetime import datetime as dt

    import matplotlib.image

    from ev_assets.defs import charts

    # 18:00 and 18:15 UTC on 3 June 2024 are 14:00 and 14:15 in New York (EDT, UTC-4).
    profile = pl.DataFrame({"interval_start": [at(3, 18), at(3, 18, 15)], "kw": [8.0, 4.0]})
    day = charts.local_day_profile(profile, DAY, "America/New_York")
    assert day.height == 96 and day["kw"].sum() == 12.0
    loaded = day.filter(pl.col("kw") > 0)
    assert [ts.replace(tzinfo=None) for ts in loaded["local_start"]] == [dt(2024, 6, 3, 14, 0), dt(2024, 6, 3, 14, 15)]
    # A DST day has 92 or 100 intervals.
    assert charts.local_day_profile(profile.clear(), date(2024, 3, 10), "America/New_York").height == 92
    assert charts.local_day_profile(profile.clear(), date(2024, 11, 3), "America/New_York").height == 100

    png = charts.profile_chart_png(profile, DAY, "America/New_York", "T1", rating_kw=22.5)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(io.BytesIO(png), format="png").shape
    assert (width, height) == (800, 320)
    assert charts.markdown_image(png, "T1").startswith("![T1](data:image/png;base64,iVBOR")


# --- item 5: premise_ev_profile and new_evs ---------------------------------------------------


def d(day: int) -> date:
    return date(2024, 6, day)


def send_premise_sessions(feed) -> None:
    """PM1 (meter M1), 3 sessions: Mon 3 June 20:00-22:00 7.2 kW, Sat 8 June 17:00-18:00 7.2 kW,
    Mon 17 June 20:00-20:30 6 kW. PM2 (meters M2, M3): Thu 20 June 01:00-03:00 1.4 kW and
    02:00-03:00 1.4 kW. PM4 (M4): one flagged session (4 kWh in 1 h on a 3 kW charger)."""
    feed.send(
        [
            start("M1", at(3, 20), 7200),
            end("M1", at(3, 22), 14400, 2),
            start("M1", at(8, 17), 7200),
            end("M1", at(8, 18), 7200, 1),
            start("M1", at(17, 20), 6000),
            end("M1", at(17, 20, 30), 3000, 0.5),
            start("M2", at(20, 1), 1400, PremiseID="PM2"),
            end("M2", at(20, 3), 2800, 2, PremiseID="PM2"),
            start("M3", at(20, 2), 1400, PremiseID="PM2"),
            end("M3", at(20, 3), 1400, 1, PremiseID="PM2"),
            start("M4", at(20, 20), 3000),
            end("M4", at(20, 21), 4000, 1),
        ]
    )


def test_premise_profile_and_new_evs_by_hand(feed):
    from ev_assets.warehouse.tables import NEW_EVS, PREMISE_EV_PROFILE

    send_premise_sessions(feed)
    settings = pipeline.PipelineSettings(timezone="UTC", new_ev_days=10)
    report = pipeline.refresh_premise_profile(feed.warehouse, settings, now=NOW, chunk_premises=1)
    assert (report.premises, report.new_evs, report.as_of) == (2, 1, d(20))
    rows = {r["premise_id"]: r for r in feed.warehouse.read(PREMISE_EV_PROFILE).iter_rows(named=True)}
    assert set(rows) == {"PM1", "PM2"}  # PM4's only session is flagged
    pm1 = rows["PM1"]
    # 3 June..17 June is 15 days = 15/7 weeks: 3 / (15/7) = 1.4 sessions a week. Median ChargeW of
    # 7200, 7200, 6000 is 7200: level 2. Start hours 20, 17, 20: 20. Energy 14.4 + 7.2 + 3 = 24.6 kWh,
    # on peak (weekdays 16-21): 20:00-21:00 of 3 June (7.2) and all of 17 June (3): 10.2 kWh.
    assert (pm1["first_charging_day"], pm1["last_charging_day"], pm1["session_count"], pm1["meter_count"]) == (
        d(3),
        d(17),
        3,
        1,
    )
    assert (pm1["active_weeks"], pm1["sessions_per_week"]) == (pytest.approx(15 / 7), pytest.approx(1.4))
    assert (pm1["median_charge_w"], pm1["charger_level"], pm1["typical_start_hour"]) == (7200.0, "level_2", 20)
    assert (pm1["energy_kwh"], pm1["on_peak_energy_share"]) == (pytest.approx(24.6), pytest.approx(10.2 / 24.6))
    assert pm1["transformer_id"] == "T1"
    pm2 = rows["PM2"]
    # One day: at least a week, so 2 sessions a week; 1.4 kW: level 1; start hours 1 and 2 (a tie): 1;
    # all energy (2.8 + 1.4) at night: on-peak share 0.
    assert (
        pm2["first_charging_day"],
        pm2["session_count"],
        pm2["meter_count"],
        pm2["active_weeks"],
        pm2["sessions_per_week"],
    ) == (d(20), 2, 2, 1.0, 2.0)
    assert (pm2["charger_level"], pm2["typical_start_hour"], pm2["energy_kwh"], pm2["on_peak_energy_share"]) == (
        "level_1",
        1,
        pytest.approx(4.2),
        0.0,
    )
    # new_evs: first seen in the 10 days up to 20 June (11..20 June): PM2 only.
    new = feed.warehouse.read(NEW_EVS)
    assert new.select("premise_id", "first_charging_day", "as_of_date", "session_count", "charger_level").rows() == [
        ("PM2", d(20), d(20), 2, "level_1")
    ]
    # Chunks change nothing; a refresh replaces the snapshot.
    before = feed.warehouse.read(PREMISE_EV_PROFILE).drop("updated_at").sort("premise_id")
    pipeline.refresh_premise_profile(feed.warehouse, settings, now=NOW)
    assert feed.warehouse.read(PREMISE_EV_PROFILE).drop("updated_at").sort("premise_id").equals(before)


def test_tou_windows_parse_and_classify():
    from ev_assets.core.premise_profile import in_windows, parse_tou_windows

    windows = parse_tou_windows("mon-fri 16:00-21:00; sat,sun 17:00-19:00; fri-mon 23:00-24:00")
    assert windows[0].weekdays == frozenset({1, 2, 3, 4, 5}) and windows[2].weekdays == frozenset({5, 6, 7, 1})
    stamps = [
        datetime(2024, 6, 3, 15, 45),
        datetime(2024, 6, 3, 16),
        datetime(2024, 6, 3, 20, 45),
        datetime(2024, 6, 3, 21),
        datetime(2024, 6, 8, 17),
        datetime(2024, 6, 8, 16),
        datetime(2024, 6, 4, 23, 15),
        datetime(2024, 6, 7, 23, 45),
    ]
    out = pl.DataFrame({"t": stamps}).select(in_windows(pl.col("t"), windows).alias("on")).to_series().to_list()
    assert out == [False, True, True, False, True, False, False, True]
    for bad in ("weekdays 16:00-21:00", "mon 16:10-21:00", "mon 21:00-16:00"):
        with pytest.raises(ValueError):
            parse_tou_windows(bad)


# --- item 6: exports ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_export_selects_days_and_transformers(feed, tmp_path, monkeypatch, fmt):
    from ev_assets import cli

    rate_t1(feed.warehouse)
    send_hand_sessions(feed)
    feed.send([start("M9", at(4, 18), 7200, TransformerID="T2"), end("M9", at(4, 19), 7200, 1, TransformerID="T2")])
    pipeline.update_daily_load(feed.warehouse, feed.settings, DAY, date(2024, 6, 4), now=NOW)
    monkeypatch.setenv("EV_WAREHOUSE_URL", feed.warehouse.url)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))  # cli.main would set it for the process
    out = tmp_path / f"profile.{fmt}"
    argv = [
        "export",
        "transformer_interval_load",
        "--from",
        "2024-06-03",
        "--to",
        "2024-06-04",
        "--format",
        fmt,
        "--transformer",
        "T1",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    read = {"csv": pl.read_csv, "parquet": pl.read_parquet, "json": pl.read_json}[fmt](out)
    assert read.height == 8 and set(read["transformer_id"].to_list()) == {"T1"}
    assert read["kw"].to_list() == pytest.approx([kw for _, kw, _ in HAND_PROFILE])
    # The day range alone: 4 June holds T2's hour (4 intervals).
    assert (
        cli.main(["export", "transformer_interval_load", "--from", "2024-06-04", "--format", fmt, "--out", str(out)])
        == 0
    )
    read = {"csv": pl.read_csv, "parquet": pl.read_parquet, "json": pl.read_json}[fmt](out)
    assert read["transformer_id"].to_list() == ["T2"] * 4
