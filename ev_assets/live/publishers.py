"""The outbox's readers: the MQTT publisher and one webhook sender per URL, each in its own
thread with its own cursor (live_cursors), so a slow webhook never holds up the broker.

Delivery is at least once, in sequence order (so in order per transformer): a reader's cursor
moves past a message only once it is delivered (MQTT: the broker's PUBACK; a webhook: a 2xx), and
after a disconnect, a crash or a restart it sends again everything after its cursor. A consumer
deduplicates on Sequence, or on EventID / AlertID.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ev_assets.live.store import MQTT_CURSOR, LiveStore, OutboxRow, webhook_cursor

log = logging.getLogger("ev_assets.live")

SIGNATURE_HEADER = "X-EV-Signature"
# How long a stopping publisher waits for the PUBACKs of messages in flight, s.
STOP_GRACE_S = 2.0
SEQUENCE_HEADER = "X-EV-Sequence"


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "ev-awareness-live"
    username: str = ""
    password: str = ""
    # Messages sent and not yet acknowledged, at most: enough to fill the round trip at burst rates.
    window: int = 200
    keepalive_s: int = 10
    connect_timeout_s: float = 5.0
    max_backoff_s: float = 2.0


class MqttPublisher(threading.Thread):
    """Publishes the outbox in sequence order, QoS 1, retained where the message says; the cursor
    moves to a sequence only when it and every message before it have their PUBACK.

    Each connection is a new paho client with a clean start: paho's own queue never re-sends
    anything behind this thread's back, so what goes out after a reconnect is exactly the outbox
    after the cursor, in order."""

    def __init__(self, state_path: Path, config: MqttConfig, wake: threading.Event, stop: threading.Event):
        super().__init__(name="live-mqtt", daemon=True)
        self.state_path, self.config, self.wake, self.stop = state_path, config, wake, stop
        self.connected = threading.Event()

    def run(self) -> None:
        store = LiveStore(self.state_path)
        backoff = 0.2
        try:
            while not self.stop.is_set():
                client, acks = self._connect()
                if client is None:
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, self.config.max_backoff_s)
                    continue
                backoff = 0.2
                try:
                    self._pump(store, client, acks)
                finally:
                    self.connected.clear()
                    client.disconnect()
                    client.loop_stop()
        finally:
            store.close()

    def _connect(self) -> tuple[mqtt.Client | None, queue.Queue]:
        acks: queue.Queue = queue.Queue()
        cfg = self.config
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=False
        )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        client.max_inflight_messages_set(cfg.window)
        up = threading.Event()

        def on_connect(_client, _userdata, _flags, reason_code, _properties):
            if not reason_code.is_failure:
                up.set()
            else:
                log.error("MQTT broker refused the connection: %s", reason_code)

        def on_disconnect(_client, _userdata, _flags, reason_code, _properties):
            if self.connected.is_set():
                log.warning(
                    "MQTT broker %s:%s disconnected (%s): messages wait in the outbox", cfg.host, cfg.port, reason_code
                )
            self.connected.clear()
            acks.put(None)  # wakes the pump

        def on_publish(_client, _userdata, mid, reason_code, _properties):
            # Never block here (paho holds its locks): the pump maps mids to sequences.
            acks.put((mid, reason_code.is_failure, str(reason_code)))

        client.on_connect, client.on_disconnect, client.on_publish = on_connect, on_disconnect, on_publish
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=True)
        except OSError as exc:
            log.debug("MQTT broker %s:%s unreachable: %s", cfg.host, cfg.port, exc)
            return None, acks
        client.loop_start()
        if not up.wait(cfg.connect_timeout_s):
            client.loop_stop()
            return None, acks
        self.connected.set()
        log.info("MQTT connected to %s:%s", cfg.host, cfg.port)
        return client, acks

    def _pump(self, store: LiveStore, client: mqtt.Client, acks: queue.Queue) -> None:
        cursor = store.cursor(MQTT_CURSOR)
        last_sent = cursor
        in_flight: dict[int, int] = {}  # mid -> sequence
        early: set[int] = set()  # mids acknowledged before their publish() returned
        sent: deque[int] = deque()  # sequences in flight, in order
        acked: set[int] = set()
        stopping_since: float | None = None
        while self.connected.is_set():
            while True:
                try:
                    ack = acks.get_nowait()
                except queue.Empty:
                    break
                if ack is None:
                    continue
                mid, failed, reason = ack
                if failed:
                    # The broker refused a message: stop here, in order, and try again after a reconnect.
                    log.error("MQTT broker refused message %s: %s", in_flight.get(mid), reason)
                    return
                if mid in in_flight:
                    acked.add(in_flight.pop(mid))
                else:
                    early.add(mid)
            moved = cursor
            while sent and sent[0] in acked:
                cursor = sent.popleft()
                acked.discard(cursor)
            if cursor != moved:
                store.set_cursor(MQTT_CURSOR, cursor)
            if self.stop.is_set():
                # Stopping: send nothing more, but record the PUBACKs still on their way (for a
                # moment), so a restart does not send those messages again.
                stopping_since = stopping_since or time.monotonic()
                if not sent or time.monotonic() - stopping_since > STOP_GRACE_S:
                    return
                time.sleep(0.02)
                continue
            room = self.config.window - len(sent)
            rows = store.outbox_after(last_sent, room) if room > 0 else []
            for row in rows:
                info = client.publish(row.topic, row.payload, qos=1, retain=row.retain, properties=_properties(row))
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    return  # not connected any more: the pump ends, the outbox keeps the rest
                sent.append(row.sequence)
                last_sent = row.sequence
                if info.mid in early:
                    early.discard(info.mid)
                    acked.add(row.sequence)
                else:
                    in_flight[info.mid] = row.sequence
            if not rows:
                # Nothing new to send: wait for the processor (wake) or an ack (queue).
                self.wake.wait(0.05)
                self.wake.clear()


def _properties(row: OutboxRow) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    props.UserProperty = [("sequence", str(row.sequence))] + ([("event_id", row.event_id)] if row.event_id else [])
    return props


def signature(secret: str, body: bytes) -> str:
    """The webhook signature header's value: `sha256=` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(row: OutboxRow) -> bytes:
    return json.dumps(
        {
            "Topic": row.topic,
            "Sequence": row.sequence,
            "Kind": row.kind,
            "Retain": row.retain,
            "Message": json.loads(row.payload),
        },
        separators=(",", ":"),
    ).encode()


