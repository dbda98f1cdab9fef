"""Dagster resources: configuration from environment variables, the warehouse, the feed."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import dagster as dg

from ev_assets.core.contract import ContractBounds
from ev_assets.pipeline import PipelineSettings
from ev_assets.warehouse.store import Warehouse


@lru_cache(maxsize=8)
def _warehouse(url: str) -> Warehouse:
    # One engine (and connection pool) per URL and process, however many steps ask for it.
    return Warehouse(url)


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse every table is written through (EV_WAREHOUSE_URL: any SQLAlchemy URL)."""

    url: str

    def get(self) -> Warehouse:
        return _warehouse(self.url)


class FeedResource(dg.ConfigurableResource):
    """The landing folder the agent feed arrives in, and how the sensor sizes micro-batches."""

    landing_dir: str
    max_files_per_batch: int = 2000
    max_messages_per_batch: int = 50_000
    # Files younger than this wait for the next sensor tick (see batching.settled).
    settle_seconds: float = 2.0

    @property
    def path(self) -> Path:
        return Path(self.landing_dir)


class ReferenceResource(dg.ConfigurableResource):
    """The folder of the utility's reference extracts (CSV): meters, service points, premises,
    transformers, feeders, substations."""

    reference_dir: str

    @property
    def path(self) -> Path:
        return Path(self.reference_dir)


class PipelineConfig(dg.ConfigurableResource):
    """Rules and planning figures. Bounds are assumptions (DOMAIN.md), hence configuration."""

    timezone: str = "America/New_York"
    charge_w_min: float = 900.0
    charge_w_max: float = 21_120.0
    max_session_wh: float = 150_000.0
    clock_skew_s: float = 600.0
    duration_unit: str = "hours"
    max_session_h: float = 48.0
    power_factor: float = 0.9
    rejection_rate_warn: float = 0.05
    # "charge_w_then_idle" or "even": how a session's energy becomes load (core/load_profile.py).
    load_shape: str = "charge_w_then_idle"
    # Average power below this share of ChargeW: ChargeW until the energy is delivered, then idle.
    load_shape_idle_ratio: float = 0.8

    def settings(self) -> PipelineSettings:
        return PipelineSettings(
            timezone=self.timezone,
            bounds=ContractBounds(
                charge_w_min=self.charge_w_min,
                charge_w_max=self.charge_w_max,
                max_session_wh=self.max_session_wh,
                clock_skew=timedelta(seconds=self.clock_skew_s),
                duration_unit=self.duration_unit,
            ),
            max_session=timedelta(hours=self.max_session_h),
            power_factor=self.power_factor,
            load_shape=self.load_shape,
            load_shape_idle_ratio=self.load_shape_idle_ratio,
        )
