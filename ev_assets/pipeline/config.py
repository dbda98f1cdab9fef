"""Settings every pipeline step shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ev_assets.core import load_profile, pairing, planning_queue, transformer_aging
from ev_assets.core.contract import ContractBounds


@dataclass(frozen=True)
class PipelineSettings:
    timezone: str = "America/New_York"
    bounds: ContractBounds = field(default_factory=ContractBounds)
    max_session: timedelta = pairing.DEFAULT_MAX_SESSION
    # A session's average power may exceed its own ChargeW by this factor: beyond it, a pair
    # longer than max_session is not made, and a paired session is flagged power_above_charge_w.
    charge_w_tolerance: float = pairing.DEFAULT_CHARGE_W_TOLERANCE
    # The reported ChargeDuration is known to be in bounds.duration_unit: sessions whose reported
    # duration disagrees with end - start are flagged duration_mismatch.
    duration_unit_verified: bool = False
    # Residential power factor 0.85-0.9 (DOMAIN.md): converts peak kW to the kVA a rating limits.
    power_factor: float = 0.9
    # How a session's energy becomes 15-minute load (see ev_assets.core.load_profile):
    # "charge_w_then_idle" (ChargeW from the start until the energy is delivered, when the average
    # power is below load_shape_idle_ratio x ChargeW) or "even" (average power all session long).
    load_shape: str = load_profile.DEFAULT_LOAD_SHAPE
    load_shape_idle_ratio: float = load_profile.DEFAULT_IDLE_RATIO
    # Overload exposure: the planning limit as a share of the rating (1.0 = 100 %).
    planning_threshold: float = 1.0
    # premise_ev_profile: on-peak windows (ev_assets.core.premise_profile.parse_tou_windows).
    tou_on_peak: str = "mon-fri 16:00-21:00"
    # new_evs: premises first seen in this many days up to the latest day with sessions.
    new_ev_days: int = 30
    # Transformer aging (ev_assets.core.transformer_aging): ambient °C, the non-EV load by local
    # hour in per-unit of the rating, and its scale.
    ambient_c: float = transformer_aging.DEFAULT_AMBIENT_C
    base_load_pu: tuple[float, ...] = transformer_aging.DEFAULT_BASE_LOAD_PU
    base_load_scale: float = 1.0
    # transformer_planning_queue (ev_assets.core.planning_queue): window and risk weights.
    planning_window_days: int = 90
    risk_weights: planning_queue.RiskWeights = field(default_factory=planning_queue.RiskWeights)

    def __post_init__(self) -> None:
        if self.load_shape not in load_profile.LOAD_SHAPES:
            raise ValueError(
                f"load_shape must be one of {', '.join(load_profile.LOAD_SHAPES)}; got {self.load_shape!r}"
            )
        if not 0 < self.load_shape_idle_ratio <= 1:
            raise ValueError(f"load_shape_idle_ratio must lie in (0, 1]; got {self.load_shape_idle_ratio}")


def utc_now() -> datetime:
    return datetime.now(UTC)
