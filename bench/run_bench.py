"""Benchmark harness for the EV Awareness pipeline.

    uv run python bench/run_bench.py [--scenario NAME ...] [--quick] [--profile] [--pipelines VARIANT ...]
        [--history-sessions N] [--history-budget S] [--backfill-meters N] [--backfill-days N]
        [--range-meters N] [--range-days N]

The full run measures every goal of issue 13 at its own size, which takes about an hour here: the
10 M-session history on two backends (about 20 min each to build) and the year of 20,000 meters
(about 10 min) dominate. `--quick` is the CI smoke run (under 2 minutes).

Prints a Markdown report on stdout and records the figures in bench/results.json (the latest
figures per mode, full or quick, plus a short history). Every scenario works in its own folder
under data/bench/ (git ignores it) and starts from a fresh warehouse. BENCHMARKS.md says what
each scenario measures and why.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
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
import pages  # noqa: E402
import statements  # noqa: E402

# --- sizes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """Everything --quick shrinks. Full sizes are the ones BENCHMARKS.md reports."""

    meters: int = 2000  # the default utility (`ev-awareness reference`): validation_throughput
    seed: int = 7
    start: date = date(2024, 6, 1)
    case_meters: int = 20_000  # the >= 100,000-message case: ceiling vs pipeline
    case_days: int = 31
    validation_messages: int = 100_000
    validation_files: int = 100
    repeat: int = 3  # in-process timings: best of this many
    history_meters: int = 2000
    history_batch: int = 10_000  # messages of the batch compared on an empty and a full warehouse
    history_sessions: int = 10_000_000  # the goal's history; building stops at the budget first
    history_budget_s: float = 3600.0  # per backend, a safety stop: 10 M sessions took about 20 min here
    backfill_meters: int = 20_000  # year_backfill: the memory goal's year of the 20,000-meter utility
    backfill_days: int = 365
    range_meters: int = 2000  # long_range: the daily-load goal's three years of the 2,000-meter utility
    range_days: int = 1095
    # Three years that end before today: the contract rightly rejects messages from the future.
    range_start: date = date(2023, 6, 1)


FULL = Sizes()
QUICK = Sizes(
    meters=300,
    case_meters=300,
    case_days=2,
    validation_messages=10_000,
    validation_files=10,
    repeat=1,
    history_meters=300,
    history_batch=2_000,
    history_sessions=20_000,
    history_budget_s=10,
    backfill_meters=300,
    backfill_days=5,
    range_meters=300,
    range_days=4,
)


@dataclass
class Context:
    sizes: Sizes
    mode: str  # "full" or "quick": results are kept apart
    profile: bool
    postgres: bool
    previous: dict[str, Any]  # latest results of this mode from results.json
    results: dict[str, dict] = field(default_factory=dict)  # this invocation's, by scenario
    months: dict[tuple[int, int, date], Month] = field(default_factory=dict)
    pipelines: tuple[str, ...] | None = None  # ceiling_vs_pipeline: these variants only (default: all)
    profile_pipeline: str = "sqlite"  # --profile: the variant profiled
    keep_history: bool = False  # batch_cost_vs_history: keep the history warehouses (to try changes on them)


@dataclass
class Result:
    """A scenario's figures (kept in results.json) and how the report shows them."""

    metrics: dict[str, Any]
    rows: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)
    extra_markdown: str = ""


# --- the simulated feed (shared by the pipeline, the ceiling and the long backfill) -----------


@dataclass(frozen=True)
class Month:
    folder: Path
    reference: Path
    landing: Path
    truth: Path
    sessions: int
    messages: int
    files: int


def prepare_month(ctx: Context, meters: int, days: int, start: date | None = None) -> Month:
    """Generate the utility and simulate `days` from the start date into a fresh folder.

    Regenerated once per invocation, so every figure is measured on data this run made. The
    pipeline archives the files it commits (landing/archive/<day>/), so every run works on its own
    copy of this landing folder (`landing_copy`), never on this one.
    """
    s = ctx.sizes
    start = start or s.start
    key = (meters, days, start)
    if key in ctx.months:
        return ctx.months[key]
    from ev_assets.core.reference_extracts import write_reference_extracts
    from ev_assets.synthetic import simulator, utility

    folder = fresh_dir(DATA / f"feed-{meters}m-{days}d")
    # The reference data takes effect before the feed's first day (the pipeline attributes each
    # event as of its date).
    frames = utility.generate_utility(meters=meters, seed=s.seed, start=min(start, date(2024, 1, 1)))
    write_reference_extracts(frames, folder / "reference")
    summary = simulator.simulate_to_folder(
        frames, folder / "landing", start, days, s.seed, ground_truth=folder / "truth.parquet"
    )
    month = Month(
        folder,
        folder / "reference",
        folder / "landing",
        folder / "truth.parquet",
        summary.sessions,
        summary.messages,
        summary.files,
    )
    ctx.months[key] = month
    return month


def landing_copy(month: Month, run_dir: Path) -> Path:
    """A private copy of the feed's landing folder (the run archives what it commits). Hard links
    when possible: the pipeline moves files, never writes them, so the source stays intact.

    Linked one by one in name (= time) order: a link sets the inode's change time, and the feed
    sensor batches files in that order, as they arrived. (A copy in directory order made every
    micro-batch a random sample of the whole span, so every batch's pairing window covered it.)"""
    target = run_dir / "landing"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in sorted(month.landing.glob("*.json")):
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)
    return target


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# --- warehouses: SQLite files, or fresh PostgreSQL databases -----------------------------------

