"""Events API latency: "the events of 100 transformers over one day", p50/p95 over real HTTP.

Builds a large warehouse directly (frames of events and their paired sessions, bulk-inserted through
`Warehouse.insert`: the pipeline would take hours for millions of sessions), starts `ev-awareness serve`
on 127.0.0.1 and times GET /v1/ev-charging-events with EntityType=Transformer, 100 EntityIds and a
one-day event window (the session's start), each request a different day and set of transformers.

    .venv/bin/python bench/api_bench.py --sessions 1000000 --url sqlite:////tmp/api_bench.db
    .venv/bin/python bench/api_bench.py --sessions 1000000 --url postgresql+psycopg://postgres@127.0.0.1:5432/api_bench

The database named by --url is emptied and rebuilt (a PostgreSQL database is created when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import sqlalchemy as sa

from ev_assets.warehouse import migrate
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, EV_CHARGING_SESSIONS

METERS_PER_TRANSFORMER = 10
FIRST_DAY = date(2024, 1, 1)


def fresh_database(url: str) -> None:
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        server, name = url.rsplit("/", 1)
        admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    migrate.upgrade(url)


def history(sessions: int, meters: int, days: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Paired sessions and their start and end events: each meter charges on random days at a random hour."""
    rng = pl.int_range(0, sessions, eager=True)
    start = datetime.combine(FIRST_DAY, datetime.min.time(), UTC)
    frame = pl.DataFrame({"n": rng}).with_columns(
        meter_n=(pl.col("n") * 7919 + seed) % meters,
        day=(pl.col("n").hash(seed) % days).cast(pl.Int64),
        minute=(pl.col("n").hash(seed + 1) % 1440).cast(pl.Int64),
        duration_min=(pl.col("n").hash(seed + 2) % 480 + 30).cast(pl.Int64),
        charge_w=pl.lit(7200.0),
    )
    frame = frame.with_columns(
        meter_id=pl.format("M{}", pl.col("meter_n").cast(pl.String).str.zfill(7)),
        transformer_id=pl.format("T{}", (pl.col("meter_n") // METERS_PER_TRANSFORMER).cast(pl.String).str.zfill(6)),
        feeder_id=pl.format("F{}", (pl.col("meter_n") // 2000).cast(pl.String)),
        substation_id=pl.format("S{}", (pl.col("meter_n") // 20000).cast(pl.String)),
        start_time=pl.lit(start) + pl.duration(days=pl.col("day"), minutes=pl.col("minute"), seconds=pl.col("n") % 60),
    ).with_columns(
        end_time=pl.col("start_time") + pl.duration(minutes=pl.col("duration_min")),
        service_point_id=pl.format("SP{}", pl.col("meter_id")),
        premise_id=pl.format("P{}", pl.col("meter_id")),
        meter_key=pl.col("meter_n"),
        enrichment_status=pl.lit("enriched"),
    )
    iso = "%Y-%m-%dT%H:%M:%S%.6fZ"
    frame = frame.with_columns(
        session_id=pl.col("meter_id") + "|" + pl.col("start_time").dt.strftime(iso),
        start_message_id=pl.col("meter_id") + "|start|" + pl.col("start_time").dt.strftime(iso),
        end_message_id=pl.col("meter_id") + "|end|" + pl.col("end_time").dt.strftime(iso),
    ).unique("session_id")  # a meter may draw the same minute twice: one session
    attribution = ["meter_key", "service_point_id", "premise_id", "transformer_id", "feeder_id", "substation_id"]
    now = datetime.now(UTC)
    sessions_frame = frame.with_columns(
        status=pl.lit("complete"),
        event_date=pl.col("start_time").dt.date(),
        duration_h=pl.col("duration_min") / 60,
        energy_wh=pl.col("charge_w") * pl.col("duration_min") / 60,
        average_kw=pl.col("charge_w") / 1000,
        reported_duration=pl.col("duration_min") / 60,
        updated_at=pl.lit(now),
        enrichment_status=pl.lit("enriched"),
    )
    sessions_frame = with_nulls(sessions_frame, EV_CHARGING_SESSIONS).sort("session_id")

    def events_of(kind: str, time_column: str) -> pl.DataFrame:
        return frame.select(
            *attribution,
            message_id=pl.col(f"{kind}_message_id"),
            message_type=pl.lit(kind),
            meter_id="meter_id",
            meter_number=pl.col("meter_id"),
            esn=pl.col("meter_id"),
            enrichment_status="enrichment_status",
            message_time=pl.col(time_column),
            message_date=pl.col(time_column).dt.date(),
            received_time=pl.col(time_column) + pl.duration(seconds=5),
            charge_start_time=pl.col("start_time") if kind == "start" else pl.lit(None, pl.Datetime("us", "UTC")),
            charge_end_time=pl.col("end_time") if kind == "end" else pl.lit(None, pl.Datetime("us", "UTC")),
            charge_w=pl.col("charge_w") if kind == "start" else pl.lit(None, pl.Float64),
            charge_duration=(pl.col("duration_min") / 60) if kind == "end" else pl.lit(None, pl.Float64),
            charge_energy_wh=(pl.col("charge_w") * pl.col("duration_min") / 60)
            if kind == "end"
            else pl.lit(None, pl.Float64),
            batch_id=pl.format("bench-{}", pl.col("day")),
            file_name=pl.lit("bench.json"),
            first_channel=pl.lit("folder"),
            record_index=pl.col("n"),
            ingested_at=pl.lit(now),
        )

    events = pl.concat([events_of("start", "start_time"), events_of("end", "end_time")])
    return with_nulls(events, EV_CHARGING_EVENTS).unique("message_id").sort("message_id"), sessions_frame


def with_nulls(frame: pl.DataFrame, spec) -> pl.DataFrame:
    missing = [pl.lit(None, c.dtype).alias(c.name) for c in spec.columns if c.name not in frame.columns]
    return spec.conform(frame.with_columns(missing))


def load(url: str, sessions: int, meters: int, days: int) -> dict:
    fresh_database(url)
    warehouse = Warehouse(url)
    began = time.monotonic()
    events, sessions_frame = history(sessions, meters, days, seed=5)
    built = time.monotonic()
    for spec, frame in ((EV_CHARGING_SESSIONS, sessions_frame), (EV_CHARGING_EVENTS, events)):
        for offset in range(0, frame.height, 200_000):
            with warehouse.transaction() as conn:
                warehouse.insert(conn, spec, frame.slice(offset, 200_000))
    with warehouse.engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
        conn.commit()
    warehouse.dispose()
    return {
        "sessions": sessions_frame.height,
        "events": events.height,
        "build_s": round(built - began, 1),
        "insert_s": round(time.monotonic() - built, 1),
    }


def measure(url: str, meters: int, days: int, requests: int) -> dict:
    port = 18000 + random.randrange(1000)
    env = {**os.environ, "EV_WAREHOUSE_URL": url, "EV_API_KEY_SHA256S": ""}
    server = subprocess.Popen(
        [sys.executable, "-m", "ev_assets.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        transformers = meters // METERS_PER_TRANSFORMER
        pick = random.Random(7)
        timings, counts = [], []
        with httpx.Client(base_url=base, timeout=60) as client:
            for n in range(requests + 3):  # the first 3 warm the server's connections and caches
                day = FIRST_DAY + timedelta(days=pick.randrange(days))
                ids = [f"T{t:06d}" for t in pick.sample(range(transformers), 100)]
                params = {
                    "EntityType": "Transformer",
                    "EntityId": ",".join(ids),
                    "StartEventDateTime": f"{day}T00:00:00Z",
                    "EndEventDateTime": f"{day + timedelta(days=1)}T00:00:00Z",
                    "PageSize": 10_000,
                }
                began = time.perf_counter()
                answer = client.get("/v1/ev-charging-events", params=params)
                elapsed = time.perf_counter() - began
                answer.raise_for_status()
                if n >= 3:
                    timings.append(elapsed * 1000)
                    counts.append(len(answer.json()["EVChargingEvents"]))
    finally:
        server.terminate()
        server.wait(10)
    quantiles = statistics.quantiles(timings, n=20)
    return {
        "requests": len(timings),
        "events_per_response_mean": round(statistics.mean(counts)),
        "p50_ms": round(statistics.median(timings), 1),
        "p95_ms": round(quantiles[18], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--meters", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--no-build", action="store_true", help="measure the warehouse already at --url")
    args = parser.parse_args()
    result = {"url": args.url.split("@")[-1], "meters": args.meters, "days": args.days}
    if not args.no_build:
        result |= load(args.url, args.sessions, args.meters, args.days)
    result |= measure(args.url, args.meters, args.days, args.requests)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
