"""`ev-awareness`: the pipeline without the UI, driving the same Dagster definitions.

Every run it executes is recorded in the Dagster instance (DAGSTER_HOME), so `dagster dev` shows
them beside the daemon's.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ev_assets import settings

settings.apply_defaults()

import dagster as dg  # noqa: E402
import polars as pl  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from ev_assets import pipeline
from ev_assets.core.reference_extracts import read_reference_extracts, write_reference_extracts  # noqa: E402
from ev_assets.definitions import build_resources, defs  # noqa: E402
from ev_assets.defs.ingest import ev_feed_sensor, pending_batches  # noqa: E402
from ev_assets.defs.metadata import BATCH_TAG, touched_dates_of  # noqa: E402
from ev_assets.defs.planning import clip_to_partitions, daily_load_run_requests  # noqa: E402
from ev_assets.defs.reference import REFERENCE_VERSION, reference_version  # noqa: E402
from ev_assets.synthetic import simulator, utility  # noqa: E402
from ev_assets.warehouse.tables import EV_REJECTED_MESSAGES, REF_METERS, TRANSFORMER_DAILY_LOAD  # noqa: E402


def _resources() -> dict:
    return build_resources(resolved=True)


def _warehouse():
    return _resources()["warehouse"].get()


def _execute(job_name: str, instance: dg.DagsterInstance, request: dg.RunRequest | None = None):
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(
        run_config=request.run_config if request and request.run_config else None,
        instance=instance,
        tags={**(request.tags if request else {}), **({"dagster/run_key": request.run_key} if request and request.run_key else {})},
        raise_on_error=False,
    )


def _touched_days(result) -> list[date]:
    days: set[date] = set()
    in_job = {node.name for node in result.job_def.nodes_in_topological_order}
    for node in ("ev_charging_sessions", "reference_tables"):
        if node not in in_job:
            continue
        for m in result.asset_materializations_for_node(node):
            days.update(touched_dates_of(m.metadata))
    return sorted(days)


# --- commands ----------------------------------------------------------------------------------


def cmd_reference(args: argparse.Namespace) -> int:
    frames = utility.generate_utility(meters=args.meters, seed=args.seed)
    write_reference_extracts(frames, settings.reference_dir())
    print(f"wrote the reference data of {args.meters} meters to {settings.reference_dir()}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    ref_dir = settings.reference_dir()
    if args.meters is not None:
        write_reference_extracts(utility.generate_utility(meters=args.meters, seed=args.seed), ref_dir)
        print(f"wrote the reference data of {args.meters} meters to {ref_dir}")
    elif not (ref_dir / "meters.csv").exists():
        print(f"no reference data in {ref_dir}: run `ev-awareness reference` or pass --meters", file=sys.stderr)
        return 2
    frames = read_reference_extracts(ref_dir)
    landing = settings.feed_dir()
    if args.follow:
        print(f"following the wall clock (x{args.speedup}); files go to {landing}; Ctrl-C stops")
        stop = timedelta(minutes=args.stop_after_minutes) if args.stop_after_minutes else None
        simulator.follow_wall_clock(frames, landing, args.seed, speedup=args.speedup, stop_after=stop)
        return 0
    if args.start is None or args.days is None:
        print("simulate needs --start and --days (or --follow)", file=sys.stderr)
        return 2
    truth = Path(args.ground_truth) if args.ground_truth else None
    summary = simulator.simulate_to_folder(frames, landing, date.fromisoformat(args.start), args.days, args.seed, ground_truth=truth)
    print(f"simulated {summary.sessions} sessions: {summary.messages} messages in {summary.files} files in {landing}")
    return 0


def ensure_reference(instance: dg.DagsterInstance) -> bool:
    """Load the reference extracts when they changed since the last load (or were never loaded)."""
    version = reference_version(settings.reference_dir())
    latest = instance.get_latest_materialization_event(dg.AssetKey(REF_METERS.name))
    loaded = latest.asset_materialization.metadata.get(REFERENCE_VERSION) if latest and latest.asset_materialization else None
    if loaded is not None and loaded.value == version and _warehouse().count(REF_METERS) > 0:
        return False
    result = _execute("reference_job", instance)
    if not result.success:
        raise SystemExit("loading the reference data failed: see the run in the Dagster UI")
    return True


def cmd_run(args: argparse.Namespace) -> int:
    instance = dg.DagsterInstance.get()
    if ensure_reference(instance):
        print("loaded the reference data")
    # The feed sensor itself, evaluated with no cursor: a full scan of the landing folder, where the
    # file ledger says what is already done, so this also picks up what the daemon's sensor has not
    # (a batch whose run failed, files that arrived while the daemon was down).
    context = dg.build_sensor_context(instance=instance, resources=_resources(), definitions=defs)
    batches = ev_feed_sensor(context).run_requests
    days: set[date] = set()
    totals = {"files": 0, "records_read": 0, "accepted": 0, "duplicates": 0, "rejected": 0}
    failed = 0
    for batch in batches:
        result = _execute("ingest_job", instance, batch)
        failed += not result.success
        days.update(_touched_days(result))
        for m in result.asset_materializations_for_node("ev_charging_events"):
            totals["files"] += m.metadata["files_read"].value
            for key in ("records_read", "accepted", "duplicates", "rejected"):
                totals[key] += m.metadata[key].value
        print(f"batch {batch.run_key}: {batch.tags['ev/files']} files, {'ok' if result.success else 'FAILED'} (run {result.run_id})")
    load_runs = daily_load_run_requests(clip_to_partitions(sorted(days)), "cli")
    for request in load_runs:
        result = _execute("daily_load_job", instance, request)
        failed += not result.success
        print(f"daily load {request.tags['dagster/asset_partition_range_start']}..{request.tags['dagster/asset_partition_range_end']}: {'ok' if result.success else 'FAILED'}")
    if not batches:
        print("no new files in the landing folder")
    print(
        f"processed {len(batches)} batches, {totals['files']} files: {totals['records_read']} records read = "
        f"{totals['accepted']} accepted + {totals['duplicates']} duplicates + {totals['rejected']} rejected; "
        f"{len(load_runs)} daily-load runs"
    )
    return 1 if failed else 0


def cmd_status(_args: argparse.Namespace) -> int:
    """Row counts, the ledger's totals (the proof that nothing was lost) and pending files."""
    wh = _warehouse()
    for table, count in wh.row_counts().items():
        print(f"{table:28s} {count:>10,d}")
    t = pipeline.ledger_totals(wh)
    print(
        f"ledger, {t['batches']} batches: {t['records_read']:,d} records read = {t['accepted']:,d} accepted + "
        f"{t['duplicates']:,d} duplicates + {t['rejected']:,d} rejected; {t['files_read']:,d} files read = "
        f"{t['files_parsed']:,d} parsed + {t['files_quarantined']:,d} quarantined + {t['files_already_read']:,d} already read; "
        f"{t['events_stored']:,d} events stored: {'reconciles' if t['reconciled'] else 'DOES NOT RECONCILE'}"
    )
    resources = _resources()
    pending = sum(len(b.files) for b in pending_batches(resources["feed_landing"], resources["warehouse"], None))
    print(f"{'pending files':28s} {pending:>10,d}  ({settings.feed_dir()})")
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    wh = _warehouse()
    t = wh.table(TRANSFORMER_DAILY_LOAD)
    where = t.c.load_date == date.fromisoformat(args.date) if args.date else None
    daily = wh.read(TRANSFORMER_DAILY_LOAD, where)
    if daily.is_empty():
        print("transformer_daily_load is empty")
        return 1
    top = daily.sort("peak_kw", descending=True).head(args.limit).select(
        "transformer_id",
        "load_date",
        "kva_rating",
        "session_count",
        "ev_count",
        "energy_kwh",
        "peak_kw",
        pl.col("peak_interval_start").dt.convert_time_zone(settings.timezone()).dt.strftime("%H:%M").alias("peak_at_local"),
        "utilization",
    )
    with pl.Config(tbl_rows=args.limit, tbl_cols=20, tbl_width_chars=200, float_precision=2):
        print("busiest transformers by coincident 15-minute EV peak:")
        print(top)
    return 0