POSTGRES_ADMIN_URL = os.environ.get("EV_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@functools.cache
def postgres_available() -> bool:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(POSTGRES_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no PostgreSQL figures this time
        return False


def backends(ctx: Context) -> list[str]:
    return ["sqlite"] + (["postgresql"] if ctx.postgres and postgres_available() else [])


# The pipeline variants of ceiling_vs_pipeline: (warehouse backend, Dagster instance storage). The
# third is the production setup (README "Production"): both in PostgreSQL, the instance through
# dagster-postgres instead of SQLite files under DAGSTER_HOME.
PIPELINES: dict[str, tuple[str, str]] = {
    "sqlite": ("sqlite", "sqlite"),
    "postgresql": ("postgresql", "sqlite"),
    "postgresql_pg_instance": ("postgresql", "postgresql"),
    "postgresql_2_workers": ("postgresql", "postgresql"),
}
# `ev-awareness run --workers N` per variant (1 where not named): issue 29's goal compares the
# production setup with 2 workers against 1.
PIPELINE_WORKERS = {"postgresql_2_workers": 2}
FORECAST_JOB = "forecast_job"
PIPELINE_LABELS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgresql_pg_instance": "postgresql + PostgreSQL instance",
    "postgresql_2_workers": "postgresql + PostgreSQL instance, 2 workers",
}


def pipelines(ctx: Context) -> list[str]:
    available = [
        name
        for name, (backend, instance) in PIPELINES.items()
        if "postgresql" not in (backend, instance) or (ctx.postgres and postgres_available())
    ]
    return [name for name in available if ctx.pipelines is None or name in ctx.pipelines]


class FreshInstanceDatabase:
    """A fresh PostgreSQL database for a Dagster instance, dropped by `drop()`. Its URL names the
    psycopg2 driver: dagster-postgres needs it (EV_DAGSTER_STORAGE_URL, ev_assets/settings.py)."""

    def __init__(self) -> None:
        self._database = FreshWarehouse("postgresql", DATA, upgrade=False)
        import sqlalchemy as sa

        self.url = (
            sa.engine.make_url(self._database.url)
            .set(drivername="postgresql+psycopg2")
            .render_as_string(hide_password=False)
        )

    def drop(self) -> None:
        self._database.drop()


class FreshWarehouse:
    """A fresh warehouse URL on `backend`, upgraded to the code's schema (`ev-awareness db upgrade`).
    PostgreSQL: a database of its own, dropped by `drop()`."""

    def __init__(self, backend: str, folder: Path, upgrade: bool = True):
        import sqlalchemy as sa

        self.backend, self._name = backend, None
        if backend == "sqlite":
            folder.mkdir(parents=True, exist_ok=True)
            self.url = sqlite_url(folder / "ev.sqlite")
        else:
            self._name = f"ev_bench_{uuid.uuid4().hex[:10]}"
            admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self._name}"'))
            admin.dispose()
            self.url = (
                sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=self._name).render_as_string(hide_password=False)
            )
        if upgrade:
            from ev_assets.warehouse import migrate

            migrate.upgrade(self.url)

    def drop(self) -> None:
        if self._name is None:
            return
        import sqlalchemy as sa

        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)'))
        admin.dispose()


# --- running the pipeline as an operator does: `ev-awareness init`, then `ev-awareness run` ------

_READ = re.compile(
    r"([\d,]+) files: ([\d,]+) records read = ([\d,]+) accepted \+ ([\d,]+) duplicates \+ ([\d,]+) rejected"
)
_RUNS = re.compile(r"^(\w[\w ]*?)\s+(\d+) runs, (\d+) ok", re.M)


def cli_command() -> list[str]:
    """The installed `ev-awareness` entry point of this environment, without `uv run` in front
    (uv's own start-up and lock check are not the pipeline's cost)."""
    script = Path(sys.executable).parent / "ev-awareness"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ev_assets.cli"]


def child_env() -> dict[str, str]:
    """The environment of every child the harness times (the ceiling, imports, the pipeline).

    Bytecode: this workplace sets PYTHONDONTWRITEBYTECODE=1 and uv installs no .pyc files, so
    every child would compile ~4,300 modules from source (about 2 s) at each start. A deployed
    image has its bytecode, so the children get a cache, kept out of the source tree and .venv."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(DATA / "pycache")
    # The feeds are simulated in the past: their days must lie in the daily partitions whatever day
    # `ev-awareness init` runs on (it records a week before today on an empty warehouse).
    env.setdefault("EV_PARTITIONS_START", "2010-01-01")
    return env


def pipeline_env(month: Month, run_dir: Path, warehouse_url: str, instance_url: str | None = None) -> dict[str, str]:
    """child_env() for a pipeline run on its own landing copy, warehouse and DAGSTER_HOME.
    Micro-batch size: the deployment's defaults (ev_assets/settings.py) unless the caller's
    environment sets EV_BATCH_MAX_BYTES / _MESSAGES / _FILES; the report shows which were used."""
    env = child_env()
    env.update(
        EV_FEED_DIR=str(landing_copy(month, run_dir)),
        EV_REFERENCE_DIR=str(month.reference),
        EV_WAREHOUSE_URL=warehouse_url,
        DAGSTER_HOME=str(run_dir / "dagster_home"),
    )
    # The Dagster instance: SQLite files under DAGSTER_HOME unless a PostgreSQL database is given
    # (`init` then writes the dagster-postgres storages, reading this variable).
    env.pop("EV_DAGSTER_STORAGE_URL", None)
    if instance_url:
        env["EV_DAGSTER_STORAGE_URL"] = instance_url
    return env


def init_instance(env: dict[str, str], log_prefix: Path) -> measure.ChildRun:
    """`ev-awareness init`: the instance's dagster.yaml and `db upgrade` (not timed with the run)."""
    child = measure.run_child([*cli_command(), "init"], env=env, log_prefix=log_prefix, cwd=PROJECT)
    if child.returncode != 0:
        raise RuntimeError(f"`ev-awareness init` exited {child.returncode}\n{child.tail()}")
    return child


def run_cli(env: dict[str, str], log_prefix: Path, workers: int = 1) -> measure.ChildRun:
    command = [*cli_command(), "run", *(["--workers", str(workers)] if workers > 1 else [])]
    child = measure.run_child(command, env=env, log_prefix=log_prefix, cwd=PROJECT)
    if child.returncode != 0:
        raise RuntimeError(f"`ev-awareness run` exited {child.returncode}\n{child.tail()}")
    return child


def run_summary(stdout: str) -> dict[str, int]:
    """Counts from `ev-awareness run`'s output: runs per stage, files and records."""
    out = {f"{stage.strip().replace(' ', '_')}_runs": int(n) for stage, n, _ok in _RUNS.findall(stdout)}
    read = _READ.search(stdout)
    if read is None:
        raise RuntimeError(f"no records line in the run's output:\n{stdout[-2000:]}")
    names = ("files", "messages", "accepted", "duplicates", "rejected")
    return {**out, **{k: int(v.replace(",", "")) for k, v in zip(names, read.groups(), strict=True)}}


