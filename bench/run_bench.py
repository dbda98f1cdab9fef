"""Benchmark harness for the EV Awareness pipeline.

    uv run python bench/run_bench.py [--scenario NAME ...] [--quick] [--profile]

Prints a Markdown report on stdout and records the figures in bench/results.json (the latest
figures per mode, full or quick, plus a short history). Every scenario works in its own folder
under data/bench/ (git ignores it) and starts from a fresh warehouse. BENCHMARKS.md says what
each scenario measures and why.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
DATA = PROJECT / "data" / "bench"
RESULTS = BENCH_DIR / "results.json"
HISTORY_KEPT = 50

sys.path.insert(0, str(BENCH_DIR))  # bench/ helpers, whatever the working directory

import feedgen  # noqa: E402
import measure  # noqa: E402

# --- sizes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """Everything --quick shrinks. Full sizes are the ones BENCHMARKS.md reports."""

    meters: int = 2000  # the default utility (`ev-awareness reference`)
    seed: int = 7
    start: date = date(2024, 6, 1)
    days: int = 30
    validation_messages: int = 100_000
    validation_files: int = 100
    repeat: int = 3  # in-process timings: best of this many
    history_meters: int = 2000
    history_days: int = 25  # compare a one-day batch at 1 day of history with one at this many


FULL = Sizes()
QUICK = Sizes(
    meters=300, days=2, validation_messages=10_000, validation_files=10, repeat=1, history_meters=300, history_days=5
)


@dataclass
class Context:
    sizes: Sizes
    mode: str  # "full" or "quick": results are kept apart
    profile: bool
    previous: dict[str, Any]  # latest results of this mode from results.json
    results: dict[str, dict] = field(default_factory=dict)  # this invocation's, by scenario
    months: dict[tuple[int, int], Month] = field(default_factory=dict)


@dataclass
class Result:
    """A scenario's figures (kept in results.json) and how the report shows them."""

    metrics: dict[str, Any]
    rows: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)
    extra_markdown: str = ""


# --- the simulated month (shared by end_to_end_month, ceiling and batch_cost_vs_history) -------


@dataclass(frozen=True)
class Month:
    folder: Path
    reference: Path
    landing: Path
    truth: Path
    sessions: int
    messages: int
    files: int


def prepare_month(ctx: Context, meters: int, days: int) -> Month:
    """Generate the utility and simulate `days` from the start date into a fresh folder.

    Regenerated once per invocation (a few seconds), so every figure is measured on data this
    run made: no stale folder from an older simulator can creep in.
    """
    key = (meters, days)
    if key in ctx.months:
        return ctx.months[key]
    from ev_assets.core.reference_extracts import write_reference_extracts
    from ev_assets.synthetic import simulator, utility

    s = ctx.sizes
    folder = fresh_dir(DATA / f"month-{meters}m-{days}d")
    frames = utility.generate_utility(meters=meters, seed=s.seed)
    write_reference_extracts(frames, folder / "reference")
    summary = simulator.simulate_to_folder(
        frames, folder / "landing", s.start, days, s.seed, ground_truth=folder / "truth.parquet"
    )
    month = Month(folder, folder / "reference", folder / "landing", folder / "truth.parquet",
                  summary.sessions, summary.messages, summary.files)  # fmt: skip
    ctx.months[key] = month
    return month


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# --- a. end_to_end_month -----------------------------------------------------------------------

_SUMMARY = re.compile(
    r"processed (\d+) batches, (\d+) files: (\d+) records read = (\d+) accepted \+ (\d+) duplicates"
    r" \+ (\d+) rejected; (\d+) daily-load runs"
)
_STEP = re.compile(r'Finished execution of step "([^"]+)" in ([\d.]+)(ms|s)\b')


def cli_command() -> list[str]:
    """The installed `ev-awareness` entry point of this environment, without `uv run` in front
    (uv's own start-up and lock check are not the pipeline's cost)."""
    script = Path(sys.executable).parent / "ev-awareness"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ev_assets.cli"]


