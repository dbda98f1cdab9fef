"""Live path: receiver acknowledgement -> MQTT message, over real processes on 127.0.0.1.

Starts a private Mosquitto, the receiver (`ev-awareness receive`) and the live service
(`ev-awareness live`), and a subscriber to `<prefix>/#`:

1. latency: a burst of --burst payloads (one start each, sent back to back over one HTTP
   connection); per payload, the time from its 202 to the subscriber's receipt of its start event
   (p50, p95, max);
2. throughput: --payloads payloads of --per-payload records from --clients concurrent senders, as
   fast as the receiver takes them; events per second from the first push to the last event at the
   subscriber (receiver -> landing -> live -> broker -> subscriber).

    .venv/bin/python bench/live_bench.py [--burst 50] [--payloads 500] [--per-payload 10] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ev_assets_tests.live_harness import (  # noqa: E402
    Subscriber,
    end_record,
    live_env,
    payload,
    private_broker,
    reference_warehouse,
    running_live,
    start_record,
)
from ev_assets_tests.receiver_server import auth, running_receiver  # noqa: E402

JSON = {"Content-Type": "application/json"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def event_id(meter: str, kind: str, at: datetime) -> str:
    return f"{meter}|{kind}|{at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')}Z"


def latency(client: httpx.Client, subscriber: Subscriber, burst: int, t0: datetime) -> dict:
    acked: dict[str, float] = {}
    for i in range(burst):
        at = t0 + timedelta(seconds=i)
        meter = f"L{i}"
        response = client.post("/ev-charging-events", content=payload(start_record(meter, at, 7000)), headers=JSON)
        assert response.status_code == 202, response.text
        acked[event_id(meter, "start", at)] = time.monotonic()
    received = subscriber.wait_for(
        lambda ms: acked.keys() <= {m["body"]["EventID"] for m in ms if m["topic"].endswith("/events")}, 60
    )
    first = {}
    for m in received:
        if m["topic"].endswith("/events"):
            first.setdefault(m["body"]["EventID"], m["at"])
    seconds = [first[eid] - acked[eid] for eid in acked]
    return {
        "payloads": burst,
        "p50_s": round(percentile(seconds, 0.5), 3),
        "p95_s": round(percentile(seconds, 0.95), 3),
        "max_s": round(max(seconds), 3),
    }


def throughput(base: str, subscriber: Subscriber, payloads: int, per_payload: int, clients: int, t0) -> dict:
    # Meters T-xx-nn report transformer T-xx (unknown to the reference: published as reported);
    # each meter starts, then ends 5 minutes later, then starts again...
    bodies = []
    expected = set()
    for p in range(payloads):
        records = []
        for r in range(per_payload):
            n = p * per_payload + r
            meter = f"Q{n % 2000}"
            round_ = n // 2000
            at = t0 + timedelta(minutes=10 * round_)
            if round_ % 2 == 0:
                record = start_record(meter, at, 7000)
                expected.add(event_id(meter, "start", at))
            else:
                record = end_record(meter, at - timedelta(minutes=10), at, 1000)
                expected.add(event_id(meter, "end", at))
            record["TransformerID"] = f"X{n % 2000 // 20}"
            records.append(record)
        bodies.append(payload(*records))
    shares = [bodies[i::clients] for i in range(clients)]
    before = len(subscriber.snapshot())

    def send(share: list[bytes]) -> None:
        with httpx.Client(base_url=base, headers=auth()) as client:
            for body in share:
                response = client.post("/ev-charging-events", content=body, headers=JSON)
                assert response.status_code == 202, response.text

    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pushed = time.monotonic()
    received = subscriber.wait_for(
        lambda ms: len({m["body"]["EventID"] for m in ms[before:] if m["topic"].endswith("/events")}) >= len(expected),
        120,
    )
    done = max(m["at"] for m in received[before:] if m["topic"].endswith("/events"))
    got = {m["body"]["EventID"] for m in received[before:] if m["topic"].endswith("/events")}
    assert got == expected, (len(got), len(expected))
    seconds = done - started
    all_messages = len(received) - before
    return {
        "payloads": payloads,
        "records": len(expected),
        "clients": clients,
        "push_s": round(pushed - started, 2),
        "last_event_s": round(seconds, 2),
        "events_per_s": round(len(expected) / seconds, 1),
        "payloads_per_s": round(payloads / seconds, 1),
        "messages_per_s": round(all_messages / seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--payloads", type=int, default=500)
    parser.add_argument("--per-payload", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--keep", help="work in this folder and keep it (the live log, the state file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="live-bench-") as scratch:
        folder = args.keep or scratch
        tmp = Path(folder)
        grid_url = reference_warehouse(tmp / "grid")
        landing = tmp / "landing"
        prefix = f"evbench{uuid.uuid4().hex[:6]}"
        with private_broker(tmp / "broker") as broker:
            subscriber = Subscriber(broker.port, prefix)
            env = live_env(tmp, landing, grid_url, broker.port, prefix)
            with running_receiver(landing) as (base, _), running_live(env, tmp / "live.log"):
                t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
                with httpx.Client(base_url=base, headers=auth()) as client:
                    results = {"latency": latency(client, subscriber, args.burst, t0)}
                results["throughput"] = throughput(
                    base, subscriber, args.payloads, args.per_payload, args.clients, t0 + timedelta(minutes=1)
                )
            subscriber.close()
    results["load_average_1m"] = round(os.getloadavg()[0], 1)  # the machine's 2 cores are shared
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