def step_seconds(dagster_home: Path, instance_url: str | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds spent inside each step, and each job's runs from start to end (both summed over the
    instance's runs), from the run storage: the same figures the UI shows."""
    import dagster as dg

    steps: dict[str, float] = {}
    jobs: dict[str, float] = {}
    # A PostgreSQL-backed dagster.yaml reads its URL from the environment when the instance opens.
    previous = os.environ.pop("EV_DAGSTER_STORAGE_URL", None)
    if instance_url:
        os.environ["EV_DAGSTER_STORAGE_URL"] = instance_url
    try:
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            for record in instance.get_run_records():
                if record.start_time and record.end_time:
                    job = record.dagster_run.job_name
                    jobs[job] = jobs.get(job, 0.0) + record.end_time - record.start_time
                for stat in instance.get_run_step_stats(record.dagster_run.run_id):
                    if stat.start_time and stat.end_time:
                        steps[stat.step_key] = steps.get(stat.step_key, 0.0) + stat.end_time - stat.start_time
    finally:
        os.environ.pop("EV_DAGSTER_STORAGE_URL", None)
        if previous is not None:
            os.environ["EV_DAGSTER_STORAGE_URL"] = previous
    return dict(sorted(steps.items())), dict(sorted(jobs.items()))


def warehouse_check(url: str, truth: Path) -> dict[str, Any]:
    """Did the run produce the right thing? A fast benchmark of a wrong pipeline is worthless."""
    import polars as pl

    from ev_assets.warehouse.store import Warehouse
    from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, EV_CHARGING_SESSIONS, TRANSFORMER_DAILY_LOAD

    wh = Warehouse(url)
    try:
        sessions = wh.count(EV_CHARGING_SESSIONS, wh.column(EV_CHARGING_SESSIONS, "status") == "complete")
        daily = wh.read(TRANSFORMER_DAILY_LOAD)
        return {
            "events": wh.count(EV_CHARGING_EVENTS),
            "sessions_complete": sessions,
            "sessions_simulated": pl.scan_parquet(truth).select(pl.len()).collect().item(),
            "transformer_days": daily.height,
            "peak_kw_sum": float(daily["peak_kw"].sum()) if daily.height else 0.0,
        }
    finally:
        wh.dispose()


def pipeline_run(
    month: Month, run_dir: Path, backend: str, noop: bool = True, instance: str = "sqlite", workers: int = 1
) -> dict[str, Any]:
    """Init then `ev-awareness run` over the whole feed, into a fresh warehouse and DAGSTER_HOME
    (instance "postgresql": the instance in a fresh PostgreSQL database too); then a second run with
    nothing pending (the fixed cost of any run). Contention is recorded around the first run alone,
    the figure it qualifies (the PostgreSQL server's work for the run counts as "others")."""
    fresh_dir(run_dir)
    wh = FreshWarehouse(backend, run_dir / "warehouse", upgrade=False)  # `init` upgrades it
    instance_db = FreshInstanceDatabase() if instance == "postgresql" else None
    instance_url = instance_db.url if instance_db else None
    try:
        env = pipeline_env(month, run_dir, wh.url, instance_url)
        init = init_instance(env, run_dir / "logs" / "init")
        contention = measure.Contention()
        first = run_cli(env, run_dir / "logs" / "run", workers)
        load = contention.stop()
        second = run_cli(env, run_dir / "logs" / "noop", workers) if noop else None
        summary = run_summary(first.stdout)
        steps, job_runs = step_seconds(run_dir / "dagster_home", instance_url)
        check = warehouse_check(wh.url, month.truth)
    finally:
        wh.drop()
        if instance_db:
            instance_db.drop()
    return {
        "backend": backend,
        "instance": instance,
        **summary,
        "init_s": init.wall_s,
        "wall_s": first.wall_s,
        "cpu_s": first.cpu_s,
        "msgs_per_s": measure.rate(summary["messages"], first.wall_s),
        # The ten-year forecast is a daily snapshot, not part of a batch's path (the ceiling stores
        # no forecast): `run` refreshes it once because this instance never had one.
        "forecast_s": job_runs.get(FORECAST_JOB, 0.0),
        "batch_path_s": first.wall_s - job_runs.get(FORECAST_JOB, 0.0),
        "batch_path_msgs_per_s": measure.rate(summary["messages"], first.wall_s - job_runs.get(FORECAST_JOB, 0.0)),
        "peak_mb": first.peak_mb,
        "own_peak_mb": first.own_peak_mb,
        "descendant_peaks_mb": first.descendant_peaks_mb,
        "noop_wall_s": second.wall_s if second else None,
        "step_s": steps,
        "outside_steps_s": first.wall_s - sum(steps.values()),
        "run_contention": load,
        **check,
    }


def run_ceiling(month: Month, run_dir: Path, env: dict[str, str], store: str | None = None) -> dict[str, Any]:
    """bench/ceiling.py in its own process on the same files; with `store`, a backend ("sqlite" or
    "postgresql"): the ceiling with storage, into a fresh database of that backend."""
    peaks_path = run_dir / f"peaks{'-' + store if store else ''}.parquet"
    # Same footing as the pipeline's runs: polars' bytecode is cached before the clock starts.
    measure.run_child([sys.executable, "-c", "import polars"], env=env, log_prefix=run_dir / "warmup")
    database = FreshWarehouse(store, run_dir / f"ceiling-{store}", upgrade=False) if store else None
    try:
        child = measure.run_child(
            [
                sys.executable,
                str(BENCH_DIR / "ceiling.py"),
                str(month.landing),
                "--out",
                str(peaks_path),
                *(["--store", database.url] if database else []),
            ],
            env=env,
            log_prefix=run_dir / f"ceiling{'-' + store if store else ''}",
        )
    finally:
        if database:
            database.drop()
    if child.returncode != 0:
        raise RuntimeError(f"ceiling.py exited {child.returncode}\n{child.tail()}")
    out = json.loads(child.stdout.strip().splitlines()[-1])
    return {
        **out,
        "wall_s": child.wall_s,
        "msgs_per_s": measure.rate(out["messages"], child.wall_s),
        "peak_mb": child.peak_mb,
        "peaks_path": str(peaks_path),
    }


def batch_bounds(env: dict[str, str]) -> str:
    """The micro-batch bounds the runs use: the environment's, else the settings' defaults."""
    from ev_assets.settings import Settings

    fields = Settings.model_fields
    names = [
        n for n in ("batch_max_bytes", "batch_max_messages", "batch_max_files") if n in fields
    ]  # older code: fewer
    return ", ".join(f"EV_{n.upper()}={env.get(f'EV_{n.upper()}', fields[n].default)}" for n in names)


def import_time(env: dict[str, str], log_dir: Path) -> float:
    """Seconds to import ev_assets.cli (Dagster included), with the bytecode cache the runs use
    (the first, untimed import fills it)."""
    cmd = [sys.executable, "-c", "import ev_assets.cli"]
    measure.run_child(cmd, env=env, log_prefix=log_dir / "import-warmup")
    return measure.run_child(cmd, env=env, log_prefix=log_dir / "import").wall_s


# --- a. ceiling_vs_pipeline: the 100k-message case ---------------------------------------------


def ceiling_vs_pipeline(ctx: Context) -> Result:
    s = ctx.sizes
    month = prepare_month(ctx, s.case_meters, s.case_days)
    run_dir = fresh_dir(DATA / f"ceiling_vs_pipeline-{ctx.mode}")
    env = child_env()  # the ceiling and the import need no landing copy, warehouse or instance
    imports_s = import_time(env, run_dir / "logs")  # also warms the bytecode cache
    ceiling_ = run_ceiling(month, run_dir, env)
    # The goal's ceiling (issue 29): the same core tables stored, on each backend the pipelines use.
    stored = {
        b: run_ceiling(month, run_dir, env, store=b) for b in dict.fromkeys(PIPELINES[n][0] for n in pipelines(ctx))
    }
    runs = {}
    for name in pipelines(ctx):
        backend, instance = PIPELINES[name]
        runs[name] = pipeline_run(
            month,
            run_dir / name,
            backend,
            noop=ctx.mode == "full",
            instance=instance,
            workers=PIPELINE_WORKERS.get(name, 1),
        )

    metrics: dict[str, Any] = {
        "meters": s.case_meters,
        "days": s.case_days,
        "messages": month.messages,
        "files": month.files,
        "import_s": imports_s,
        "ceiling": ceiling_,
        "ceiling_with_storage": stored,
        "pipeline": runs,
    }
    rows = [
        (
            "feed",
            f"{s.case_meters:,} meters, {s.case_days} days from {s.start}: {month.messages:,} messages, "
            f"{month.files:,} files, {month.sessions:,} simulated sessions",
        ),
        (
            "ceiling (bench/ceiling.py, own process)",
            f"{ceiling_['wall_s']:.2f} s, {ceiling_['msgs_per_s']:,.0f} msgs/s, "
            f"peak RSS {ceiling_['peak_mb']:,.0f} MB (read {ceiling_['read_s']:.2f} s, compute "
            f"{ceiling_['compute_s']:.2f} s)",
        ),
        *[
            (
                f"ceiling with storage, {b} (core tables, one transaction)",
                (
                    f"{c['wall_s']:.2f} s, {c['msgs_per_s']:,.0f} msgs/s (store {c['store_s']:.2f} s, "
                    f"{c['profile_rows']:,} profile rows)"
                ),
            )
            for b, c in stored.items()
        ],
        ("importing ev_assets.cli (bytecode cached)", f"{imports_s:.1f} s"),
        ("micro-batch bounds", batch_bounds(env)),
    ]
    notes = []
    for name, r in runs.items():
        backend = PIPELINE_LABELS[name]
        r["ratio_to_ceiling"] = r["msgs_per_s"] / ceiling_["msgs_per_s"]
        # The goal's ratio is the batch's path: the run less the forecast's run (a daily snapshot).
        r["ratio_to_ceiling_with_storage"] = ratio = (
            r["batch_path_msgs_per_s"] / stored[PIPELINES[name][0]]["msgs_per_s"]
        )
        runs_text = ", ".join(
            f"{k.removesuffix('_runs').replace('_', ' ')} {v}" for k, v in r.items() if k.endswith("_runs")
        )
        load = r["run_contention"]
        load_text = f"; other processes {load['others_cores']:.2f} cores during it" if load else ""
        rows += [
            (
                f"**{backend}**: `ev-awareness run` (after `init`, {r['init_s']:.1f} s)",
                (
                    f"**{r['wall_s']:.1f} s, {r['msgs_per_s']:,.0f} msgs/s, peak RSS {r['peak_mb']:,.0f} MB**, CPU "
                    f"{r['cpu_s']:.1f} s{load_text}"
                ),
            ),
            (
                f"{backend}: the batch's path (the run less `forecast_job`, {r['forecast_s']:.1f} s: a daily snapshot)",
                f"{r['batch_path_s']:.1f} s, {r['batch_path_msgs_per_s']:,.0f} msgs/s",
            ),
            (
                f"{backend}: the batch's path / ceiling with storage on {PIPELINES[name][0]} (msgs/s)",
                f"**{ratio:.3f}x** (goal ≥ 0.5x)",
            ),
            (
                f"{backend}: pipeline / ceiling without storage",
                f"{r['ratio_to_ceiling']:.3f}x (retired goal, shown for comparison)",
            ),
            (f"{backend}: peak RSS by process (VmHWM sampled every 0.25 s)", peaks_text(r)),
            (f"{backend}: runs", runs_text),
            (f"{backend}: inside steps", ", ".join(f"{k} {v:.1f} s" for k, v in r["step_s"].items())),
            (f"{backend}: outside steps (imports, Dagster run machinery, planning)", f"{r['outside_steps_s']:.1f} s"),
            *([(f"{backend}: second (no-op) run", f"{r['noop_wall_s']:.1f} s")] if r["noop_wall_s"] else []),
            (
                f"{backend}: accepted / duplicates / rejected",
                f"{r['accepted']:,} / {r['duplicates']:,} / {r['rejected']:,}",
            ),
            (f"{backend}: sessions complete / simulated", f"{r['sessions_complete']:,} / {r['sessions_simulated']:,}"),
        ]
        if r["messages"] != month.messages:
            notes.append(
                (
                    f"WARNING ({backend}): the run read {r['messages']:,} records but the simulator wrote "
                    f"{month.messages:,}."
                )
            )
        notes.append(f"{backend}: " + _compare_peaks(Path(ceiling_["peaks_path"]), r))
    if "postgresql" not in runs and ctx.pipelines is None:
        notes.append("PostgreSQL not measured: not reachable at EV_BENCH_POSTGRES_URL, or --no-postgres.")
    if "postgresql_pg_instance" in runs:
        notes.append(
            "postgresql + PostgreSQL instance: the warehouse and the Dagster instance (runs, event log) each in "
            "a fresh PostgreSQL database (`EV_DAGSTER_STORAGE_URL`, dagster-postgres); the others keep the "
            "instance in SQLite files under DAGSTER_HOME."
        )
    if "postgresql_2_workers" in runs and "postgresql_pg_instance" in runs:
        speedup = (
            runs["postgresql_2_workers"]["batch_path_msgs_per_s"]
            / runs["postgresql_pg_instance"]["batch_path_msgs_per_s"]
        )
        metrics["two_workers_speedup"] = speedup
        rows.append(
            (
                "PostgreSQL + PostgreSQL instance: 2 workers / 1 worker (the batch's path, msgs/s)",
                f"**{speedup:.2f}x** (goal ≥ 1.7x)",
            )
        )
    result = Result(metrics, rows, notes)
    if ctx.profile:
        result.extra_markdown = profile_run(month, run_dir / "profile", ctx.profile_pipeline)
    return result


def profile_run(month: Month, prof_dir: Path, variant: str = "sqlite", top: int = 30) -> str:
    """One more first run of a pipeline variant (default SQLite), under cProfile, into its own
    fresh warehouse and instance (not timed: the profiler slows Python code several-fold). Returns
    where the profile and its listing are."""
    import pstats

    fresh_dir(prof_dir)
    backend, instance = PIPELINES[variant]
    wh = FreshWarehouse(backend, prof_dir / "warehouse", upgrade=False)
    instance_db = FreshInstanceDatabase() if instance == "postgresql" else None
    out = prof_dir / "run.prof"
    try:
        env = pipeline_env(month, prof_dir, wh.url, instance_db.url if instance_db else None)
        init_instance(env, prof_dir / "init")
        contention = measure.Contention()
        child = measure.run_child(
            [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "ev_assets.cli", "run"],
            env=env,
            log_prefix=prof_dir / "run",
            cwd=PROJECT,
        )
        load = contention.stop()
    finally:
        wh.drop()
        if instance_db:
            instance_db.drop()
    if child.returncode != 0:
        return f"profiled run failed:\n```\n{child.tail()}\n```\n"
    text = prof_dir / "cumulative.txt"
    with text.open("w") as stream:
        stats = pstats.Stats(str(out), stream=stream)
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("cumulative").print_stats(r"/ev_assets/", top)
        stats.sort_stats("tottime").print_stats(top)
    load_text = f", other processes {load['others_cores']:.2f} cores" if load else ""
    return (
        f"Profile of {PIPELINE_LABELS[variant]} ({child.wall_s:.1f} s under cProfile{load_text}): "
        f"{out.relative_to(PROJECT)}, listing in {text.relative_to(PROJECT)}.\n"
    )


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
        f"ceiling and pipeline per-transformer-day peaks are {verdict} "
        f"({peaks.height:,} vs {e2e['transformer_days']:,} transformer-days {first}..{last}; "
        f"sum of peaks {peaks['peak_kw'].sum():,.3f} vs {e2e['peak_kw_sum']:,.3f} kW)."
    )