def pipeline_env(month: Month, run_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        EV_FEED_DIR=str(month.landing),
        EV_REFERENCE_DIR=str(month.reference),
        EV_WAREHOUSE_URL=sqlite_url(run_dir / "warehouse" / "ev.sqlite"),
        DAGSTER_HOME=str(run_dir / "dagster_home"),
    )
    # Micro-batch size: the deployment's defaults unless the caller's environment sets them.
    env.setdefault("EV_BATCH_MAX_FILES", "2000")
    env.setdefault("EV_BATCH_MAX_MESSAGES", "50000")
    # Bytecode: this workplace sets PYTHONDONTWRITEBYTECODE=1 and uv installs no .pyc files, so
    # every child would compile ~4,300 modules from source (about 2 s) at each start. A deployed
    # image has its bytecode, so the children get a cache, kept out of the source tree and .venv.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(DATA / "pycache")
    # What an operator does once before the first run (`ev-awareness db upgrade`): the runtime
    # never creates tables itself.
    from ev_assets.warehouse import migrate

    migrate.upgrade(env["EV_WAREHOUSE_URL"])
    return env


def import_times(env: dict[str, str], log_dir: Path) -> dict[str, float]:
    """Seconds to import ev_assets.cli (Dagster included): with the bytecode cache the runs use,
    and with the caller's environment as it is (no cache when PYTHONDONTWRITEBYTECODE is set)."""
    cmd = [sys.executable, "-c", "import ev_assets.cli"]
    as_is = dict(env)
    for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"):  # back to the caller's values
        as_is.pop(name, None)
        if name in os.environ:
            as_is[name] = os.environ[name]
    measure.run_child(cmd, env=env, log_prefix=log_dir / "import-warmup")  # fills the cache
    return {
        "import_s": measure.run_child(cmd, env=env, log_prefix=log_dir / "import").wall_s,
        "import_env_as_is_s": measure.run_child(cmd, env=as_is, log_prefix=log_dir / "import-as-is").wall_s,
    }


def run_cli(env: dict[str, str], log_prefix: Path) -> measure.ChildRun:
    child = measure.run_child([*cli_command(), "run"], env=env, log_prefix=log_prefix, cwd=PROJECT)
    if child.returncode != 0:
        raise RuntimeError(f"`ev-awareness run` exited {child.returncode}\n{child.tail()}")
    return child


def step_seconds(stderr_log: Path) -> dict[str, float]:
    """Seconds spent inside each Dagster step (summed over runs), from the run's debug log."""
    totals: dict[str, float] = {}
    for name, value, unit in _STEP.findall(stderr_log.read_text(errors="replace")):
        totals[name] = totals.get(name, 0.0) + float(value) / (1000 if unit == "ms" else 1)
    return totals


def warehouse_check(url: str, truth: Path) -> dict[str, Any]:
    """Did the run produce the right thing? A fast benchmark of a wrong pipeline is worthless."""
    import polars as pl

    from ev_assets.warehouse.store import Warehouse
    from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, EV_CHARGING_SESSIONS, TRANSFORMER_DAILY_LOAD

    wh = Warehouse(url)
    try:
        sessions = wh.read(EV_CHARGING_SESSIONS)
        daily = wh.read(TRANSFORMER_DAILY_LOAD)
        return {
            "events": wh.count(EV_CHARGING_EVENTS),
            "sessions_complete": sessions.filter(pl.col("status") == "complete").height,
            "sessions_simulated": pl.read_parquet(truth).height,
            "transformer_days": daily.height,
            "peak_kw_sum": float(daily["peak_kw"].sum()) if daily.height else 0.0,
        }
    finally:
        wh.dispose()


def first_runs(month: Month, run_dir: Path, repeat: int) -> list[tuple[measure.ChildRun, dict[str, str]]]:
    """`ev-awareness run` over the whole landing folder, `repeat` times, each into its own fresh
    warehouse and DAGSTER_HOME. Identical runs differ by 10-20 % here, so one run is not enough."""
    runs = []
    for i in range(max(1, repeat)):
        env = pipeline_env(month, run_dir / f"try{i + 1}")
        runs.append((run_cli(env, run_dir / "logs" / f"run{i + 1}"), env))
    return runs


