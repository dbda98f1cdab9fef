"""Receiver throughput on loopback: `ev-awareness receive` in a subprocess on 127.0.0.1, one httpx
client posting JSON payloads of N messages each, one after the other (each answer means the
payload is durable: fsync of the file and of the folder), keep-alive.

    uv run python bench/receiver_bench.py [--per-payload 10 100] [--payloads 1000] [--format json|avro]

Prints payloads/s and messages/s per payload size. The landing folder is a temporary folder
(removed afterwards); the receiver's rate limit is off.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ev_assets.receiver.auth import token_hash  # noqa: E402
from ev_assets.synthetic import push  # noqa: E402

TOKEN = "bench-token-0123456789"


def records(n: int, offset: int) -> list[dict]:
    """n start/end messages as the stream sends them (numbers as strings)."""
    t0 = datetime(2024, 6, 3, 18, tzinfo=UTC) + timedelta(seconds=offset)
    out = []
    for i in range(n):
        start = t0 + timedelta(seconds=i)
        out.append(
            {
                "ServicePointID": f"SP{i:06d}",
                "MeterID": f"M{offset + i:09d}",
                "MeterNumber": f"N{i}",
                "ESN": f"E{i}",
                "TransformerID": f"T{i % 500:05d}",
                "PremiseID": f"P{i:06d}",
                "ReceivedTime": (start + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "ChargeStartTime": start.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "ChargeW": "7200",
            }
        )
    return out


def wait_ready(base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"receiver exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit("receiver did not start")


def measure(per_payload: int, count: int, fmt: str, port: int) -> dict:
    with tempfile.TemporaryDirectory(dir=ROOT / "data") as landing:
        env = {
            **os.environ,
            "EV_FEED_DIR": landing,
            "EV_RECEIVER_TOKEN_SHA256S": token_hash(TOKEN),
            "EV_RECEIVER_RATE_PER_S": "0",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "ev_assets.cli", "receive", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, process)
            bodies = [push.encode(records(per_payload, n * per_payload), fmt) for n in range(count)]
            with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
                for body, content_type in bodies[:20]:  # warm-up
                    client.post(
                        f"{base}/ev-charging-events", content=body, headers={"Content-Type": content_type}
                    ).raise_for_status()
                started = time.perf_counter()
                for body, content_type in bodies:
                    client.post(
                        f"{base}/ev-charging-events", content=body, headers={"Content-Type": content_type}
                    ).raise_for_status()
                seconds = time.perf_counter() - started
            landed = len(list(Path(landing).glob("stream-*.json")))
        finally:
            process.kill()
            process.wait(10)
            process.stderr.close()
    assert landed == count + 20, landed
    return {
        "per_payload": per_payload,
        "payloads": count,
        "seconds": round(seconds, 2),
        "payloads_per_s": round(count / seconds),
        "messages_per_s": round(count * per_payload / seconds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-payload", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--payloads", type=int, default=1000)
    parser.add_argument("--format", choices=["json", "avro"], default="json")
    parser.add_argument("--port", type=int, default=18181)
    args = parser.parse_args()
    (ROOT / "data").mkdir(exist_ok=True)
    results = [measure(n, args.payloads, args.format, args.port) for n in args.per_payload]
    print(json.dumps({"format": args.format, "cpus": os.cpu_count(), "results": results}, indent=1))
    print("\n| messages per payload | payloads/s | messages/s |\n|---|---|---|")
    for r in results:
        print(f"| {r['per_payload']} | {r['payloads_per_s']:,} | {r['messages_per_s']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