# --- b. year_backfill and long_range: peak RSS, and the daily load of a long range against its ingest


def year_backfill(ctx: Context) -> Result:
    """The memory goal: a year of the 20,000-meter utility, peak RSS <= 1.5 GB."""
    return backfill(ctx, "year_backfill", ctx.sizes.backfill_meters, ctx.sizes.backfill_days)


def long_range(ctx: Context) -> Result:
    """The long-range goal: three years of the 2,000-meter utility, daily load <= 2x its ingest."""
    return backfill(ctx, "long_range", ctx.sizes.range_meters, ctx.sizes.range_days, ctx.sizes.range_start)


def backfill(ctx: Context, name: str, meters: int, days: int, start: date | None = None) -> Result:
    """A long backfill through `ev-awareness run` from a fresh warehouse, on SQLite (or on the
    --pipelines variants): its peak RSS, and all its daily-load runs against its ingest steps."""
    month = prepare_month(ctx, meters, days, start)
    # Each scenario is the size of one goal: the other figure is shown, not judged.
    memory_goal = "; goal ≤ 1,536 MB for this year of 20,000 meters" if name == "year_backfill" else ""
    range_goal = " (goal ≤ 2x for these three years of 2,000 meters)" if name == "long_range" else ""
    rows = [
        (
            "feed",
            (
                f"{meters:,} meters, {days} days from {start or ctx.sizes.start}: {month.messages:,} messages, "
                f"{month.files:,} files"
            ),
        )
    ]
    notes: list[str] = []
    metrics: dict[str, Any] = {}
    # The ceiling on the same files: how the pipeline's ratio to it moves with the feed's size (its
    # per-run costs spread over more messages). Shown, not judged: the goal is the 100k case's.
    run_dir = fresh_dir(DATA / f"{name}-{ctx.mode}" / "ceiling")
    ceiling_ = run_ceiling(month, run_dir, child_env())
    rows.append(
        (
            "ceiling (bench/ceiling.py, own process)",
            f"{ceiling_['wall_s']:.2f} s, {ceiling_['msgs_per_s']:,.0f} msgs/s, peak RSS {ceiling_['peak_mb']:,.0f} MB",
        )
    )
    for variant in pipelines(ctx) if ctx.pipelines else ["sqlite"]:
        backend, instance = PIPELINES[variant]
        r = pipeline_run(month, DATA / f"{name}-{ctx.mode}" / variant, backend, noop=False, instance=instance)
        r["ratio_to_ceiling"] = r["msgs_per_s"] / ceiling_["msgs_per_s"]
        ingest_s = r["step_s"].get("ev_charging_events", 0.0) + r["step_s"].get("ev_charging_sessions", 0.0)
        load_s = sum(v for k, v in r["step_s"].items() if k.endswith("daily_load") or k == "grid_load_by_day")
        r["ingest_steps_s"], r["daily_load_steps_s"] = ingest_s, load_s
        r["load_over_ingest"] = load_s / ingest_s if ingest_s else float("nan")
        metrics[variant] = r
        label = PIPELINE_LABELS[variant]
        load = r["run_contention"]
        load_text = f"; other processes {load['others_cores']:.2f} cores during it" if load else ""
        rows += [
            (
                f"**{label}**: `ev-awareness run`",
                f"{r['wall_s']:.1f} s, {r['msgs_per_s']:,.0f} msgs/s, CPU {r['cpu_s']:.1f} s{load_text}",
            ),
            (
                f"{label}: pipeline / ceiling (msgs/s)",
                f"{r['ratio_to_ceiling']:.3f}x (at this size; the goal's ratio is the 100k case's)",
            ),
            (f"{label}: **peak RSS**", f"**{r['peak_mb']:,.0f} MB** (`wait4` from bench/launch.py{memory_goal})"),
            (f"{label}: peak RSS by process (VmHWM sampled every 0.25 s)", peaks_text(r)),
            (
                f"{label}: runs",
                ", ".join(
                    f"{k.removesuffix('_runs').replace('_', ' ')} {v}" for k, v in r.items() if k.endswith("_runs")
                ),
            ),
            (f"{label}: inside steps", ", ".join(f"{k} {v:.1f} s" for k, v in r["step_s"].items())),
            (
                f"{label}: **daily load** (all its runs) / **ingest** steps (events + sessions)",
                f"{load_s:.1f} s / {ingest_s:.1f} s = **{r['load_over_ingest']:.2f}x**{range_goal}",
            ),
            (f"{label}: sessions complete / simulated", f"{r['sessions_complete']:,} / {r['sessions_simulated']:,}"),
            (
                f"{label}: accepted / duplicates / rejected",
                f"{r['accepted']:,} / {r['duplicates']:,} / {r['rejected']:,}",
            ),
        ]
        if r["sessions_complete"] != r["sessions_simulated"] or r["rejected"]:
            notes.append(
                f"WARNING ({label}): {r['sessions_complete']:,} complete sessions of {r['sessions_simulated']:,} "
                "simulated, "
                f"{r['rejected']:,} messages rejected: the figures are not those of the whole feed "
                "(`ev-awareness quarantine` on the run's warehouse says why)."
            )
        notes.append(f"{label}: " + _compare_peaks(Path(ceiling_["peaks_path"]), r))
    # results.json keeps the SQLite figures where earlier harness versions put them.
    first = metrics.get("sqlite") or next(iter(metrics.values()))
    return Result({**first, "ceiling": ceiling_, "variants": metrics}, rows, notes)


