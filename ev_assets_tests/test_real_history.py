"""Regression tests for what a real utility history showed (issue 8) and the DST day (issue 9),
each from a small hand-made feed with hand-computed expectations."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from ev_assets.core import pairing
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
