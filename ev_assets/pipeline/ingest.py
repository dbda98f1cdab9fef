"""Ingest step: a micro-batch of landing files (or of quarantined records, on a replay) into the
event table; every record accepted, a duplicate or quarantined, and the batch ledger proving it."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandera.polars as pa
import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ev_assets.core import enrich, events, feed
from ev_assets.core.contract import ContractResult, apply_contract
from ev_assets.pipeline.config import PipelineSettings, utc_now
from ev_assets.warehouse.store import IN_CHUNK, Warehouse, chunked, shards_of
from ev_assets.warehouse.tables import (
    EV_BATCHES_PENDING,
    EV_CHARGING_EVENTS,
    EV_FEED_FILES,
    EV_INGEST_BATCHES,
    EV_QUARANTINED_FILES,
    EV_REJECTED_MESSAGES,
    REF_FEEDERS,
    REF_METERS,
    REF_SERVICE_POINTS,
    REF_TRANSFORMERS,
)


@dataclass
class IngestReport:
    batch_id: str
    files_read: int = 0
    files_parsed: int = 0
    files_repaired: int = 0
    files_quarantined: int = 0
    files_already_read: int = 0
    records_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    # Of the rejected, records that conflict with an accepted message of the same identity.
    conflicts: int = 0
    rejection_codes: dict[str, int] = field(default_factory=dict)
    message_types: dict[str, int] = field(default_factory=dict)
    enrichment: dict[str, int] = field(default_factory=dict)
    # The batch was committed before this call (a re-execution of its step or run): nothing written.
    committed_before: bool = False

    @property
    def records_reconcile(self) -> bool:
        return self.records_read == self.accepted + self.duplicates + self.rejected

    @property
    def files_reconcile(self) -> bool:
        return self.files_read == self.files_parsed + self.files_quarantined + self.files_already_read

    @property
    def reconciled(self) -> bool:
        return self.records_reconcile and self.files_reconcile

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.records_read if self.records_read else 0.0

    def counts(self) -> dict[str, int]:
        """The ledger's counters, by name: what the ledger row and the asset metadata show."""
        return {name: getattr(self, name) for name in _LEDGER_COUNTS}

    def ledger_row(self, run_id: str | None, processed_at: datetime) -> pl.DataFrame:
        return pl.DataFrame(
            [
                {
                    "batch_id": self.batch_id,
                    "run_id": run_id,
                    **self.counts(),
                    "reconciled": self.reconciled,
                    "processed_at": processed_at,
                }
            ]
        )


_LEDGER_COUNTS = (
    "files_read",
    "files_parsed",
    "files_repaired",
    "files_quarantined",
    "files_already_read",
    "records_read",
    "accepted",
    "duplicates",
    "rejected",
)


class BatchRejected(RuntimeError):
    """A batch whose counts do not reconcile, or whose rows do not conform to the event table's
    schema: nothing of it is committed (the transaction is rolled back), so nothing downstream can
    see it."""

    def __init__(self, batch_id: str, problems: list[str]):
        self.batch_id = batch_id
        self.problems = problems
        super().__init__(f"batch {batch_id} rejected, nothing written: " + "; ".join(problems))