def peaks_text(r: dict) -> str:
    """The run process's own high-water mark and its largest descendants', from the sampler."""
    kids = sorted((r.get("descendant_peaks_mb") or {}).items(), key=lambda kv: -kv[1])[:3]
    kids_text = "; ".join(f"`{name}` {mb:,.0f} MB" for name, mb in kids) or "none seen"
    return f"`ev-awareness run` itself {r.get('own_peak_mb', float('nan')):,.0f} MB; descendants: {kids_text}"


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
            ingest = functools.partial(
                pipeline.ingest_batch, wh, f"bench-{i}", paths, settings, now=feedgen.CONTRACT_NOW
            )
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
        metrics[key] = {
            "seconds": seconds,
            "msgs_per_s": measure.rate(count, seconds),
            "x_parse_time": seconds / t_parse,
        }
        figures = f"{seconds:.2f} s, {metrics[key]['msgs_per_s']:,.0f} msgs/s, {seconds / t_parse:.1f}x parse time"
        rows.append((labels[key], figures))
    metrics["contract_only_clean_s"] = t_clean - t_parse
    metrics["dirty_rejected"] = dirty_result.rejected.height
    metrics["ingest_accepted"] = report.accepted
    notes = []
    if clean_result.rejected.height or report.accepted != n:
        notes.append(
            f"WARNING: the clean batch was not all accepted ({clean_result.rejected.height} rejected, "
            f"{report.accepted} stored)."
        )
    if dirty_result.rejected.height != broken:
        notes.append(f"WARNING: {broken} records were corrupted but {dirty_result.rejected.height} rejected.")
    else:
        codes = dirty_result.rejected["reason_codes"].value_counts(sort=True).iter_rows()
        notes.append("Dirty batch rejections by reason: " + ", ".join(f"{c} {k:,}" for c, k in codes) + ".")
    return Result(metrics, rows, notes)


