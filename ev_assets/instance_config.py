"""The Dagster instance configuration the pipeline needs, written by `ev-awareness init` (never on
import).

`init` creates `$DAGSTER_HOME/dagster.yaml`, or upgrades an existing one: the keys below are added
where missing and a user's own values are kept. What each key is for:

- `run_coordinator`: runs queue and at most 4 run at once (the warehouse's own lock orders writers;
  no pool slot is needed for correctness, so a dead run can never wedge the pipeline);
- `run_monitoring`: a run whose worker died (kill -9, a lost machine) is detected and failed instead
  of staying STARTED forever;
- `run_retries`: the daemon retries a failed run (the owner of retries; README "Operations");
- `telemetry` off, and `nux` off so the UI opens straight onto the assets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HEADER = "# Written by `ev-awareness init`; edit freely: init adds missing keys and keeps your values.\n"

REQUIRED: dict[str, Any] = {
    "run_coordinator": {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"max_concurrent_runs": 4},
    },
    "run_monitoring": {
        "enabled": True,
        "start_timeout_seconds": 180,
        "cancel_timeout_seconds": 180,
        # With the default run launcher a dead worker cannot be seen directly: a run still STARTED
        # after this long is failed (and then retried). A backfill run of a month takes minutes.
        "max_runtime_seconds": 3600,
        "poll_interval_seconds": 60,
    },
    "run_retries": {"enabled": True, "max_retries": 3, "retry_on_asset_or_op_failure": True},
    "telemetry": {"enabled": False},
    "nux": {"enabled": False},
}

# What earlier versions generated and no longer want: a pool limit of 1 that a dead run could hold
# forever (correctness now rests on the warehouse's lock, not on a slot).
_OBSOLETE = {"concurrency": {"pools": {"default_limit": 1}}}


def write_instance_config(home: Path) -> tuple[Path, list[str]]:
    """Create or upgrade `home/dagster.yaml`; returns its path and the keys added or removed."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    current: dict[str, Any] = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    changed = []
    for key, obsolete in _OBSOLETE.items():
        if current.get(key) == obsolete:
            del current[key]
            changed.append(f"-{key}")
    for key, value in REQUIRED.items():
        if key not in current:
            current[key] = value
            changed.append(f"+{key}")
    if changed or not path.exists():
        path.write_text(HEADER + yaml.safe_dump(current, sort_keys=False))
    return path, changed
