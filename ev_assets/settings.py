"""Where things live and the configuration defaults, read from environment variables.

Every variable has a default that makes a fresh clone work on the embedded SQLite warehouse:

| variable            | default                                   | meaning                                        |
|---------------------|-------------------------------------------|------------------------------------------------|
| EV_FEED_DIR         | <project>/data/landing                    | landing folder the agent feed is written to    |
| EV_REFERENCE_DIR    | <project>/data/reference                  | the utility's reference data (CSV)             |
| EV_WAREHOUSE_URL    | sqlite:///<project>/data/warehouse/ev.sqlite | any SQLAlchemy URL (PostgreSQL in production) |
| EV_TIMEZONE         | America/New_York                          | the utility's local time: days and partitions  |
| DAGSTER_HOME        | <project>/.dagster_home                   | Dagster instance: runs, cursors, schedules     |
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, str] = {
    "EV_FEED_DIR": str(PROJECT_ROOT / "data" / "landing"),
    "EV_REFERENCE_DIR": str(PROJECT_ROOT / "data" / "reference"),
    "EV_WAREHOUSE_URL": f"sqlite:///{PROJECT_ROOT / 'data' / 'warehouse' / 'ev.sqlite'}",
    "EV_TIMEZONE": "America/New_York",
    "DAGSTER_HOME": str(PROJECT_ROOT / ".dagster_home"),
}

# The first day the daily partitions cover; backfills before it are refused by Dagster.
PARTITIONS_START_DATE = "2024-01-01"

_DAGSTER_YAML = """\
# Written by ev_assets.settings on first use; edit freely.
# Runs and sensor cursors persist here, so they survive a restart of `dagster dev`.
storage:
  sqlite:
    base_dir: {home}
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    # SQLite allows one writer at a time: every step that writes the warehouse is in the
    # "ev_warehouse" pool, and this limit serialises them.
    default_limit: 1
telemetry:
  enabled: false
"""


def apply_defaults() -> None:
    """Fill unset variables with the defaults above and make sure DAGSTER_HOME exists."""
    for name, value in DEFAULTS.items():
        if not os.environ.get(name):
            os.environ[name] = value
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    dagster_yaml = home / "dagster.yaml"
    if not dagster_yaml.exists():
        dagster_yaml.write_text(_DAGSTER_YAML.format(home=home))


def setting(name: str) -> str:
    return os.environ.get(name) or DEFAULTS[name]


def feed_dir() -> Path:
    return Path(setting("EV_FEED_DIR"))


def reference_dir() -> Path:
    return Path(setting("EV_REFERENCE_DIR"))


def warehouse_url() -> str:
    return setting("EV_WAREHOUSE_URL")


def timezone() -> str:
    return setting("EV_TIMEZONE")