class WebhookSender(threading.Thread):
    """POSTs each outbox message (not the states republished at a start: a webhook keeps no
    retained state to restore) to one URL, in sequence order; a failure (no answer, not 2xx) is
    retried after 0.5 s, 1 s, 2 s ... up to `max_backoff_s`, and nothing after it goes first."""

    def __init__(
        self,
        state_path: Path,
        url: str,
        secret: str,
        max_backoff_s: float,
        wake: threading.Event,
        stop: threading.Event,
        timeout_s: float = 5.0,
    ):
        super().__init__(name=f"live-webhook-{url}", daemon=True)
        self.state_path, self.url, self.secret, self.max_backoff_s = state_path, url, secret, max_backoff_s
        self.wake, self.stop, self.timeout_s = wake, stop, timeout_s
        self.consumer = webhook_cursor(url)
        self.attempts = 0

    def run(self) -> None:
        store = LiveStore(self.state_path)
        try:
            with httpx.Client(timeout=self.timeout_s) as http:
                cursor = store.cursor(self.consumer)
                while not self.stop.is_set():
                    rows = store.outbox_after(cursor, 100, include_republished=False)
                    if not rows:
                        self.wake.wait(0.2)
                        self.wake.clear()
                        continue
                    for row in rows:
                        if not self._deliver(http, row):
                            return  # stopping
                        cursor = row.sequence
                        store.set_cursor(self.consumer, cursor)
        finally:
            store.close()

    def _deliver(self, http: httpx.Client, row: OutboxRow) -> bool:
        body = webhook_body(row)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.secret, body),
            SEQUENCE_HEADER: str(row.sequence),
        }
        delay = 0.5
        while not self.stop.is_set():
            self.attempts += 1
            try:
                response = http.post(self.url, content=body, headers=headers)
                if response.is_success:
                    return True
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            log.warning(
                "webhook %s: message %d not delivered (%s); again in %.1f s", self.url, row.sequence, problem, delay
            )
            self.stop.wait(delay)
            delay = min(delay * 2, self.max_backoff_s)
        return False