def end_to_end_month(ctx: Context) -> Result:
    s = ctx.sizes
    month = prepare_month(ctx, s.meters, s.days)
    run_dir = fresh_dir(DATA / f"end_to_end_month-{ctx.mode}")
    imports = import_times(pipeline_env(month, run_dir), run_dir / "logs")  # also warms the bytecode cache

    runs = first_runs(month, run_dir, s.repeat)
    walls = sorted(run.wall_s for run, _ in runs)
    first, env = sorted(runs, key=lambda r: r[0].wall_s)[len(runs) // 2]  # the median run
    summary = _SUMMARY.search(first.stdout)
    if summary is None:
        raise RuntimeError(f"no summary line in the run's output\n{first.tail()}")
    batches, files, records, accepted, duplicates, rejected, load_runs = map(int, summary.groups())
    second = run_cli(env, run_dir / "logs" / "noop")  # nothing pending: the fixed cost of a run
    steps = step_seconds(first.stderr_path)
    check = warehouse_check(env["EV_WAREHOUSE_URL"], month.truth)
    peak = max(run.peak_mb for run, _ in runs)

    metrics = {
        "meters": s.meters, "days": s.days, "messages": records, "files": files, "batches": batches,
        "accepted": accepted, "duplicates": duplicates, "rejected": rejected, "daily_load_runs": load_runs,
        "batch_max_files": int(env["EV_BATCH_MAX_FILES"]), "batch_max_messages": int(env["EV_BATCH_MAX_MESSAGES"]),
        "repeat": len(runs), "wall_s": first.wall_s, "wall_s_all": walls,
        "msgs_per_s": measure.rate(records, first.wall_s), "peak_mb": peak,
        "noop_wall_s": second.wall_s, "noop_peak_mb": second.peak_mb, **imports,
        "step_s": steps, "outside_steps_s": first.wall_s - sum(steps.values()), **check,
    }  # fmt: skip
    spread = f" (median of {len(runs)}: {', '.join(f'{w:.1f}' for w in walls)})" if len(runs) > 1 else ""
    rows = [
        ("messages / files / batches", f"{records:,} / {files:,} / {batches}"),
        ("accepted / duplicates / rejected", f"{accepted:,} / {duplicates:,} / {rejected:,}"),
        ("wall time, first run", f"{first.wall_s:.1f} s{spread}"),
        ("throughput", f"{metrics['msgs_per_s']:,.0f} msgs/s"),
        ("peak RSS (largest run)", f"{peak:,.0f} MB"),
        ("wall time, second (no-op) run", f"{second.wall_s:.1f} s"),
        ("of which importing ev_assets.cli (bytecode cached)", f"{imports['import_s']:.1f} s"),
        ("importing ev_assets.cli, environment as is", f"{imports['import_env_as_is_s']:.1f} s"),
        *[(f"inside step {name} (sum, median run)", f"{sec:.1f} s") for name, sec in sorted(steps.items())],
        ("outside steps (imports, Dagster run machinery, planning)", f"{metrics['outside_steps_s']:.1f} s"),
        ("sessions complete / simulated", f"{check['sessions_complete']:,} / {check['sessions_simulated']:,}"),
    ]
    notes = []
    if records != month.messages:
        notes.append(f"WARNING: the run read {records:,} records but the simulator wrote {month.messages:,}.")
    if check["sessions_complete"] != check["sessions_simulated"]:
        notes.append("NOTE: complete sessions differ from simulated ones (still open at the span's end, or mispaired).")
    result = Result(metrics, rows, notes)
    if ctx.profile:
        result.extra_markdown = profile_end_to_end(month, run_dir)
    return result


def profile_end_to_end(month: Month, run_dir: Path, top: int = 30) -> str:
    """One more first run, under cProfile, into its own fresh warehouse (not timed: the profiler
    slows Python code several-fold). Returns the top functions by cumulative time."""
    import pstats

    prof_dir = fresh_dir(run_dir / "profile")
    env = pipeline_env(month, prof_dir)
    out = prof_dir / "run.prof"
    child = measure.run_child(
        [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "ev_assets.cli", "run"],
        env=env, log_prefix=prof_dir / "run", cwd=PROJECT,
    )  # fmt: skip
    if child.returncode != 0:
        return f"profiled run failed:\n```\n{child.tail()}\n```\n"
    text = prof_dir / "cumulative.txt"
    with text.open("w") as stream:
        stats = pstats.Stats(str(out), stream=stream)
        # Overall by cumulative time (mostly Dagster's wrappers at the top), then the project's own
        # functions by cumulative time (where to act), then by own time (the leaves).
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("cumulative").print_stats(r"/ev_assets/", top)
        stats.sort_stats("tottime").print_stats(top)
    body = text.read_text()
    return f"Profile ({out.relative_to(PROJECT)}, full listing in {text.relative_to(PROJECT)}):\n\n```\n{body}\n```\n"


# --- b. ceiling --------------------------------------------------------------------------------


def ceiling(ctx: Context) -> Result:
    s = ctx.sizes
    month = prepare_month(ctx, s.meters, s.days)
    run_dir = fresh_dir(DATA / f"ceiling-{ctx.mode}")
    peaks_path = run_dir / "peaks.parquet"
    env = pipeline_env(month, run_dir)
    # Same footing as the pipeline's runs: polars' bytecode is cached before the clock starts.
    measure.run_child([sys.executable, "-c", "import polars"], env=env, log_prefix=run_dir / "warmup")
    child = measure.run_child(
        [sys.executable, str(BENCH_DIR / "ceiling.py"), str(month.landing), "--out", str(peaks_path)],
        env=env, log_prefix=run_dir / "ceiling",
    )  # fmt: skip
    if child.returncode != 0:
        raise RuntimeError(f"ceiling.py exited {child.returncode}\n{child.tail()}")
    out = json.loads(child.stdout.strip().splitlines()[-1])
    msgs_per_s = measure.rate(out["messages"], child.wall_s)
    metrics = {
        "messages": out["messages"], "files": out["files"], "sessions": out["sessions"],
        "transformer_days": out["transformer_days"], "peak_kw_sum": out["peak_kw_sum"],
        "wall_s": child.wall_s, "msgs_per_s": msgs_per_s, "peak_mb": child.peak_mb,
        "read_s": out["read_s"], "compute_s": out["compute_s"],
    }  # fmt: skip
    rows = [
        ("messages / files", f"{out['messages']:,} / {out['files']:,}"),
        ("wall time (process, incl. interpreter + polars import)", f"{child.wall_s:.2f} s"),
        ("of which reading JSON / pairing + peaks", f"{out['read_s']:.2f} s / {out['compute_s']:.2f} s"),
        ("throughput", f"{msgs_per_s:,.0f} msgs/s"),
        ("peak RSS", f"{child.peak_mb:,.0f} MB"),
    ]
    e2e = ctx.results.get("end_to_end_month") or ctx.previous.get("end_to_end_month")
    notes = []
    if e2e and e2e.get("messages") == out["messages"]:
        share = metrics["pipeline_share_of_ceiling"] = e2e["msgs_per_s"] / msgs_per_s
        rows.append(("pipeline msgs/s as a multiple of the ceiling", f"{share:.3f}x (the ceiling is {1 / share:.0f}x faster)"))
        rows.append(("peak RSS, pipeline / ceiling", f"{e2e['peak_mb'] / child.peak_mb:.1f}x"))
        if "end_to_end_month" not in ctx.results:
            notes.append("The pipeline figure is the latest end_to_end_month in bench/results.json (same mode and data).")
        notes.append(_compare_peaks(peaks_path, e2e))
    else:
        notes.append("No end_to_end_month figures for this data yet: run that scenario for the ratio.")
    return Result(metrics, rows, notes)


def _compare_peaks(peaks_path: Path, e2e: dict) -> str:
    """The ceiling must compute the same answer, or its speed means nothing."""
    import polars as pl

    peaks = pl.read_parquet(peaks_path)
    if "peak_kw_sum" not in e2e:
        return "Pipeline peaks unknown: not compared."
    first, last = peaks["load_date"].min(), peaks["load_date"].max()
    same = abs(e2e["peak_kw_sum"] - peaks["peak_kw"].sum()) <= 1e-6 * max(1.0, abs(e2e["peak_kw_sum"]))
    verdict = "equal" if same and e2e["transformer_days"] == peaks.height else "DIFFERENT"
    return (
        f"Cross-check: ceiling and pipeline per-transformer-day peaks are {verdict} "
        f"({peaks.height:,} vs {e2e['transformer_days']:,} transformer-days {first}..{last}; "
        f"sum of peaks {peaks['peak_kw'].sum():,.3f} vs {e2e['peak_kw_sum']:,.3f} kW)."
    )


# --- c. validation_throughput ------------------------------------------------------------------


def parse_files(paths: list[Path]):
    from ev_assets.core import feed

    return feed.records_frame([feed.parse_payload(p.name, p.read_bytes()) for p in paths])


def parse_and_validate(paths: list[Path]):
    from ev_assets.core.contract import ContractBounds, apply_contract

    return apply_contract(parse_files(paths), ContractBounds(), now=feedgen.CONTRACT_NOW)


def ingest_into_fresh_warehouse(paths: list[Path], frames: dict, repeat: int) -> tuple[float, Any]:
    """Best of `repeat` ingest_batch calls, each into a new SQLite warehouse holding the reference
    data (created and loaded before the clock starts: the batch's cost, not the setup's)."""
    from ev_assets import pipeline
    from ev_assets.warehouse import migrate
    from ev_assets.warehouse.store import Warehouse

    best, report = float("inf"), None
    settings = pipeline.PipelineSettings()
    for i in range(max(1, repeat)):
        with tempfile.TemporaryDirectory(dir=DATA) as tmp:
            migrate.upgrade(sqlite_url(Path(tmp) / "ev.sqlite"))
            wh = Warehouse(sqlite_url(Path(tmp) / "ev.sqlite"))
            pipeline.load_reference(wh, frames, settings)
            ingest = functools.partial(pipeline.ingest_batch, wh, f"bench-{i}", paths, settings, now=feedgen.CONTRACT_NOW)
            seconds, report = measure.best_of(1, ingest)
            best = min(best, seconds)
            wh.dispose()
    return best, report


def validation_throughput(ctx: Context) -> Result:
    from ev_assets.synthetic import utility

    s = ctx.sizes
    n = s.validation_messages
    frames = utility.generate_utility(meters=s.meters, seed=s.seed)
    clean = feedgen.build_messages(frames, n, seed=s.seed)
    dirty = copy.deepcopy(clean)
    broken = feedgen.corrupt(dirty)
    folder = fresh_dir(DATA / f"validation-{ctx.mode}")
    clean_paths = feedgen.write_files(clean, folder / "clean", s.validation_files)
    dirty_paths = feedgen.write_files(dirty, folder / "dirty", s.validation_files)

    # One untimed call first: pandera's lazy imports and first-use set-up are paid once per
    # process, and a long-running pipeline has paid them long before its thousandth batch.
    parse_and_validate(dirty_paths[:1])
    t_parse, records = measure.best_of(s.repeat, lambda: parse_files(clean_paths))
    t_clean, clean_result = measure.best_of(s.repeat, lambda: parse_and_validate(clean_paths))
    t_dirty, dirty_result = measure.best_of(s.repeat, lambda: parse_and_validate(dirty_paths))
    t_ingest, report = ingest_into_fresh_warehouse(clean_paths, frames, s.repeat)

    stages = {
        "parse": (t_parse, records.height),
        "parse_contract_clean": (t_clean, clean_result.accepted.height + clean_result.rejected.height),
        "parse_contract_dirty": (t_dirty, dirty_result.accepted.height + dirty_result.rejected.height),
        "ingest_batch_clean": (t_ingest, report.records_read),
    }
    labels = {
        "parse": "(i) parse_payload + records_frame",
        "parse_contract_clean": "(ii) + apply_contract, clean",
        "parse_contract_dirty": f"(iii) + apply_contract, {broken / n:.0%} bad",
        "ingest_batch_clean": "(iv) ingest_batch into fresh SQLite, clean",
    }
    metrics: dict[str, Any] = {"messages": n, "files": len(clean_paths), "bad_records": broken, "repeat": s.repeat}
    rows = [("batch", f"{n:,} messages in {len(clean_paths)} files; best of {s.repeat}")]
    for key, (seconds, count) in stages.items():
        metrics[key] = {"seconds": seconds, "msgs_per_s": measure.rate(count, seconds), "x_parse_time": seconds / t_parse}
        figures = f"{seconds:.2f} s, {metrics[key]['msgs_per_s']:,.0f} msgs/s, {seconds / t_parse:.1f}x parse time"
        rows.append((labels[key], figures))
    metrics["contract_only_clean_s"] = t_clean - t_parse
    metrics["dirty_rejected"] = dirty_result.rejected.height
    metrics["ingest_accepted"] = report.accepted
    notes = []
    if clean_result.rejected.height or report.accepted != n:
        notes.append(f"WARNING: the clean batch was not all accepted ({clean_result.rejected.height} rejected, "
                     f"{report.accepted} stored).")  # fmt: skip
    if dirty_result.rejected.height != broken:
        notes.append(f"WARNING: {broken} records were corrupted but {dirty_result.rejected.height} rejected.")
    else:
        codes = dirty_result.rejected["reason_codes"].value_counts(sort=True).iter_rows()
        notes.append("Dirty batch rejections by reason: " + ", ".join(f"{c} {k:,}" for c, k in codes) + ".")
    return Result(metrics, rows, notes)


# --- d. batch_cost_vs_history ------------------------------------------------------------------


def files_by_day(landing: Path) -> dict[str, list[Path]]:
    """Landing files grouped by the UTC day in their name (ev_YYYYMMDDTHHMMSSZ.json), in order."""
    days: dict[str, list[Path]] = {}
    for path in sorted(landing.glob("ev_*.json")):
        days.setdefault(path.name[3:11], []).append(path)
    return days


def ingest_day(wh, settings, batch_id: str, paths: list[Path]) -> dict[str, float | int]:
    """One micro-batch as the ingest job runs it: ingest_batch, then re-pair its sessions."""
    from ev_assets import pipeline

    t_ingest, report = measure.timed(lambda: pipeline.ingest_batch(wh, batch_id, paths, settings))
    t_sessions, _ = measure.timed(lambda: pipeline.pair_pending_batches(wh, settings))
    total = t_ingest + t_sessions
    return {"messages": report.records_read, "ingest_s": t_ingest, "sessions_s": t_sessions,
            "total_s": total, "us_per_msg": 1e6 * total / max(1, report.records_read)}  # fmt: skip


def snapshot(db: Path) -> Path:
    """A consistent copy of the SQLite warehouse `db` (the live one's WAL included)."""
    import sqlite3

    copy_path = db.with_name("snapshot.sqlite")
    for leftover in db.parent.glob("snapshot.sqlite*"):
        leftover.unlink()
    with sqlite3.connect(db) as source, sqlite3.connect(copy_path) as target:
        source.backup(target)
    return copy_path


def ingest_day_on_copies(db: Path, settings, batch_id: str, paths: list[Path], repeat: int) -> dict[str, float | int]:
    """The same one-day batch, best of `repeat`, each time on a fresh copy of the warehouse `db`.

    A batch can only be ingested once (a second time it is a replay and does nothing), so
    repeating it needs copies; the best of a few keeps a neighbour's CPU burst on this shared
    machine from deciding the comparison.
    """
    from ev_assets.warehouse.store import Warehouse

    best: dict[str, float | int] | None = None
    for _ in range(max(1, repeat)):
        wh = Warehouse(sqlite_url(snapshot(db)))
        wh.check_schema()  # connect and check the schema before the clock starts
        figures = ingest_day(wh, settings, batch_id, paths)
        wh.dispose()
        if best is None or figures["total_s"] < best["total_s"]:
            best = figures
    return best


# Tables that grow with every batch: a full scan of one makes a batch's cost grow with history.
GROWING_TABLES = ("ev_charging_events", "ev_charging_sessions", "ev_feed_files", "ev_rejected_messages",
                  "ev_ingest_batches", "ev_quarantined_files")  # fmt: skip


def full_scans(db: Path, settings, batch_id: str, paths: list[Path]) -> list[str]:
    """Run the batch on a copy, record every statement it sends, and ask SQLite how it would run
    each: a SCAN of a growing table is a cost that grows with history, whatever the timings say
    (they are noisy on a shared machine; a query plan is not)."""
    import sqlite3

    import sqlalchemy as sa

    from ev_assets.warehouse.store import Warehouse

    copy_path = snapshot(db)
    wh = Warehouse(sqlite_url(copy_path))
    statements: dict[str, Any] = {}

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE")):
            statements.setdefault(statement, parameters)

    sa.event.listen(wh.engine, "before_cursor_execute", record)
    ingest_day(wh, settings, batch_id, paths)
    wh.dispose()
    findings = set()
    with sqlite3.connect(copy_path) as conn:
        for statement, parameters in statements.items():
            for *_ids, detail in conn.execute("EXPLAIN QUERY PLAN " + statement, parameters or ()):
                table = detail.split()[1] if detail.startswith("SCAN ") else None
                if table in GROWING_TABLES:
                    findings.add(f"{detail} <- {_where_clause(statement)}")
    return sorted(findings)


def _where_clause(statement: str) -> str:
    """`FROM t WHERE ...` of a statement, its expanded IN lists shortened: enough to find the caller."""
    text = " ".join(statement.split())
    text = re.sub(r"\?(, \?)+", "?, ...", text)
    return text[text.find(" FROM ") + 1 :][:200] if " FROM " in text else text[:200]


def batch_cost_vs_history(ctx: Context) -> Result:
    from ev_assets import pipeline
    from ev_assets.core.reference_extracts import read_reference_extracts
    from ev_assets.warehouse import migrate
    from ev_assets.warehouse.store import Warehouse

    s = ctx.sizes
    # One extra day beyond the span: the last batch needs `history_days` days before it.
    month = prepare_month(ctx, s.history_meters, max(s.days, s.history_days + 2))
    days = list(files_by_day(month.landing).items())[: s.history_days + 1]
    run_dir = fresh_dir(DATA / f"batch_cost_vs_history-{ctx.mode}")
    db = run_dir / "ev.sqlite"
    migrate.upgrade(sqlite_url(db))
    wh = Warehouse(sqlite_url(db))
    settings = pipeline.PipelineSettings()
    pipeline.load_reference(wh, read_reference_extracts(month.reference), settings)
    series, compared, scans = [], {}, []
    for history, (day, paths) in enumerate(days):
        batch_id = f"day-{day}"
        if history in (1, s.history_days):  # the two compared points, measured carefully first
            compared[history] = {"history_days": history, "day": day,
                                 **ingest_day_on_copies(db, settings, batch_id, paths, s.repeat)}  # fmt: skip
        if history == s.history_days:
            scans = full_scans(db, settings, batch_id, paths)
        # Then the day goes into the warehouse for good (timed once: the indicative series).
        series.append({"history_days": history, "day": day, **ingest_day(wh, settings, batch_id, paths)})
    wh.dispose()
    for leftover in run_dir.glob("snapshot.sqlite*"):
        leftover.unlink()

    low, high = compared[1], compared[s.history_days]
    fit = statistics.linear_regression([r["history_days"] for r in series[1:]], [r["us_per_msg"] for r in series[1:]])
    growth = high["us_per_msg"] / low["us_per_msg"]
    metrics = {"meters": s.history_meters, "repeat": s.repeat, "low": low, "high": high, "per_msg_growth": growth,
               "slope_us_per_msg_per_history_day": fit.slope, "full_scans": scans, "series": series}  # fmt: skip
    rows = [
        (
            f"one-day batch at {r['history_days']} day(s) of history ({r['day']}), best of {s.repeat}",
            (f"{r['total_s']:.2f} s for {r['messages']:,} msgs (ingest {r['ingest_s']:.2f} s + sessions "
             f"{r['sessions_s']:.2f} s) = {r['us_per_msg']:,.0f} us/msg"),
        )
        for r in (low, high)
    ]  # fmt: skip
    rows.append(("per-message cost, high / low history", f"{growth:.2f}x"))
    rows.append(("fitted slope over every day (single timings)", f"{fit.slope:+.1f} us/msg per day of history"))
    rows.append(("full scans of growing tables per batch (query plans)", str(len(scans))))
    verdict = "flat: cost follows the batch" if growth < 1.5 else "GROWS with history"
    notes = [f"Verdict from the timings: {verdict} (threshold 1.5x per message)."]
    notes += [f"Query plan: `{scan}`" for scan in scans]
    return Result(metrics, rows, notes)


SCENARIOS: dict[str, Callable[[Context], Result]] = {
    "end_to_end_month": end_to_end_month,
    "ceiling": ceiling,
    "validation_throughput": validation_throughput,
    "batch_cost_vs_history": batch_cost_vs_history,
}


# --- report and results ------------------------------------------------------------------------


def machine_markdown(machine: dict[str, Any]) -> str:
    lines = [
        f"- nproc {machine['nproc']} (cpu_count {machine['cpu_count']}), {machine['memory_gib']} GiB, {machine['cpu_model']}",
        f"- {machine['platform']}",
        (f"- Python {machine['python']}, polars {machine['polars']} ({machine['polars_threads']} threads), "
         f"dagster {machine['dagster']}, pandera {machine['pandera']}, SQLAlchemy {machine['sqlalchemy']}, "
         f"SQLite {machine['sqlite']}"),
        f"- git {machine['git_commit']}",
    ]
    return "\n".join(lines)


def note_contention(result: Result, load: dict[str, float] | None) -> None:
    """Say how busy the rest of the machine was while the scenario ran."""
    if load is None:
        return
    result.metrics["contention"] = load
    text = (f"Other processes used {load['others_cpu_s']:.1f} CPU-s during this scenario's {load['wall_s']:.0f} s "
            f"({load['others_cores']:.2f} cores on average)")  # fmt: skip
    if load["others_cores"] > 0.25:
        text = f"WARNING: {text}: the figures above are inflated by contention; rerun on a quiet machine."
    result.notes.append(text + ("" if text.startswith("WARNING") else "."))


def scenario_markdown(name: str, result: Result) -> str:
    table = ["| measure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in result.rows]]
    parts = [f"## {name}", "", *table, ""]
    parts += [f"- {note}" for note in result.notes]
    if result.extra_markdown:
        parts += ["", result.extra_markdown]
    return "\n".join(parts) + "\n"


def load_results(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"latest": {}, "history": []}


def save_results(path: Path, data: dict, mode: str, machine: dict, measured_at: str, results: dict) -> None:
    """Merge this run's scenarios into latest[mode] (others keep their figures) and append the run
    to the history, so a regression shows up as a change against the previous entry."""
    latest = data.setdefault("latest", {}).setdefault(mode, {})
    for name, metrics in results.items():
        latest[name] = {**metrics, "measured_at": measured_at}
    # The history keeps the headline figures only: per-day series belong to the latest run.
    compact = {name: {k: v for k, v in metrics.items() if k != "series"} for name, metrics in results.items()}
    data.setdefault("history", []).append({"measured_at": measured_at, "mode": mode, "machine": machine, "scenarios": compact})
    data["history"] = data["history"][-HISTORY_KEPT:]
    data["machine"] = machine
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="extend", nargs="+", choices=list(SCENARIOS), metavar="NAME",
                        help=f"run only these (default: all): {', '.join(SCENARIOS)}")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in under a minute")
    parser.add_argument("--profile", action="store_true", help="also profile one end-to-end run (cProfile)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file (default: bench/results.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    data = load_results(args.results)
    ctx = Context(QUICK if args.quick else FULL, mode, args.profile, data.get("latest", {}).get(mode, {}))
    DATA.mkdir(parents=True, exist_ok=True)
    machine = measure.machine_info()
    measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"# EV Awareness benchmarks ({mode})\n\nMeasured {measured_at} on:\n\n{machine_markdown(machine)}\n")
    failed = []
    for name in args.scenario or list(SCENARIOS):
        print(f"... {name}", file=sys.stderr, flush=True)
        contention = measure.Contention()
        try:
            result = SCENARIOS[name](ctx)
        except Exception as exc:  # noqa: BLE001 - report it and go on with the other scenarios
            failed.append(name)
            print(f"## {name}\n\nFAILED: {exc}\n", flush=True)
            continue
        note_contention(result, contention.stop())
        ctx.results[name] = result.metrics
        print(scenario_markdown(name, result), flush=True)
    if ctx.results:
        save_results(args.results, data, mode, machine, measured_at, ctx.results)
        shown = args.results.relative_to(PROJECT) if args.results.is_relative_to(PROJECT) else args.results
        print(f"Figures recorded in {shown} ({mode}).")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
