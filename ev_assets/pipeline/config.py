"""Settings every pipeline step shares: the plain (Dagster-free) form of `ev_assets.settings.Settings`.

Nothing is declared twice: every default here is the declaration's (`_DECLARED`, the settings with no
environment), and `from_settings` is the one mapping from the declaration to this form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ev_assets.core import load_profile, planning_queue, transformer_aging
from ev_assets.core.contract import ContractBounds
from ev_assets.settings import Settings

# The declared defaults, without reading the environment (model_construct skips the sources).
_DECLARED = Settings.model_construct()


def _bounds(s: Settings) -> ContractBounds:
    return ContractBounds(
        charge_w_min=s.charge_w_min,
        charge_w_max=s.charge_w_max,
        max_session_wh=s.max_session_wh,
        clock_skew=timedelta(seconds=s.clock_skew_s),
        duration_unit=s.duration_unit,
    )


def _risk_weights(s: Settings) -> planning_queue.RiskWeights:
    return planning_queue.RiskWeights(
        utilization=s.risk_weight_utilization,
        hours_over_rating=s.risk_weight_hours_over_rating,
        loss_of_life=s.risk_weight_loss_of_life,
        ev_growth=s.risk_weight_ev_growth,
        overload_soon=s.risk_weight_overload_soon,
    )


@dataclass(frozen=True)
class PipelineSettings:
    """What the steps read; each field's meaning is its setting's (docs/settings.md)."""

    timezone: str = _DECLARED.timezone
    bounds: ContractBounds = field(default_factory=lambda: _bounds(_DECLARED))
    max_session: timedelta = timedelta(hours=_DECLARED.max_session_h)
    charge_w_tolerance: float = _DECLARED.charge_w_tolerance
    duration_unit_verified: bool = _DECLARED.duration_unit_verified
    power_factor: float = _DECLARED.power_factor
    load_shape: str = _DECLARED.load_shape
    load_shape_idle_ratio: float = _DECLARED.load_shape_idle_ratio
    planning_threshold: float = _DECLARED.planning_threshold
    tou_on_peak: str = _DECLARED.tou_on_peak
    new_ev_days: int = _DECLARED.new_ev_days
    ambient_c: float = _DECLARED.ambient_c
    base_load_pu: tuple[float, ...] = transformer_aging.parse_base_profile(_DECLARED.base_load_pu_profile)
    base_load_scale: float = _DECLARED.base_load_scale
    planning_window_days: int = _DECLARED.planning_window_days
    risk_weights: planning_queue.RiskWeights = field(default_factory=lambda: _risk_weights(_DECLARED))
    forecast_years: int = _DECLARED.forecast_years
    forecast_draws: int = _DECLARED.forecast_draws
    forecast_seed: int = _DECLARED.forecast_seed
    forecast_library_days: int = _DECLARED.forecast_library_days
    forecast_adoption_scenarios: str = _DECLARED.forecast_adoption_scenarios
    forecast_adoption_prior_evs: float = _DECLARED.forecast_adoption_prior_evs
    forecast_managed_share: float = _DECLARED.forecast_managed_share
    forecast_managed_window: str = _DECLARED.forecast_managed_window
    forecast_backtest_months: int = _DECLARED.forecast_backtest_months
    forecast_calibration_tolerance: float = _DECLARED.forecast_calibration_tolerance

    def __post_init__(self) -> None:
        # Tests build this directly, past the declaration's validation.
        if self.load_shape not in load_profile.LOAD_SHAPES:
            raise ValueError(
                f"load_shape must be one of {', '.join(load_profile.LOAD_SHAPES)}; got {self.load_shape!r}"
            )
        if not 0 < self.load_shape_idle_ratio <= 1:
            raise ValueError(f"load_shape_idle_ratio must lie in (0, 1]; got {self.load_shape_idle_ratio}")

    @classmethod
    def from_settings(cls, s: Settings) -> PipelineSettings:
        """The steps' settings from the declared ones (the environment's, or a resource's on top)."""
        return cls(
            timezone=s.timezone,
            bounds=_bounds(s),
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
            risk_weights=_risk_weights(s),
            forecast_years=s.forecast_years,
            forecast_draws=s.forecast_draws,
            forecast_seed=s.forecast_seed,
            forecast_library_days=s.forecast_library_days,
            forecast_adoption_scenarios=s.forecast_adoption_scenarios,
            forecast_adoption_prior_evs=s.forecast_adoption_prior_evs,
            forecast_managed_share=s.forecast_managed_share,
            forecast_managed_window=s.forecast_managed_window,
            forecast_backtest_months=s.forecast_backtest_months,
            forecast_calibration_tolerance=s.forecast_calibration_tolerance,
        )


def utc_now() -> datetime:
    return datetime.now(UTC)
