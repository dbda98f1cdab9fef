"""The live service against real processes: the receiver over HTTP on 127.0.0.1, `ev-awareness
live` in a subprocess, Mosquitto (the machine's on 127.0.0.1:1883, or a private one on a free port
for the outage and restart tests), a real HTTP server for the webhooks. Hand-made feeds of a few
records on a hand-made grid (live_harness: T1 25 kVA, T2 50 kVA, a flat base load of 0.2 pu)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import polars as pl
import pytest

from ev_assets import pipeline
from ev_assets.core import feed
from ev_assets.live import messages
from ev_assets.live.messages import LiveRules
from ev_assets.live.processor import Processor, ReferenceReader
from ev_assets.live.publishers import SIGNATURE_HEADER, signature
from ev_assets.live.service import read_files
from ev_assets.live.store import MQTT_CURSOR, LiveStore, webhook_cursor
from ev_assets.pipeline.config import PipelineSettings
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import EV_CHARGING_SESSIONS

from .live_harness import (
    GRID_METERS,
    SHARED_BROKER_PORT,
    CuttableProxy,
    Subscriber,
    end_record,
    live_env,
    payload,
    private_broker,
    reference_warehouse,
    running_live,
    spec_time,
    start_record,
    wait_for_port,
)
from .receiver_server import auth, free_port, running_receiver

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def grid_url(tmp_path_factory) -> str:
    return reference_warehouse(tmp_path_factory.mktemp("grid"))


@pytest.fixture
def prefix() -> str:
    return f"evtest{uuid.uuid4().hex[:8]}"


def push(client: httpx.Client, *records: dict) -> float:
    """POST the records as one payload; the monotonic time of the 202."""
    response = client.post("/ev-charging-events", content=payload(*records), headers=JSON)
    assert response.status_code == 202, response.text
    return time.monotonic()


def rules(**overrides) -> LiveRules:
    p = PipelineSettings()
    values = dict(
        timezone="America/New_York",
        bounds=p.bounds,
        max_session=p.max_session,
        charge_w_tolerance=p.charge_w_tolerance,
        power_factor=0.9,
        planning_threshold=1.0,
        base_load_pu=tuple(0.1 * (h % 10) for h in range(24)),
        base_load_scale=1.0,
        hysteresis=0.1,
    )
    return LiveRules(**(values | overrides))


# --- the pure rules ------------------------------------------------------------------------------


def test_state_adds_the_aging_models_base_load_of_the_local_hour_and_alerts_with_hysteresis():
    now = datetime(2026, 1, 15, 17, 30, tzinfo=UTC)  # 12:30 in New York: profile hour 12 -> 0.2 pu
    sessions = pl.DataFrame(
        {"transformer_id": ["T1", "T1", "T2"], "charge_w": [9000.0, 9000.0, 4500.0]},
    )
    grid = pl.DataFrame(
        {
            "transformer_id": ["T1", "T2", "T3"],
            "feeder_id": ["F1", "F1", "F1"],
            "substation_id": ["S1", "S1", "S1"],
            "kva_rating": [25.0, 10.0, None],
            "base_load_scale": [None, 2.0, None],
        }
    )
    states = messages.transformer_states(["T1", "T2", "T3"], sessions, grid, rules(), now).sort("transformer_id")
    t1, t2, t3 = states.iter_rows(named=True)
    assert (t1["ev_kw"], t1["active_evs"]) == (18.0, 2)
    assert t1["ev_kva"] == pytest.approx(20.0)
    assert t1["base_kva"] == pytest.approx(0.2 * 25)  # base pu of the local hour x rating
    assert t1["utilization"] == pytest.approx(0.8) and t1["load_pu"] == pytest.approx(1.0)
    assert t2["base_kva"] == pytest.approx(0.2 * 2.0 * 10)  # the transformer's own scale
    assert t2["load_pu"] == pytest.approx((5.0 + 4.0) / 10)
    assert (t3["ev_kw"], t3["active_evs"], t3["load_pu"]) == (0.0, 0, None)

    def decide(load_pu: float, active: bool) -> tuple[bool, bool]:
        frame = states.head(1).with_columns(pl.lit(load_pu).alias("load_pu"))
        row = messages.alert_decisions(frame, {"T1": active}, rules()).row(0, named=True)
        return row["raise"], row["clear"]

    assert decide(1.0, False) == (False, False)  # at the threshold: not over it
    assert decide(1.01, False) == (True, False)
    assert decide(1.5, True) == (False, False)  # already raised: no second alert
    assert decide(0.95, True) == (False, False)  # under the threshold, inside the hysteresis
    assert decide(0.89, True) == (False, True)


# --- the processor on a real state file and warehouse, no broker ----------------------------------


@pytest.fixture
def processor(grid_url, tmp_path):
    store = LiveStore(tmp_path / "live.sqlite")
    reference = ReferenceReader(grid_url)
    yield Processor(store, reference, rules(base_load_pu=(0.2,) * 24))
    reference.close()
    store.close()


def landed(folder, name: str, *records: dict):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(payload(*records))
    return path


def outbox(processor: Processor) -> list[dict]:
    return [json.loads(r.payload) | {"_kind": r.kind} for r in processor.store.outbox_after(0, 1000)]


def test_events_and_states_take_the_grid_from_the_warehouse_on_each_backend(blank_warehouse_url, tmp_path):
    """The reference data as the ingest step reads it, on SQLite and on PostgreSQL."""
    url = reference_warehouse(tmp_path / "grid", blank_warehouse_url)
    store, reference = LiveStore(tmp_path / "live.sqlite"), ReferenceReader(url)
    try:
        live = Processor(store, reference, rules(base_load_pu=(0.2,) * 24))
        at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        live.process_files([landed(tmp_path / "in", "a.json", start_record("M6", at, 9000) | {"TransformerID": "T1"})])
        start, state = outbox(live)
        # Reported T1, but the reference data (GIS) says M6 hangs off T2: the record's answer wins.
        assert (start["TransformerID"], start["FeederID"], start["SubstationID"]) == ("T2", "F1", "S1")
        assert (state["TransformerID"], state["KVARating"], state["EVkW"]) == ("T2", 50.0, 9.0)
    finally:
        reference.close()
        store.close()


def test_a_redelivered_message_is_published_once_and_a_conflicting_one_not_at_all(processor, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    start = start_record("M1", now - timedelta(minutes=20), 7000)
    conflicting = start | {"ChargeW": "9000"}
    first = processor.process_files([landed(tmp_path / "in", "a.json", start)], now)
    again = processor.process_files(
        [landed(tmp_path / "in", "b.json", start), landed(tmp_path / "in", "c.json", conflicting)], now
    )
    assert (first[0].accepted, again[0].duplicates, again[1].rejected) == (1, 1, 1)
    assert again[1].rejection_codes == {"conflicting_duplicate": 1}
    starts = [m for m in outbox(processor) if m["_kind"] == "start"]
    assert [m["EventID"] for m in starts] == [f"M1|start|{(now - timedelta(minutes=20)):%Y-%m-%dT%H:%M:%S}.000000Z"]
    assert [m["EVkW"] for m in outbox(processor) if m["_kind"] == "state"] == [7.0]  # the re-delivery changed nothing


def test_a_session_open_longer_than_max_session_times_out_in_the_sweep(processor, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - processor.rules.max_session + timedelta(minutes=30)
    processor.process_files([landed(tmp_path / "in", "a.json", start_record("M5", old, 7000))], now)
    assert processor.store.open_sessions().height == 1
    assert processor.sweep(now + timedelta(minutes=10)) == 0  # still open: nothing changed
    assert processor.sweep(now + timedelta(minutes=40)) == 1  # timed out: T2's state again
    assert processor.store.open_sessions().height == 0
    last = [m for m in outbox(processor) if m["_kind"] == "state"][-1]
    assert (last["TransformerID"], last["EVkW"], last["ActiveEVs"]) == ("T2", 0, 0)


def test_the_outbox_keeps_what_a_consumer_has_not_delivered_and_sequences_never_repeat(processor, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    for i, meter in enumerate(("M1", "M2", "M3")):
        processor.process_files(
            [landed(tmp_path / "in", f"{i}.json", start_record(meter, now - timedelta(hours=1), 7000))], now
        )
    store = processor.store
    last = store.last_sequence()
    store.set_cursor(MQTT_CURSOR, last)  # delivered everything
    store.set_cursor(webhook_cursor("http://127.0.0.1:1/hook"), 2)
    processor.consumers = (MQTT_CURSOR, webhook_cursor("http://127.0.0.1:1/hook"))
    with store.transaction():
        assert store.prune_outbox(processor.consumers, now + timedelta(days=2)) == 2  # the webhook has 3.. to go
    processor.consumers = (MQTT_CURSOR,)
    with store.transaction():
        store.prune_outbox(processor.consumers, now + timedelta(days=2))
    assert [r.sequence for r in store.outbox_after(0, 100)] == [last]  # the newest stays
    processor.process_files(
        [landed(tmp_path / "in", "z.json", end_record("M1", now - timedelta(hours=1), now, 900))], now
    )
    assert store.outbox_after(last, 10)[0].sequence == last + 1


def test_a_file_the_processor_fails_on_is_set_aside_and_the_others_are_read(processor, tmp_path):
    class Tripping(Processor):  # a bug that one file trips (no such file is known: the contract takes anything)
        def process_files(self, paths, now=None):
            if any(p.name == "poison.json" for p in paths):
                raise ValueError("tripped")
            return super().process_files(paths, now)

    tripping = Tripping(processor.store, processor.reference, processor.rules)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    paths = [
        landed(tmp_path / "in", "a.json", start_record("M1", now, 7000)),
        landed(tmp_path / "in", "poison.json", start_record("M2", now, 7000)),
        landed(tmp_path / "in", "z.json", start_record("M3", now, 7000)),
    ]
    outcomes = read_files(processor.store, tripping, paths)
    assert [(o.name, o.status) for o in outcomes] == [
        ("a.json", "parsed"),
        ("poison.json", "failed"),
        ("z.json", "parsed"),
    ]
    assert [m["MeterID"] for m in outbox(processor) if m["_kind"] == "start"] == ["M1", "M3"]
    assert processor.store.processed_file_names() == {"a.json", "poison.json", "z.json"}


# --- against the real broker and receiver --------------------------------------------------------


def test_subscriber_gets_the_enriched_start_and_the_state_within_two_seconds(grid_url, prefix, tmp_path):
    """On the machine's broker (127.0.0.1:1883): start, then state, within 2 s of the 202; the end
    carries its session; a record the contract rejects and a file that is not JSON are skipped and
    counted, and the service goes on."""
    wait_for_port(SHARED_BROKER_PORT)
    landing = tmp_path / "landing"
    env = live_env(tmp_path, landing, grid_url, SHARED_BROKER_PORT, prefix)
    subscriber = Subscriber(SHARED_BROKER_PORT, prefix)
    try:
        with (
            running_receiver(landing) as (base, _),
            httpx.Client(base_url=base, headers=auth()) as client,
            running_live(env, tmp_path / "live.log") as live,
        ):
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
            broken = {"MeterID": "M2", "ReceivedTime": "yesterday", "ChargeW": "7000"}
            acked = push(client, start_record("M1", start, 7200), broken)
            got = subscriber.wait_for(lambda ms: subscriber.of("T1", "events") and subscriber.of("T1", "state"), 5)
            event, state = subscriber.of("T1", "events")[0], subscriber.of("T1", "state")[0]
            assert event["at"] - acked < 2.0 and state["at"] - acked < 2.0, (event["at"] - acked, state["at"] - acked)
            body = event["body"]
            assert body["EventID"] == f"M1|start|{start.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z"
            assert (body["MessageType"], body["TransformerID"], body["FeederID"], body["SubstationID"]) == (
                "start",
                "T1",
                "F1",
                "S1",
            )
            assert (
                body["ChargeW"] == "7200" and body["ChargeEndTime"] is None and body["EnrichmentStatus"] == "enriched"
            )
            assert not event["retain"]
            assert state["body"]["EVkW"] == 7.2 and state["body"]["ActiveEVs"] == 1
            assert state["body"]["EVkVA"] == pytest.approx(8.0) and state["body"]["KVARating"] == 25.0
            assert state["body"]["Utilization"] == pytest.approx(8.0 / 25)
            assert state["body"]["LoadPU"] == pytest.approx((8.0 + 5.0) / 25)
            assert len(got) == 2  # the rejected record published nothing

            (landing / "not-a-payload.json").write_text("{ this is not JSON")
            end = start + timedelta(minutes=20)
            push(client, end_record("M1", start, end, 2400))
            subscriber.wait_for(
                lambda ms: len(subscriber.of("T1", "events")) == 2 and len(subscriber.of("T1", "state")) == 2, 5
            )
            end_body = subscriber.of("T1", "events")[1]["body"]
            assert end_body["SessionID"] == body["SessionID"] and end_body["SessionStatus"] == "complete"
            assert end_body["SessionEnergy"] == "2400" and float(end_body["SessionDurationHours"]) == pytest.approx(
                1 / 3
            )
            assert subscriber.of("T1", "state")[1]["body"]["EVkW"] == 0
            assert "quarantined, not published" in live.log() and "rejected, not published" in live.log()
        with sqlite3.connect(tmp_path / "live" / "live.sqlite") as state_db:
            counts = dict(state_db.execute("SELECT status, count(*) FROM live_files GROUP BY status").fetchall())
            rejected = state_db.execute("SELECT sum(rejected) FROM live_files").fetchone()[0]
        assert counts == {"parsed": 2, "quarantined": 1} and rejected == 1
    finally:
        subscriber.close(clear_retained=True)


def alerts_of(subscriber: Subscriber, transformer_id: str) -> list[dict]:
    return [m["body"] for m in subscriber.of(transformer_id, "alert") if m["body"]]


def test_a_transformer_over_its_threshold_raises_one_alert_and_clears_it_once(grid_url, prefix, tmp_path):
    """T1: 25 kVA, base 0.2 pu = 5 kVA, threshold 1.0, hysteresis 0.1 (clear below 0.9 pu), EV kVA =
    kW / 0.9. Two cars of 8 kW: 0.911 pu (no alert); a third of 7 kW: 1.22 pu (raised); it leaves:
    0.911 (still raised: inside the hysteresis); it comes back: 1.22 (no second alert); two leave:
    0.556 (cleared)."""
    landing = tmp_path / "landing"
    with private_broker(tmp_path / "broker") as broker:
        env = live_env(tmp_path, landing, grid_url, broker.port, prefix)
        subscriber = Subscriber(broker.port, prefix)
        with (
            running_receiver(landing) as (base, _),
            httpx.Client(base_url=base, headers=auth()) as client,
            running_live(env, tmp_path / "live.log"),
        ):
            t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
            at = [t0 + timedelta(minutes=10 * i) for i in range(8)]

            def load_after(n_states: int) -> float:
                subscriber.wait_for(lambda ms: len(subscriber.of("T1", "state")) >= n_states, 5)
                return subscriber.of("T1", "state")[-1]["body"]["LoadPU"]

            push(client, start_record("M1", at[0], 8000), start_record("M2", at[0], 8000))
            assert load_after(1) == pytest.approx((16 / 0.9 + 5) / 25, abs=1e-4)
            push(client, start_record("M3", at[1], 7000))
            assert load_after(2) == pytest.approx((23 / 0.9 + 5) / 25, abs=1e-4)
            subscriber.wait_for(lambda ms: len(alerts_of(subscriber, "T1")) == 1, 5)
            push(client, end_record("M3", at[1], at[2], 5000))
            assert load_after(3) == pytest.approx(0.9111, abs=1e-4)
            push(client, start_record("M3", at[3], 7000))
            assert load_after(4) == pytest.approx(1.2222, abs=1e-4)
            push(client, end_record("M3", at[3], at[4], 5000), end_record("M2", at[0], at[4], 5000))
            assert load_after(5) == pytest.approx((8 / 0.9 + 5) / 25, abs=1e-4)
            subscriber.wait_for(lambda ms: len(alerts_of(subscriber, "T1")) == 2, 5)
            time.sleep(0.5)  # nothing else comes
            raised, cleared = alerts_of(subscriber, "T1")
            assert len(alerts_of(subscriber, "T1")) == 2
            assert raised["Active"] is True and cleared["Active"] is False
            assert raised["AlertID"] == cleared["AlertID"] and cleared["RaisedAt"] == raised["RaisedAt"]
            assert raised["LoadPU"] == pytest.approx(1.2222, abs=1e-4) and cleared["ClearBelowPU"] == pytest.approx(0.9)
            assert [s["body"]["AlertActive"] for s in subscriber.of("T1", "state")] == [False, True, True, True, False]
            assert alerts_of(subscriber, "T2") == []
            # A control system that connects late sees the current alert state (retained).
            late = Subscriber(broker.port, prefix)
            try:
                late.wait_for(lambda ms: late.of("T1", "alert") and late.of("T1", "state"), 5)
                assert late.of("T1", "alert")[0]["retain"] and late.of("T1", "alert")[0]["body"]["Active"] is False
                assert late.of("T1", "state")[0]["body"]["ActiveEVs"] == 1
            finally:
                late.close()
        subscriber.close()


def first_occurrences(received: list[dict]) -> list[dict]:
    """The messages with the first delivery of each Sequence only (at least once: a consumer deduplicates)."""
    seen, out = set(), []
    for m in received:
        if m["body"] and m["body"]["Sequence"] not in seen:
            seen.add(m["body"]["Sequence"])
            out.append(m)
    return out


# EV_TEST_LIVE_OUTAGE_S=30 runs the 30 s outage.
OUTAGE_S = float(os.environ.get("EV_TEST_LIVE_OUTAGE_S", "10"))


def test_broker_outage_loses_nothing_and_keeps_the_order_per_transformer(grid_url, prefix, tmp_path):
    """The broker is stopped (while messages are in flight) for OUTAGE_S, payloads arriving all the
    while: every event comes out once the broker is back, in the order pushed per transformer.
    10 s by default rather than 30: nothing in the publisher depends on the outage's length (the
    outbox is the SQLite file, the reconnect back-off tops out at 2 s), and 10 s already spans
    several failed reconnects."""
    landing = tmp_path / "landing"
    with private_broker(tmp_path / "broker") as broker:
        env = live_env(tmp_path, landing, grid_url, broker.port, prefix)
        subscriber = Subscriber(broker.port, prefix, persistent=True)
        with (
            running_receiver(landing) as (base, _),
            httpx.Client(base_url=base, headers=auth()) as client,
            running_live(env, tmp_path / "live.log") as live,
        ):
            t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
            push(client, start_record("M5", t0, 7000))
            subscriber.wait_for(lambda ms: len(subscriber.of("T2", "events")) == 1, 5)
            pushed: dict[str, list[str]] = {"T1": [], "T2": [f"M5|start|{t0:%Y-%m-%dT%H:%M:%S}"]}
            charging = {"M1": None, "M2": None, "M5": t0, "M6": None}  # meter -> start of its open session
            arriving = threading.Event()
            arriving.set()

            def keep_pushing() -> None:  # before, during and after the outage
                step = 0
                while arriving.is_set():
                    meter = list(charging)[step % 4]
                    at = t0 + timedelta(minutes=step + 1)
                    if charging[meter] is None:
                        record, kind, charging[meter] = start_record(meter, at, 7000), "start", at
                    else:
                        record, kind, charging[meter] = end_record(meter, charging[meter], at, 400), "end", None
                    push(client, record)
                    pushed[GRID_METERS[meter]].append(f"{meter}|{kind}|{at:%Y-%m-%dT%H:%M:%S}")
                    step += 1
                    time.sleep(0.25)

            pusher = threading.Thread(target=keep_pushing)
            pusher.start()
            time.sleep(1.0)
            broker.stop()  # while messages are in flight
            time.sleep(OUTAGE_S)
            with sqlite3.connect(tmp_path / "live" / "live.sqlite") as state_db:
                waiting = state_db.execute(
                    "SELECT count(*) FROM live_outbox WHERE sequence > "
                    "(SELECT coalesce(max(sequence), 0) FROM live_cursors WHERE consumer = 'mqtt')"
                ).fetchone()[0]
            assert waiting >= OUTAGE_S / 0.25 * 0.5  # the events of the outage wait in the outbox
            broker.start()
            time.sleep(1.0)
            arriving.clear()
            pusher.join()
            total = sum(len(v) for v in pushed.values())
            subscriber.wait_for(lambda ms: len({m["body"]["EventID"] for m in subscriber.events()}) == total, 30)
            assert "disconnected" in live.log()
        messages_in_order = first_occurrences(subscriber.snapshot())
        sequences = [m["body"]["Sequence"] for m in messages_in_order]
        assert sequences == sorted(sequences)  # first deliveries in outbox order
        for transformer, expected in pushed.items():
            got = [
                m["body"]["EventID"].rsplit(".", 1)[0]
                for m in messages_in_order
                if m["topic"] == f"{prefix}/transformer/{transformer}/events"
            ]
            assert got == expected, transformer
        subscriber.close()


def test_a_link_cut_mid_flight_resends_every_message_that_had_no_puback(grid_url, prefix, tmp_path):
    """The service reaches the broker through a proxy that drops everything for a second and then
    closes the connection, while pushes arrive every 0.1 s: the PUBLISH packets and PUBACKs lost in
    that second are sent again (the cursor only moves on a PUBACK), so the subscriber, connected to
    the broker directly, gets every event, in order per transformer."""
    landing = tmp_path / "landing"
    with private_broker(tmp_path / "broker") as broker:
        proxy = CuttableProxy(broker.port)
        env = live_env(tmp_path, landing, grid_url, proxy.port, prefix)
        subscriber = Subscriber(broker.port, prefix)
        with (
            running_receiver(landing) as (base, _),
            httpx.Client(base_url=base, headers=auth()) as client,
            running_live(env, tmp_path / "live.log") as live,
        ):
            t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
            pushed: dict[str, list[str]] = {"T1": [], "T2": []}
            charging = dict.fromkeys(GRID_METERS)
            for step in range(40):
                meter = list(charging)[step % len(charging)]
                at = t0 + timedelta(minutes=step + 1)
                if charging[meter] is None:
                    record, kind, charging[meter] = start_record(meter, at, 3000), "start", at
                else:
                    record, kind, charging[meter] = end_record(meter, charging[meter], at, 400), "end", None
                push(client, record)
                pushed[GRID_METERS[meter]].append(f"{meter}|{kind}|{at:%Y-%m-%dT%H:%M:%S}")
                if step == 10:
                    threading.Thread(target=proxy.cut, args=(1.0,)).start()
                time.sleep(0.1)
            total = sum(len(v) for v in pushed.values())
            subscriber.wait_for(lambda ms: len({m["body"]["EventID"] for m in subscriber.events()}) == total, 30)
            assert "disconnected" in live.log()
        in_order = first_occurrences(subscriber.snapshot())
        for transformer, expected in pushed.items():
            got = [
                m["body"]["EventID"].rsplit(".", 1)[0]
                for m in in_order
                if m["topic"].endswith(f"/{transformer}/events")
            ]
            assert got == expected, transformer
        subscriber.close()
        proxy.close()


def session_table_open_kw(landing, grid_url: str) -> tuple[dict[str, float], pl.DataFrame]:
    """Run the pipeline (ingest + sessions) on the landing files: EV kW of the sessions open now."""
    warehouse = Warehouse(grid_url)
    try:
        settings = PipelineSettings()
        paths = [f.path for f in feed.list_landing(landing)]
        pipeline.ingest_batch(warehouse, f"b-{uuid.uuid4().hex[:6]}", paths, settings)
        pipeline.pair_pending_batches(warehouse, settings)
        sessions = warehouse.read(EV_CHARGING_SESSIONS)
    finally:
        warehouse.dispose()
    open_now = sessions.filter(pl.col("status") == "start_only")
    return dict(open_now.group_by("transformer_id").agg(pl.col("charge_w").sum() / 1000).iter_rows()), sessions


def test_kill_9_mid_burst_then_restart_leaves_retained_states_equal_to_the_session_table(prefix, tmp_path):
    """A burst of 24 pushes, the live service killed (SIGKILL) after the 12th and started again:
    every event is published, the retained states equal the open sessions of the session table the
    pipeline writes from the same landing files, and T1's overload (it crosses its rating once and
    stays over) is one alert, not one per start."""
    grid_url = reference_warehouse(tmp_path / "grid")  # this test runs the pipeline into it
    landing = tmp_path / "landing"
    with private_broker(tmp_path / "broker") as broker:
        env = live_env(tmp_path, landing, grid_url, broker.port, prefix)
        watcher = Subscriber(broker.port, prefix)
        with running_receiver(landing) as (base, _), httpx.Client(base_url=base, headers=auth()) as client:
            with running_live(env, tmp_path / "live.log") as service:
                t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
                burst = []
                for i in range(10):  # T2's two meters start and stop; T1's four start one by one and stay
                    at = t0 + timedelta(minutes=10 * i)
                    for meter in ("M5", "M6"):
                        burst.append(
                            start_record(meter, at, 6500)
                            if i % 2 == 0
                            else end_record(meter, at - timedelta(minutes=10), at, 900)
                        )
                    if i in (2, 4, 6, 8):
                        burst.append(start_record(f"M{i // 2}", at, 6500))
                for n, record in enumerate(burst, 1):
                    push(client, record)
                    if n == 12:
                        service.kill()  # mid-burst, whatever it was doing
                service.start()
                with sqlite3.connect(tmp_path / "live" / "live.sqlite") as state_db:
                    deadline = time.monotonic() + 20
                    while state_db.execute("SELECT count(*) FROM live_files").fetchone()[0] < len(burst):
                        assert time.monotonic() < deadline, "the restarted service did not read every file"
                        time.sleep(0.1)
                watcher.wait_for(lambda ms: len({m["body"]["EventID"] for m in watcher.events()}) == len(burst), 10)
        expected, sessions = session_table_open_kw(landing, grid_url)
        assert expected == {"T1": pytest.approx(26.0)}
        late = Subscriber(broker.port, prefix)
        try:
            late.wait_for(lambda ms: late.of("T1", "state") and late.of("T2", "state") and late.of("T1", "alert"), 5)
            for transformer in ("T1", "T2"):
                state = late.of(transformer, "state")[-1]["body"]
                assert state["EVkW"] == pytest.approx(expected.get(transformer, 0.0)), transformer
            assert late.of("T1", "state")[-1]["body"]["ActiveEVs"] == 4
            assert late.of("T1", "alert")[-1]["body"]["Active"] is True
        finally:
            late.close()
        # Nothing lost; each end as its session row says; T1's overload is one alert.
        published = {m["body"]["EventID"] for m in watcher.events()}
        stored = set(sessions["start_message_id"].drop_nulls()) | set(sessions["end_message_id"].drop_nulls())
        assert published == stored and len(published) == len(burst)
        ends = {m["body"]["EventID"]: m["body"] for m in watcher.events() if m["body"]["MessageType"] == "end"}
        for row in sessions.filter(pl.col("end_message_id").is_not_null()).iter_rows(named=True):
            end = ends[row["end_message_id"]]
            assert end["SessionID"] == row["session_id"] and float(end["SessionEnergy"]) == row["energy_wh"]
            assert end["SessionStartTime"] == spec_time(row["start_time"]) and end["SessionStatus"] == row["status"]
            assert end["SessionEndTime"] == spec_time(row["end_time"])
        assert {a["AlertID"] for a in alerts_of(watcher, "T1")} == {alerts_of(watcher, "T1")[0]["AlertID"]}
        assert all(a["Active"] for a in alerts_of(watcher, "T1"))
        watcher.close()


def wait_until_delivered(state_path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with sqlite3.connect(state_path) as state_db:
        while True:
            (last,) = state_db.execute("SELECT max(sequence) FROM live_outbox").fetchone()
            row = state_db.execute("SELECT sequence FROM live_cursors WHERE consumer = 'mqtt'").fetchone()
            if row and row[0] == last:
                return
            assert time.monotonic() < deadline, (row, last)
            time.sleep(0.05)


def test_a_restart_republishes_the_retained_states_to_a_broker_that_lost_them(grid_url, prefix, tmp_path):
    """The broker restarts empty (no persistence) while the live service is down: once the service
    is back, a subscriber that connects sees T1's state and alert again, from the state file alone."""
    landing = tmp_path / "landing"
    with private_broker(tmp_path / "broker", persistence=False) as broker:
        env = live_env(tmp_path, landing, grid_url, broker.port, prefix)
        with running_receiver(landing) as (base, _), httpx.Client(base_url=base, headers=auth()) as client:
            with running_live(env, tmp_path / "live.log"):
                at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
                push(client, *(start_record(m, at, 8000) for m in ("M1", "M2", "M3")))
                first = Subscriber(broker.port, prefix)
                first.wait_for(lambda ms: first.of("T1", "alert") and first.of("T1", "state"), 5)
                first.close()
                wait_until_delivered(tmp_path / "live" / "live.sqlite")  # nothing left to send again
            broker.stop()
            broker.start()  # empty: no retained message survived
            empty = Subscriber(broker.port, prefix)
            time.sleep(0.5)
            assert empty.snapshot() == []
            empty.close()
            with running_live(env, tmp_path / "live.log"):
                wait_until_delivered(tmp_path / "live" / "live.sqlite")
                late = Subscriber(broker.port, prefix)  # after the republish: what it gets is retained
                late.wait_for(lambda ms: late.of("T1", "alert") and late.of("T1", "state"), 5)
                state, alert = late.of("T1", "state")[-1], late.of("T1", "alert")[-1]
                assert state["retain"] and state["body"]["EVkW"] == 24.0 and state["body"]["ActiveEVs"] == 3
                assert alert["retain"] and alert["body"]["Active"] is True
                assert alert["body"]["AlertID"] == first.of("T1", "alert")[0]["body"]["AlertID"]  # the same alert
                late.close()


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that answers the first request 500, then checks the HMAC."""

    def __init__(self, secret: str):
        self.secret = secret
        self.requests: list[tuple[int, bytes, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(outer.secret.encode(), body, hashlib.sha256).hexdigest()
                valid = hmac.compare_digest(self.headers.get(SIGNATURE_HEADER, ""), expected)
                status = 500 if not outer.requests else (200 if valid else 401)
                outer.requests.append((status, body, dict(self.headers)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_webhook_is_signed_and_retried_after_a_500(grid_url, prefix, tmp_path):
    landing = tmp_path / "landing"
    secret = "webhook-secret-for-the-test"
    hook = WebhookReceiver(secret)
    with private_broker(tmp_path / "broker") as broker:
        env = live_env(
            tmp_path,
            landing,
            grid_url,
            broker.port,
            prefix,
            EV_LIVE_WEBHOOK_URLS=hook.url,
            EV_LIVE_WEBHOOK_SECRET=secret,
        )
        with (
            running_receiver(landing) as (base, _),
            httpx.Client(base_url=base, headers=auth()) as client,
            running_live(env, tmp_path / "live.log"),
        ):
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
            push(client, start_record("M6", start, 7000))
            deadline = time.monotonic() + 10
            while len([r for r in hook.requests if r[0] == 200]) < 2:  # the start and T2's state
                assert time.monotonic() < deadline, hook.requests
                time.sleep(0.05)
    hook.close()
    (first_status, first_body, _), (second_status, second_body, headers) = hook.requests[:2]
    assert (first_status, second_status) == (500, 200)
    assert second_body == first_body  # the same message again, after the 500
    assert headers[SIGNATURE_HEADER] == signature(secret, second_body)
    delivered = [json.loads(body) for status, body, _ in hook.requests if status == 200]
    assert [d["Sequence"] for d in delivered] == sorted(d["Sequence"] for d in delivered)
    assert delivered[0]["Message"]["EventID"].startswith("M6|start|") and delivered[0]["Topic"].endswith("/T2/events")
    assert delivered[1]["Kind"] == "state" and delivered[1]["Message"]["EVkW"] == 7.0
    assert all(status in (200, 500) for status, _, _ in hook.requests)  # never a bad signature
