"""batch_cost_vs_history again, on a history kept by an earlier run (`--keep-history`), with the
code of this checkout: building 10 M sessions takes 12 to 20 minutes per backend, a change of code
needs only the batches. The warehouse is upgraded first (timed: what the migrations cost on a
large history), then, as the scenario does, five 10,000-message batches on fresh empty warehouses
and the same five on the history, the ratio of their medians, one more batch per side timed per
statement, and on SQLite one more per side for its pages.

    uv run python bench/history_again.py sqlite sqlite:///data/bench/.../history/ev.sqlite --tag b1 --days 200

Each run needs its own --tag (batch ids) and --days (its batches lie that many days after the
feed's base date, later than any batch the history already holds; "now" moves with them, or the
contract would reject them as future messages). The history keeps every batch measured here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import feedgen  # noqa: E402
import run_bench as rb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("backend", choices=["sqlite", "postgresql"])
    parser.add_argument("url", help="the kept history warehouse")
    parser.add_argument("--tag", required=True, help="names this run's batches (unique per run)")
    parser.add_argument("--days", type=int, required=True, help="the batches' first day after the feed's base date")
    args = parser.parse_args()

    from ev_assets import pipeline
    from ev_assets.synthetic import utility
    from ev_assets.warehouse import migrate
    from ev_assets.warehouse.store import Warehouse

    feedgen.CONTRACT_NOW = feedgen.BASE + timedelta(days=args.days + 200)
    sizes = rb.Sizes()
    frames = utility.generate_utility(meters=sizes.history_meters, seed=sizes.seed)
    run_dir = rb.fresh_dir(rb.DATA / f"history_again-{args.tag}")

    began = time.perf_counter()
    before, after = migrate.upgrade(args.url)
    print(f"upgraded {before} -> {after} in {time.perf_counter() - began:.1f} s", flush=True)
    history = Warehouse(args.url)  # a batch an interrupted run left unpaired is paired first, untimed
    pipeline.pair_pending_batches(history, pipeline.PipelineSettings(), now=feedgen.CONTRACT_NOW)
    history.dispose()

    def batch(k: int, name: str) -> list[Path]:
        base = feedgen.BASE + timedelta(days=args.days + 10 * k)
        return rb.batch_files(frames, run_dir / name, sizes.history_batch, sizes.seed + args.days + k, base)

    made: list[rb.FreshWarehouse] = []
    try:
        timed = [batch(k, f"batch_{k}") for k in range(rb.HISTORY_BATCHES)]
        empty = [
            rb.run_batch(
                rb._with_reference(args.backend, run_dir / "w", frames, made, f"empty_{k}").url,
                f"{args.tag}-{k}",
                paths,
            )
            for k, paths in enumerate(timed)
        ]
        full = [rb.run_batch(args.url, f"{args.tag}-{k}", paths) for k, paths in enumerate(timed)]
        low, high = rb._median_batch(empty), rb._median_batch(full)
        print(f"empty:   {rb._batch_text(low)}{rb._spread(empty)}")
        print(f"history: {rb._batch_text(high)}{rb._spread(full)}")
        print(f"per-message cost, history / empty: {high['us_per_msg'] / low['us_per_msg']:.2f}x", flush=True)
        extra = batch(7, "batch_statements")
        spent = {
            "empty": rb.batch_statements(made[0].url, extra, f"{args.tag}-s"),
            "history": rb.batch_statements(args.url, extra, f"{args.tag}-s"),
        }
        print(f"seconds per statement, empty -> history: {rb._statements_text(spent)}")
        print(json.dumps(spent))
        if args.backend == "sqlite":
            extra = batch(8, "batch_pages")
            dirtied = {
                "empty": rb.batch_pages(made[1].url, extra, f"{args.tag}-p"),
                "history": rb.batch_pages(args.url, extra, f"{args.tag}-p"),
            }
            print(f"pages, empty -> history: {rb._pages_text(dirtied)}")
            print(json.dumps(dirtied))
    finally:
        for fresh in made:
            fresh.drop()


if __name__ == "__main__":
    main()
