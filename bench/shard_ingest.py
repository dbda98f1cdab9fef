"""Two ingest batches on disjoint write-lock shards (issue 29): serially, then in two processes at
once, on PostgreSQL. Measures what the shard-scoped lock alone gives (ingest only: pairing and the
daily load still take every shard).

    .venv/bin/python bench/shard_ingest.py [--meters N] [--messages N]

Each batch holds messages of the meters of one half of the shards (even / odd), so the two share
no lock. Wall time: serial = the two ingests' durations summed; parallel = first start to last
end. Both modes start from a fresh database with the reference loaded. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import feedgen  # noqa: E402
from run_bench import DATA, FreshWarehouse, fresh_dir  # noqa: E402


def _ingest(url: str, batch_id: str, paths: list[str], go, out) -> None:
    from ev_assets import pipeline
    from ev_assets.warehouse.store import Warehouse

    wh = Warehouse(url)
    wh.check_schema()
    settings = pipeline.PipelineSettings()
    wh.ensure_timezone(settings.timezone)
    go.wait()
    start = time.time()
    report = pipeline.ingest_batch(wh, batch_id, [Path(p) for p in paths], settings, now=feedgen.CONTRACT_NOW)
    out.put((batch_id, start, time.time(), report.accepted))
    wh.dispose()


def _run(url: str, batches: dict[str, list[str]], parallel: bool) -> dict:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    spans = []
    if parallel:
        go = ctx.Event()
        procs = [ctx.Process(target=_ingest, args=(url, b, p, go, out)) for b, p in batches.items()]
        for proc in procs:
            proc.start()
        time.sleep(8)  # both imported and connected before the start signal
        go.set()
        spans = [out.get() for _ in procs]
        for proc in procs:
            proc.join()
        wall = max(s[2] for s in spans) - min(s[1] for s in spans)
    else:
        for b, p in batches.items():
            go = ctx.Event()
            go.set()
            proc = ctx.Process(target=_ingest, args=(url, b, p, go, out))
            proc.start()
            spans.append(out.get())
            proc.join()
        wall = sum(s[2] - s[1] for s in spans)
    return {"wall_s": round(wall, 2), "per_batch_s": [round(s[2] - s[1], 2) for s in spans],
            "accepted": sum(s[3] for s in spans)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20_000, help="per batch")
    args = parser.parse_args()

    import polars as pl

    from ev_assets import pipeline
    from ev_assets.synthetic import utility
    from ev_assets.warehouse.store import Warehouse, shards_of
    from ev_assets.warehouse.tables import EV_CHARGING_EVENTS

    frames = utility.generate_utility(meters=args.meters, seed=7)
    folder = fresh_dir(DATA / "shard_ingest")
    meter_ids = frames["meters"]["meter_id"].unique().to_list()
    halves = {parity: [m for m in meter_ids if shards_of([m])[0] % 2 == parity] for parity in (0, 1)}
    batches = {}
    for parity, meters in halves.items():
        part = {**frames, "meters": frames["meters"].filter(pl.col("meter_id").is_in(meters))}
        msgs = feedgen.build_messages(part, args.messages, seed=7 + parity)
        paths = feedgen.write_files(msgs, folder / f"half{parity}", max(1, args.messages // 1000))
        batches[f"half{parity}"] = [str(p) for p in paths]
    result = {"meters": args.meters, "messages_per_batch": args.messages}
    for mode in ("serial", "parallel"):
        wh_db = FreshWarehouse("postgresql", folder)
        try:
            wh = Warehouse(wh_db.url)
            pipeline.load_reference(wh, frames, pipeline.PipelineSettings())
            wh.dispose()
            result[mode] = _run(wh_db.url, batches, parallel=mode == "parallel")
            wh = Warehouse(wh_db.url)
            result[mode]["events"] = wh.count(EV_CHARGING_EVENTS)
            wh.dispose()
        finally:
            wh_db.drop()
    result["speedup"] = round(result["serial"]["wall_s"] / result["parallel"]["wall_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