def ingest_batch(
    warehouse: Warehouse,
    batch_id: str,
    paths: list[Path],
    settings: PipelineSettings,
    *,
    run_id: str | None = None,
    now: datetime | None = None,
) -> IngestReport:
    """Read a micro-batch of landing files into the event table; every record ends up accepted,
    a duplicate or quarantined, and the batch ledger holds the counts.

    Parsing and the contract (pure, the costly part) run before the write lock, on the files the
    file ledger did not hold a moment ago. Everything that decides what to write (which files are
    already read, whether the batch is already in the ledger, which messages are duplicates, the
    reference rows) is read again inside the writing transaction, under the database's write lock,
    and the batch is verified (reconciliation, schema) before it commits: a batch that does not
    hold raises BatchRejected and leaves no row anywhere.
    """
    warehouse.ensure_timezone(settings.timezone)  # before the lock: it may write the first time
    now = now or utc_now()
    # A re-execution of a committed batch (a retry of a run that died after its commit) may find
    # its files archived, and a file another batch committed meanwhile may have been archived by
    # that batch's step: a file is archived only once the file ledger holds it, so a missing file
    # the ledger holds needs no reading. Any other missing file is an error, and files still
    # present go through the checks below.
    if any(not p.exists() for p in paths):
        committed = _files_read(warehouse, [p.name for p in paths if not p.exists()])
        paths = [p for p in paths if p.exists() or p.name not in committed]
    # Nothing left to read (every file committed, by this batch or by another): a batch the
    # ledger holds is done; one it does not is recorded empty, so its run key's work is on record.
    if not paths and _batch_in_ledger(warehouse, batch_id):
        return IngestReport(batch_id=batch_id, committed_before=True)
    # The same file (name and content) twice in one batch is one file, read once.
    parsed, all_records = feed.parse_batch(paths)
    # Files are only ever added to the file ledger, so what is unread under the lock is a subset of
    # what is unread now: the contract runs on these, outside the lock.
    # (Read once: called in the comprehension's condition, it read the file ledger once per file.)
    read_before = _already_read(warehouse, parsed)
    maybe_fresh = [p for p in parsed if (p.name, p.sha256) not in read_before]
    maybe_records = _of_files(all_records, maybe_fresh) if read_before else all_records
    del all_records
    maybe_result = apply_contract(maybe_records, settings.bounds, now=now)

    report = IngestReport(batch_id=batch_id, files_read=len(parsed))
    with warehouse.transaction(shards=write_shards(parsed, maybe_result)) as conn:
        already = _already_read(warehouse, parsed, conn)
        fresh = [p for p in maybe_fresh if (p.name, p.sha256) not in already]
        report.files_already_read = len(parsed) - len(fresh)
        if _batch_recorded(warehouse, batch_id, conn):
            if fresh:
                raise BatchRejected(
                    batch_id,
                    [
                        f"the batch is already in the ledger, yet {len(fresh)} of its files were never read: "
                        "a batch id must name its files' content (core.batching)"
                    ],
                )
            report.committed_before = True
            return report  # a replay of a batch already ingested: nothing to write
        report.files_quarantined = sum(p.quarantined for p in fresh)
        report.files_parsed = len(fresh) - report.files_quarantined
        report.files_repaired = sum(p.status == "repaired" for p in fresh)

        if len(fresh) == len(maybe_fresh):  # the same files (fresh is a subset): no copies
            records, result = maybe_records, maybe_result
        else:  # another writer read some of them meanwhile
            records = _of_files(maybe_records, fresh)
            result = ContractResult(_of_files(maybe_result.accepted, fresh), _of_files(maybe_result.rejected, fresh))
        new_events, rejected = _judge(warehouse, conn, records, result, report, settings, now)
        _verify(report, new_events)
        warehouse.insert(conn, EV_CHARGING_EVENTS, new_events)
        warehouse.insert(conn, EV_REJECTED_MESSAGES, _rejected_rows(fresh, rejected, batch_id, now))
        warehouse.insert(conn, EV_QUARANTINED_FILES, _quarantined_rows(fresh, batch_id, now))
        warehouse.insert(conn, EV_FEED_FILES, _file_rows(fresh, records, batch_id, now))
        _record_in_ledger(warehouse, conn, report, run_id, now)
        warehouse.record_event_commit(conn, batch_id, new_events.height, now)  # last: see its docstring
    return report