def _select_rejections(args: argparse.Namespace) -> pl.DataFrame:
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
    counts = rows["reason_codes"].str.split(",").explode().value_counts(sort=True) if rows.height else None
    print(f"{rows.height} quarantined records")
    if counts is not None:
        for code, n in counts.iter_rows():
            print(f"  {code:28s} {n:>8,d}")
    with pl.Config(tbl_rows=args.limit, fmt_str_lengths=120, tbl_width_chars=220):
        print(rows.select("rejection_id", "reason_codes", "raw_record").head(args.limit))
    return 0


def cmd_rejected_export(args: argparse.Namespace) -> int:
    rows = _select_rejections(args)
    records = []
    for rejection_id, raw in rows.select("rejection_id", "raw_record").iter_rows():
        record = json.loads(raw)
        records.append({"_rejection_id": rejection_id, **record} if isinstance(record, dict) else {"_rejection_id": rejection_id, "_record": record})
    Path(args.out).write_text(json.dumps({"EVChargingEvents": records}, indent=1, ensure_ascii=False))
    print(f"exported {len(records)} quarantined records to {args.out}: correct them, then `ev-awareness rejected replay --file {args.out}`")
    return 0


def cmd_rejected_replay(args: argparse.Namespace) -> int:
    """Replay through `ingest_job`, like any batch: same rules, same ledger, same checks; its
    sessions and the days they touch are updated in the same runs."""
    if args.file:
        ids = [r["_rejection_id"] for r in json.loads(Path(args.file).read_text())["EVChargingEvents"]]
    else:
        ids = _select_rejections(args)["rejection_id"].to_list()
    if not ids:
        print("nothing to replay")
        return 0
    batch_id = f"replay-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
    config = {"batch_id": batch_id, "replay_rejection_ids": ids}
    if args.file:
        config["replay_corrected_file"] = str(Path(args.file).resolve())
    instance = dg.DagsterInstance.get()
    result = _execute(
        "ingest_job",
        instance,
        dg.RunRequest(run_config={"ops": {"ev_charging_events": {"config": config}}}, tags={BATCH_TAG: batch_id}),
    )
    for m in result.asset_materializations_for_node("ev_charging_events"):
        meta = {k: v.value for k, v in m.metadata.items()}
        print(
            f"{batch_id}: {meta['records_read']} records replayed = {meta['accepted']} accepted + "
            f"{meta['duplicates']} duplicates + {meta['rejected']} still quarantined {meta['rejection_codes'] or ''}"
        )
    for request in daily_load_run_requests(clip_to_partitions(_touched_days(result)), batch_id):
        _execute("daily_load_job", instance, request)
    return 0 if result.success else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ev-awareness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reference", help="generate the synthetic utility's reference data (CSV) into EV_REFERENCE_DIR")
    p.add_argument("--meters", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("simulate", help="write agent feed files into EV_FEED_DIR")
    p.add_argument("--start", help="first simulated day, YYYY-MM-DD (local)")
    p.add_argument("--days", type=int)
    p.add_argument("--meters", type=int, help="regenerate the reference data with this many meters first")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--ground-truth", help="also write the simulated sessions (Parquet) here")
    p.add_argument("--follow", action="store_true", help="follow the wall clock instead of a span of days")
    p.add_argument("--speedup", type=float, default=1.0)
    p.add_argument("--stop-after-minutes", type=float)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("run", help="process every pending file: ingest batches, sessions, daily load")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="row counts per table and pending files")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("top", help="the busiest transformers by coincident peak")
    p.add_argument("--date", help="local day YYYY-MM-DD (default: all days)")
    p.add_argument("--limit", type=int, default=10)
    p.set_defaults(func=cmd_top)

    rejected = sub.add_parser("rejected", help="inspect, export and replay quarantined records").add_subparsers(dest="action", required=True)
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


def main(argv: list[str] | None = None) -> int:
    settings.apply_defaults()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
