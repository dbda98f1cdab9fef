"""Regression tests for what a real utility history showed (issue 8) and the DST day (issue 9),
each from a small hand-made feed with hand-computed expectations."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from ev_assets.core import enrich, load_profile, pairing, reference_extracts
from ev_assets.pipeline import PipelineSettings
from ev_assets_tests.test_stages import NOW, event_rows, t


def pair(rows) -> pl.DataFrame:
    return pairing.pair_sessions(event_rows(rows), max_session=timedelta(hours=48), updated_at=NOW)


class TestBackToBackSessions:
    """Issue 8 item 2: an end at time t closes its session before a start at the same t opens
    the next one."""

    def test_end_equal_to_next_start_gives_two_complete_sessions(self):
        rows = [
            ("m1", "start", t(10), 7000.0),
            ("m1", "end", t(12), 14000.0),
            ("m1", "start", t(12), 7000.0),
            ("m1", "end", t(14), 12000.0),
        ]
        out = pair(rows)
        assert out.select("status", "start_time", "end_time", "energy_wh").rows() == [
            ("complete", t(10), t(12), 14000.0),
            ("complete", t(12), t(14), 12000.0),
        ]
        assert out["session_id"].n_unique() == 2

    def test_order_of_arrival_does_not_matter(self):
        rows = [
            ("m1", "start", t(12), 7000.0),
            ("m1", "end", t(14), 12000.0),
            ("m1", "end", t(12), 14000.0),
            ("m1", "start", t(10), 7000.0),
        ]
        assert pair(rows)["status"].to_list() == ["complete", "complete"]

    def test_back_to_back_on_another_meter_does_not_interfere(self):
        rows = [
            ("m1", "start", t(10), 7000.0),
            ("m1", "end", t(12), 14000.0),
            ("m2", "start", t(12), 7000.0),
            ("m2", "end", t(14), 14000.0),
        ]
        assert pair(rows)["status"].to_list() == ["complete", "complete"]


def sessions(rows, tz="UTC") -> pl.DataFrame:
    """(meter, transformer, start, end, charge_w W, energy Wh) -> complete session rows."""
    frame = pl.DataFrame(
        {
            "meter_id": [r[0] for r in rows],
            "transformer_id": [r[1] for r in rows],
            "feeder_id": "F1",
            "substation_id": "S1",
            "status": "complete",
            "start_time": [r[2] for r in rows],
            "end_time": [r[3] for r in rows],
            "charge_w": [float(r[4]) for r in rows],
            "energy_wh": [float(r[5]) for r in rows],
        },
        schema_overrides={"start_time": pl.Datetime("us", "UTC"), "end_time": pl.Datetime("us", "UTC")},
    )
    hours = (pl.col("end_time") - pl.col("start_time")).dt.total_microseconds() / 3.6e9
    return frame.with_columns(
        (pl.col("energy_wh") / hours / 1000).alias("average_kw"),
        pl.col("start_time").dt.convert_time_zone(tz).dt.date().alias("event_date"),
    )


def daily(frame, *, shape, tz="UTC", first=date(2024, 6, 3), last=date(2024, 6, 4), level="transformer"):
    intervals = load_profile.interval_loads(frame, load_shape=shape)
    return load_profile.daily_load(
        intervals, frame, level=level, tz=tz, first_day=first, last_day=last, updated_at=NOW
    ).sort(LEVEL_KEYS[level], "load_date")


LEVEL_KEYS = {"transformer": "transformer_id", "feeder": "feeder_id", "substation": "substation_id"}


class TestLoadShape:
    """Issue 8 item 3: a long session's load is ChargeW until its energy is delivered, then zero
    (when its average power is well below ChargeW); the even spread stays available."""

    # 7,000 W, 14 kWh over 10 h (18:00 to 04:00 UTC): average 1.4 kW = 0.2 x ChargeW.
    LONG = ("a", "T1", t(18), t(4, day=4), 7000, 14000)

    def test_charge_w_then_idle_is_7_kw_for_2_hours(self):
        iv = load_profile.interval_loads(sessions([self.LONG])).sort("interval_start")
        assert iv["interval_start"].to_list() == [t(18) + timedelta(minutes=15 * i) for i in range(8)]
        assert iv["kw"].to_list() == pytest.approx([7.0] * 8)
        assert iv["kwh"].sum() == pytest.approx(14.0)

    def test_even_is_1_4_kw_for_10_hours(self):
        iv = load_profile.interval_loads(sessions([self.LONG]), load_shape="even").sort("interval_start")
        assert iv.height == 40
        assert iv["interval_start"][-1] == t(3, 45, day=4)
        assert iv["kw"].to_list() == pytest.approx([1.4] * 40)
        assert iv["kwh"].sum() == pytest.approx(14.0)

    def test_coincident_peak_and_daily_kwh_by_hand(self):
        # B: 7,200 W, 7.2 kWh from 19:00 to 20:00, charging all along (average = ChargeW).
        frame = sessions([self.LONG, ("b", "T1", t(19), t(20), 7200, 7200)])
        shaped = daily(frame, shape="charge_w_then_idle")
        # A at 7 kW 18:00-20:00, B at 7.2 kW 19:00-20:00: peak 14.2 kW at 19:00; all 21.2 kWh on
        # June 3 and no load at all on June 4.
        assert shaped.select("load_date", "peak_kw", "peak_interval_start", "energy_kwh", "session_count").rows() == [
            (date(2024, 6, 3), pytest.approx(14.2), t(19), pytest.approx(21.2), 2),
        ]
        assert shaped["diversity_factor"][0] == pytest.approx((7.0 + 7.2) / 14.2)
        even = daily(frame, shape="even")
        # A at 1.4 kW 18:00-04:00: peak 1.4 + 7.2 = 8.6 kW at 19:00; June 3 6 h x 1.4 + 7.2 =
        # 15.6 kWh, June 4 4 h x 1.4 = 5.6 kWh.
        assert even.select("load_date", "peak_kw", "peak_interval_start", "energy_kwh", "session_count").rows() == [
            (date(2024, 6, 3), pytest.approx(8.6), t(19), pytest.approx(15.6), 2),
            (date(2024, 6, 4), pytest.approx(1.4), t(0, day=4), pytest.approx(5.6), 0),
        ]

    def test_session_past_midnight_charges_on_both_days(self):
        # 7,000 W, 14 kWh, plugged in 23:00 to 09:00: charging 23:00-01:00, 7 kWh on each day.
        frame = sessions([("a", "T1", t(23), t(9, day=4), 7000, 14000)])
        shaped = daily(frame, shape="charge_w_then_idle")
        assert shaped.select("load_date", "peak_kw", "energy_kwh", "session_count").rows() == [
            (date(2024, 6, 3), pytest.approx(7.0), pytest.approx(7.0), 1),
            (date(2024, 6, 4), pytest.approx(7.0), pytest.approx(7.0), 0),
        ]
        even = daily(frame, shape="even")
        assert even.select("load_date", "peak_kw", "energy_kwh").rows() == [
            (date(2024, 6, 3), pytest.approx(1.4), pytest.approx(1.4)),
            (date(2024, 6, 4), pytest.approx(1.4), pytest.approx(12.6)),
        ]

    def test_average_near_charge_w_is_spread_evenly(self):
        # 7,000 W, 3 h: 17.85 kWh is 0.85 x ChargeW on average (>= 0.8): 5.95 kW for 3 h.
        near = sessions([("a", "T1", t(18), t(21), 7000, 17850)])
        iv = load_profile.interval_loads(near)
        assert iv.height == 12 and iv["kw"].to_list() == pytest.approx([5.95] * 12)
        # 15.75 kWh is 0.75 x ChargeW: 7 kW for 2 h 15 min.
        below = sessions([("a", "T1", t(18), t(21), 7000, 15750)])
        iv = load_profile.interval_loads(below)
        assert iv.height == 9 and iv["kw"].to_list() == pytest.approx([7.0] * 9)
        # The ratio is a setting: at 0.7, 0.75 x ChargeW is spread evenly.
        iv = load_profile.interval_loads(below, idle_ratio=0.7)
        assert iv.height == 12 and iv["kw"].to_list() == pytest.approx([5.25] * 12)

    def test_partial_last_interval_and_no_charge_w(self):
        # 7,000 W, 2.625 kWh over 3 h: 22.5 min at 7 kW, the 18:15 interval half loaded (3.5 kW).
        iv = load_profile.interval_loads(sessions([("a", "T1", t(18), t(21), 7000, 2625)])).sort("interval_start")
        assert iv["kw"].to_list() == pytest.approx([7.0, 3.5])
        # No ChargeW (null): nothing to shape by, spread evenly.
        frame = sessions([("a", "T1", t(18), t(21), 7000, 2625)]).with_columns(
            pl.lit(None, dtype=pl.Float64).alias("charge_w")
        )
        assert load_profile.interval_loads(frame).height == 12

    def test_settings(self):
        assert PipelineSettings().load_shape == "charge_w_then_idle"
        assert PipelineSettings().load_shape_idle_ratio == 0.8
        with pytest.raises(ValueError, match="load_shape"):
            PipelineSettings(load_shape="flat")
        with pytest.raises(ValueError, match="load_shape"):
            load_profile.interval_loads(sessions([self.LONG]), load_shape="flat")


class TestDstDays:
    """Issue 9 item 5: the daily average power divides by the local day's real length."""

    TZ = "America/New_York"

    def one_session_on(self, day: date, shape="even"):
        # 7,200 W for 1 h, 7.2 kWh, at 18:00 local (22:00 or 23:00 UTC): same day locally.
        start = datetime(day.year, day.month, day.day, 18, tzinfo=UTC) + timedelta(hours=4)
        frame = sessions([("a", "T1", start, start + timedelta(hours=1), 7200, 7200)], tz=self.TZ)
        return daily(frame, shape=shape, tz=self.TZ, first=day, last=day).row(0, named=True)

    @pytest.mark.parametrize(
        ("day", "hours"),
        [(date(2024, 3, 10), 23), (date(2024, 11, 3), 25), (date(2024, 6, 3), 24)],
    )
    def test_average_kw_uses_the_local_day_length(self, day, hours):
        row = self.one_session_on(day)
        assert row["load_date"] == day
        assert row["energy_kwh"] == pytest.approx(7.2)
        assert row["average_kw"] == pytest.approx(7.2 / hours)
        assert row["load_factor"] == pytest.approx(7.2 / hours / 7.2)

    def test_day_hours_expression(self):
        days = pl.DataFrame({"d": [date(2024, 3, 10), date(2024, 3, 11), date(2024, 11, 3)]})
        hours = days.select(load_profile.local_day_hours(pl.col("d"), self.TZ))["d"].to_list()
        assert hours == [23.0, 24.0, 25.0]
        assert days.select(load_profile.local_day_hours(pl.col("d"), "UTC"))["d"].to_list() == [24.0] * 3


