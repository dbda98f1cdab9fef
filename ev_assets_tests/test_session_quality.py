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
        "ServicePointID": f"SP{meter}",
        "MeterID": meter,
        "MeterNumber": f"N{meter}",
        "ESN": f"E{meter}",
        "TransformerID": "T1",
        "PremiseID": f"P{meter}",
        "ReceivedTime": iso(ts + timedelta(minutes=1)),
        "ChargeStartTime": iso(ts),
        "ChargeW": str(watts),
        **extra,
    }


def end(meter: str, ts: datetime, wh: float, hours: float, **extra) -> dict:
    return {
        "ServicePointID": f"SP{meter}",
        "MeterID": meter,
        "MeterNumber": f"N{meter}",
        "ESN": f"E{meter}",
        "TransformerID": "T1",
        "PremiseID": f"P{meter}",
        "ReceivedTime": iso(ts + timedelta(minutes=1)),
        "ChargeEndTime": iso(ts),
        "ChargeDuration": str(hours),
        "ChargeEnergy": str(wh),
        **extra,
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
        assert (
            report.touched_dates[0].isoformat() == "2024-06-03" and report.touched_dates[-1].isoformat() == "2024-06-13"
        )

    def test_end_stored_before_its_long_ago_start_arrives(self, feed):
        feed.send([end("M1", at(13, 18), 40000, 240)])
        assert feed.sessions()["status"].to_list() == ["end_only"]
        feed.send([start("M1", at(3, 18), 7000)])
        assert feed.sessions().select("status", "start_time", "end_time").rows() == [
            ("complete", at(3, 18), at(13, 18))
        ]

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
            ("M1", "complete"),
            ("M1", "timed_out"),
            ("M2", "complete"),
        ]


class TestImpossibleSessions:
    """Item 4: each paired session is checked; flagged load is kept apart from peaks."""

    def test_overlapping_records_are_flagged_and_kept_out_of_the_peak(self, feed):
        from datetime import date

        feed.send(
            [
                # M1, two overlapping sessions' records: start 17:00, start 23:17, end 00:00 (the
                # first session's, 44 kWh), end 01:00. The start at 23:17 pairs with the end at
                # 00:00: 44 kWh in 43 min = 61.40 kW on a 7 kW charger.
                start("M1", at(3, 17), 7000),
                start("M1", at(3, 23, 17), 7000),
                end("M1", at(4, 0), 44000, 7),
                end("M1", at(4, 1), 7000, 1.7),
                # M2, trusted: 7.2 kW for 1 h.
                start("M2", at(3, 19), 7200),
                end("M2", at(3, 20), 7200, 1),
                # M3: 4 kWh in 1 h is 4 kW on a 3 kW charger (> 3 x 1.1), below EV_CHARGE_W_MAX.
                start("M3", at(3, 20), 3000),
                end("M3", at(3, 21), 4000, 1),
            ],
            paired_at=at(4, 2),
        )
        complete = feed.sessions().filter(pl.col("status") == "complete")
        assert complete.select("meter_id", "start_time", "quality_flags").rows() == [
            ("M1", at(3, 23, 17), "power_above_charger_max,power_above_charge_w"),
            ("M2", at(3, 19), None),
            ("M3", at(3, 20), "power_above_charge_w"),
        ]
        reasons = json.loads(complete["quality_reasons"][0])
        assert reasons == [
            "power_above_charger_max: average power 61.4 kW exceeds EV_CHARGE_W_MAX (21.12 kW)",
            "power_above_charge_w: average power 61.4 kW exceeds the session's ChargeW 7.0 kW x 1.1",
        ]
        report = pipeline.update_daily_load(feed.warehouse, feed.settings, date(2024, 6, 3), date(2024, 6, 3), now=NOW)
        day = report.frames["transformer"].row(0, named=True)
        # Trusted: M2 alone, 7.2 kWh, peak 7.2 kW at 19:00. Flagged: M1's 44 kWh (all before
        # midnight) and M3's 4 kWh.
        assert (
            day["peak_kw"],
            day["peak_interval_start"],
            day["energy_kwh"],
            day["session_count"],
            day["ev_count"],
        ) == (pytest.approx(7.2), at(3, 19), pytest.approx(7.2), 1, 1)
        assert (day["flagged_energy_kwh"], day["flagged_session_count"]) == (pytest.approx(48.0), 2)

    def test_overlap_is_strict_and_back_to_back_is_not(self):
        from ev_assets.core import quality

        def session(meter, s, e):
            return {
                "meter_id": meter,
                "status": "complete",
                "start_time": s,
                "end_time": e,
                "charge_w": 7000.0,
                "average_kw": 3.0,
                "duration_h": (e - s).total_seconds() / 3600,
                "reported_duration": 1.0,
            }

        frame = pl.DataFrame(
            [
                session("M1", at(3, 10), at(3, 12)),
                session("M1", at(3, 12), at(3, 14)),  # back-to-back: not an overlap
                session("M1", at(3, 13, 59), at(3, 15)),  # starts a minute before the previous end
                session("M2", at(3, 14), at(3, 16)),  # another meter: never overlaps M1
            ],
            schema_overrides={"start_time": pl.Datetime("us", "UTC"), "end_time": pl.Datetime("us", "UTC")},
        )
        out = quality.flag_sessions(frame, charge_w_max=21120, charge_w_tolerance=1.1)
        assert out["quality_flags"].to_list() == [None, "overlapping", "overlapping", None]

    def test_duration_checked_only_when_the_unit_is_verified(self, warehouse, tmp_path):
        # 3 h by the timestamps, 5 reported hours: more than 0.5 + 5 % x 3 apart.
        records = [start("M1", at(3, 18), 7000), end("M1", at(3, 21), 9000, 5)]
        unverified = Feed(warehouse, tmp_path)
        unverified.send(records)
        assert unverified.sessions()["quality_flags"].to_list() == [None]
        verified = Feed(warehouse, tmp_path, pipeline.PipelineSettings(timezone="UTC", duration_unit_verified=True))
        verified.n = 10
        verified.send(
            [
                start("M2", at(3, 18), 7000),
                end("M2", at(3, 21), 9000, 5),
                start("M3", at(3, 18), 7000),
                end("M3", at(3, 21), 9000, 3),
            ]
        )
        assert verified.sessions().select("meter_id", "quality_flags").rows() == [
            ("M1", None),
            ("M2", "duration_mismatch"),
            ("M3", None),
        ]


