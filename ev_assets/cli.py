"""`ev-awareness`: the pipeline without the UI.

Every run it starts goes through the Dagster instance (DAGSTER_HOME) with the sensors' run keys and
tags (`ev_assets.runner`, Dagster's public `execute_job`), so the UI and the daemon see it and the
same work is never computed twice. What is left to do is read from the warehouse, as the
sensors read it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ev_assets import settings as settings_module
from ev_assets.settings import Settings

console = Console(highlight=False, soft_wrap=True)
if not console.is_terminal:
    console = Console(highlight=False, soft_wrap=True, width=160)  # piped or logged: no terminal width to fit


def _quiet_dagster(verbose: bool) -> None:
    """Default output is a few lines per stage; `-v` shows the engine's own logs."""
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
    warnings.filterwarnings("ignore")
    for name in ("dagster", "alembic", "dagster_shared"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("DAGSTER_CLI_LOG_LEVEL", "ERROR")


def _instance():
    import dagster as dg

    from ev_assets.instance_config import STORAGE_URL_VARIABLE, uses_postgres_storage

    home = settings_module.dagster_home()
    if not (home / "dagster.yaml").exists():
        raise SystemExit(f"no Dagster instance at {home}: run `ev-awareness init` first")
    if uses_postgres_storage(home) and not os.environ.get(STORAGE_URL_VARIABLE):
        # Dagster's own error names a config path; this one says what to do.
        raise SystemExit(f"{home / 'dagster.yaml'} stores the instance in PostgreSQL: set {STORAGE_URL_VARIABLE}")
    instance = dg.DagsterInstance.get()
    # This process writes every event of the runs it executes, one after the other. dagster-postgres
    # opens a new connection per event by default (NullPool: nothing held between a daemon's ticks):
    # about 10 ms each here, and a month's backfill writes over 500 events. Hold one connection, as
    # dagster-webserver does, without a statement timeout (0: none, the server's default). A no-op
    # for the SQLite storages.
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)
    return instance


def _warehouse():
    from ev_assets.defs.resources import WarehouseResource

    return WarehouseResource().get()


# --- init and schema ---------------------------------------------------------------------------


def cmd_init(_args: argparse.Namespace) -> int:
    from ev_assets.instance_config import (
        STORAGE_URL_VARIABLE,
        StorageConflict,
        uses_postgres_storage,
        write_instance_config,
    )

    s = Settings()
    home = settings_module.dagster_home()
    try:
        path, changed = write_instance_config(home, postgres_storage=bool(s.dagster_storage_url))
    except StorageConflict as e:
        console.print(str(e), style="red")
        return 2
    console.print(f"instance: {path} ({', '.join(changed) if changed else 'up to date'})")
    if uses_postgres_storage(home) and not s.dagster_storage_url:
        console.print(
            f"{path} stores the instance in PostgreSQL: set {STORAGE_URL_VARIABLE} (in every process that opens it)",
            style="red",
        )
        return 2
    _upgrade_instance(home, s.dagster_storage_url if uses_postgres_storage(home) else None)
    code = cmd_db_upgrade(_args)
    if code == 0:
        _record_partitions_start(s)
    return code


def _record_partitions_start(s: Settings) -> None:
    """The first day of the daily partitions, recorded once in DAGSTER_HOME (unless
    EV_PARTITIONS_START is set): the warehouse's first local event day, or, on an empty warehouse,
    a week before today. The UI then lists this deployment's days, not every day since 2010."""
    from zoneinfo import ZoneInfo

    from ev_assets.defs import partitions
    from ev_assets.warehouse.tables import EV_CHARGING_EVENTS

    if settings_module.environment_variable("partitions_start") in os.environ:
        console.print(f"daily partitions start {s.partitions_start} (EV_PARTITIONS_START)")
        return
    path = partitions.recorded_start_path()
    if not path.exists():
        wh = _warehouse()
        first = wh.scalars(sa.select(sa.func.min(wh.table(EV_CHARGING_EVENTS).c.message_date)))[0]
        today = datetime.now(ZoneInfo(s.timezone)).date()
        start = first if first is not None else today - timedelta(days=partitions.NEW_DEPLOYMENT_HISTORY_DAYS)
        path.write_text(f"{start.isoformat()}\n")
    console.print(
        f"daily partitions start {path.read_text().strip()} (recorded in {path}; EV_PARTITIONS_START overrides)"
    )


