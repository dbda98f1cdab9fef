"""The ceiling: the least work that turns a landing folder into per-transformer daily peaks.

json + polars only: no validation, no quarantine, no deduplication, no enrichment, no Dagster.
It trusts the feed completely (the pipeline must not), so the gap between the two is the price of
the pipeline's guarantees plus its overheads.

With `--store URL` it also stores what planners query, as a tight script would: the core tables
(events, sessions, the transformer 15-minute profile and daily peak) with their keys and the index a
planner reads sessions by, in one bulk transaction on a fresh database (SQLite: executemany;
PostgreSQL: COPY from CSV that polars writes). That is the ceiling the pipeline's goal is measured
against (issue 29: storage, not bookkeeping, sets the floor); without it, the ceiling persists nothing.

    python bench/ceiling.py LANDING_DIR [--tz America/New_York] [--out peaks.parquet] [--store URL]

Prints one JSON object: counts, the read, compute and store times, and the sum of the peaks (a cheap
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
            "meter",
            "transformer",
            pl.col("time").alias("start"),
            "end",
            # Average power over the session, so the intervals' kWh add up to its energy.
            (pl.col("energy") / 1000 / ((pl.col("end") - pl.col("time")).dt.total_microseconds() / 3.6e9)).alias("kw"),
        )
    )


def transformer_profile(sessions: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Per transformer and 15-minute interval: the sum of overlap-weighted load, with its local day."""
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
    )


def daily_peaks(profile: pl.DataFrame) -> pl.DataFrame:
    """Per transformer and local day: the largest 15-minute load."""
    return (
        profile.group_by("transformer", "load_date")
        .agg(pl.col("kw").max().alias("peak_kw"))
        .sort("transformer", "load_date")
    )


# The core tables, as a tight script would declare them: the keys the pipeline's tables have, and the
# index a planner reads a transformer's sessions by.
STORE_DDL = [
    "CREATE TABLE events (meter TEXT NOT NULL, message_type TEXT NOT NULL, time TIMESTAMP NOT NULL, "
    "transformer TEXT, charge_w DOUBLE PRECISION, energy_wh DOUBLE PRECISION, PRIMARY KEY (meter, message_type, time))",
    "CREATE TABLE sessions (meter TEXT NOT NULL, start_time TIMESTAMP NOT NULL, end_time TIMESTAMP NOT NULL, "
    "transformer TEXT, kw DOUBLE PRECISION, PRIMARY KEY (meter, start_time))",
    "CREATE INDEX sessions_by_transformer ON sessions (transformer, start_time)",
    "CREATE TABLE transformer_profile (transformer TEXT NOT NULL, interval_start TIMESTAMP NOT NULL, "
    "load_date DATE NOT NULL, kw DOUBLE PRECISION, PRIMARY KEY (transformer, interval_start))",
    "CREATE TABLE transformer_peak (transformer TEXT NOT NULL, load_date DATE NOT NULL, peak_kw DOUBLE PRECISION, "
    "PRIMARY KEY (transformer, load_date))",
]


def store_frames(url: str, tables: dict[str, pl.DataFrame]) -> None:
    """Create the core tables and fill them in one transaction."""
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        for ddl in STORE_DDL:
            conn.execute(ddl)
        for name, frame in tables.items():
            marks = ", ".join("?" * frame.width)
            conn.executemany(f"INSERT INTO {name} VALUES ({marks})", frame.iter_rows())
        conn.execute("COMMIT")
        conn.close()
        return
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for ddl in STORE_DDL:
            conn.execute(ddl)
        for name, frame in tables.items():
            with conn.cursor().copy(f"COPY {name} FROM STDIN WITH (FORMAT csv)") as copy:
                for start in range(0, frame.height, 100_000):
                    copy.write(frame.slice(start, 100_000).write_csv(include_header=False).encode())
        conn.commit()


def core_tables(messages: pl.DataFrame, sessions: pl.DataFrame, profile: pl.DataFrame, peaks: pl.DataFrame) -> dict:
    """The frames stored, in the tables' column order (SQLite takes datetimes as ISO text)."""
    events = messages.select(
        pl.col("MeterID").alias("meter"),
        pl.when(pl.col("ChargeStartTime").is_not_null()).then(pl.lit("start")).otherwise(pl.lit("end")).alias("type"),
        pl.coalesce(_utc("ChargeStartTime"), _utc("ChargeEndTime")).alias("time"),
        pl.col("TransformerID").alias("transformer"),
        pl.col("ChargeW").cast(pl.Float64, strict=False).alias("charge_w"),
        pl.col("ChargeEnergy").cast(pl.Float64, strict=False).alias("energy_wh"),
    ).unique(subset=["meter", "type", "time"], keep="first")
    as_text = pl.selectors.datetime()
    return {
        "events": events.with_columns(as_text.dt.to_string("%Y-%m-%d %H:%M:%S%.6f")),
        "sessions": sessions.select("meter", "start", "end", "transformer", "kw").with_columns(
            as_text.dt.to_string("%Y-%m-%d %H:%M:%S%.6f")
        ),
        "transformer_profile": profile.select("transformer", "interval_start", "load_date", "kw").with_columns(
            as_text.dt.to_string("%Y-%m-%d %H:%M:%S%.6f"), pl.col("load_date").cast(pl.String)
        ),
        "transformer_peak": peaks.with_columns(pl.col("load_date").cast(pl.String)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("landing", type=Path)
    parser.add_argument("--tz", default="America/New_York")
    parser.add_argument("--out", type=Path, help="write the per-transformer-day peaks here (Parquet)")
    parser.add_argument("--store", help="also store the core tables in this fresh database (SQLAlchemy-style URL)")
    args = parser.parse_args()

    start = time.perf_counter()
    messages, files = read_messages(args.landing)
    read_s = time.perf_counter() - start
    sessions = pair_sessions(messages)
    profile = transformer_profile(sessions, args.tz)
    peaks = daily_peaks(profile)
    compute_s = time.perf_counter() - start - read_s
    store_s = None
    if args.store:
        before_store = time.perf_counter()
        store_frames(args.store, core_tables(messages, sessions, profile, peaks))
        store_s = time.perf_counter() - before_store
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
                "store_s": store_s,
                "profile_rows": profile.height,
            }
        )
    )


if __name__ == "__main__":
    main()