class TestConflictingDuplicates:
    """Item 5: same identity, different content is a conflict, quarantined and counted; the
    session keeps the first accepted value."""

    def test_second_end_with_other_energy_is_quarantined(self, feed):
        from ev_assets.pipeline.ingest import ledger_totals
        from ev_assets.warehouse.tables import EV_INGEST_BATCHES, EV_REJECTED_MESSAGES

        feed.send([start("M1", at(3, 18), 7200), end("M1", at(3, 20), 14400, 2)])
        # Batch 2: the same end with 22.3 kWh (a conflict), and the same end again re-delivered in
        # another form (ReceivedTime later, ServicePointId spelled otherwise, +02:00 offset): a duplicate.
        again = end("M1", at(3, 20), 14400.0000001, 2.0, ReceivedTime=iso(at(3, 21)))
        again["ServicePointId"] = again.pop("ServicePointID")
        again["ChargeEndTime"] = "2024-06-03T22:00:00.000+02:00"
        ingest, _ = feed.send([end("M1", at(3, 20), 22300, 2), again])
        assert (ingest.records_read, ingest.accepted, ingest.duplicates, ingest.rejected, ingest.conflicts) == (
            2,
            0,
            1,
            1,
            1,
        )
        assert ingest.rejection_codes == {"conflicting_duplicate": 1}
        row = feed.warehouse.read(EV_INGEST_BATCHES).filter(pl.col("batch_id") == "b2").row(0, named=True)
        assert (row["rejected"], row["duplicates"], row["reconciled"]) == (1, 1, True)
        assert ledger_totals(feed.warehouse)["reconciled"]

        rejected = feed.warehouse.read(EV_REJECTED_MESSAGES).row(0, named=True)
        assert (rejected["reason_codes"], rejected["record_index"], rejected["meter_id"]) == (
            "conflicting_duplicate",
            0,
            "M1",
        )
        (reason,) = json.loads(rejected["reasons"])
        assert reason["field"] == "ChargeEnergy"
        assert (
            "ChargeEnergy 22300 differs from 14400 in the accepted message "
            "M1|end|2024-06-03T20:00:00.000000Z (batch b1)"
        ) in reason["message"]
        # The session keeps the first accepted value.
        assert feed.sessions().select("status", "energy_wh").rows() == [("complete", 14400.0)]

    def test_conflict_within_one_batch_keeps_the_earliest_received(self, feed):
        later = end("M1", at(3, 20), 22300, 2, ReceivedTime=iso(at(3, 20, 5)))
        ingest, _ = feed.send([later, start("M1", at(3, 18), 7200), end("M1", at(3, 20), 14400, 2)])
        assert (ingest.accepted, ingest.duplicates, ingest.rejected, ingest.conflicts) == (2, 0, 1, 1)
        assert feed.sessions()["energy_wh"].to_list() == [14400.0]
