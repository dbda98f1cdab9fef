"""Unit tests of the pure stages, with hand-computed expectations."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from ev_assets.core import enrich, events, load_profile, pairing
from ev_assets.core.batching import FeedCursor, contiguous_spans, plan_batches, settled
from ev_assets.core.feed import FeedFile

NOW = datetime(2024, 7, 1, tzinfo=UTC)
TZ = "America/New_York"


def t(hour: int, minute: int = 0, day: int = 3) -> datetime:
    return datetime(2024, 6, day, hour, minute, tzinfo=UTC)


def event_rows(rows: list[tuple[str, str, datetime, float | None]]) -> pl.DataFrame:
    """(meter, type, time, value) -> event rows; value is W for a start, Wh for an end."""
    frame = pl.DataFrame(
        {
            "meter_id": [r[0] for r in rows],
            "message_type": [r[1] for r in rows],
            "message_time": [r[2] for r in rows],
            "value": [r[3] for r in rows],
        },
        schema_overrides={"message_time": pl.Datetime("us", "UTC")},
    )
    return frame.with_columns(
        events.message_id(),
        pl.col("message_time").dt.convert_time_zone(TZ).dt.date().alias("message_date"),
        pl.when(pl.col("message_type") == "start").then(pl.col("value")).alias("charge_w"),
        pl.when(pl.col("message_type") == "end").then(pl.col("value")).alias("charge_energy_wh"),
        pl.when(pl.col("message_type") == "end").then(pl.lit(3.0)).alias("charge_duration"),
        pl.lit(1, dtype=pl.Int64).alias("meter_key"),
        pl.lit("SP").alias("service_point_id"),
        pl.lit("P").alias("premise_id"),
        pl.lit("T1").alias("transformer_id"),
        pl.lit("F1").alias("feeder_id"),
        pl.lit("S1").alias("substation_id"),
        pl.lit("enriched").alias("enrichment_status"),
    )


def pair(rows, as_of: datetime | None = None) -> pl.DataFrame:
    """Paired as of the last message (or `as_of`): an open start is start_only, not timed_out."""
    frame = event_rows(rows)
    as_of = as_of or frame["message_time"].max()
    return pairing.pair_sessions(frame, max_session=timedelta(hours=48), updated_at=NOW, as_of=as_of)


class TestPairing:
    def test_start_then_end_is_one_complete_session(self):
        out = pair([("m1", "start", t(18), 7200.0), ("m1", "end", t(21), 21600.0)])
        assert out.select("status", "start_time", "end_time", "energy_wh", "duration_h", "average_kw").rows() == [
            ("complete", t(18), t(21), 21600.0, 3.0, 7.2)
        ]
        assert out["session_id"][0] == "m1|2024-06-03T18:00:00.000000Z"

    def test_messages_arrive_in_any_order(self):
        rows = [("m1", "end", t(21), 21600.0), ("m1", "start", t(18), 7200.0)]
        assert pair(rows)["status"].to_list() == ["complete"]

    def test_meters_never_pair_with_each_other(self):
        out = pair([("m1", "start", t(18), 7200.0), ("m2", "end", t(21), 9000.0)])
        assert sorted(out["status"].to_list()) == ["end_only", "start_only"]

    def test_lost_end_leaves_start_only_and_next_session_pairs(self):
        rows = [
            ("m1", "start", t(8), 7200.0),
            ("m1", "start", t(18), 7200.0),
            ("m1", "end", t(20), 14400.0),
        ]
        out = pair(rows)
        assert out.select("status", "start_time").rows() == [("start_only", t(8)), ("complete", t(18))]

    def test_lost_start_leaves_end_only(self):
        rows = [("m1", "end", t(9), 5000.0), ("m1", "start", t(18), 7200.0), ("m1", "end", t(20), 14400.0)]
        out = pair(rows)
        assert out.select("status", "end_time").rows() == [("end_only", t(9)), ("complete", t(20))]

    def test_end_long_after_start_pairs_when_its_energy_fits(self):
        # 73 h apart (more than 48 h): 5 kWh fits 7.2 kW x 73 h, a car left plugged in.
        rows = [("m1", "start", t(8, day=3), 7200.0), ("m1", "end", t(9, day=6), 5000.0)]
        assert pair(rows)["status"].to_list() == ["complete"]

    def test_session_after_midnight_keeps_start_date(self):
        # 23:30 local on June 3 is 03:30 UTC on June 4: the event date is the local start date.
        out = pair([("m1", "start", t(3, 30, day=4), 7200.0), ("m1", "end", t(6, 30, day=4), 21600.0)])
        assert out["event_date"].to_list() == [date(2024, 6, 3)]

    def test_window_contains_every_session_a_batch_can_change(self):
        batch = event_rows([("m1", "end", t(21), 1.0), ("m2", "start", t(22), 7200.0)])
        window = pairing.pairing_window(batch, timedelta(hours=48))
        assert window.meter_ids == ["m1", "m2"]
        assert window.read_from == t(21) - timedelta(hours=96)
        assert window.write_to == t(22) + timedelta(hours=48)

    def test_duration_agreement_counts_reported_hours(self):
        out = pair([("m1", "start", t(18), 7200.0), ("m1", "end", t(21), 21600.0)])
        assert pairing.duration_agreement(out, 3600.0) == {"sessions": 1, "agreeing": 1, "share": 1.0}
        assert pairing.duration_agreement(out, 60.0)["agreeing"] == 0


class TestLoad:
    def sessions_frame(self, rows):
        return pl.DataFrame(
            {
                "meter_id": [r[0] for r in rows],
                "transformer_id": [r[1] for r in rows],
                "feeder_id": "F1",
                "substation_id": "S1",
                "status": "complete",
                "start_time": [r[2] for r in rows],
                "end_time": [r[3] for r in rows],
                "average_kw": [r[4] for r in rows],
                # Charged at the average power all along: both load shapes spread it evenly.
                "charge_w": [r[4] * 1000 for r in rows],
                "energy_wh": [r[4] * 1000 * (r[3] - r[2]).total_seconds() / 3600 for r in rows],
                "event_date": [r[2].astimezone(UTC).date() for r in rows],
            },
            schema_overrides={"start_time": pl.Datetime("us", "UTC"), "end_time": pl.Datetime("us", "UTC")},
        )

    def daily(self, frame, level="transformer", tz="UTC"):
        return load_profile.daily_load(
            load_profile.interval_loads(frame),
            frame,
            level=level,
            tz=tz,
            first_day=date(2024, 6, 3),
            last_day=date(2024, 6, 4),
            updated_at=NOW,
        )

    def test_partial_intervals_are_weighted_by_overlap(self):
        # 7.2 kW from 18:05 to 18:35: 10 min of the 18:00 interval, 15 of 18:15, 5 of 18:30.
        frame = self.sessions_frame([("m1", "T1", t(18, 5), t(18, 35), 7.2)])
        iv = load_profile.interval_loads(frame).sort("interval_start")
        assert iv["interval_start"].to_list() == [t(18), t(18, 15), t(18, 30)]
        assert iv["kw"].to_list() == pytest.approx([4.8, 7.2, 2.4])
        assert iv["kwh"].sum() == pytest.approx(7.2 * 0.5)

    def test_coincident_peak_sums_overlapping_sessions(self):
        # A: 7.2 kW 18:00-19:00. B: 11.5 kW 18:30-18:45. C (other transformer): 9.6 kW 18:30-19:30.
        frame = self.sessions_frame(
            [
                ("a", "T1", t(18), t(19), 7.2),
                ("b", "T1", t(18, 30), t(18, 45), 11.5),
                ("c", "T2", t(18, 30), t(19, 30), 9.6),
            ]
        )
        daily = self.daily(frame).sort("transformer_id")
        t1 = daily.row(0, named=True)
        assert t1["peak_kw"] == pytest.approx(18.7)
        assert t1["peak_interval_start"] == t(18, 30)
        assert t1["energy_kwh"] == pytest.approx(7.2 + 11.5 * 0.25)
        assert t1["session_count"] == 2 and t1["ev_count"] == 2
        assert t1["diversity_factor"] == pytest.approx((7.2 + 11.5) / 18.7)
        # The feeder sees all three: 7.2 + 11.5 + 9.6 in the 18:30 interval.
        feeder = self.daily(frame, level="feeder").row(0, named=True)
        assert feeder["peak_kw"] == pytest.approx(28.3)
        assert feeder["energy_kwh"] == pytest.approx(7.2 + 2.875 + 9.6)

    def test_load_after_midnight_counts_on_the_next_day(self):
        frame = self.sessions_frame([("a", "T1", t(23, 30), t(0, 30, day=4), 8.0)])
        daily = self.daily(frame).sort("load_date")
        assert daily.select("load_date", "energy_kwh", "session_count").rows() == [
            (date(2024, 6, 3), pytest.approx(4.0), 1),
            (date(2024, 6, 4), pytest.approx(4.0), 0),
        ]

    def test_utilization_uses_power_factor_and_rating(self):
        frame = self.sessions_frame([("a", "T1", t(18), t(19), 9.0)])
        transformers = pl.DataFrame(
            {
                "transformer_id": ["T1"],
                "kva_rating": [25.0],
                "effective_from": [date(2024, 1, 1)],
                "effective_to": [None],
            },
            schema_overrides={"effective_to": pl.Date},
        )
        rated = load_profile.with_transformer_rating(self.daily(frame), transformers, power_factor=0.9)
        assert rated["peak_kva"][0] == pytest.approx(10.0)
        assert rated["utilization"][0] == pytest.approx(0.4)


class TestAsOfJoin:
    def test_picks_the_row_in_effect_on_the_date(self):
        right = pl.DataFrame(
            {
                "service_point_id": ["sp", "sp"],
                "transformer_id": ["T_old", "T_new"],
                "effective_from": [date(2024, 1, 1), date(2024, 6, 4)],
                "effective_to": [date(2024, 6, 4), None],
            }
        )
        left = pl.DataFrame(
            {
                "sp": ["sp", "sp", "sp", "x"],
                "d": [date(2023, 12, 31), date(2024, 6, 3), date(2024, 6, 4), date(2024, 6, 4)],
            }
        )
        out = enrich.as_of_join(
            left, right, left_on="sp", right_on="service_point_id", date_col="d", columns={"transformer_id": "tx"}
        )
        assert out["tx"].to_list() == [None, "T_old", "T_new", None]

    def test_unknown_meter_keeps_reported_attribution(self):
        empty = {
            "meters": pl.DataFrame(
                schema={
                    "meter_id": pl.String,
                    "meter_key": pl.Int64,
                    "service_point_id": pl.String,
                    "effective_from": pl.Date,
                    "effective_to": pl.Date,
                }
            ),
            "service_points": pl.DataFrame(
                schema={
                    "service_point_id": pl.String,
                    "premise_id": pl.String,
                    "transformer_id": pl.String,
                    "effective_from": pl.Date,
                    "effective_to": pl.Date,
                }
            ),
            "transformers": pl.DataFrame(
                schema={
                    "transformer_id": pl.String,
                    "feeder_id": pl.String,
                    "effective_from": pl.Date,
                    "effective_to": pl.Date,
                }
            ),
            "feeders": pl.DataFrame(
                schema={
                    "feeder_id": pl.String,
                    "substation_id": pl.String,
                    "effective_from": pl.Date,
                    "effective_to": pl.Date,
                }
            ),
        }
        msgs = pl.DataFrame(
            {
                "meter_id": ["m9"],
                "message_date": [date(2024, 6, 3)],
                "reported_service_point_id": ["SP9"],
                "reported_premise_id": ["P9"],
                "reported_transformer_id": ["T9"],
            }
        )
        out = enrich.attribute(msgs, empty, date_col="message_date").row(0, named=True)
        assert out["enrichment_status"] == "meter_unknown"
        assert (out["service_point_id"], out["premise_id"], out["transformer_id"], out["meter_key"]) == (
            "SP9",
            "P9",
            "T9",
            None,
        )


class TestDuplicates:
    def test_earliest_received_wins_and_known_ids_are_duplicates(self):
        rows = event_rows(
            [("m1", "start", t(18), 7200.0), ("m1", "start", t(18), 7200.0), ("m2", "start", t(18), 7200.0)]
        )
        rows = rows.with_columns(
            pl.Series("received_time", [t(18, 2), t(18, 1), t(18, 1)], dtype=pl.Datetime("us", "UTC")),
            pl.lit("f").alias("file_name"),
            pl.lit("sha").alias("file_sha256"),
            pl.int_range(3).alias("record_index"),
            pl.lit("b0").alias("batch_id"),
            pl.col("message_time").alias("charge_start_time"),
            pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("charge_end_time"),
        )
        new, dupes, conflicts = events.split_duplicates(rows, rows[2:3])
        assert (dupes, conflicts.height) == (2, 0)
        assert new.select("meter_id", "record_index").rows() == [("m1", 1)]


class TestBatching:
    def files(self, tmp_path, sizes):
        out = []
        for i, n in enumerate(sizes):
            path = tmp_path / f"f{i:03d}.json"
            path.write_text('{"EVChargingEvents": [' + ",".join(['{"ReceivedTime": "x"}'] * n) + "]}")
            out.append(FeedFile(path.name, path.parent, path.stat().st_size, i))
        return out

    def test_batches_respect_file_and_message_limits(self, tmp_path):
        files = self.files(tmp_path, [3, 3, 3, 3, 10, 1])
        batches = plan_batches(files, max_files=3, max_messages=7)
        assert [[f.name for f in b.files] for b in batches] == [
            ["f000.json", "f001.json"],
            ["f002.json", "f003.json"],
            ["f004.json"],
            ["f005.json"],
        ]
        assert [b.messages for b in batches] == [6, 6, 10, 1]

    def test_batches_respect_the_byte_limit(self, tmp_path):
        files = self.files(tmp_path, [3, 3, 3, 3, 20, 1])
        sizes = [f.size for f in files]
        # Room for two of the small files, not three; the large file alone exceeds it and still
        # makes a batch of its own (a file is never split), then the last one starts anew.
        limit = sizes[0] + sizes[1] + sizes[2] - 1
        batches = plan_batches(files, max_files=100, max_messages=100, max_bytes=limit)
        assert [[f.name for f in b.files] for b in batches] == [
            ["f000.json", "f001.json"],
            ["f002.json", "f003.json"],
            ["f004.json"],
            ["f005.json"],
        ]
        assert [b.bytes for b in batches] == [sizes[0] + sizes[1], sizes[2] + sizes[3], sizes[4], sizes[5]]
        assert sizes[4] > limit and all(b.bytes <= limit for b in batches if len(b.files) > 1)
        # Without a byte bound the same files make one batch.
        assert len(plan_batches(files, max_files=100, max_messages=100)) == 1

    def test_batch_ids_are_stable(self, tmp_path):
        files = self.files(tmp_path, [1, 1, 1])
        assert [b.batch_id for b in plan_batches(files, max_files=2, max_messages=99)] == [
            b.batch_id for b in plan_batches(files, max_files=2, max_messages=99)
        ]

    def test_cursor_round_trip_and_after(self, tmp_path):
        files = self.files(tmp_path, [1, 1, 1])
        cursor = FeedCursor.from_json(FeedCursor.at(files[1]).to_json())
        assert [f.name for f in cursor.after(files)] == ["f002.json"]
        assert FeedCursor.from_json(None).after(files) == files

    def test_only_settled_files_are_taken_in_order(self, tmp_path):
        files = self.files(tmp_path, [1, 1, 1])  # arrived at 0, 1 and 2 ns
        assert [f.name for f in settled(files, now_ns=11, settle_ns=10)] == ["f000.json", "f001.json"]
        assert settled(files, now_ns=5, settle_ns=10) == []

    def test_contiguous_spans(self):
        d = lambda n: date(2024, 6, n)  # noqa: E731
        assert contiguous_spans([d(5), d(3), d(4), d(9), d(3)]) == [(d(3), d(5)), (d(9), d(9))]


def test_parse_batch_builds_the_same_frame_a_group_of_files_at_a_time(tmp_path):
    """parse_batch frees each group's Python records once its frame is made: any group size gives
    the frame of all files at once; a file sent twice (same name, same bytes) is read once; only a
    quarantined file keeps its bytes."""
    from ev_assets.core import feed

    def payload(*records: str) -> str:
        return '{"EVChargingEvents": [' + ",".join(records) + "]}"

    start = '{"MeterID": "M%d", "ChargeStartTime": "2024-06-03T18:00:00Z", "ChargeW": %s}'
    files = {
        "a.json": payload(start % (1, "7000"), start % (2, '"7200.5"')),
        "b.json": payload('{"MeterID": "M3", "ChargeW": 6600, "Extra": "x"}'),
        "c.json": "not json",
        "d.json": payload(),
        "e.json": payload(start % (4, "11000"), start % (5, "null")),
    }
    paths = []
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    paths.append(tmp_path / "a.json")  # the same file twice in one batch
    whole = feed.records_frame([feed.parse_payload(p.name, p.read_bytes()) for p in dict.fromkeys(paths)])
    assert whole.height == 5
    for group in (1, 2, 3, 100):
        parsed, frame = feed.parse_batch(paths, files_per_frame=group)
        assert frame.equals(whole), group
        assert [p.name for p in parsed] == ["a.json", "b.json", "c.json", "d.json", "e.json"]
        assert all(p.records == [] for p in parsed)
        assert {p.name: bool(p.content) for p in parsed} == {
            "a.json": False,
            "b.json": False,
            "c.json": True,
            "d.json": False,
            "e.json": False,
        }
        assert next(p for p in parsed if p.name == "a.json").text == files["a.json"]
