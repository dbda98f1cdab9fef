"""The Dagster code location: assets, checks, jobs, sensors, schedules and resources."""

from __future__ import annotations

import os

import dagster as dg

from ev_assets import settings

settings.apply_defaults()

from ev_assets.defs.ingest import ev_charging_events, ev_charging_sessions, ev_feed_sensor, ingest_job, sessions_job  # noqa: E402
from ev_assets.defs.planning import daily_load, daily_load_job, daily_load_sensor, nightly_daily_load  # noqa: E402
from ev_assets.defs.reference import nightly_reference, reference_job, reference_tables  # noqa: E402
from ev_assets.defs.resources import FeedResource, PipelineConfig, ReferenceResource, WarehouseResource  # noqa: E402


def _number(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env(name: str, resolved: bool):
    # The UI shows EnvVar-sourced config as such; code outside a run (the CLI) needs the value.
    return os.environ[name] if resolved else dg.EnvVar(name)


def pipeline_config(resolved: bool = False) -> PipelineConfig:
    defaults = PipelineConfig()
    return PipelineConfig(
        timezone=_env("EV_TIMEZONE", resolved),
        charge_w_min=_number("EV_CHARGE_W_MIN", defaults.charge_w_min),
        charge_w_max=_number("EV_CHARGE_W_MAX", defaults.charge_w_max),
        max_session_wh=_number("EV_MAX_SESSION_WH", defaults.max_session_wh),
        clock_skew_s=_number("EV_CLOCK_SKEW_S", defaults.clock_skew_s),
        duration_unit=os.environ.get("EV_DURATION_UNIT") or defaults.duration_unit,
        max_session_h=_number("EV_MAX_SESSION_H", defaults.max_session_h),
        power_factor=_number("EV_POWER_FACTOR", defaults.power_factor),
        rejection_rate_warn=_number("EV_REJECTION_RATE_WARN", defaults.rejection_rate_warn),
    )


def build_resources(resolved: bool = False) -> dict[str, dg.ConfigurableResource]:
    """The resources, configured from the environment (EnvVar, or the values when `resolved`)."""
    return {
        "warehouse": WarehouseResource(url=_env("EV_WAREHOUSE_URL", resolved)),
        "feed_landing": FeedResource(
            landing_dir=_env("EV_FEED_DIR", resolved),
            max_files_per_batch=int(_number("EV_BATCH_MAX_FILES", 2000)),
            max_messages_per_batch=int(_number("EV_BATCH_MAX_MESSAGES", 50_000)),
        ),
        "reference": ReferenceResource(reference_dir=_env("EV_REFERENCE_DIR", resolved)),
        "pipeline_config": pipeline_config(resolved),
    }


def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[reference_tables, ev_charging_events, ev_charging_sessions, daily_load],
        jobs=[ingest_job, sessions_job, reference_job, daily_load_job],
        sensors=[ev_feed_sensor, daily_load_sensor],
        schedules=[nightly_daily_load, nightly_reference],
        resources=build_resources(),
    )


defs = build_definitions()
