"""Issue 8 items 3 (pairing of long sessions), 4 (physically impossible sessions) and 5 (conflicting
duplicates), each from a small hand-made feed whose answer is computed by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ev_assets import pipeline
from ev_assets.warehouse.tables import EV_CHARGING_SESSIONS

NOW = datetime(2024, 7, 1, tzinfo=UTC)


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2024, 6, day, hour, minute, tzinfo=UTC)


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def start(meter: str, ts: datetime, watts: float, **extra) -> dict:
    return {
        "ServicePointID": f"SP{meter}", "MeterID": meter, "MeterNumber": f"N{meter}", "ESN": f"E{meter}",
        "TransformerID": "T1", "PremiseID": f"P{meter}", "ReceivedTime": iso(ts + timedelta(minutes=1)),
        "ChargeStartTime": iso(ts), "ChargeW": str(watts), **extra,
    }


def end(meter: str, ts: datetime, wh: float, hours: float, **extra) -> dict:
    return {
        "ServicePointID": f"SP{meter}", "MeterID": meter, "MeterNumber": f"N{meter}", "ESN": f"E{meter}",
        "TransformerID": "T1", "PremiseID": f"P{meter}", "ReceivedTime": iso(ts + timedelta(minutes=1)),
        "ChargeEndTime": iso(ts), "ChargeDuration": str(hours), "ChargeEnergy": str(wh), **extra,
    }


class Feed:
    """Hand-made batches into a warehouse: ingest, then pair, at a chosen `now`."""

    def __init__(self, warehouse, folder: Path, settings: pipeline.PipelineSettings | None = None):
        self.warehouse, self.folder = warehouse, folder
        self.settings = settings or pipeline.PipelineSettings(timezone="UTC")
        self.n = 0

    def send(self, records: list[dict], *, paired_at: datetime = NOW):
        self.n += 1
        path = self.folder / f"batch{self.n}.json"
        path.write_text(json.dumps({"EVChargingEvents": records}))
        ingest = pipeline.ingest_batch(self.warehouse, f"b{self.n}", [path], self.settings, now=NOW)
        sessions = pipeline.pair_pending_batches(self.warehouse, self.settings, now=paired_at)
        return ingest, sessions

    def sessions(self) -> pl.DataFrame:
        return self.warehouse.read(EV_CHARGING_SESSIONS).sort("meter_id", pl.coalesce("start_time", "end_time"))


@pytest.fixture
def feed(warehouse, tmp_path) -> Feed:
    return Feed(warehouse, tmp_path)


class TestLongSessions:
    """Item 3: an end pairs with the meter's open start however far back (an indexed look-up),
    when its energy fits ChargeW x time; an open start older than max_session is timed_out."""

    def test_start_times_out_then_completes_ten_days_later(self, feed):
        feed.send([start("M1", at(3, 18), 7000)], paired_at=at(3, 19))
        assert feed.sessions().select("status").rows() == [("start_only",)]
        # Another meter's batch two days later: M1's start has had no end for > 48 h.
        feed.send([start("M2", at(5, 20), 7000)], paired_at=at(5, 20, 30))
        assert feed.sessions().select("meter_id", "status").rows() == [("M1", "timed_out"), ("M2", "start_only")]
        # M1's end 10 days (240 h) after its start, far outside the 96 h read window:
        # 40 kWh <= 7 kW x 240 h x 1.1, so it pairs.
        _, report = feed.send([end("M1", at(13, 18), 40000, 240)], paired_at=at(13, 19))
        m1 = feed.sessions().filter(pl.col("meter_id") == "M1")
        assert m1.select("status", "start_time", "end_time", "energy_wh", "duration_h").rows() == [
            ("complete", at(3, 18), at(13, 18), 40000.0, 240.0)
        ]
        assert m1["session_id"].to_list() == ["M1|2024-06-03T18:00:00.000000Z"]
        # The session's days (June 3 to 13) are queued for their daily load.
        assert report.touched_dates[0].isoformat() == "2024-06-03" and report.touched_dates[-1].isoformat() == "2024-06-13"

    def test_end_stored_before_its_long_ago_start_arrives(self, feed):
        feed.send([end("M1", at(13, 18), 40000, 240)])
        assert feed.sessions()["status"].to_list() == ["end_only"]
        feed.send([start("M1", at(3, 18), 7000)])
        assert feed.sessions().select("status", "start_time", "end_time").rows() == [("complete", at(3, 18), at(13, 18))]

    def test_inconsistent_energy_does_not_pair_beyond_max_session(self, feed):
        # 1,000 W for 100 h is at most 110 kWh with the 1.1 tolerance: 120 kWh cannot be this start's.
        feed.send([start("M1", at(3, 0), 1000)], paired_at=at(3, 1))
        feed.send([end("M1", at(7, 4), 120000, 100)], paired_at=at(7, 5))
        assert feed.sessions().select("status").rows() == [("timed_out",), ("end_only",)]
        # 100 kWh fits (1 kW x 100 h x 1.1 = 110 kWh) and pairs.
        feed.send([end("M2", at(7, 4), 100000, 100), start("M2", at(3, 0), 1000)], paired_at=at(7, 5))
        assert feed.sessions().filter(pl.col("meter_id") == "M2")["status"].to_list() == ["complete"]

    def test_incremental_equals_rebuild(self, feed):
        feed.send([start("M1", at(3, 18), 7000), end("M2", at(20, 1), 9000, 3)], paired_at=at(3, 19))
        feed.send([start("M2", at(10, 1), 3000)], paired_at=at(10, 2))
        feed.send([end("M1", at(13, 18), 40000, 240), start("M1", at(14, 0), 7000)], paired_at=at(20, 2))
        incremental = feed.sessions().drop("updated_at")
        pipeline.rebuild_sessions(feed.warehouse, feed.settings, now=at(20, 2))
        assert feed.sessions().drop("updated_at").equals(incremental)
        assert incremental.select("meter_id", "status").rows() == [
            ("M1", "complete"), ("M1", "timed_out"), ("M2", "complete")
        ]
