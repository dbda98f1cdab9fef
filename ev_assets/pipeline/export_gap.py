"""The gap a batch export filled, per received day (UTC): read-only, from the warehouse.

After an export's files were ingested, every message of the day is an event whose `first_channel`
says how it first arrived. So, for the received day [day 00:00Z, next day 00:00Z):

- `stream_delivered`: the day's events that first arrived by the stream (the receiver's files);
- `export_only`: the day's events that only an export brought (the gap the export filled);
- `folder`: the day's events that came by the landing folder (neither channel);

and, of the export's own files (named by the file ledger): `export_records` read =
`export_accepted` (new events) + `export_duplicates` (what an earlier delivery, normally the stream,
already brought) + `export_rejected` (quarantined).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta

import polars as pl
import sqlalchemy as sa

from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, EV_FEED_FILES, EV_REJECTED_MESSAGES, EV_VENDOR_EXPORTS


@dataclass(frozen=True)
class ExportGap:
    received_day: date
    files_expected: int
    files_ingested: int
    export_records: int
    export_accepted: int
    export_duplicates: int
    export_rejected: int
    stream_delivered: int
    export_only: int
    folder: int

    @property
    def ingested(self) -> bool:
        """Every file the export landed is in the file ledger."""
        return self.files_ingested >= self.files_expected

    @property
    def day_messages(self) -> int:
        return self.stream_delivered + self.export_only + self.folder

    @property
    def gap_share(self) -> float:
        """Share of the day's messages that only the export brought."""
        return self.export_only / self.day_messages if self.day_messages else 0.0

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "received_day": self.received_day.isoformat(),
            "day_messages": self.day_messages,
            "gap_share": round(self.gap_share, 6),
        }


def record_export(
    warehouse: Warehouse,
    *,
    job_id: str,
    received_day: date,
    file_prefix: str,
    files: int,
    records: int,
    filetype: str,
    landed_at: datetime | None = None,
) -> None:
    """An export's files are in the landing folder: what it landed, for the gap (ev_vendor_exports)."""
    row = {
        "job_id": job_id,
        "received_day": received_day,
        "file_prefix": file_prefix,
        "files": files,
        "records": records,
        "filetype": filetype,
        "landed_at": landed_at or datetime.now(UTC),
    }
    with warehouse.transaction() as conn:
        warehouse.insert(conn, EV_VENDOR_EXPORTS, EV_VENDOR_EXPORTS.conform(pl.DataFrame([row])))


def latest_exports(warehouse: Warehouse, days: list[date] | None = None) -> pl.DataFrame:
    """Per received day (all, or those of `days`), the newest export landed: received_day, job_id,
    file_prefix, files, in received-day order."""
    exports = (
        warehouse.read(EV_VENDOR_EXPORTS)
        if days is None
        else warehouse.read_in(EV_VENDOR_EXPORTS, "received_day", days)
    )
    return (
        exports.sort("landed_at", "job_id")
        .group_by("received_day")
        .last()
        .select("received_day", "job_id", "file_prefix", "files")
        .sort("received_day")
    )


def export_files_ingested(warehouse: Warehouse, file_prefix: str) -> int:
    """How many distinct files whose name starts with `file_prefix` the file ledger holds."""
    f = warehouse.table(EV_FEED_FILES).c
    with warehouse.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count(sa.distinct(f.file_name))).where(
                    f.file_name.startswith(file_prefix, autoescape=True)
                )
            ).scalar_one()
        )


def export_gap(warehouse: Warehouse, received_day: date, file_prefix: str, files_expected: int) -> ExportGap:
    """The gap of one received day, after the export whose files start with `file_prefix`
    (`export-<day>-<jobId>-`, as the export asset names them) was ingested."""
    e = warehouse.table(EV_CHARGING_EVENTS).c
    f = warehouse.table(EV_FEED_FILES).c
    r = warehouse.table(EV_REJECTED_MESSAGES).c
    start = datetime.combine(received_day, time(0), UTC)
    end = start + timedelta(days=1)
    with warehouse.engine.connect() as conn:
        by_channel = dict(
            conn.execute(
                sa.select(e.first_channel, sa.func.count())
                .where(e.received_time >= start, e.received_time < end)
                .group_by(e.first_channel)
            ).all()
        )
        files, records = conn.execute(
            sa.select(sa.func.count(sa.distinct(f.file_name)), sa.func.coalesce(sa.func.sum(f.records), 0)).where(
                f.file_name.startswith(file_prefix, autoescape=True)
            )
        ).one()
        accepted = conn.execute(
            sa.select(sa.func.count()).where(e.file_name.startswith(file_prefix, autoescape=True))
        ).scalar_one()
        # Quarantined by the export's own batch (a replay may release them later: still counted here).
        rejected = conn.execute(
            sa.select(sa.func.count()).where(r.file_name.startswith(file_prefix, autoescape=True))
        ).scalar_one()
    return ExportGap(
        received_day=received_day,
        files_expected=files_expected,
        files_ingested=int(files),
        export_records=int(records),
        export_accepted=int(accepted),
        export_duplicates=int(records) - int(accepted) - int(rejected),
        export_rejected=int(rejected),
        stream_delivered=int(by_channel.get("stream", 0)),
        export_only=int(by_channel.get("export", 0)),
        folder=int(by_channel.get("folder", 0)),
    )
