"""The pipeline's steps: each composes the pure stages with the warehouse, in one transaction.

No Dagster here: the assets, the CLI and the tests call these functions, so every path runs the
same code. Each step is idempotent: run it again on the same input and the tables do not change.

- `ingest`: landing files (or quarantined records, on a replay) -> events, quarantine, ledgers;
- `pairing`: events -> sessions, for the window a batch can change;
- `daily_load`: sessions -> transformer, feeder and substation load for a range of days;
- `reference`: the utility's extracts -> ref_* tables, then late enrichment.
"""

from ev_assets.pipeline.config import PipelineSettings, utc_now
from ev_assets.pipeline.export_gap import ExportGap, export_files_ingested, export_gap
from ev_assets.pipeline.ingest import (
    BatchRejected,
    IngestReport,
    ingest_batch,
    ledger_totals,
    reference_for,
    replay_rejected,
    replay_selection,
)
from ev_assets.pipeline.planning_load import DAILY_LOAD_TABLES, LoadReport, pending_load_days, update_daily_load
from ev_assets.pipeline.reference import load_reference, loaded_reference_version, reenrich_waiting_events
from ev_assets.pipeline.sessions import (
    SessionsReport,
    load_dates_of,
    pair_pending_batches,
    pending_batches,
    rebuild_sessions,
    repair_sessions_around,
)

__all__ = [
    "BatchRejected",
    "ExportGap",
    "export_files_ingested",
    "export_gap",
    "DAILY_LOAD_TABLES",
    "IngestReport",
    "LoadReport",
    "PipelineSettings",
    "SessionsReport",
    "ingest_batch",
    "ledger_totals",
    "load_dates_of",
    "load_reference",
    "reenrich_waiting_events",
    "reference_for",
    "repair_sessions_around",
    "replay_rejected",
    "replay_selection",
    "update_daily_load",
    "pair_pending_batches",
    "pending_batches",
    "pending_load_days",
    "rebuild_sessions",
    "loaded_reference_version",
    "utc_now",
]
