"""Settings every pipeline step shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ev_assets.core import pairing
from ev_assets.core.contract import ContractBounds


@dataclass(frozen=True)
class PipelineSettings:
    timezone: str = "America/New_York"
    bounds: ContractBounds = field(default_factory=ContractBounds)
    max_session: timedelta = pairing.DEFAULT_MAX_SESSION
    # Residential power factor 0.85-0.9 (DOMAIN.md): converts peak kW to the kVA a rating limits.
    power_factor: float = 0.9


def utc_now() -> datetime:
    return datetime.now(UTC)