def _upgrade_instance(home: Path, postgres_url: str | None) -> None:
    """Create the instance's storage (SQLite files under DAGSTER_HOME, or tables in PostgreSQL),
    or migrate it to the installed Dagster (`dagster instance migrate`), once, here. Left to the
    processes that open it first, the daemon, its code server and the webserver create and stamp
    a blank storage at the same moment: SQLite's `alembic_version` then holds two heads and no
    process can open the instance again."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.upgrade()
    if postgres_url:
        shown = sa.engine.make_url(postgres_url).render_as_string(hide_password=True)
        console.print(f"instance storage: {shown} (PostgreSQL, tables up to date)")
    else:
        console.print(f"instance storage: {home} (SQLite, up to date)")


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    from ev_assets.warehouse import migrate

    s = Settings()
    before, after = migrate.upgrade(s.warehouse_url)
    shown = sa.engine.make_url(s.warehouse_url).render_as_string(hide_password=True)
    console.print(
        f"warehouse: {shown} at schema {after}" + (f" (upgraded from {before or 'empty'})" if before != after else "")
    )
    _ensure_month_partitions(s)
    return 0


def _ensure_month_partitions(s: Settings) -> None:
    """PostgreSQL: the history's month partitions of this month and EV_PARTITION_MONTHS_AHEAD ahead
    (and of any month waiting in DEFAULT); nothing on SQLite."""
    from ev_assets.warehouse.month_partitions import ensure_month_partitions
    from ev_assets.warehouse.store import make_engine

    engine = make_engine(s.warehouse_url)
    try:
        created = ensure_month_partitions(engine, s.partition_months_ahead)
    finally:
        engine.dispose()
    if created:
        console.print(
            f"month partitions created: {len(created)} ({', '.join(created[:4])}{', ...' * (len(created) > 4)})"
        )


def cmd_db_partitions(_args: argparse.Namespace) -> int:
    from ev_assets.warehouse.month_partitions import list_partitions, next_month
    from ev_assets.warehouse.store import make_engine

    engine = make_engine(Settings().warehouse_url)
    try:
        found = list_partitions(engine)
    finally:
        engine.dispose()
    if not found:
        console.print("no partitioned tables (SQLite keeps plain tables; PostgreSQL: run `ev-awareness db upgrade`)")
        return 0
    table = Table("table", "partition", "months", "rows")
    for p in found:
        span = (
            "DEFAULT"
            if p.start is None
            else f"{p.start:%Y-%m}"
            if next_month(p.start) == p.end
            else f"{p.start} .. {p.end}"
        )
        table.add_row(p.table, p.name, span, f"{p.rows:,}")
    console.print(table)
    return 0


def cmd_db_detach_month(args: argparse.Namespace) -> int:
    from ev_assets.warehouse.month_partitions import DETACHED_SUFFIX, detach_month, parse_month
    from ev_assets.warehouse.store import make_engine

    try:
        month = parse_month(args.month)
    except ValueError as e:
        console.print(str(e), style="red")
        return 2
    engine = make_engine(Settings().warehouse_url)
    try:
        done = detach_month(engine, month, drop=args.drop)
    except ValueError as e:
        console.print(str(e), style="red")
        return 2
    finally:
        engine.dispose()
    if not done:
        console.print(f"no partition of {month:%Y-%m} to detach")
        return 1
    kept = (
        "dropped" if args.drop else f"kept as <partition>{DETACHED_SUFFIX} (archive with pg_dump -t, then DROP TABLE)"
    )
    console.print(f"{month:%Y-%m}: {len(done)} partitions detached, {kept}: {', '.join(done)}")
    return 0


def cmd_db_current(_args: argparse.Namespace) -> int:
    from ev_assets.warehouse import migrate

    current, head = migrate.schema_status(Settings().warehouse_url)
    console.print(
        f"current: {current or 'none'}; head: {head}" + ("" if current == head else "  (run `ev-awareness db upgrade`)")
    )
    return 0 if current == head else 1


def cmd_db_history(_args: argparse.Namespace) -> int:
    from ev_assets.warehouse import migrate

    for line in migrate.history():
        console.print(line)
    return 0


# --- synthetic data ----------------------------------------------------------------------------


def cmd_reference(args: argparse.Namespace) -> int:
    from ev_assets.core.reference_extracts import write_reference_extracts
    from ev_assets.synthetic import utility

    folder = Settings().reference_dir
    write_reference_extracts(utility.generate_utility(meters=args.meters, seed=args.seed), folder)
    console.print(f"wrote the synthetic reference data of {args.meters:,} meters to {folder}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from ev_assets.core.reference_extracts import read_reference_extracts
    from ev_assets.synthetic import simulator

    s = Settings()
    if args.meters is not None:
        cmd_reference(args)
    elif not (s.reference_dir / "meters.csv").exists():
        console.print(
            f"no reference data in {s.reference_dir}: run `ev-awareness reference` or pass --meters", style="red"
        )
        return 2
    frames = read_reference_extracts(s.reference_dir)
    if args.follow and args.push:
        console.print("--push takes a span of days (--start, --days), not --follow", style="red")
        return 2
    if args.follow:
        console.print(f"following the wall clock (x{args.speedup}); files go to {s.feed_dir}; Ctrl-C stops")
        stop = timedelta(minutes=args.stop_after_minutes) if args.stop_after_minutes else None
        simulator.follow_wall_clock(frames, s.feed_dir, args.seed, speedup=args.speedup, stop_after=stop)
        return 0
    if args.start is None or args.days is None:
        console.print("simulate needs --start and --days (or --follow)", style="red")
        return 2
    truth = Path(args.ground_truth) if args.ground_truth else None
    if args.push:
        from ev_assets.synthetic import push

        sessions = simulator.simulate_sessions(frames, date.fromisoformat(args.start), args.days, args.seed)
        if truth is not None:
            simulator.write_ground_truth(sessions, truth)
        token = args.token or os.environ.get("EV_PUSH_TOKEN")
        done = push.push_feed(simulator.session_messages(sessions, args.seed), args.push, fmt=args.format, token=token)
        console.print(
            f"pushed {sessions.height:,} sessions: {done.messages:,} messages in {done.payloads:,} "
            f"{args.format} payloads to {args.push} "
            f"in {done.seconds:.1f} s ({done.payloads_per_s:,.0f} payloads/s, {done.messages_per_s:,.0f} messages/s)"
        )
        return 0
    summary = simulator.simulate_to_folder(
        frames, s.feed_dir, date.fromisoformat(args.start), args.days, args.seed, ground_truth=truth
    )
    console.print(
        (
            f"simulated {summary.sessions:,} sessions: {summary.messages:,} messages in {summary.files:,} files "
            f"in {s.feed_dir}"
        )
    )
    return 0


# --- the vendor's stream ------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from ev_assets.api.app import serve

    console.print(f"events API on http://{args.host}:{args.port}/v1/ev-charging-events (docs: /docs)")
    serve(args.host, args.port, Settings(), log_level="info" if args.verbose else "warning")
    return 0


def cmd_receive(args: argparse.Namespace) -> int:
    from ev_assets.receiver.app import serve

    s = Settings()
    if not s.receiver_token_hashes:
        console.print(
            (
                "EV_RECEIVER_TOKEN_SHA256S is empty: every push will be refused (`ev-awareness receiver-token` "
                "makes a token)"
            ),
            style="yellow",
        )
    scheme = "https" if s.receiver_tls_cert else "http"
    console.print(f"receiving on {scheme}://{args.host}:{args.port}/ev-charging-events into {s.feed_dir}")
    serve(args.host, args.port, s, log_level="info" if args.verbose else "warning")
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    from ev_assets.live.service import run_service

    # The service's own log (files read, records rejected, broker up or down) on stderr.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    s = Settings()
    console.print(
        f"live: {s.feed_dir} -> MQTT {s.mqtt_host}:{s.mqtt_port} topics {s.mqtt_topic_prefix}/transformer/<id>/..."
    )
    run_service(s, skip_existing=args.skip_existing)
    return 0


def cmd_receiver_token(_args: argparse.Namespace) -> int:
    from ev_assets.receiver.auth import new_token

    token, digest = new_token()
    console.print(f"token:  {token}")
    console.print(f"sha256: {digest}")
    console.print(
        (
            "give the token to the sender; add the hash to EV_RECEIVER_TOKEN_SHA256S (comma-separated). The "
            "token is not stored anywhere."
        )
    )
    return 0


def cmd_emulate_vendor(args: argparse.Namespace) -> int:
    from ev_assets.core.reference_extracts import read_reference_extracts
    from ev_assets.synthetic import simulator, vendor_emulator

    s = Settings()
    frames = read_reference_extracts(s.reference_dir)
    sessions = simulator.simulate_sessions(frames, date.fromisoformat(args.start), args.days, args.seed)
    rows = vendor_emulator.export_frame(simulator.session_messages(sessions, args.seed))
    config = vendor_emulator.EmulatorConfig(
        client_id=args.client_id, client_secret=args.client_secret, delay_s=args.delay
    )
    console.print(
        f"vendor emulator on http://{args.host}:{args.port}: {rows.height:,} messages of {args.days} days "
        f"from {args.start}; "
        f"token URL /oauth2/token (client {config.client_id}), jobs /subscriptions/<id>/batch-request, ready "
        f"after {config.delay_s:g} s"
    )
    vendor_emulator.serve(rows, args.host, args.port, config)
    return 0


# --- run ---------------------------------------------------------------------------------------


class _RunPrinter:
    """One progress bar per stage; the runs' own logs stay in the instance (and under -v)."""

    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.failed: list[str] = []
        self.totals = {"files_read": 0, "records_read": 0, "accepted": 0, "duplicates": 0, "rejected": 0}

    def stage(self, label: str, requests: list, job_name: str, instance) -> list:
        from ev_assets import runner

        if not requests:
            return []
        runs = []
        columns = [TextColumn(f"{label:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console, disable=self.verbose or not console.is_terminal) as progress:
            task = progress.add_task(label, total=len(requests))
            for request in requests:
                run = runner.run_request(
                    instance, request, request.job_name or job_name, self._on_event, self.log_level
                )
                runs.append(self._finished(label, request, run))
                progress.advance(task)
        self._summary(label, runs)
        return runs

    @property
    def log_level(self) -> str:
        return "DEBUG" if self.verbose else "WARNING"

    def _finished(self, label: str, request, run):
        if not run.is_success and run.is_finished:
            self.failed.append(
                f"{label} run {run.run_id[:8]} ({request.run_key}) failed: `dagster` UI or `ev-awareness status`"
            )
        return run

    def _summary(self, label: str, runs: list) -> None:
        ok = sum(r.is_success for r in runs)
        # A run this process executed is finished; one it is not is a run key's run on its way in
        # another process (another `ev-awareness run`, the daemon), left to it: not a failure.
        elsewhere = sum(not r.is_finished for r in runs)
        failed = len(runs) - ok - elsewhere
        console.print(
            f"{label:<12} {len(runs)} runs, {ok} ok"
            + (f", {elsewhere} on its way in another process" if elsewhere else "")
            + (f", {failed} FAILED" if failed else "")
        )

    def ingest_beside_loads(self, instance, ingest_requests: list, load_requests, workers: int) -> None:
        """The ingest runs and the daily-load runs at once, in `workers` processes (PostgreSQL): up
        to workers - 1 ingest runs in flight, in order, while the other workers load the days the
        pairing has queued so far (`load_requests()`: the daily-load sensor's own requests), a span
        at a time and never one that shares a locked day with a load in flight; once the ingest is
        done, every worker loads. The pairing locks meter shards and the daily load days, so the
        two write at the same time; a day changed again after its load read it stays queued and is
        loaded again (ev_assets.pipeline.sessions.queue_load_days)."""
        from collections import deque
        from concurrent.futures import FIRST_COMPLETED, wait

        import dagster as dg

        from ev_assets import runner
        from ev_assets.defs import planning
        from ev_assets.defs.ingest import jobs as ingest_jobs

        def days_locked(request) -> tuple[date, date]:  # a range's days and the day before
            first = date.fromisoformat(request.tags[planning.RANGE_START]) - timedelta(days=1)
            return first, date.fromisoformat(request.tags[planning.RANGE_END])

        waiting = deque(ingest_requests)
        in_flight: dict = {}
        asked: set[str] = set()
        runs: dict[str, list] = {"ingest": [], "daily load": []}
        pool = runner.Workers(workers)
        try:
            while True:
                ingesting = sum(label == "ingest" for label, _ in in_flight.values())
                while waiting and ingesting < max(1, workers - 1) and len(in_flight) < workers:
                    request = waiting.popleft()
                    job = request.job_name or ingest_jobs.ingest_job.name
                    in_flight[pool.submit(request, job, self.log_level)] = ("ingest", request)
                    ingesting += 1
                loading = [days_locked(r) for label, r in in_flight.values() if label == "daily load"]
                for request in load_requests() if len(in_flight) < workers else []:
                    span = days_locked(request)
                    if request.run_key in asked or any(span[0] <= b and a <= span[1] for a, b in loading):
                        continue
                    asked.add(request.run_key)
                    in_flight[pool.submit(request, planning.daily_load_job.name, self.log_level)] = (
                        "daily load",
                        request,
                    )
                    loading.append(span)
                    if len(in_flight) >= workers:
                        break
                if not in_flight:
                    break
                done, _ = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    label, request = in_flight.pop(future)
                    run = instance.get_run_by_id(future.result())
                    materialized = dg.DagsterEventType.ASSET_MATERIALIZATION
                    for entry in instance.all_logs(run.run_id, of_type=materialized):
                        self._on_event(entry.dagster_event)
                    runs[label].append(self._finished(label, request, run))
        finally:
            pool.close()
        for label, finished in runs.items():
            if finished:
                self._summary(label, finished)

    def _on_event(self, event) -> None:
        if event.is_step_materialization and event.asset_key and event.asset_key.path[-1] == "ev_charging_events":
            metadata = event.step_materialization_data.materialization.metadata
            for key in self.totals:
                if key in metadata:
                    self.totals[key] += metadata[key].value


def cmd_run(args: argparse.Namespace) -> int:
    """Every pending batch, the pairing a dead run may have left, then every queued day."""

    from ev_assets import pipeline, runner
    from ev_assets.defs import planning, vendor
    from ev_assets.defs.ingest import jobs
    from ev_assets.defs.ingest import requests as ingest_requests
    from ev_assets.defs.operations import fail_dead_runs
    from ev_assets.defs.partitions import outside_partitions_message
    from ev_assets.defs.reference import reference_job
    from ev_assets.defs.resources import FeedResource, ReferenceResource, WarehouseResource
    from ev_assets.defs.runs import utc_day

    workers = getattr(args, "workers", 1)
    if workers < 1:
        console.print("--workers must be at least 1", style="red")
        return 2
    if workers > 1 and WarehouseResource().get().dialect == "sqlite":
        console.print(
            "--workers needs PostgreSQL (EV_WAREHOUSE_URL): SQLite takes one writer at a time, so more "
            "workers would only wait for each other",
            style="red",
        )
        return 2
    instance = _instance()
    for dead in fail_dead_runs(instance):
        console.print(
            f"run {dead.run_id[:8]} ({dead.job_name}) lost its worker: marked failed; its work is redone below"
        )
    printer = _RunPrinter(args.verbose)
    feed_res, ref_res, wh_res = FeedResource(), ReferenceResource(), WarehouseResource()
    # Files a run committed and died before moving (its batch the last one: no later step moves them).
    if moved := pipeline.archive_committed(wh_res.get(), feed_res.path, utc_day()):
        console.print(f"{moved} committed files left in the landing folder by a run that died: archived")
    with runner.code_location(instance):
        # The feed sensor's own decision, evaluated without a cursor (a full scan: the file ledger
        # says what is done). New reference extracts come first, as under the daemon.
        requests, _, reason = ingest_requests.feed_run_requests(instance, feed_res, ref_res, wh_res, cursor=None)
        if any(r.job_name == reference_job.name for r in requests):
            printer.stage("reference", requests, reference_job.name, instance)
            requests, _, reason = ingest_requests.feed_run_requests(instance, feed_res, ref_res, wh_res, cursor=None)
        if not requests:
            console.print(reason)
        loads_asked: set[str] = set()

        def load_requests() -> list:
            return [r for r in planning.pending_load_run_requests(wh_res)[0] if r.run_key not in loads_asked]

        if workers > 1:
            printer.ingest_beside_loads(instance, requests, load_requests, workers)
        else:
            printer.stage("ingest", requests, jobs.ingest_job.name, instance)

        # Batches committed by a run that died before pairing them (the feed sensor's own request).
        pairing = ingest_requests.pairing_run_request(instance, wh_res)
        if pairing is not None:
            printer.stage("pairing", [pairing], jobs.sessions_job.name, instance)

        # Every queued day, until none is new: a recomputed day may queue the day after it (its
        # end-of-day thermal state moved). Each request at most once: a failed run is reported.
        while queued := load_requests():
            loads_asked.update(r.run_key for r in queued)
            printer.stage("daily load", queued, planning.daily_load_job.name, instance)
        outside = planning.pending_load_run_requests(wh_res)[1]

        # Never-loaded days of the partitions (a short gap: days with no charging), then the planning
        # snapshots, which follow the daily load (daily_load_sensor's decisions once no day waits).
        fills, _ = planning.fill_run_requests(instance)
        printer.stage("empty days", fills, planning.daily_load_job.name, instance)
        # A snapshot that reads another (the queue, the forecast) is asked for once that one is
        # current: ask again until nothing is, each request at most once (a failed run is reported,
        # not retried here). The forecast too when its daily schedule is due: no daemon runs it here.
        asked: set[str] = set()
        while requests := [
            r for r in planning.snapshot_run_requests(instance, daily_due=True) if r.run_key not in asked
        ]:
            for request in requests:
                asked.add(request.run_key)
                printer.stage(
                    request.job_name.removesuffix("_job").replace("_", " "),
                    [request],
                    request.job_name,
                    instance,
                )

        # The gap each ingested batch export filled (vendor_gap_sensor's decision).
        gap_requests, _ = vendor.gap_run_requests(wh_res)
        gap_requests = [r for r in gap_requests if runner.existing_run(instance, r.run_key) is None]
        printer.stage("export gap", gap_requests, vendor.vendor_gap_job.name, instance)
    t = printer.totals
    if t["records_read"]:
        console.print(
            f"{t['files_read']:,} files: {t['records_read']:,} records read = {t['accepted']:,} accepted + "
            f"{t['duplicates']:,} duplicates + {t['rejected']:,} rejected"
        )
    for line in printer.failed:
        console.print(line, style="red")
    if outside:
        console.print(outside_partitions_message(outside), style="red")
    return 1 if printer.failed or outside else 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """The received-day partitions of `vendor_export_files` for a range, through the instance, then
    `run`: what landed is ingested and paired, the days' load computed and the gap each export
    filled counted."""
    import dagster as dg

    from ev_assets import runner
    from ev_assets.defs import vendor

    first, last = date.fromisoformat(args.received_from), date.fromisoformat(args.received_to)
    if last < first:
        console.print("--received-to is before --received-from", style="red")
        return 2
    keys = set(vendor.RECEIVED_DAYS.get_partition_keys())
    days = [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
    outside = [d for d in days if d not in keys]
    if outside:
        console.print(
            f"received days outside the partitions (EV_PARTITIONS_START .. today, UTC): {', '.join(outside[:5])}",
            style="red",
        )
        return 2
    filetype = {"parquet": "Parquet", "json": "Json", "csv": "Csv", "orc": "Orc"}[args.format] if args.format else ""
    run_config = {"ops": {vendor.vendor_export_files.op.name: {"config": {"filetype": filetype}}}}
    requests = [
        # No run key: a backfill asked for again is requested again (its messages are duplicates).
        dg.RunRequest(
            job_name=vendor.vendor_export_job.name,
            partition_key=day,
            run_config=run_config,
            tags={"dagster/partition": day, "ev/backfill": f"{first}..{last}"},
        )
        for day in days
    ]
    instance = _instance()
    printer = _RunPrinter(args.verbose)
    with runner.code_location(instance):
        printer.stage("export", requests, vendor.vendor_export_job.name, instance)
    for line in printer.failed:
        console.print(line, style="red")
    code = cmd_run(args)
    return 1 if printer.failed or code else 0


# --- status and tables -------------------------------------------------------------------------


def cmd_status(_args: argparse.Namespace) -> int:
    """Row counts, the ledger's totals (the proof that nothing was lost), and what is pending."""
    from ev_assets import pipeline
    from ev_assets.defs.ingest.requests import landing_files_to_ingest
    from ev_assets.defs.resources import FeedResource, WarehouseResource

    wh = _warehouse()
    table = Table("table", "rows", box=None)
    for name, count in wh.row_counts().items():
        table.add_row(name, f"{count:,}")
    console.print(table)
    t = pipeline.ledger_totals(wh)
    console.print(
        f"ledger, {t['batches']:,} batches: {t['records_read']:,} records read = {t['accepted']:,} accepted + "
        f"{t['duplicates']:,} duplicates + {t['rejected']:,} rejected; {t['files_read']:,} files read = "
        f"{t['files_parsed']:,} parsed + {t['files_quarantined']:,} quarantined + {t['files_already_read']:,} "
        "already read; "
        f"{t['events_stored']:,} events stored: {'reconciles' if t['reconciled'] else 'DOES NOT RECONCILE'}"
    )
    # A read: the files are counted, none is moved (the step that commits a batch archives them).
    files = len(landing_files_to_ingest(FeedResource(), WarehouseResource(), None))
    days = pipeline.pending_load_days(wh)
    console.print(
        (
            f"pending: {files:,} files ({Settings().feed_dir}), "
            f"{len(pipeline.batches_awaiting_pairing(wh)):,} batches to pair, {days.height:,} days of daily load"
        )
    )
    for line in _snapshot_freshness(wh):
        console.print(line)
    failed = _failed_runs()
    for line in failed:
        console.print(line, style="red")
    return 0 if t["reconciled"] and not failed else 1


def _snapshot_freshness(wh) -> list[str]:
    """Each planning snapshot's last refresh against the daily load's latest computation, from the
    tables' own `updated_at` (what a planner querying them gets)."""
    from ev_assets.warehouse import tables

    def computed_at(spec):
        column = wh.table(spec).c.updated_at
        return wh.scalars(sa.select(sa.func.max(column)))[0]

    load_at = computed_at(tables.TRANSFORMER_DAILY_LOAD)
    lines = []
    snapshots = (
        tables.PREMISE_EV_PROFILE,
        tables.NEW_EVS,
        tables.EV_CHARGING_BEHAVIOR,
        tables.TRANSFORMER_OVERLOAD_FORECAST,
        tables.TRANSFORMER_PLANNING_QUEUE,
    )
    # The forecast and its behavior table are refreshed once a local day (daily_forecast), not after
    # each daily load: current while refreshed today.
    daily = {tables.EV_CHARGING_BEHAVIOR.name, tables.TRANSFORMER_OVERLOAD_FORECAST.name}
    for spec in snapshots:
        refreshed = computed_at(spec)
        if refreshed is None:
            verdict = "no rows yet" + ("" if load_at is None else ": `ev-awareness run` refreshes it")
        elif spec.name in daily:
            # The local day, as the schedule and snapshot_run_requests count it.
            from zoneinfo import ZoneInfo

            local = ZoneInfo(Settings().timezone)
            stale = _utc(refreshed).astimezone(local).date() < datetime.now(local).date()
            verdict = f"refreshed {_utc(refreshed):%Y-%m-%d %H:%M} UTC, " + (
                "STALE: not refreshed today (daily_forecast)" if stale else "current (refreshed today, daily)"
            )
        elif load_at is not None and _utc(refreshed) < _utc(load_at):
            verdict = (
                f"refreshed {_utc(refreshed):%Y-%m-%d %H:%M} UTC, STALE: the daily load changed at "
                f"{_utc(load_at):%Y-%m-%d %H:%M} UTC"
            )
        else:
            verdict = f"refreshed {_utc(refreshed):%Y-%m-%d %H:%M} UTC, current (after the latest daily load)"
        lines.append(f"snapshot {spec.name}: {verdict}")
    return lines


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _failed_runs() -> list[str]:
    """Runs whose last attempt failed (after the daemon's retries): what a person must look at."""
    home = settings_module.dagster_home()
    if not (home / "dagster.yaml").exists():
        return []
    from ev_assets.defs.operations import exhausted_failures, failure_report

    return [failure_report(run) for run in exhausted_failures(_instance())]


def cmd_top(args: argparse.Namespace) -> int:
    from ev_assets.warehouse.tables import TRANSFORMER_DAILY_LOAD

    wh = _warehouse()
    t = wh.table(TRANSFORMER_DAILY_LOAD)
    where = t.c.load_date == date.fromisoformat(args.date) if args.date else None
    daily = wh.read(TRANSFORMER_DAILY_LOAD, where)
    if daily.is_empty():
        console.print("transformer_daily_load is empty: has `ev-awareness run` processed a feed?", style="red")
        return 1
    top = (
        daily.sort("peak_kw", descending=True)
        .head(args.limit)
        .with_columns(
            pl.col("peak_interval_start")
            .dt.convert_time_zone(Settings().timezone)
            .dt.strftime("%H:%M")
            .alias("peak_local")
        )
    )
    tz = Settings().timezone
    table = Table(
        title=f"busiest transformers by coincident 15-minute EV peak (local days and times, {tz})",
        title_justify="left",
        caption=TOP_CAPTION,
        caption_justify="left",
    )
    for column in (
        "transformer",
        "day",
        "kVA",
        "sessions started",
        "EVs charging",
        "kWh",
        "peak kW",
        "peak at",
        "utilization",
    ):
        table.add_column(column, justify="left" if column in ("transformer", "day", "peak at") else "right")
    for row in top.iter_rows(named=True):
        table.add_row(
            row["transformer_id"],
            str(row["load_date"]),
            _num(row["kva_rating"], 1),
            str(row["session_count"]),
            str(row["ev_count"]),
            _num(row["energy_kwh"], 1),
            _num(row["peak_kw"], 2),
            row["peak_local"],
            _num(row["utilization"], 3),
        )
    console.print(table)
    return 0


# What each column of `top` counts: EVs can exceed sessions, since a session that started the day
# before and charges past midnight loads this day without starting on it.
TOP_CAPTION = (
    "sessions started: trusted sessions that started on the day; EVs charging: distinct meters with trusted load "
    "in any 15-minute interval of the day (a car plugged in the evening before counts here, not in sessions); "
    "kWh: trusted energy delivered in the day; peak kW: the largest 15-minute coincident EV load; "
    "utilization: peak kW / (kVA x EV_POWER_FACTOR)."
)


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


# --- exports ----------------------------------------------------------------------------------

# Tables a planner exports, and the local-date columns --from/--to select on: one column (its day
# lies in the range) or two (the row's span [first, last] overlaps the range).
EXPORTABLE: dict[str, tuple[str, ...]] = {
    "transformer_daily_load": ("load_date",),
    "feeder_daily_load": ("load_date",),
    "substation_daily_load": ("load_date",),
    "transformer_interval_load": ("load_date",),
    "feeder_interval_load": ("load_date",),
    "substation_interval_load": ("load_date",),
    "premise_ev_profile": ("first_charging_day", "last_charging_day"),
    "new_evs": ("first_charging_day",),
    "ev_charging_behavior": ("history_end",),
    "transformer_overload_forecast": ("as_of_date",),
    "ev_charging_sessions": ("event_date",),
    "ev_charging_events": ("message_date",),
}


def export_frame(wh, table: str, first: date | None, last: date | None, transformers: list[str] | None) -> pl.DataFrame:
    """The rows of `table` whose days lie in first..last (either end open), for the transformers
    given (all when none), sorted by the primary key."""
    from ev_assets.warehouse.tables import ALL_TABLES

    spec = next(s for s in ALL_TABLES if s.name == table)
    t = wh.table(spec).c
    day_columns = EXPORTABLE[table]
    conditions = []
    if first is not None:
        conditions.append(t[day_columns[-1]] >= first)
    if last is not None:
        conditions.append(t[day_columns[0]] <= last)
    if transformers:
        if "transformer_id" not in spec.column_names:
            raise SystemExit(f"{table} has no transformer_id: --transformer does not apply")
        conditions.append(t.transformer_id.in_(transformers))
    frame = wh.read(spec, sa.and_(*conditions) if conditions else None)
    return frame.sort(list(spec.primary_key))


def cmd_export(args: argparse.Namespace) -> int:
    first = date.fromisoformat(args.date_from) if args.date_from else None
    last = date.fromisoformat(args.date_to) if args.date_to else None
    if first and last and first > last:
        console.print("--from is after --to", style="red")
        return 2
    frame = export_frame(_warehouse(), args.table, first, last, args.transformer)
    to_stdout = args.out == "-"
    if to_stdout:
        # The rows alone on stdout (a pipe into another tool); what was written goes to stderr.
        out = sys.stdout.buffer
    else:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_frame(frame, args.format, out)
        if to_stdout:
            sys.stdout.buffer.flush()
    except OSError as exc:
        # A reader that stopped early (`| head`) closes the pipe: that ends the export, quietly.
        if not (to_stdout and (isinstance(exc, BrokenPipeError) or "os error 32" in str(exc))):
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    where = "stdout" if to_stdout else str(out)
    Console(stderr=True).print(f"exported {frame.height:,} rows of {args.table} to {where} ({args.format})")
    return 0


def _write_frame(frame: pl.DataFrame, file_format: str, out) -> None:
    if file_format == "csv":
        frame.write_csv(out)
    elif file_format == "parquet":
        frame.write_parquet(out)
    else:
        frame.write_json(out)


# --- quarantine --------------------------------------------------------------------------------


def _select_rejections(args: argparse.Namespace) -> pl.DataFrame:
    from ev_assets.warehouse.tables import EV_REJECTED_MESSAGES

    wh = _warehouse()
    r = wh.table(EV_REJECTED_MESSAGES).c
    conditions = [r.status == "quarantined"]
    if args.batch:
        conditions.append(r.batch_id == args.batch)
    if args.code:
        conditions.append(r.reason_codes.contains(args.code))
    return wh.read(EV_REJECTED_MESSAGES, sa.and_(*conditions))


def cmd_rejected_list(args: argparse.Namespace) -> int:
    rows = _select_rejections(args)
    console.print(f"{rows.height:,} quarantined records")
    if rows.height:
        counts = rows["reason_codes"].str.split(",").explode().value_counts(sort=True)
        for code, n in counts.iter_rows():
            console.print(f"  {code:28s} {n:>8,d}")
        table = Table("rejection_id", "reason_codes", "raw_record", box=None)
        for rejection_id, codes, raw in (
            rows.select("rejection_id", "reason_codes", "raw_record").head(args.limit).iter_rows()
        ):
            table.add_row(rejection_id, codes, raw[:120])
        console.print(table)
    return 0


def cmd_rejected_export(args: argparse.Namespace) -> int:
    rows = _select_rejections(args)
    records = []
    for rejection_id, raw in rows.select("rejection_id", "raw_record").iter_rows():
        record = json.loads(raw)
        records.append(
            {"_rejection_id": rejection_id, **record}
            if isinstance(record, dict)
            else {"_rejection_id": rejection_id, "_record": record}
        )
    Path(args.out).write_text(json.dumps({"EVChargingEvents": records}, indent=1, ensure_ascii=False))
    console.print(
        (
            f"exported {len(records):,} quarantined records to {args.out}: correct them, then `ev-awareness "
            f"rejected replay --file {args.out}`"
        )
    )
    return 0


def cmd_rejected_replay(args: argparse.Namespace) -> int:
    """Replay through `ingest_job`, like any batch: same rules, same ledger, same checks; then the
    days its sessions touched."""

    from ev_assets import runner
    from ev_assets.defs import planning
    from ev_assets.defs.ingest.requests import replay_run_request
    from ev_assets.defs.resources import WarehouseResource

    if args.file:
        ids = [r["_rejection_id"] for r in json.loads(Path(args.file).read_text())["EVChargingEvents"]]
    else:
        ids = _select_rejections(args)["rejection_id"].to_list()
    if not ids:
        console.print("nothing to replay")
        return 0
    batch_id = f"replay-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
    corrected = str(Path(args.file).resolve()) if args.file else None
    instance = _instance()
    printer = _RunPrinter(args.verbose)
    request = replay_run_request(batch_id, ids, corrected)
    with runner.code_location(instance):
        (run,) = printer.stage("replay", [request], request.job_name, instance)
        load_requests, _ = planning.pending_load_run_requests(WarehouseResource())
        printer.stage("daily load", load_requests, planning.daily_load_job.name, instance)
    t = printer.totals
    console.print(
        (
            f"{batch_id}: {t['records_read']:,} records replayed = {t['accepted']:,} accepted + "
            f"{t['duplicates']:,} duplicates + {t['rejected']:,} still quarantined"
        )
    )
    return 0 if run.is_success and not printer.failed else 1


# --- arguments ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ev-awareness", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show the engine's own logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "init",
        help=(
            "write the Dagster instance configuration (DAGSTER_HOME), create or migrate its storage, and upgrade "
            "the warehouse schema"
        ),
    ).set_defaults(func=cmd_init)

    db = sub.add_parser("db", help="the warehouse schema (Alembic migrations)").add_subparsers(
        dest="action", required=True
    )
    db.add_parser("upgrade", help="upgrade the warehouse to the code's schema").set_defaults(func=cmd_db_upgrade)
    db.add_parser("current", help="the warehouse's schema revision and the code's").set_defaults(func=cmd_db_current)
    db.add_parser("history", help="the migrations, newest first").set_defaults(func=cmd_db_history)
    db.add_parser("partitions", help="PostgreSQL: the history's month partitions, with their row counts").set_defaults(
        func=cmd_db_partitions
    )
    p = db.add_parser(
        "detach-month",
        help=(
            "PostgreSQL retention: detach one past month (YYYY-MM) from every partitioned table, keeping each "
            "partition as a plain table <partition>_detached (or dropping it with --drop)"
        ),
    )
    p.add_argument("month", help="YYYY-MM, before the current month")
    p.add_argument("--drop", action="store_true", help="drop the detached partitions instead of keeping them")
    p.set_defaults(func=cmd_db_detach_month)

    p = sub.add_parser("reference", help="generate the synthetic utility's reference data (CSV) into EV_REFERENCE_DIR")
    p.add_argument("--meters", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("simulate", help="write a synthetic agent feed into EV_FEED_DIR")
    p.add_argument("--start", help="first simulated day, YYYY-MM-DD (local)")
    p.add_argument("--days", type=int)
    p.add_argument("--meters", type=int, help="regenerate the reference data with this many meters first")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--ground-truth", help="also write the simulated sessions (Parquet) here")
    p.add_argument("--follow", action="store_true", help="follow the wall clock instead of a span of days")
    p.add_argument("--speedup", type=float, default=1.0)
    p.add_argument("--stop-after-minutes", type=float)
    p.add_argument(
        "--push",
        metavar="URL",
        help=(
            "push the feed to a stream receiver (e.g. http://127.0.0.1:8080/ev-charging-events) instead of "
            "writing files"
        ),
    )
    p.add_argument("--format", choices=["json", "avro"], default="json", help="with --push: the payload encoding")
    p.add_argument("--token", help="with --push: the bearer token (default: EV_PUSH_TOKEN)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("receive", help="serve the stream receiver (POST /ev-charging-events) into EV_FEED_DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_receive)
    p = sub.add_parser("serve", help="serve the events API (GET /v1/ev-charging-events), read-only")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser(
        "live",
        help="publish the landing folder's events, transformer states and overload alerts to MQTT and webhooks",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="mark the files already in the landing folder as read without publishing them",
    )
    p.set_defaults(func=cmd_live)
    sub.add_parser(
        "receiver-token", help="print a new random receiver token and its SHA-256 hash (for EV_RECEIVER_TOKEN_SHA256S)"
    ).set_defaults(func=cmd_receiver_token)

    p = sub.add_parser(
        "emulate-vendor", help="serve an emulation of the vendor's batch-export API over a simulated feed (tests, demo)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--start", default="2024-06-03", help="first simulated local day")
    p.add_argument("--days", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--delay", type=float, default=5.0, help="seconds before a job succeeds")
    p.add_argument("--client-id", default="emulator-client")
    p.add_argument("--client-secret", default="emulator-secret")
    p.set_defaults(func=cmd_emulate_vendor)

    p = sub.add_parser(
        "backfill",
        help="request the vendor's batch export of each received day (UTC) of a range, then `run` to ingest it",
    )
    p.add_argument("--received-from", required=True, metavar="YYYY-MM-DD", help="first received day (UTC)")
    p.add_argument("--received-to", required=True, metavar="YYYY-MM-DD", help="last received day (UTC), included")
    p.add_argument(
        "--format",
        choices=["parquet", "json", "csv", "orc"],
        help="export file type (default: the vendor resource's, Parquet)",
    )
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("run", help="process everything pending: reference data, ingest batches, pairing, daily load")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes executing runs at once (PostgreSQL): the daily load of the days paired so far "
        "beside the ingest of the next batches",
    )
    p.set_defaults(func=cmd_run)
    sub.add_parser("status", help="row counts, the ledger's reconciliation, pending work and failed runs").set_defaults(
        func=cmd_status
    )

    p = sub.add_parser("top", help="the busiest transformers by coincident peak")
    p.add_argument("--date", help="local day YYYY-MM-DD (default: all days)")
    p.add_argument("--limit", type=int, default=10)
    p.set_defaults(func=cmd_top)

    p = sub.add_parser(
        "export",
        help="write a table (a range of local days, some transformers) to CSV, Parquet or JSON, to a file or stdout",
    )
    p.add_argument("table", choices=sorted(EXPORTABLE))
    p.add_argument("--from", dest="date_from", help="first local day YYYY-MM-DD (default: the first)")
    p.add_argument("--to", dest="date_to", help="last local day YYYY-MM-DD, inclusive (default: the last)")
    p.add_argument(
        "--format",
        choices=["csv", "parquet", "json"],
        default="csv",
        help="csv (header row, ISO-8601 times in UTC), parquet, or json (an array of row objects)",
    )
    p.add_argument(
        "--transformer",
        action="extend",
        nargs="+",
        metavar="ID",
        help="only these transformers (tables with transformer_id)",
    )
    p.add_argument("--out", required=True, help="output file, or - for stdout")
    p.set_defaults(func=cmd_export)

    rejected = sub.add_parser("rejected", help="inspect, export and replay quarantined records").add_subparsers(
        dest="action", required=True
    )
    for name, func, helptext in (
        ("list", cmd_rejected_list, "count and show quarantined records"),
        ("export", cmd_rejected_export, "write quarantined records to a JSON payload to correct"),
        ("replay", cmd_rejected_replay, "put quarantined (or corrected) records through the contract again"),
    ):
        p = rejected.add_parser(name, help=helptext)
        p.add_argument("--batch", help="only records quarantined by this batch")
        p.add_argument("--code", help="only records with this rejection code")
        p.add_argument("--limit", type=int, default=20)
        if name == "export":
            p.add_argument("--out", required=True)
        if name == "replay":
            p.add_argument("--file", help="a corrected export (records keep their _rejection_id)")
        p.set_defaults(func=func)
    return parser


# Exit code of a command stopped by a database that did not answer or failed (sysexits'
# EX_TEMPFAIL): what wraps the command (cron, systemd, a scheduler) can try again later.
EXIT_DATABASE_AWAY = 75


def main(argv: list[str] | None = None) -> int:
    from ev_assets.warehouse.migrate import SchemaError

    args = build_parser().parse_args(argv)
    # The CLI and the runs it executes share one instance: the project's unless DAGSTER_HOME says.
    os.environ.setdefault("DAGSTER_HOME", str(settings_module.dagster_home()))
    _quiet_dagster(args.verbose)
    # A step's own database errors are retried inside its run (retry_when_transient); these are
    # the command's: the warehouse or the instance away before or between its runs. One message
    # that names the setting, not a traceback.
    try:
        return args.func(args)
    except SchemaError as e:
        print(str(e), file=sys.stderr)
        return 1
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
        print(_database_failed(e), file=sys.stderr)
        return EXIT_DATABASE_AWAY


def _database_failed(error: sa.exc.DBAPIError) -> str:
    """What a person needs when a database stopped the command: the driver's reason, which
    settings point where, and that trying again is safe."""
    reason = (str(error.orig) if error.orig is not None else str(error)).strip().splitlines()[0]
    # SQLAlchemy gives no statement for an error raised while connecting.
    lost = error.statement is None or error.connection_invalidated
    headline = f"a database did not answer: {reason}" if lost else f"a database failed a statement: {reason}"
    s = Settings()
    where = [
        f"the warehouse is EV_WAREHOUSE_URL={sa.engine.make_url(s.warehouse_url).render_as_string(hide_password=True)}"
    ]
    if s.dagster_storage_url:
        shown = sa.engine.make_url(s.dagster_storage_url).render_as_string(hide_password=True)
        where.append(f"the Dagster instance is EV_DAGSTER_STORAGE_URL={shown}")
    return (
        f"{headline}\n{'; '.join(where)}.\n"
        "Nothing is half-written (every write is one transaction) and unread files stay in the landing "
        f"folder: run the command again once the database answers (exit code {EXIT_DATABASE_AWAY}: try again later)."
    )


if __name__ == "__main__":
    sys.exit(main())
