"""The ceiling: the least work that turns a landing folder into per-transformer daily peaks.

json + polars only: no validation, no quarantine, no deduplication, no enrichment, no database,
no Dagster. It answers "how fast could this machine go at all?", so the pipeline's throughput
can be read as a multiple of it. It trusts the feed completely (the pipeline must not), so the
gap between the two is the price of the pipeline's guarantees plus its overheads.

    python bench/ceiling.py LANDING_DIR [--tz America/New_York] [--out peaks.parquet]

Prints one JSON object: counts, the read and compute times, and the sum of the peaks (a cheap
checksum the harness compares with the pipeline's transformer_daily_load).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path

import polars as pl

# The feed's timestamps: UTC, fractional seconds, a literal Z (see ev_assets/simulator.py).
FEED_TIME = "%Y-%m-%dT%H:%M:%S%.fZ"
INTERVAL = "15m"
INTERVAL_H = 0.25
MAX_SESSION = timedelta(hours=48)  # the pipeline's default pairing limit


def read_messages(landing: Path) -> tuple[pl.DataFrame, int]:
    """Every record of every file, as one frame of strings."""
    files = sorted(landing.glob("*.json"))
    records: list[dict] = []
    for path in files:
        records.extend(json.loads(path.read_bytes())["EVChargingEvents"])
    return pl.DataFrame(records, infer_schema_length=None), len(files)


def _utc(column: str) -> pl.Expr:
    return pl.col(column).str.strptime(pl.Datetime("us"), FEED_TIME).dt.replace_time_zone("UTC")


def pair_sessions(messages: pl.DataFrame) -> pl.DataFrame:
    """Start followed by end on the same meter = one session (sort + shift, no window function)."""
    typed = messages.select(
        pl.col("MeterID").alias("meter"),
        pl.col("TransformerID").alias("transformer"),
        pl.col("ChargeStartTime").is_not_null().alias("is_start"),
        pl.coalesce(_utc("ChargeStartTime"), _utc("ChargeEndTime")).alias("time"),
        pl.col("ChargeEnergy").cast(pl.Float64).alias("energy_wh"),
    ).sort("meter", "time")
    after = lambda c: pl.col(c).shift(-1)  # noqa: E731 - the next message in (meter, time) order
    return (
        typed.with_columns(
            next_meter=after("meter"), next_is_start=after("is_start"), end=after("time"), energy=after("energy_wh")
        )
        .filter(
            pl.col("is_start")
            & (pl.col("next_meter") == pl.col("meter"))
            & ~pl.col("next_is_start")
            & (pl.col("end") > pl.col("time"))
            & (pl.col("end") - pl.col("time") <= MAX_SESSION)
        )
        .select(
            "transformer",
            pl.col("time").alias("start"),
            "end",
            # Average power over the session, so the intervals' kWh add up to its energy.
            (pl.col("energy") / 1000 / ((pl.col("end") - pl.col("time")).dt.total_microseconds() / 3.6e9)).alias("kw"),
        )
    )


def daily_peaks(sessions: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Per transformer and local day: the largest 15-minute sum of overlap-weighted load."""
    intervals = sessions.with_columns(
        pl.datetime_ranges(
            pl.col("start").dt.truncate(INTERVAL),
            (pl.col("end") - timedelta(microseconds=1)).dt.truncate(INTERVAL),
            interval=INTERVAL,
        ).alias("interval_start")
    ).explode("interval_start")
    overlap_h = (
        pl.min_horizontal("end", pl.col("interval_start") + timedelta(minutes=15))
        - pl.max_horizontal("start", "interval_start")
    ).dt.total_microseconds() / 3.6e9
    return (
        intervals.select(
            "transformer",
            "interval_start",
            pl.col("interval_start").dt.convert_time_zone(tz).dt.date().alias("load_date"),
            (pl.col("kw") * overlap_h / INTERVAL_H).alias("kw"),
        )
        .group_by("transformer", "load_date", "interval_start")
        .agg(pl.col("kw").sum())
        .group_by("transformer", "load_date")
        .agg(pl.col("kw").max().alias("peak_kw"))
        .sort("transformer", "load_date")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("landing", type=Path)
    parser.add_argument("--tz", default="America/New_York")
    parser.add_argument("--out", type=Path, help="write the per-transformer-day peaks here (Parquet)")
    args = parser.parse_args()

    start = time.perf_counter()
    messages, files = read_messages(args.landing)
    read_s = time.perf_counter() - start
    sessions = pair_sessions(messages)
    peaks = daily_peaks(sessions, args.tz)
    compute_s = time.perf_counter() - start - read_s
    if args.out:
        peaks.write_parquet(args.out)
    print(
        json.dumps(
            {
                "files": files,
                "messages": messages.height,
                "sessions": sessions.height,
                "transformer_days": peaks.height,
                "peak_kw_sum": peaks["peak_kw"].sum(),
                "read_s": read_s,
                "compute_s": compute_s,
            }
        )
    )


if __name__ == "__main__":
    main()
