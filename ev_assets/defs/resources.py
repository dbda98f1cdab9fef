"""Dagster resources: the warehouse, the feed's landing folder, the reference folder and the rules.

Every field left unset is read from `ev_assets.settings.Settings` when the run starts (the
environment of the run worker), so a setting changed between runs applies to the next one and
nothing is fixed when the code location loads. A field set explicitly (tests, the UI's launchpad)
wins over the environment.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import dagster as dg

from ev_assets.core import planning_queue, transformer_aging
from ev_assets.core.contract import ContractBounds
from ev_assets.pipeline import PipelineSettings
from ev_assets.settings import Settings
from ev_assets.warehouse.store import Warehouse


@lru_cache(maxsize=8)
def _warehouse(url: str) -> Warehouse:
    # One engine (and connection pool) per URL and process, however many steps ask for it.
    return Warehouse(url)


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse every table is written through (EV_WAREHOUSE_URL: any SQLAlchemy URL)."""

    url: str | None = None

    def get(self) -> Warehouse:
        return _warehouse(self.url or Settings().warehouse_url)


class FeedResource(dg.ConfigurableResource):
    """The landing folder the agent feed arrives in, and how the sensor sizes micro-batches."""

    landing_dir: str | None = None
    max_files_per_batch: int | None = None
    max_messages_per_batch: int | None = None
    max_bytes_per_batch: int | None = None
    # Files younger than this wait for the next sensor tick (see batching.settled).
    settle_seconds: float = 2.0

    @property
    def path(self) -> Path:
        return Path(self.landing_dir) if self.landing_dir else Settings().feed_dir

    @property
    def max_files(self) -> int:
        return self.max_files_per_batch or Settings().batch_max_files

    @property
    def max_messages(self) -> int:
        return self.max_messages_per_batch or Settings().batch_max_messages

    @property
    def max_bytes(self) -> int:
        return self.max_bytes_per_batch or Settings().batch_max_bytes


class ReferenceResource(dg.ConfigurableResource):
    """The folder of the utility's reference extracts (CSV): meters, service points, premises,
    transformers, feeders, substations."""

    reference_dir: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.reference_dir) if self.reference_dir else Settings().reference_dir


class PipelineConfig(dg.ConfigurableResource):
    """Rules and planning figures (bounds are assumptions, DOMAIN.md): unset fields come from the
    EV_* environment when the run starts (see the README's settings table)."""

    timezone: str | None = None
    charge_w_min: float | None = None
    charge_w_max: float | None = None
    max_session_wh: float | None = None
    clock_skew_s: float | None = None
    duration_unit: str | None = None
    max_session_h: float | None = None
    charge_w_tolerance: float | None = None
    duration_unit_verified: bool | None = None
    flagged_share_warn: float | None = None
    power_factor: float | None = None
    rejection_rate_warn: float | None = None
    rebuild_chunk_meters: int | None = None
    load_chunk_days: int | None = None
    load_shape: str | None = None
    load_shape_idle_ratio: float | None = None
    planning_threshold: float | None = None
    tou_on_peak: str | None = None
    new_ev_days: int | None = None
    ambient_c: float | None = None
    base_load_pu_profile: str | None = None
    base_load_scale: float | None = None
    planning_window_days: int | None = None
    risk_weight_utilization: float | None = None
    risk_weight_hours_over_rating: float | None = None
    risk_weight_loss_of_life: float | None = None
    risk_weight_ev_growth: float | None = None

    def resolved(self) -> Settings:
        """The environment's settings with this resource's explicit fields on top."""
        explicit = {k: v for k, v in self.model_dump().items() if v is not None}
        return Settings().model_copy(update=explicit)

    def settings(self) -> PipelineSettings:
        s = self.resolved()
        return PipelineSettings(
            timezone=s.timezone,
            bounds=ContractBounds(
                charge_w_min=s.charge_w_min,
                charge_w_max=s.charge_w_max,
                max_session_wh=s.max_session_wh,
                clock_skew=timedelta(seconds=s.clock_skew_s),
                duration_unit=s.duration_unit,
            ),
            max_session=timedelta(hours=s.max_session_h),
            charge_w_tolerance=s.charge_w_tolerance,
            duration_unit_verified=s.duration_unit_verified,
            power_factor=s.power_factor,
            load_shape=s.load_shape,
            load_shape_idle_ratio=s.load_shape_idle_ratio,
            planning_threshold=s.planning_threshold,
            tou_on_peak=s.tou_on_peak,
            new_ev_days=s.new_ev_days,
            ambient_c=s.ambient_c,
            base_load_pu=transformer_aging.parse_base_profile(s.base_load_pu_profile),
            base_load_scale=s.base_load_scale,
            planning_window_days=s.planning_window_days,
            risk_weights=planning_queue.RiskWeights(
                utilization=s.risk_weight_utilization,
                hours_over_rating=s.risk_weight_hours_over_rating,
                loss_of_life=s.risk_weight_loss_of_life,
                ev_growth=s.risk_weight_ev_growth,
            ),
        )


def environment_resources() -> dict[str, dg.ConfigurableResource]:
    """The code location's resources. The warehouse URL may hold a password: when it is set, it
    reaches runs as an `EnvVar` (resolved in the run worker, never written into run config)."""
    import os

    url = dg.EnvVar("EV_WAREHOUSE_URL") if os.environ.get("EV_WAREHOUSE_URL") else None
    return {
        "warehouse": WarehouseResource(url=url),
        "feed_landing": FeedResource(),
        "reference": ReferenceResource(),
        "pipeline_config": PipelineConfig(),
    }