def write_shards(parsed: list[feed.ParsedFile], result: ContractResult) -> list[int]:
    """The write-lock shards a batch's transaction takes (store.WRITE_SHARDS): those of the meters
    of its accepted records, and those of the digests of its files that have none.

    An event, a duplicate or a conflict is keyed by its meter (the message id starts with it). A
    file's ledger row, its rejected records and its quarantine are keyed by the file: two batches
    holding one file with an accepted record share that record's meter, so its shard; a file with
    none (quarantined, or every record rejected) is locked by its own digest. A batch id names its
    files. So two batches that could write one row share a shard and serialise, and two that share
    no meter and no such file commit at once (a shard per file with accepted records would make
    almost every pair of batches collide). What is fresh under the lock is a subset of `parsed`
    and `result` (the contract is a function of the files' bytes), so these shards cover it."""
    accepted = result.accepted
    with_accepted = set(accepted["file_sha256"].unique().to_list()) if accepted.height else set()
    meters = shards_of(accepted["meter_id"].drop_nulls()) if accepted.height else []
    files = shards_of(p.sha256 for p in parsed if p.sha256 not in with_accepted)
    return sorted(set(meters) | set(files))


def _of_files(frame: pl.DataFrame, files: list[feed.ParsedFile]) -> pl.DataFrame:
    """The rows of `frame` (with file_name and file_sha256) that came from `files`."""
    keys = pl.DataFrame(
        [(p.name, p.sha256) for p in files], schema={"file_name": pl.String, "file_sha256": pl.String}, orient="row"
    )
    return frame.join(keys, on=["file_name", "file_sha256"], how="semi")