class TestMinimalReferenceExtract:
    """Issue 8 item 6: meters.csv alone (meter -> transformer) is enough; meter_key is generated,
    stable across reloads."""

    MINIMAL = "meter_id,transformer_id,feeder_id,substation_id,kva_rating\nM1,T1,F1,S1,25\nM2,T1,F1,S1,25\nM3,T2,,,50\n"

    def write(self, folder, text: str, name: str = "meters.csv"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
        return folder

    def test_three_meters_on_two_transformers(self, tmp_path):
        frames = reference_extracts.read_reference_extracts(self.write(tmp_path, self.MINIMAL))
        old = date(1900, 1, 1)
        assert set(frames) == set(reference_extracts.TABLES)
        for name, frame in frames.items():
            assert frame.schema == pl.Schema(reference_extracts.SCHEMAS[name]), name
            assert frame["effective_from"].to_list() == [old] * frame.height, name
            assert frame["effective_to"].null_count() == frame.height, name
        meters = frames["meters"]
        assert meters.select("meter_id", "service_point_id", "meter_number").rows() == [
            ("M1", "M1", None),
            ("M2", "M2", None),
            ("M3", "M3", None),
        ]
        assert meters["meter_key"].n_unique() == 3 and meters["meter_key"].min() >= 0
        assert frames["service_points"].select("service_point_id", "premise_id", "transformer_id").rows() == [
            ("M1", "M1", "T1"),
            ("M2", "M2", "T1"),
            ("M3", "M3", "T2"),
        ]
        assert frames["premises"]["premise_id"].to_list() == ["M1", "M2", "M3"]
        # T2 has no feeder or substation: the placeholders keep every join (and load level) whole.
        assert frames["transformers"].select("transformer_id", "feeder_id", "kva_rating").rows() == [
            ("T1", "F1", 25.0),
            ("T2", "unknown", 50.0),
        ]
        assert frames["feeders"].select("feeder_id", "substation_id").rows() == [("F1", "S1"), ("unknown", "unknown")]
        assert frames["substations"]["substation_id"].to_list() == ["S1", "unknown"]

    def test_derived_tables_enrich_events_to_the_substation(self, tmp_path):
        frames = reference_extracts.read_reference_extracts(self.write(tmp_path, self.MINIMAL))
        msgs = pl.DataFrame(
            {
                "meter_id": ["M1", "M3", "M9"],
                "message_date": [date(2018, 5, 1)] * 3,
                "reported_service_point_id": ["x"] * 3,
                "reported_premise_id": ["x"] * 3,
                "reported_transformer_id": ["x"] * 3,
            }
        )
        out = enrich.attribute(msgs, frames, date_col="message_date")
        # An event from 2018 is enriched: the default effective_from loses no history.
        assert out.select("transformer_id", "feeder_id", "substation_id", "enrichment_status").rows() == [
            ("T1", "F1", "S1", "enriched"),
            ("T2", "unknown", "unknown", "enriched"),
            ("x", None, None, "meter_unknown"),
        ]

    def test_optional_columns_and_a_transformer_correction(self, tmp_path):
        text = (
            "meter_id,transformer_id,substation_id,service_point_id,premise_id,meter_number,esn,effective_from,effective_to\n"
            "M1,T1,S1,SP1,P1,N1,E1,,2021-06-01\n"
            "M1,T2,S1,SP1,P1,N1,E1,2021-06-01,\n"
        )
        frames = reference_extracts.read_reference_extracts(self.write(tmp_path, text))
        assert frames["meters"].select(
            "meter_id", "meter_number", "esn", "service_point_id", "effective_from", "effective_to"
        ).rows() == [
            ("M1", "N1", "E1", "SP1", date(1900, 1, 1), date(2021, 6, 1)),
            ("M1", "N1", "E1", "SP1", date(2021, 6, 1), None),
        ]
        assert frames["meters"]["meter_key"].n_unique() == 2
        assert frames["service_points"].select(
            "service_point_id", "premise_id", "transformer_id", "effective_from"
        ).rows() == [
            ("SP1", "P1", "T1", date(1900, 1, 1)),
            ("SP1", "P1", "T2", date(2021, 6, 1)),
        ]
        # Substation known, feeder not: a per-substation placeholder feeder keeps substation load right.
        assert frames["transformers"]["feeder_id"].to_list() == ["unknown:S1", "unknown:S1"]
        assert frames["feeders"].select("feeder_id", "substation_id").rows() == [("unknown:S1", "S1")]
        assert frames["premises"]["premise_id"].to_list() == ["P1"]

    def test_meter_keys_are_stable_across_reloads_and_additions(self, tmp_path):
        first = reference_extracts.read_reference_extracts(self.write(tmp_path / "a", self.MINIMAL))["meters"]
        again = reference_extracts.read_reference_extracts(self.write(tmp_path / "a", self.MINIMAL))["meters"]
        assert first.equals(again)
        grown = (
            "meter_id,transformer_id,feeder_id,substation_id,kva_rating\nM0,T2,,,50\n" + self.MINIMAL.split("\n", 1)[1]
        )
        added = reference_extracts.read_reference_extracts(self.write(tmp_path / "b", grown))["meters"]
        keys = dict(added.select("meter_id", "meter_key").rows())
        assert dict(first.select("meter_id", "meter_key").rows()) == {m: keys[m] for m in ("M1", "M2", "M3")}
        assert keys["M1"] == reference_extracts.generated_meter_key("M1", date(1900, 1, 1))

    def test_utility_meter_keys_are_kept(self, tmp_path):
        text = "meter_id,transformer_id,meter_key\nM1,T1,7\nM2,T1,\n"
        meters = reference_extracts.read_reference_extracts(self.write(tmp_path, text))["meters"]
        assert meters["meter_key"].to_list() == [7, reference_extracts.generated_meter_key("M2", date(1900, 1, 1))]

    def test_missing_required_column_is_named(self, tmp_path):
        self.write(tmp_path, "meter_id,feeder_id\nM1,F1\n")
        # No transformer_id: read as a full extract, whose other files are missing.
        with pytest.raises(ValueError, match=r"substations\.csv.*missing"):
            reference_extracts.read_reference_extracts(tmp_path)
        self.write(tmp_path / "m", "transformer_id,feeder_id\nT1,F1\n")
        with pytest.raises(ValueError, match=r"meters\.csv: missing required column\(s\) meter_id"):
            reference_extracts.read_reference_extracts(tmp_path / "m")
        self.write(tmp_path / "b", "meter_id,transformer_id\nM1,\n")
        with pytest.raises(ValueError, match=r"meters\.csv: blank values in required column\(s\) transformer_id"):
            reference_extracts.read_reference_extracts(tmp_path / "b")

    def test_full_extract_missing_column_is_named(self, tmp_path):
        frames = reference_extracts.read_reference_extracts(self.write(tmp_path / "min", self.MINIMAL))
        reference_extracts.write_reference_extracts(frames, tmp_path / "full")
        # The derived tables written as a full extract read back the same.
        back = reference_extracts.read_reference_extracts(tmp_path / "full")
        assert all(back[n].equals(frames[n]) for n in reference_extracts.TABLES)
        (tmp_path / "full" / "feeders.csv").write_text("feeder_id,voltage_kv\nF1,24.9\n")
        with pytest.raises(ValueError, match=r"feeders\.csv: missing required column\(s\) substation_id"):
            reference_extracts.read_reference_extracts(tmp_path / "full")

    def test_conflicts_and_mixed_forms_are_refused(self, tmp_path):
        self.write(tmp_path / "c", "meter_id,transformer_id,kva_rating\nM1,T1,25\nM2,T1,50\n")
        with pytest.raises(ValueError, match="T1: kva_rating"):
            reference_extracts.read_reference_extracts(tmp_path / "c")
        self.write(tmp_path / "mixed", self.MINIMAL)
        self.write(tmp_path / "mixed", "feeder_id,substation_id\n", name="feeders.csv")
        with pytest.raises(ValueError, match="feeders.csv also exist"):
            reference_extracts.read_reference_extracts(tmp_path / "mixed")
