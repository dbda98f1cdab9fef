"""Tests of the synthetic utility (reference data) and the EV Awareness agent simulator."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ev_assets.core.reference_extracts import SCHEMAS
from ev_assets.core.reference_extracts import read_reference_extracts as read_utility
from ev_assets.core.reference_extracts import write_reference_extracts as write_utility
from ev_assets.synthetic.simulator import (
    FEED_FIELDS,
    MESSAGE_COLUMNS,
    SESSION_COLUMNS,
    SimulationConfig,
    ev_population,
    follow_wall_clock,
    session_messages,
    simulate_sessions,
    simulate_to_folder,
    write_feed,
    write_ground_truth,
)
from ev_assets.synthetic.utility import generate_utility

START = date(2024, 1, 1)
SPAN_START = date(2024, 3, 1)  # spans the US spring-forward (2024-03-10)
SPAN_DAYS = 14
SEED = 11
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{2}Z$")
LOCAL = "America/New_York"

EXPECTED_COLUMNS = {
    "substations": ["substation_id", "substation_name", "effective_from", "effective_to"],
    "feeders": ["feeder_id", "substation_id", "voltage_kv", "effective_from", "effective_to"],
    "transformers": [
        "transformer_id",
        "feeder_id",
        "kva_rating",
        "phase",
        "base_load_scale",
        "ambient_c",
        "effective_from",
        "effective_to",
    ],
    "premises": [
        "premise_id",
        "premise_type",
        "city",
        "latitude",
        "longitude",
        "effective_from",
        "effective_to",
    ],
    "service_points": [
        "service_point_id",
        "premise_id",
        "transformer_id",
        "effective_from",
        "effective_to",
    ],
    "meters": [
        "meter_id",
        "meter_key",
        "meter_number",
        "esn",
        "service_point_id",
        "effective_from",
        "effective_to",
    ],
}


@pytest.fixture(scope="module")
def utility() -> dict[str, pl.DataFrame]:
    return generate_utility(meters=1500, seed=7, start=START)


@pytest.fixture(scope="module")
def sessions(utility) -> pl.DataFrame:
    return simulate_sessions(utility, SPAN_START, SPAN_DAYS, SEED)


@pytest.fixture(scope="module")
def messages(sessions) -> pl.DataFrame:
    return session_messages(sessions, SEED)


def _bytes_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def _changed_keys(frame: pl.DataFrame, key: str) -> pl.Series:
    return frame.filter(pl.col(key).is_duplicated())[key].unique()


# --------------------------------------------------------------------------- utility


def test_utility_is_deterministic(tmp_path):
    for name in ("a", "b"):
        write_utility(generate_utility(meters=300, seed=3), tmp_path / name)
    write_utility(generate_utility(meters=300, seed=4), tmp_path / "other")
    assert _bytes_of(tmp_path / "a") == _bytes_of(tmp_path / "b")
    assert _bytes_of(tmp_path / "a") != _bytes_of(tmp_path / "other")
    assert sorted(_bytes_of(tmp_path / "a")) == sorted(f"{name}.csv" for name in EXPECTED_COLUMNS)


def test_utility_columns_dtypes_and_round_trip(utility, tmp_path):
    assert list(utility) == list(EXPECTED_COLUMNS)
    for name, columns in EXPECTED_COLUMNS.items():
        assert utility[name].columns == columns
        assert utility[name].schema == pl.Schema(SCHEMAS[name])
    write_utility(utility, tmp_path)
    back = read_utility(tmp_path)
    for name, frame in utility.items():
        assert back[name].equals(frame), name
    assert "2024-01-01" in (tmp_path / "meters.csv").read_text()


def test_utility_identifier_formats_and_structure(utility):
    def all_match(frame: str, column: str, pattern: str) -> bool:
        return utility[frame][column].str.contains(pattern).all()

    assert all_match("substations", "substation_id", r"^SUB-\d{3}$")
    assert all_match("feeders", "feeder_id", r"^FDR-\d{3}-\d{2}$")
    assert all_match("transformers", "transformer_id", r"^\d{10}-\d{8}$")
    assert all_match("premises", "premise_id", r"^P\d{10}$")
    assert all_match("service_points", "service_point_id", r"^\d{10}$")
    assert all_match("meters", "meter_id", r"^\d{10}$")
    assert all_match("meters", "meter_number", r"^\d{10}$")
    assert all_match("meters", "esn", r"^\d\.\d{2}\.\d{3}\.\d\.\d{6}\.\d{2}\.\d{2}\.\d{10}$")
    meters = utility["meters"]
    assert meters["meter_key"].to_list() == list(range(1, meters.height + 1))
    assert meters["meter_id"].is_unique().all() and meters["esn"].is_unique().all()
    # As built (before any re-feed): 4-10 homes per transformer.
    homes = utility["service_points"].filter(pl.col("effective_from") == START).group_by("transformer_id").len()
    assert homes["len"].min() >= 4 and homes["len"].max() <= 10
    assert set(utility["transformers"]["kva_rating"].unique()) <= {
        25.0,
        37.5,
        50.0,
        75.0,
        100.0,
        167.0,
    }
    assert utility["premises"]["premise_type"].value_counts().sort("count")["premise_type"][-1] == "residential"


def test_utility_scales_to_many_meters():
    big = generate_utility(meters=20_000, seed=1)
    assert big["premises"].height == 20_000
    per_feeder = big["transformers"].group_by("feeder_id").len()["len"]
    assert per_feeder.mean() > 12  # dozens of transformers per feeder


def test_point_in_time_changes_exist_and_never_overlap(utility):
    meters, service_points = utility["meters"], utility["service_points"]
    exchanged = _changed_keys(meters, "service_point_id")
    refed = _changed_keys(service_points, "service_point_id")
    assert 0 < len(exchanged) <= 0.03 * 1500
    assert 0 < len(refed) <= 0.03 * 1500
    for frame in (meters, service_points):
        changes = frame.filter(pl.col("effective_from") > START)["effective_from"]
        assert changes.min() >= START + timedelta(days=30) and changes.max() <= START + timedelta(days=360)
        # Intervals per service point are back to back, never overlapping.
        ordered = frame.sort("service_point_id", "effective_from").with_columns(
            next_from=pl.col("effective_from").shift(-1).over("service_point_id")
        )
        followed = ordered.filter(pl.col("next_from").is_not_null())
        assert (followed["effective_to"] == followed["next_from"]).all()
        assert ordered.filter(pl.col("next_from").is_null())["effective_to"].is_null().all()
    # A re-feed moves to another transformer on the same feeder.
    feeder_of = utility["transformers"].select("transformer_id", "feeder_id")
    moves = service_points.filter(pl.col("service_point_id").is_in(refed.implode())).join(
        feeder_of, on="transformer_id"
    )
    per_point = moves.group_by("service_point_id").agg(
        pl.col("feeder_id").n_unique(), pl.col("transformer_id").n_unique()
    )
    assert (per_point["feeder_id"] == 1).all() and (per_point["transformer_id"] == 2).all()


# --------------------------------------------------------------------------- sessions


def test_sessions_columns_and_span(sessions):
    assert sessions.columns == list(SESSION_COLUMNS)
    assert sessions.schema["start_time"] == pl.Datetime("us", "UTC")
    assert sessions.schema["end_time"] == pl.Datetime("us", "UTC")
    for column in ("charge_w", "energy_wh", "duration_h"):
        assert sessions.schema[column] == pl.Float64
    assert sessions["session_id"].is_unique().all()
    local_day = sessions["start_time"].dt.convert_time_zone(LOCAL).dt.date()
    assert local_day.min() == SPAN_START and local_day.max() == SPAN_START + timedelta(days=SPAN_DAYS - 1)
    hours = (sessions["end_time"] - sessions["start_time"]).dt.total_microseconds() / 3.6e9
    assert (hours - sessions["duration_h"]).abs().max() < 1e-9
    assert (sessions["start_time"].dt.microsecond() % 10_000 == 0).all()  # centiseconds


def test_sessions_of_a_meter_never_overlap(sessions):
    for key in ("meter_id", "service_point_id"):
        ordered = sessions.sort(key, "start_time").with_columns(previous_end=pl.col("end_time").shift(1).over(key))
        assert ordered.filter(pl.col("start_time") <= pl.col("previous_end")).height == 0


def test_sessions_use_reference_data_as_of_event_date(utility):
    """With every home charging, sessions around a change date show old then new ids."""
    config = SimulationConfig(ev_share=1.0)
    for table, changed_column in (("meters", "meter_id"), ("service_points", "transformer_id")):
        rows = utility[table].filter(pl.col("effective_from") > START).sort("effective_from")
        change = rows.row(0, named=True)
        around = simulate_sessions(utility, change["effective_from"] - timedelta(days=7), 14, SEED, config)
        around = around.filter(pl.col("service_point_id") == change["service_point_id"]).with_columns(
            day=pl.col("start_time").dt.convert_time_zone(LOCAL).dt.date()
        )
        after = around.filter(pl.col("day") >= change["effective_from"])
        before = around.filter(pl.col("day") < change["effective_from"])
        assert before.height and after.height
        assert (after[changed_column] == change[changed_column]).all()
        assert (before[changed_column] != change[changed_column]).all()


def test_chunked_simulation_equals_whole(utility):
    whole = simulate_sessions(utility, SPAN_START, 4, SEED)
    chunks = pl.concat(
        [
            simulate_sessions(utility, SPAN_START, 2, SEED),
            simulate_sessions(utility, SPAN_START + timedelta(days=2), 2, SEED),
        ]
    )
    assert whole.equals(chunks)
    assert ev_population(utility, SEED).equals(ev_population(utility, SEED))


def test_realistic_figures(utility, sessions):
    kw = sessions["charge_w"] / 1000
    assert kw.min() >= 1.0 and kw.max() <= 19.2
    assert 14_000 <= sessions["energy_wh"].mean() <= 22_000
    assert sessions["duration_h"].max() <= 20.0
    evs = ev_population(utility, SEED)
    assert 0.15 < evs.height / utility["premises"].height < 0.25
    sessions_per_month = sessions.height / evs.height * 30 / SPAN_DAYS
    assert 10 <= sessions_per_month <= 15
    local_hour = sessions["start_time"].dt.convert_time_zone(LOCAL).dt.hour()
    evening_or_timer = local_hour.is_between(17, 22) | (local_hour == 0)
    assert evening_or_timer.mean() > 0.6
    # The TOU timer spike: the 00:00 hour beats every evening hour.
    counts = local_hour.value_counts().sort(local_hour.name)
    assert (
        counts.filter(pl.col(local_hour.name) == 0)["count"][0]
        > counts.filter(pl.col(local_hour.name) == 20)["count"][0]
    )


# --------------------------------------------------------------------------- messages and files


def test_one_start_and_one_end_message_per_session(sessions, messages):
    assert messages.columns == list(MESSAGE_COLUMNS)
    assert messages.height == 2 * sessions.height
    assert messages["ReceivedTime"].is_sorted()
    starts = messages.filter(pl.col("message_type") == "start")
    ends = messages.filter(pl.col("message_type") == "end")
    assert starts.select("ChargeEndTime", "ChargeDuration", "ChargeEnergy").null_count().row(0) == (starts.height,) * 3
    assert ends.select("ChargeStartTime", "ChargeW").null_count().row(0) == (ends.height,) * 2
    assert (
        starts.join(
            sessions,
            left_on=["ServicePointID", "ChargeStartTime"],
            right_on=["service_point_id", "start_time"],
        ).height
        == sessions.height
    )
    paired = ends.join(
        sessions,
        left_on=["ServicePointID", "ChargeEndTime"],
        right_on=["service_point_id", "end_time"],
    )
    assert paired.height == sessions.height
    assert (paired["ChargeDuration"] >= 1).all()
    whole_hours = paired["duration_h"].round(0).clip(lower_bound=1.0)
    assert (paired["ChargeDuration"] == whole_hours).all()
    delay = (starts["ReceivedTime"] - starts["ChargeStartTime"]).dt.total_seconds(fractional=True)
    assert delay.min() > 0 and delay.max() <= 150


def test_feed_files_match_the_spec(messages, tmp_path):
    paths = write_feed(messages, tmp_path)
    assert paths == sorted(tmp_path.iterdir()) and not list(tmp_path.glob("*.tmp"))
    assert sorted(paths, key=os.path.getmtime) == paths
    records = 0
    for path in paths:
        match = re.fullmatch(r"ev_(\d{8}T\d{6}Z)\.json", path.name)
        window_start = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert os.path.getmtime(path) == (window_start + timedelta(minutes=5)).timestamp()
        payload = json.loads(path.read_text())
        assert list(payload) == ["EVChargingEvents"]
        for record in payload["EVChargingEvents"]:
            records += 1
            assert tuple(record) == FEED_FIELDS
            received = datetime.strptime(record["ReceivedTime"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            assert window_start <= received < window_start + timedelta(minutes=5)
            is_start = record["ChargeStartTime"] is not None
            present = (
                ("ChargeStartTime", "ChargeW") if is_start else ("ChargeEndTime", "ChargeDuration", "ChargeEnergy")
            )
            for field in FEED_FIELDS[7:]:
                assert (record[field] is not None) == (field in present), (field, record)
            for field in ("ReceivedTime", *[f for f in present if f.endswith("Time")]):
                assert TIMESTAMP.match(record[field]), record[field]
            for field in (f for f in present if not f.endswith("Time")):
                assert isinstance(record[field], str) and float(record[field]) > 0
            if not is_start:
                assert re.fullmatch(r"\d+", record["ChargeDuration"])
    assert records == messages.height


def test_feed_is_deterministic(utility, tmp_path):
    config = SimulationConfig(file_minutes=15)
    first = simulate_to_folder(
        utility, tmp_path / "a", SPAN_START, 3, SEED, config, ground_truth=tmp_path / "a.parquet"
    )
    simulate_to_folder(utility, tmp_path / "b", SPAN_START, 3, SEED, config)
    assert _bytes_of(tmp_path / "a") == _bytes_of(tmp_path / "b")
    assert first.files == len(list((tmp_path / "a").iterdir()))
    assert first.messages == 2 * first.sessions
    truth = pl.read_parquet(tmp_path / "a.parquet")
    assert truth.equals(simulate_sessions(utility, SPAN_START, 3, SEED, config))


def test_ground_truth_round_trip(sessions, tmp_path):
    write_ground_truth(sessions, tmp_path / "truth.parquet")
    assert pl.read_parquet(tmp_path / "truth.parquet").equals(sessions)


def test_follow_wall_clock_writes_closed_windows(utility, tmp_path):
    config = replace(SimulationConfig(), ev_share=1.0)
    began = datetime.now(UTC)
    follow_wall_clock(utility, tmp_path / "live", SEED, config, speedup=36_000, stop_after=timedelta(seconds=1))
    live = sorted((tmp_path / "live").iterdir())
    assert live and not [p for p in live if p.suffix != ".json"]
    # Same content as a batch simulation of the local days around now.
    today = began.date()
    simulate_to_folder(utility, tmp_path / "batch", today - timedelta(days=2), 5, SEED, config)
    for path in live:
        assert path.read_bytes() == (tmp_path / "batch" / path.name).read_bytes()
        assert os.path.getmtime(path) <= (began + timedelta(hours=24)).timestamp()
