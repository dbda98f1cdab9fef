"""`ev-awareness simulate --push`: the simulated feed pushed to a real receiver lands as the same
events as the simulator's files."""

from __future__ import annotations

import polars as pl
import pytest

from ev_assets import cli
from ev_assets.core import feed
from ev_assets.core.reference_extracts import write_reference_extracts
from ev_assets.synthetic import push, simulator

from .conftest import SIM_START
from .receiver_server import TOKEN, running_receiver
from .test_receiver import events_of


def test_pushed_feed_lands_as_the_simulated_events(small_utility, settings, tmp_path):
    sessions = simulator.simulate_sessions(small_utility, SIM_START, 1, 3)
    messages = simulator.session_messages(sessions, 3)
    simulator.write_feed(messages, tmp_path / "files")
    expected = events_of([f.path for f in feed.list_landing(tmp_path / "files")], tmp_path, "files", settings)
    for fmt in ("json", "avro"):
        landing = tmp_path / f"landing-{fmt}"
        with running_receiver(landing) as (base, _):
            done = push.push_feed(messages, f"{base}/ev-charging-events", fmt=fmt, token=TOKEN)
        assert done.messages == messages.height
        assert done.payloads == len(feed.list_landing(tmp_path / "files")) == len(feed.list_landing(landing))
        got = events_of([f.path for f in feed.list_landing(landing)], tmp_path, f"pushed-{fmt}", settings)
        assert got.equals(expected), fmt


def test_push_with_a_wrong_token_is_a_clear_error(small_utility, tmp_path):
    messages = simulator.session_messages(simulator.simulate_sessions(small_utility, SIM_START, 1, 3), 3)
    with running_receiver(tmp_path / "landing") as (base, _):
        with pytest.raises(push.PushRefused, match="401"):
            push.push_feed(messages, f"{base}/ev-charging-events", token="wrong")


def test_cli_simulate_push(small_utility, tmp_path, monkeypatch):
    write_reference_extracts(small_utility, tmp_path / "reference")
    monkeypatch.setenv("EV_REFERENCE_DIR", str(tmp_path / "reference"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    landing = tmp_path / "landing"
    with running_receiver(landing) as (base, _):
        code = cli.main(
            [
                "simulate",
                "--start",
                str(SIM_START),
                "--days",
                "1",
                "--push",
                f"{base}/ev-charging-events",
                "--format",
                "avro",
                "--token",
                TOKEN,
            ]
        )
    assert code == 0
    records = pl.concat(
        [feed.records_frame([feed.parse_payload(f.name, f.path.read_bytes())]) for f in feed.list_landing(landing)]
    )
    assert records.height > 0 and records["TransformerID"].null_count() == 0