def _judge(
    warehouse: Warehouse,
    conn: Connection,
    records: pl.DataFrame,
    result: ContractResult,
    report: IngestReport,
    settings: PipelineSettings,
    now: datetime,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The duplicate rule and enrichment on the contract's result (inside the writing
    transaction, whose reads decide them): the new events to store, the rejected records (the
    contract's, then the conflicting duplicates), and the report's record counts filled in."""
    new_events, report.duplicates, conflicts = _new_events(
        warehouse, conn, result.accepted, report.batch_id, settings, now
    )
    rejected = pl.concat([result.rejected, conflicts], how="vertical_relaxed")
    report.records_read = records.height
    report.accepted = new_events.height
    report.rejected = rejected.height
    report.conflicts = conflicts.height
    report.rejection_codes = _code_counts(rejected)
    report.message_types = dict(Counter(new_events["message_type"].to_list()))
    report.enrichment = dict(Counter(new_events["enrichment_status"].to_list()))
    return new_events, rejected


def _verify(report: IngestReport, new_events: pl.DataFrame) -> None:
    """The blocking checks, before the commit: both reconciliation identities and the event
    table's pandera schema on the rows about to be inserted. Raises BatchRejected (the caller's
    transaction then rolls back) naming what failed."""
    problems = []
    if not report.records_reconcile:
        problems.append(
            f"records do not reconcile: records_read {report.records_read} != accepted {report.accepted} "
            f"+ duplicates {report.duplicates} + rejected {report.rejected}"
        )
    if not report.files_reconcile:
        problems.append(
            f"files do not reconcile: files_read {report.files_read} != files_parsed {report.files_parsed} "
            f"+ files_quarantined {report.files_quarantined} + files_already_read {report.files_already_read}"
        )
    try:
        EV_CHARGING_EVENTS.pandera_schema().validate(new_events, lazy=True)
    except pa.errors.SchemaErrors as errors:
        problems.append(f"{EV_CHARGING_EVENTS.name} schema: {errors.failure_cases.head(20)}")
    if problems:
        raise BatchRejected(report.batch_id, problems)


def _record_in_ledger(
    warehouse: Warehouse, conn: Connection, report: IngestReport, run_id: str | None, now: datetime
) -> None:
    """Insert the batch's ledger row and queue the batch for pairing, inside the batch's own
    transaction: its events are never committed without their pairing queued. The ledger is
    insert-only: a batch id already there is a no-op before this point, never a rewrite."""
    warehouse.insert(conn, EV_INGEST_BATCHES, report.ledger_row(run_id, now))
    warehouse.insert(conn, EV_BATCHES_PENDING, pl.DataFrame({"batch_id": [report.batch_id], "queued_at": [now]}))


def _already_read(
    warehouse: Warehouse, parsed: list[feed.ParsedFile], conn: Connection | None = None
) -> set[tuple[str, str]]:
    known = warehouse.read_in(EV_FEED_FILES, "file_sha256", [p.sha256 for p in parsed], conn=conn)
    return set(known.select("file_name", "file_sha256").iter_rows())


def _files_read(warehouse: Warehouse, names: list[str]) -> set[str]:
    """Those of these file names the file ledger holds (under any batch)."""
    return set(warehouse.read_in(EV_FEED_FILES, "file_name", names)["file_name"].to_list())


def _batch_in_ledger(warehouse: Warehouse, batch_id: str) -> bool:
    with warehouse.engine.connect() as conn:
        return _batch_recorded(warehouse, batch_id, conn)


def archive_committed(
    warehouse: Warehouse, landing_dir: Path, day: str, files: list[feed.FeedFile] | None = None
) -> int:
    """Move the committed ones of `files` (default: every landing file) to the archive: files a
    run committed and died before moving. Returns the number moved."""
    _, committed = split_committed(warehouse, feed.list_landing(landing_dir) if files is None else files)
    return feed.archive_files([f.path for f in committed], landing_dir, day) if committed else 0


def split_committed(
    warehouse: Warehouse, files: list[feed.FeedFile]
) -> tuple[list[feed.FeedFile], list[feed.FeedFile]]:
    """(files the file ledger does not hold, files it holds) of landing files, each in order.

    A file whose name the ledger holds is committed only if its content is the one read (a
    re-delivery under the same name is new); only those files are hashed, so landing files the
    ledger never saw cost no read of their bytes."""
    if not files:
        return [], []
    ledger = warehouse.read_in(EV_FEED_FILES, "file_name", [f.name for f in files])
    known = set(ledger.select("file_name", "file_sha256").iter_rows())
    names = set(ledger["file_name"].to_list())
    todo, done = [], []
    for f in files:
        (done if f.name in names and (f.name, feed.file_sha256(f.path)) in known else todo).append(f)
    return todo, done


def _batch_recorded(warehouse: Warehouse, batch_id: str, conn: Connection) -> bool:
    b = warehouse.table(EV_INGEST_BATCHES).c
    return conn.execute(sa.select(sa.func.count()).where(b.batch_id == batch_id)).scalar_one() > 0


def _new_events(
    warehouse: Warehouse,
    conn: Connection,
    accepted: pl.DataFrame,
    batch_id: str,
    settings: PipelineSettings,
    now: datetime,
) -> tuple[pl.DataFrame, int, pl.DataFrame]:
    """(new events, duplicates, conflicting duplicates as rejected records) of accepted records."""
    rows = events.to_events(accepted, batch_id=batch_id, tz=settings.timezone, ingested_at=now)
    known = warehouse.read_in(EV_CHARGING_EVENTS, "message_id", rows["message_id"], conn=conn)
    new, duplicates, conflicts = events.split_duplicates(rows, known)
    enriched = enrich.attribute(new, reference_for(warehouse, new, conn=conn), date_col="message_date")
    # Inserted in (meter_id, message_time) order, not in the files' order (time across all meters):
    # on a large table each meter's entries of that index sit on a leaf page of their own, which
    # an insert in key order touches once, and a meter's new rows are stored side by side, so the
    # sessions step's reads per meter touch fewer pages.
    return EV_CHARGING_EVENTS.conform(enriched).sort("meter_id", "message_time"), duplicates, conflicts


def reference_for(
    warehouse: Warehouse, messages: pl.DataFrame, conn: Connection | None = None
) -> dict[str, pl.DataFrame]:
    """The reference rows these messages can join to: cost follows the batch, not the utility."""
    meters = warehouse.read_in(REF_METERS, "meter_id", messages["meter_id"].drop_nulls(), conn=conn)
    points = warehouse.read_in(REF_SERVICE_POINTS, "service_point_id", meters["service_point_id"], conn=conn)
    transformer_ids = pl.concat([points["transformer_id"], messages["reported_transformer_id"]]).drop_nulls()
    transformers = warehouse.read_in(REF_TRANSFORMERS, "transformer_id", transformer_ids, conn=conn)
    feeders = warehouse.read_in(REF_FEEDERS, "feeder_id", transformers["feeder_id"], conn=conn)
    return {"meters": meters, "service_points": points, "transformers": transformers, "feeders": feeders}


def _rejected_rows(parsed: list[feed.ParsedFile], rejected: pl.DataFrame, batch_id: str, now: datetime) -> pl.DataFrame:
    if rejected.is_empty():
        return pl.DataFrame(schema=EV_REJECTED_MESSAGES.polars_schema)
    with_raw = feed.raw_records(parsed, rejected)
    return EV_REJECTED_MESSAGES.conform(
        with_raw.with_columns(
            pl.concat_str(
                [pl.col("file_name"), pl.col("file_sha256").str.slice(0, 12), pl.col("record_index").cast(pl.String)],
                separator=":",
            ).alias("rejection_id"),
            pl.lit(batch_id).alias("batch_id"),
            pl.lit(now).alias("quarantined_at"),
            pl.lit("quarantined").alias("status"),
            pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("replayed_at"),
        )
    )


def _code_counts(rejected: pl.DataFrame) -> dict[str, int]:
    codes = rejected["reason_codes"].str.split(",").explode()
    return dict(sorted(Counter(codes.to_list()).items())) if codes.len() else {}


def _quarantined_rows(parsed: list[feed.ParsedFile], batch_id: str, now: datetime) -> pl.DataFrame:
    rows = [
        {
            "file_name": p.name,
            "file_sha256": p.sha256,
            "batch_id": batch_id,
            "size_bytes": p.size,
            "error": p.error,
            "content": p.content,
            "quarantined_at": now,
        }
        for p in parsed
        if p.quarantined
    ]
    return pl.DataFrame(rows, schema=EV_QUARANTINED_FILES.polars_schema)


def _file_rows(parsed: list[feed.ParsedFile], records: pl.DataFrame, batch_id: str, now: datetime) -> pl.DataFrame:
    per_file = dict(records.group_by("file_sha256").len().iter_rows())
    rows = [
        {
            "file_name": p.name,
            "file_sha256": p.sha256,
            "batch_id": batch_id,
            "size_bytes": p.size,
            "status": p.status,
            "records": per_file.get(p.sha256, 0),
            "read_at": now,
        }
        for p in parsed
    ]
    return pl.DataFrame(rows, schema=EV_FEED_FILES.polars_schema)


def replay_rejected(
    warehouse: Warehouse,
    settings: PipelineSettings,
    replays: pl.DataFrame,
    batch_id: str,
    *,
    run_id: str | None = None,
    now: datetime | None = None,
) -> IngestReport:
    """Put quarantined records through the same contract again, as batch `batch_id`.

    `replays` has rejection_id and raw_record (the stored record, or a corrected one). A record
    that now passes is accepted (or counted as a duplicate) and its rejection is marked replayed;
    one that still fails stays quarantined with its reasons brought up to date. The batch ledger
    counts the replay like any other batch.
    """
    now = now or utc_now()
    payload = '{"EVChargingEvents": [' + ",".join(replays["raw_record"].to_list()) + "]}"
    parsed = feed.parse_payload(f"{batch_id}.json", payload.encode())
    report = IngestReport(batch_id=batch_id, files_read=1)
    if parsed.quarantined:
        raise ValueError(f"replayed records are not valid JSON: {parsed.error}")
    report.files_parsed = 1
    records = feed.records_frame([parsed])
    result = apply_contract(records, settings.bounds, now=now)  # pure: before the lock

    ids = replays.select("rejection_id", pl.int_range(pl.len(), dtype=pl.Int64).alias("record_index"))
    rej = warehouse.table(EV_REJECTED_MESSAGES)
    with warehouse.transaction() as conn:
        if _batch_recorded(warehouse, batch_id, conn):
            return report  # this replay batch is already in the ledger: nothing to write
        new_events, rejected = _judge(warehouse, conn, records, result, report, settings, now)
        # A released record keeps the channel it came by (its rejection id starts with its file's name).
        channels = ids.select("record_index", events.channel_of("rejection_id").alias("_channel"))
        new_events = EV_CHARGING_EVENTS.conform(
            new_events.join(channels, on="record_index", how="left").with_columns(
                pl.coalesce("_channel", "first_channel").alias("first_channel")
            )
        )
        still = ids.join(rejected.select("record_index", "reason_codes", "reasons"), on="record_index")
        released = ids.join(still, on="record_index", how="anti")["rejection_id"]
        _verify(report, new_events)
        warehouse.insert(conn, EV_CHARGING_EVENTS, new_events)
        for chunk_ids in chunked(released.to_list(), IN_CHUNK):
            conn.execute(
                rej.update().where(rej.c.rejection_id.in_(chunk_ids)).values(status="replayed", replayed_at=now)
            )
        for rejection_id, codes, reasons in still.select("rejection_id", "reason_codes", "reasons").iter_rows():
            conn.execute(
                rej.update().where(rej.c.rejection_id == rejection_id).values(reason_codes=codes, reasons=reasons)
            )
        _record_in_ledger(warehouse, conn, report, run_id, now)
        warehouse.record_event_commit(conn, batch_id, new_events.height, now)  # last: see its docstring
    return report


def replay_selection(warehouse: Warehouse, rejection_ids: list[str], corrected_file: str | None = None) -> pl.DataFrame:
    """rejection_id and raw_record of the records to replay: as stored, or as corrected in an
    export file (`ev-awareness rejected export`) whose records keep their `_rejection_id`."""
    if corrected_file is None:
        stored = warehouse.read_in(EV_REJECTED_MESSAGES, "rejection_id", rejection_ids)
        return stored.select("rejection_id", "raw_record").sort("rejection_id")
    records = json.loads(Path(corrected_file).read_text())["EVChargingEvents"]
    wanted = set(rejection_ids)
    rows = [
        (record.pop("_rejection_id"), json.dumps(record.get("_record", record), ensure_ascii=False))
        for record in records
        if record.get("_rejection_id") in wanted
    ]
    return pl.DataFrame(rows, schema={"rejection_id": pl.String, "raw_record": pl.String}, orient="row")


def ledger_totals(warehouse: Warehouse) -> dict[str, int | bool]:
    """The batch ledger summed over all batches, and the proof that nothing was lost in total:
    records read = accepted + duplicates + rejected, and every accepted record is in the event
    table (events enter only through ledgered batches, replays included)."""
    b = warehouse.table(EV_INGEST_BATCHES).c
    sums = [sa.func.coalesce(sa.func.sum(b[name]), 0).label(name) for name in _LEDGER_COUNTS]
    with warehouse.engine.connect() as conn:
        totals = {k: int(v) for k, v in conn.execute(sa.select(*sums)).one()._mapping.items()}
    events = warehouse.count(EV_CHARGING_EVENTS)
    return {
        **totals,
        "batches": warehouse.count(EV_INGEST_BATCHES),
        "events_stored": events,
        "reconciled": totals["records_read"] == totals["accepted"] + totals["duplicates"] + totals["rejected"]
        and totals["accepted"] == events,
    }