# --- d. batch_cost_vs_history --------------------------------------------------------------------

HISTORY_STEP = 3  # days between two copies of the template in the synthetic history
HISTORY_BATCHES = 5  # timed batches per side of batch_cost_vs_history, ten days apart


def batch_files(frames: dict, folder: Path, messages: int, seed: int, base: datetime) -> list[Path]:
    msgs = feedgen.build_messages(frames, messages, seed=seed, base=base)
    return feedgen.write_files(msgs, folder, max(1, messages // 1000))


def run_batch(url: str, batch_id: str, paths: list[Path]) -> dict[str, float | int]:
    """One micro-batch as the ingest job runs it: ingest_batch, then pair what it committed."""
    from ev_assets import pipeline
    from ev_assets.warehouse.store import Warehouse

    wh = Warehouse(url)
    wh.check_schema()  # connect and check the schema before the clock starts
    settings = pipeline.PipelineSettings()
    now = feedgen.CONTRACT_NOW
    t_ingest, report = measure.timed(lambda: pipeline.ingest_batch(wh, batch_id, paths, settings, now=now))
    t_sessions, _ = measure.timed(lambda: pipeline.pair_pending_batches(wh, settings, now=now))
    wh.dispose()
    total = t_ingest + t_sessions
    return {
        "messages": report.records_read,
        "accepted": report.accepted,
        "ingest_s": t_ingest,
        "sessions_s": t_sessions,
        "total_s": total,
        "us_per_msg": 1e6 * total / max(1, report.records_read),
    }


def build_history(
    url: str, template_events, template_sessions, target_sessions: int, budget_s: float
) -> dict[str, Any]:
    """Bulk-insert copies of the template (the events and sessions the pipeline made of one batch),
    each moved HISTORY_STEP days further back, on the same meters, with fresh ids, through the
    warehouse's own bulk insert, until `target_sessions` or `budget_s` is reached. Every copy is
    a ledgered, paired batch, as real history is."""
    import time
    from datetime import timedelta

    import polars as pl

    from ev_assets.warehouse.store import Warehouse
    from ev_assets.warehouse.tables import EV_BATCH_PAIRING, EV_CHARGING_EVENTS, EV_CHARGING_SESSIONS, EV_INGEST_BATCHES

    wh = Warehouse(url)
    started = time.perf_counter()
    copies = sessions = events = 0
    ev_times = ("message_time", "received_time", "charge_start_time", "charge_end_time", "ingested_at")
    per_transaction = max(1, 50_000 // max(1, template_sessions.height))  # about 50,000 sessions a write
    while sessions < target_sessions and time.perf_counter() - started < budget_s:
        evs, ses, ledgers, pairings = [], [], [], []
        for _ in range(per_transaction):
            copies += 1
            shift = timedelta(days=HISTORY_STEP * copies)
            tag, batch_id = f"-h{copies}", f"history-{copies:05d}"
            evs.append(
                template_events.with_columns(
                    *[pl.col(c) - shift for c in ev_times],
                    pl.col("message_date") - shift,
                    pl.col("message_id") + tag,
                    pl.lit(batch_id).alias("batch_id"),
                )
            )
            ses.append(
                template_sessions.with_columns(
                    pl.col("start_time") - shift,
                    pl.col("end_time") - shift,
                    pl.col("event_date") - shift,
                    pl.col("session_id") + tag,
                    pl.col("start_message_id") + tag,
                    pl.col("end_message_id") + tag,
                )
            )
            ledgers.append(
                {
                    "batch_id": batch_id,
                    "run_id": None,
                    "records_read": evs[-1].height,
                    "accepted": evs[-1].height,
                    "reconciled": True,
                    "processed_at": feedgen.BASE - shift,
                    **dict.fromkeys(
                        (
                            "files_read",
                            "files_parsed",
                            "files_repaired",
                            "files_quarantined",
                            "files_already_read",
                            "duplicates",
                            "rejected",
                        ),
                        0,
                    ),
                }
            )
            pairings.append(
                {"batch_id": batch_id, "sessions_written": ses[-1].height, "paired_at": feedgen.BASE - shift}
            )
        ev, se = pl.concat(evs), pl.concat(ses)
        with wh.transaction() as conn:
            wh.insert(conn, EV_CHARGING_EVENTS, ev)
            wh.insert(conn, EV_CHARGING_SESSIONS, se)
            wh.insert(conn, EV_INGEST_BATCHES, pl.DataFrame(ledgers))
            wh.insert(conn, EV_BATCH_PAIRING, pl.DataFrame(pairings))
        sessions += se.height
        events += ev.height
    if wh.dialect == "postgresql":
        with wh.engine.connect() as conn:
            conn.execute(sa_text("ANALYZE"))
            conn.commit()
    wh.dispose()
    return {"sessions": sessions, "events": events, "copies": copies, "build_s": time.perf_counter() - started}


def sa_text(sql: str):
    import sqlalchemy as sa

    return sa.text(sql)


def template(url: str, paths: list[Path]):
    """The events and sessions the pipeline makes of one batch (on a scratch warehouse)."""
    from ev_assets.warehouse.store import Warehouse
    from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, EV_CHARGING_SESSIONS

    run_batch(url, "template", paths)
    wh = Warehouse(url)
    try:
        return wh.read(EV_CHARGING_EVENTS), wh.read(EV_CHARGING_SESSIONS)
    finally:
        wh.dispose()


def batch_cost_vs_history(ctx: Context) -> Result:
    """A 10,000-message batch on an empty warehouse against the same batch on one holding a large
    history of sessions on the same meters. Each side runs HISTORY_BATCHES different batches, ten
    days apart (each on a fresh empty warehouse; one after the other on the history), and the ratio
    compares their medians per message: one timing is noise, and two (the best of two, until stop
    8) moved the ratio by ±0.3 between identical runs."""
    from datetime import timedelta

    from ev_assets.synthetic import utility

    s = ctx.sizes
    frames = utility.generate_utility(meters=s.history_meters, seed=s.seed)
    run_dir = fresh_dir(DATA / f"batch_cost_vs_history-{ctx.mode}")
    batches = [
        batch_files(
            frames, run_dir / f"batch_{k}", s.history_batch, s.seed + 10 + k, feedgen.BASE + timedelta(days=10 * k)
        )
        for k in range(HISTORY_BATCHES)
    ]
    template_files = batch_files(
        frames, run_dir / "template", s.history_batch, s.seed + 2, feedgen.BASE - timedelta(days=30)
    )

    metrics: dict[str, Any] = {"meters": s.history_meters, "batch_messages": s.history_batch}
    rows, notes = [], []
    for backend in backends(ctx):
        made: list[FreshWarehouse] = []
        loaded = functools.partial(_with_reference, backend, run_dir / backend, frames, made)
        built = None
        try:
            scratch = loaded("scratch")
            tmpl_events, tmpl_sessions = template(scratch.url, template_files)
            empty = [run_batch(loaded(f"empty_{k}").url, f"bench-{k}", paths) for k, paths in enumerate(batches)]
            full = loaded("history")
            built = build_history(full.url, tmpl_events, tmpl_sessions, s.history_sessions, s.history_budget_s)
            hist = [run_batch(full.url, f"bench-{k}", paths) for k, paths in enumerate(batches)]
            scans = full_scans(full.url, frames, run_dir / "batch_c", s) if backend == "sqlite" else []
            # One more batch each side, apart from the timed ones: where its time goes per statement.
            batch_e = batch_files(
                frames, run_dir / "batch_e", s.history_batch, s.seed + 5, feedgen.BASE + timedelta(days=70)
            )
            spent = {side: batch_statements(made[k].url, batch_e) for side, k in (("empty", 1), ("history", -1))}
            if backend == "sqlite":  # and one more each side, untimed: the pages it dirties, per index
                batch_d = batch_files(
                    frames, run_dir / "batch_d", s.history_batch, s.seed + 4, feedgen.BASE + timedelta(days=60)
                )
                dirtied = {side: batch_pages(made[k].url, batch_d) for side, k in (("empty", 1), ("history", -1))}
        finally:
            for wh in made:
                if not (ctx.keep_history and wh is made[-1] and built):
                    wh.drop()
        low, high = _median_batch(empty), _median_batch(hist)
        growth = high["us_per_msg"] / low["us_per_msg"]
        metrics[backend] = {
            "history": built,
            "empty": empty,
            "with_history": hist,
            "per_msg_growth": growth,
            "full_scans": scans,
            "statement_seconds": spent,
        }
        rows.append(
            (
                f"{backend}: one batch's seconds per statement, empty → history (`bench/statements.py`)",
                _statements_text(spent),
            )
        )
        if backend == "sqlite":
            metrics[backend]["pages_dirtied"] = dirtied
            rows.append(
                (
                    "sqlite: pages one batch dirties, empty → history (WAL frames per b-tree, `bench/pages.py`)",
                    _pages_text(dirtied),
                )
            )
        rows += [
            (
                f"**{backend}**: history built",
                f"{built['sessions']:,} sessions + {built['events']:,} events "
                f"({built['copies']} ledgered batches) in {built['build_s']:.0f} s",
            ),
            (
                f"{backend}: {s.history_batch:,}-message batch, empty warehouse (median of {len(empty)})",
                _batch_text(low) + _spread(empty),
            ),
            (f"{backend}: same batches, with that history (median of {len(hist)})", _batch_text(high) + _spread(hist)),
            (f"{backend}: per-message cost, history / empty", f"**{growth:.2f}x** (goal ≤ 1.5x at 10 M sessions)"),
        ]
        if ctx.keep_history:
            notes.append(f"{backend}: the history warehouse is kept: {made[-1].url}")
        if backend == "sqlite":
            rows.append(("sqlite: full scans of growing tables per batch (query plans)", str(len(scans))))
            notes += [f"Query plan: `{scan}`" for scan in scans]
        if built["sessions"] < s.history_sessions:
            notes.append(
                f"{backend}: the history stopped at {built['sessions']:,} sessions (budget "
                f"{s.history_budget_s:.0f} s), "
                f"not the {s.history_sessions:,} asked."
            )
    return Result(metrics, rows, notes)


def _with_reference(backend: str, folder: Path, frames: dict, made: list, name: str) -> FreshWarehouse:
    """A fresh upgraded warehouse holding the utility's reference data (recorded in `made`)."""
    from ev_assets import pipeline
    from ev_assets.warehouse.store import Warehouse

    fresh = FreshWarehouse(backend, folder / name)
    made.append(fresh)
    wh = Warehouse(fresh.url)
    pipeline.load_reference(wh, frames, pipeline.PipelineSettings(), now=feedgen.CONTRACT_NOW)
    wh.dispose()
    return fresh


def diagnose_batch(
    url: str, batch_id: str, paths: list[Path], diagnose: Callable[[Any, Callable[[], None]], Any]
) -> Any:
    """One batch (ingest and pairing, as an ingest run does them) on `url`, run by `diagnose(engine,
    batch)`, which watches it (the engine is not connected yet) and returns what it saw."""
    from ev_assets import pipeline
    from ev_assets.warehouse.store import Warehouse

    wh = Warehouse(url)
    now, settings = feedgen.CONTRACT_NOW, pipeline.PipelineSettings()

    def batch() -> None:
        pipeline.ingest_batch(wh, batch_id, paths, settings, now=now)
        pipeline.pair_pending_batches(wh, settings, now=now)

    try:
        return diagnose(wh.engine, batch)
    finally:
        wh.dispose()


def batch_pages(url: str, paths: list[Path], batch_id: str = "bench-pages") -> dict[str, int]:
    """The pages one batch dirties on a SQLite warehouse, per table or index."""
    import sqlalchemy as sa

    database = Path(sa.engine.make_url(url).database)
    return diagnose_batch(url, batch_id, paths, lambda engine, batch: pages.dirtied_pages(database, engine, batch))


def batch_statements(url: str, paths: list[Path], batch_id: str = "bench-statements") -> dict[str, float]:
    """Seconds one batch spends per kind of statement and in its commits."""
    return diagnose_batch(url, batch_id, paths, statements.statement_times)


def _statements_text(found: dict[str, dict[str, float]]) -> str:
    """The statements whose time grew most, then the commits and the whole batch."""
    empty, history = found["empty"], found["history"]
    growth = sorted(history, key=lambda k: history[k] - empty.get(k, 0.0), reverse=True)
    named = [k for k in growth if not k.startswith("(")][:5] + [statements.COMMIT, statements.TOTAL]
    return "; ".join(f"`{k}` {empty.get(k, 0.0):.2f} → {history.get(k, 0.0):.2f} s" for k in named)


def _pages_text(found: dict[str, dict[str, int]]) -> str:
    empty, history = found["empty"], found["history"]
    top = sorted(history, key=history.get, reverse=True)[:6]
    parts = [f"`{name}` {empty.get(name, 0):,} → {history[name]:,}" for name in top]
    return f"**{sum(empty.values()):,} → {sum(history.values()):,} pages**; " + ", ".join(parts)


def _median_batch(runs: list[dict]) -> dict:
    """The run with the median cost per message (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r["us_per_msg"])
    return ordered[(len(ordered) - 1) // 2]


def _spread(runs: list[dict]) -> str:
    costs = sorted(r["us_per_msg"] for r in runs)
    return f" (all: {', '.join(f'{c:,.0f}' for c in costs)} µs/msg)"


def _batch_text(r: dict) -> str:
    return (
        f"{r['total_s']:.2f} s for {r['messages']:,} msgs (ingest {r['ingest_s']:.2f} s + sessions "
        f"{r['sessions_s']:.2f} s) = {r['us_per_msg']:,.0f} µs/msg"
    )


# Tables that grow with every batch: a full scan of one makes a batch's cost grow with history.
GROWING_TABLES = (
    "ev_charging_events",
    "ev_charging_sessions",
    "ev_feed_files",
    "ev_rejected_messages",
    "ev_ingest_batches",
    "ev_quarantined_files",
    "ev_batch_pairing",
)


def full_scans(url: str, frames: dict, folder: Path, s: Sizes) -> list[str]:
    """Run one more batch on the history warehouse, record every statement it sends, and ask SQLite
    how it runs each: a SCAN of a growing table is a cost that grows with history, whatever the
    timings say (they are noisy on a shared machine; a query plan is not)."""
    import sqlite3
    from datetime import timedelta

    import sqlalchemy as sa

    from ev_assets import pipeline
    from ev_assets.warehouse.store import Warehouse

    paths = batch_files(frames, folder, min(s.history_batch, 2000), s.seed + 3, feedgen.BASE + timedelta(days=50))
    wh = Warehouse(url)
    statements: dict[str, Any] = {}

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE")):
            statements.setdefault(statement, parameters)

    sa.event.listen(wh.engine, "before_cursor_execute", record)
    settings = pipeline.PipelineSettings()
    pipeline.ingest_batch(wh, "bench-scan", paths, settings, now=feedgen.CONTRACT_NOW)
    pipeline.pair_pending_batches(wh, settings, now=feedgen.CONTRACT_NOW)
    wh.dispose()
    findings = set()
    with sqlite3.connect(sa.engine.make_url(url).database) as conn:
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


SCENARIOS: dict[str, Callable[[Context], Result]] = {
    # Child-process scenarios first: a child forked after an in-process scenario grew the harness
    # can report some of the harness's pages as its own peak RSS.
    "ceiling_vs_pipeline": ceiling_vs_pipeline,
    "year_backfill": year_backfill,
    "long_range": long_range,
    "batch_cost_vs_history": batch_cost_vs_history,
    "validation_throughput": validation_throughput,
}


# --- report and results ------------------------------------------------------------------------


def machine_markdown(machine: dict[str, Any]) -> str:
    lines = [
        (
            f"- nproc {machine['nproc']} (cpu_count {machine['cpu_count']}), {machine['memory_gib']} GiB, "
            f"{machine['cpu_model']}"
        ),
        f"- {machine['platform']}",
        (
            f"- Python {machine['python']}, polars {machine['polars']} ({machine['polars_threads']} threads), "
            f"dagster {machine['dagster']}, pandera {machine['pandera']}, SQLAlchemy {machine['sqlalchemy']}, "
            f"SQLite {machine['sqlite']}"
        ),
        f"- git {machine['git_commit']}",
    ]
    return "\n".join(lines)


def note_contention(result: Result, load: dict[str, float] | None) -> None:
    """Say how busy the rest of the machine was while the scenario ran."""
    if load is None:
        return
    result.metrics["contention"] = load
    text = (
        f"Other processes used {load['others_cpu_s']:.1f} CPU-s during this scenario's {load['wall_s']:.0f} s "
        f"({load['others_cores']:.2f} cores on average)"
    )
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
    data.setdefault("history", []).append(
        {"measured_at": measured_at, "mode": mode, "machine": machine, "scenarios": compact}
    )
    data["history"] = data["history"][-HISTORY_KEPT:]
    data["machine"] = machine
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scenario",
        action="extend",
        nargs="+",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run only these (default: all): {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in under a minute")
    parser.add_argument("--profile", action="store_true", help="also profile one end-to-end run (cProfile)")
    parser.add_argument(
        "--profile-pipeline",
        choices=list(PIPELINES),
        default="sqlite",
        metavar="VARIANT",
        help="with --profile: the pipeline variant profiled (default: sqlite)",
    )
    parser.add_argument(
        "--no-postgres", action="store_true", help="SQLite only (default: PostgreSQL too when reachable)"
    )
    parser.add_argument(
        "--pipelines",
        nargs="+",
        choices=list(PIPELINES),
        metavar="VARIANT",
        help=(
            "ceiling_vs_pipeline: only these pipeline variants (default: all); year_backfill and "
            f"long_range: these (default: sqlite): {', '.join(PIPELINES)}"
        ),
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file (default: bench/results.json)")
    parser.add_argument(
        "--keep-history",
        action="store_true",
        help=(
            "batch_cost_vs_history: keep the history warehouses (data/bench/..., or a PostgreSQL "
            "database the report names)"
        ),
    )
    # Smaller backfills than the goals' (e.g. to try a change), with --results elsewhere.
    parser.add_argument("--backfill-meters", type=int, help="year_backfill: meters of the utility (default 20,000)")
    parser.add_argument("--backfill-days", type=int, help="year_backfill: days of the feed (default 365)")
    parser.add_argument("--range-meters", type=int, help="long_range: meters of the utility (default 2,000)")
    parser.add_argument("--range-days", type=int, help="long_range: days of the feed (default 1,095)")
    # batch_cost_vs_history stops at whichever comes first: a fixed session count makes two runs
    # (before and after a change) compare the same history, whatever the machine's load.
    parser.add_argument(
        "--history-sessions",
        type=int,
        metavar="N",
        help="batch_cost_vs_history: sessions of history to build (default: 10,000,000; quick: 20,000)",
    )
    parser.add_argument(
        "--history-budget",
        type=float,
        metavar="S",
        help="batch_cost_vs_history: seconds of bulk inserts per backend at most (default: 3,600; quick: 10)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    data = load_results(args.results)
    sizes = QUICK if args.quick else FULL
    sizes = dataclasses.replace(
        sizes,
        backfill_meters=args.backfill_meters or sizes.backfill_meters,
        backfill_days=args.backfill_days or sizes.backfill_days,
        range_meters=args.range_meters or sizes.range_meters,
        range_days=args.range_days or sizes.range_days,
    )
    if args.history_sessions is not None:
        sizes = dataclasses.replace(sizes, history_sessions=args.history_sessions)
    if args.history_budget is not None:
        sizes = dataclasses.replace(sizes, history_budget_s=args.history_budget)
    ctx = Context(
        sizes,
        mode,
        args.profile,
        not args.no_postgres,
        data.get("latest", {}).get(mode, {}),
        pipelines=tuple(args.pipelines) if args.pipelines else None,
        profile_pipeline=args.profile_pipeline,
        keep_history=args.keep_history,
    )
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
