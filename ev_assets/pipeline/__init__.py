"""The pipeline's steps: each composes the pure stages with the warehouse, in one transaction.

No Dagster here: the assets, the CLI and the tests call these functions, so every path runs the
same code. Each step is idempotent: run it again on the same input and the tables do not change.

- `ingest`: landing files (or quarantined records, on a replay) -> events, quarantine, ledgers;
- `sessions`: events -> sessions, for the window a batch can change (`pair_pending_batches`), and
  full rebuilds;
- `planning_load`: sessions -> transformer, feeder and substation daily and 15-minute load for a range
  of days (`update_daily_load`), and the transformer_planning_queue snapshot (`refresh_planning_queue`);
- `premises`: sessions -> premise_ev_profile and new_evs snapshots;
- `forecast`: sessions and reference -> ev_charging_behavior and transformer_overload_forecast, and the
  forecast's backtest;
- `reference`: the utility's extracts -> ref_* tables, then late enrichment;
- `export_gap`: the vendor exports landed (`record_export`, `latest_exports`), which of their files the
  ledger holds and the gap each filled;
- `config`: `PipelineSettings`, the steps' plain form of `ev_assets.settings.Settings`.
"""

from ev_assets.pipeline.config import PipelineSettings, utc_now
from ev_assets.pipeline.export_gap import ExportGap, export_files_ingested, export_gap, latest_exports, record_export
from ev_assets.pipeline.forecast import ForecastReport, refresh_forecast
from ev_assets.pipeline.ingest import (
    BatchRejected,
    IngestReport,
    archive_committed,
    ingest_batch,
    ledger_totals,
    reference_for,
    replay_rejected,
    replay_selection,
    split_committed,
)
from ev_assets.pipeline.planning_load import (
    DAILY_LOAD_TABLES,
    INTERVAL_LOAD_TABLES,
    LoadReport,
    QueueReport,
    by_peak,
    pending_load_days,
    profile_peak_mismatches,
    refresh_planning_queue,
    update_daily_load,
)
from ev_assets.pipeline.premises import PremiseReport, refresh_premise_profile
from ev_assets.pipeline.reference import (
    ReferenceReport,
    load_reference,
    loaded_reference_version,
    reattribute_pending_meters,
)
from ev_assets.pipeline.sessions import (
    SessionsReport,
    batches_awaiting_pairing,
    load_dates_of,
    pair_pending_batches,
    rebuild_sessions,
    repair_reattributed_meters,
)

__all__ = [
    "BatchRejected",
    "archive_committed",
    "ExportGap",
    "export_files_ingested",
    "export_gap",
    "latest_exports",
    "record_export",
    "DAILY_LOAD_TABLES",
    "INTERVAL_LOAD_TABLES",
    "IngestReport",
    "LoadReport",
    "QueueReport",
    "refresh_planning_queue",
    "PipelineSettings",
    "PremiseReport",
    "ForecastReport",
    "refresh_forecast",
    "refresh_premise_profile",
    "SessionsReport",
    "ingest_batch",
    "ledger_totals",
    "load_dates_of",
    "load_reference",
    "ReferenceReport",
    "reattribute_pending_meters",
    "repair_reattributed_meters",
    "reference_for",
    "replay_rejected",
    "replay_selection",
    "split_committed",
    "by_peak",
    "update_daily_load",
    "pair_pending_batches",
    "batches_awaiting_pairing",
    "pending_load_days",
    "profile_peak_mismatches",
    "rebuild_sessions",
    "loaded_reference_version",
    "utc_now",
]
