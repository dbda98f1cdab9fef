"""The ingest area's jobs."""

import dagster as dg

from ev_assets.defs.ingest.assets import ev_charging_events, ev_charging_sessions

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(ev_charging_events, ev_charging_sessions),
    description=(
        "One micro-batch of landing files: validate, quarantine, deduplicate, enrich; then pair every committed "
        "batch not paired yet."
    ),
)
sessions_job = dg.define_asset_job(
    "sessions_job",
    selection=dg.AssetSelection.assets(ev_charging_sessions),
    description=(
        "Pair the batches not paired yet (config mode: pending), or rebuild every session in chunks of meters "
        "(mode: rebuild)."
    ),
)
