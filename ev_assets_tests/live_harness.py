"""Real processes for the live tests and the live benchmark: a private Mosquitto, the live service
(`ev-awareness live`) in a subprocess, an MQTT 5 subscriber, and hand-made agent records."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ev_assets.core.reference_extracts import read_reference_extracts
from ev_assets.warehouse import migrate

from .receiver_server import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
SHARED_BROKER_PORT = 1883

# The hand-made grid: T1 (25 kVA) feeds M1..M4, T2 (50 kVA) feeds M5..M6, both on feeder F1 of S1.
GRID_METERS = {"M1": "T1", "M2": "T1", "M3": "T1", "M4": "T1", "M5": "T2", "M6": "T2"}
RATINGS = {"T1": 25.0, "T2": 50.0}


def reference_warehouse(folder: Path, url: str | None = None) -> str:
    """A warehouse at the code's schema (SQLite in `folder` unless `url`) with the hand-made grid
    as its reference data, loaded by the pipeline's reference step from a minimal extract."""
    from ev_assets import pipeline
    from ev_assets.warehouse.store import Warehouse

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["meter_id,transformer_id,feeder_id,substation_id,kva_rating"]
    lines += [f"{m},{t},F1,S1,{RATINGS[t]}" for m, t in GRID_METERS.items()]
    (folder / "meters.csv").write_text("\n".join(lines) + "\n")
    url = url or f"sqlite:///{folder / 'ev.sqlite'}"
    migrate.upgrade(url)
    warehouse = Warehouse(url)
    try:
        pipeline.load_reference(warehouse, read_reference_extracts(folder), pipeline.PipelineSettings())
    finally:
        warehouse.dispose()
    return url


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class Broker:
    """A private Mosquitto on a free port, with persistence (so a subscriber's session and its
    queued QoS 1 messages survive the broker's restart, as a production broker's do)."""

    def __init__(self, folder: Path, persistence: bool = True):
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            # Mosquitto drops QoS 1 messages for a subscriber with more than 1,000 queued (its
            # default): a slow subscriber in a burst would lose messages the publisher delivered.
            "max_queued_messages 0\n"
            + (f"persistence true\npersistence_location {folder}/\n" if persistence else "persistence false\n")
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # mosquitto saves its persistence file on SIGTERM
            self.process.wait(10)
        self.process = None


@contextmanager
def private_broker(folder: Path, persistence: bool = True):
    broker = Broker(folder, persistence)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class CuttableProxy:
    """A TCP proxy on a free port in front of the broker whose link can be cut mid-flight: `cut`
    drops every byte in both directions for `hold_s` (PUBLISH packets and PUBACKs in flight are
    lost, as in a network partition), then closes the connections."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.blackhole = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.blackhole.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def cut(self, hold_s: float) -> None:
        self.blackhole.set()
        time.sleep(hold_s)
        with self.lock:
            doomed, self.sockets = self.sockets, []
        for s in doomed:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.blackhole.clear()

    def close(self) -> None:
        self.listener.close()
        self.cut(0)


class Subscriber:
    """An MQTT 5 subscriber to `<prefix>/#`, QoS 1, keeping every message with its arrival time.
    `persistent`: a session that outlives a disconnect (clean start only the first time, session
    expiry one hour), as a control system subscribes to miss nothing while it or the broker is away."""

    def __init__(self, port: int, prefix: str, *, persistent: bool = False):
        self.messages: list[dict] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.prefix = prefix
        client_id = f"test-sub-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_args: self.subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.client.connect("127.0.0.1", port, keepalive=5, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("subscriber did not subscribe")

    def _on_connect(self, client, _userdata, flags, _reason_code, _properties):
        if not flags.session_present:
            client.subscribe(f"{self.prefix}/#", qos=1)
        else:
            self.subscribed.set()

    def _on_message(self, _client, _userdata, message):
        payload = json.loads(message.payload) if message.payload else None
        with self.lock:
            self.messages.append(
                {"at": time.monotonic(), "topic": message.topic, "retain": message.retain, "body": payload}
            )

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.messages)

    def wait_for(self, predicate, timeout: float = 10.0) -> list[dict]:
        """Wait until predicate(messages) holds; return the messages (raises on time-out)."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.snapshot()
            if predicate(messages):
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; {len(messages)} messages: {[m['topic'] for m in messages][-20:]}")
            time.sleep(0.02)

    def events(self) -> list[dict]:
        return [m for m in self.snapshot() if m["topic"].endswith("/events")]

    def of(self, transformer_id: str, leaf: str) -> list[dict]:
        topic = f"{self.prefix}/transformer/{transformer_id}/{leaf}"
        return [m for m in self.snapshot() if m["topic"] == topic]

    def close(self, clear_retained: bool = False) -> None:
        if clear_retained:  # leave no retained message behind on a shared broker
            for topic in {m["topic"] for m in self.snapshot() if not m["topic"].endswith("/events")}:
                self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()


class LiveProcess:
    """`ev-awareness live` in a subprocess; its log in a file (read when a test fails)."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path = env, log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ev_assets.cli", "live"],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while "live: following" not in self.log_path.read_bytes()[offset:].decode(errors="replace"):
            if self.process.poll() is not None:
                raise RuntimeError(f"live service exited: {self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"live service did not start: {self.log()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def live_env(tmp: Path, landing: Path, warehouse_url: str, port: int, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "EV_FEED_DIR": str(landing),
        "EV_LIVE_STATE_PATH": str(tmp / "live" / "live.sqlite"),
        "EV_WAREHOUSE_URL": warehouse_url,
        "EV_TIMEZONE": "America/New_York",
        "EV_MQTT_HOST": "127.0.0.1",
        "EV_MQTT_PORT": str(port),
        "EV_MQTT_TOPIC_PREFIX": prefix,
        "EV_MQTT_CLIENT_ID": f"live-{prefix}",
        "EV_LIVE_POLL_INTERVAL_S": "0.1",
        # A flat base load of 0.2 pu: alert thresholds a test can compute, whatever the hour.
        "EV_BASE_LOAD_PU_PROFILE": ",".join(["0.2"] * 24),
        "EV_LIVE_ALERT_HYSTERESIS": "0.1",
        **extra,
    }


@contextmanager
def running_live(env: dict[str, str], log_path: Path):
    live = LiveProcess(env, log_path)
    live.start()
    try:
        yield live
    finally:
        live.terminate()


def spec_time(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def start_record(meter: str, at: datetime, charge_w: float) -> dict:
    return {
        "MeterID": meter,
        "TransformerID": GRID_METERS.get(meter, "T9"),
        "ReceivedTime": spec_time(at + timedelta(seconds=1)),
        "ChargeStartTime": spec_time(at),
        "ChargeW": f"{charge_w:g}",
    }


def end_record(meter: str, start: datetime, end: datetime, energy_wh: float) -> dict:
    return {
        "MeterID": meter,
        "TransformerID": GRID_METERS.get(meter, "T9"),
        "ReceivedTime": spec_time(end + timedelta(seconds=1)),
        "ChargeEndTime": spec_time(end),
        "ChargeDuration": f"{(end - start).total_seconds() / 3600:.4f}",
        "ChargeEnergy": f"{energy_wh:g}",
    }


def payload(*records: dict) -> bytes:
    return json.dumps({"EVChargingEvents": list(records)}).encode()
