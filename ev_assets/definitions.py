"""The Dagster code location: one short Definitions merging the areas under `ev_assets/defs/`.

Importing this module reads settings and writes nothing: no file (`ev-awareness init` writes the
instance configuration, `ev-awareness db upgrade` the schema), no environment variable. Dagster's
event batching is configured by the instance: the event logs `init` writes into dagster.yaml turn it
on in every process that opens the instance (ev_assets.dagster_event_log), run workers included.
"""

import dagster as dg

from ev_assets.defs import forecast, ingest, operations, planning, reference, vendor
from ev_assets.defs.resources import environment_resources

defs = dg.Definitions(
    assets=[
        reference.reference_tables,
        ingest.ev_charging_events,
        ingest.ev_charging_sessions,
        planning.grid_load_by_day,
        planning.premise_ev_profile,
        planning.transformer_planning_queue,
        forecast.transformer_overload_forecast,
        vendor.vendor_export_files,
        vendor.vendor_export_gap,
    ],
    jobs=[
        ingest.ingest_job,
        ingest.sessions_job,
        reference.reference_job,
        planning.daily_load_job,
        planning.premise_profile_job,
        planning.planning_queue_job,
        forecast.forecast_job,
        vendor.vendor_export_job,
        vendor.vendor_gap_job,
    ],
    sensors=[
        ingest.ev_feed_sensor,
        planning.daily_load_sensor,
        operations.dead_run_sensor,
        operations.failed_run_sensor,
        vendor.vendor_gap_sensor,
    ],
    schedules=[
        planning.nightly_daily_load,
        planning.daily_premise_profile,
        planning.daily_planning_queue,
        reference.nightly_reference,
        vendor.nightly_gap_fill,
    ],
    resources={**environment_resources(), "vendor": vendor.vendor_resource_from_environment()},
    # A run's steps follow one another and each works in the warehouse: running them in the run's
    # own process saves a Python start (seconds) per step.
    executor=dg.in_process_executor,
)
