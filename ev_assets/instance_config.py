"""The Dagster instance configuration the pipeline needs, written by `ev-awareness init` (never on
import).

`init` creates `$DAGSTER_HOME/dagster.yaml`, or upgrades an existing one: the keys below are added
where missing and a user's own values are kept. What each key is for:

- `run_coordinator`: runs queue and at most 4 run at once (the warehouse's own lock orders writers;
  no pool slot is needed for correctness, so a dead run can never wedge the pipeline);
- `run_monitoring`: a run whose worker died (kill -9, a lost machine) is detected and failed instead
  of staying STARTED forever;
- `run_retries`: the daemon retries a failed run (the owner of retries; README "Operations");
- `telemetry` off, and `nux` off so the UI opens straight onto the assets;
- `event_log_storage`, while the instance stays in SQLite: Dagster's SQLite event log with a batch
  path (`ev_assets.dagster_event_log`), so a range run's per-partition materializations are
  written in one transaction instead of one file commit each; same files, same schema. Its
  `event_batch_size` is how many events Dagster may hand it at once: the event log turns Dagster's
  batching on with it (Dagster reads it only from DAGSTER_EVENT_BATCH_SIZE, which the event log sets
  when an instance is opened unless the operator exported it; `ev_assets.dagster_adapter`);
- `run_storage`, `event_log_storage` and `schedule_storage`, only when EV_DAGSTER_STORAGE_URL is
  set: runs, the event log, schedules and sensor cursors in PostgreSQL (`dagster-postgres`) instead
  of SQLite files under DAGSTER_HOME; what `storage: postgres:` configures, but with the event log
  that writes a run's planned materializations at once (`ev_assets.dagster_event_log`; its
  `event_batch_size` defaults to the same value, not written so earlier files still match). The SQLite
  event log opens, commits and closes a file per event, a large share of a run's fixed cost; and
  several processes (daemon, webserver, run workers) write it at once. The URL is written as an
  `env:` reference, so the password stays in the environment and never lands in the file. A file
  an earlier `init` wrote with `storage: postgres:` is converted (same database, same tables).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ev_assets.dagster_adapter import DEFAULT_EVENT_BATCH_SIZE

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

STORAGE_URL_VARIABLE = "EV_DAGSTER_STORAGE_URL"


def _postgres(module: str, class_name: str) -> dict[str, Any]:
    return {"module": module, "class": class_name, "config": {"postgres_url": {"env": STORAGE_URL_VARIABLE}}}


# The instance in PostgreSQL: dagster-postgres's storages, the event log's batch path ours.
POSTGRES_STORAGE: dict[str, Any] = {
    "run_storage": _postgres("dagster_postgres.run_storage", "PostgresRunStorage"),
    "event_log_storage": _postgres("ev_assets.dagster_event_log", "BatchingPostgresEventLogStorage"),
    "schedule_storage": _postgres("dagster_postgres.schedule_storage", "PostgresScheduleStorage"),
}
# What `init` wrote for PostgreSQL before: the same database and tables, Dagster's own event log.
EARLIER_POSTGRES_STORAGE: dict[str, Any] = {"postgres": {"postgres_url": {"env": STORAGE_URL_VARIABLE}}}
# Keys that also choose where the instance stores its data (Dagster refuses `storage` next to them).
_STORAGE_KEYS = ("storage", "run_storage", "event_log_storage", "schedule_storage")
BATCHING_EVENT_LOG = {"module": "ev_assets.dagster_event_log", "class": "BatchingSqliteEventLogStorage"}


def batching_event_log(home: Path) -> dict[str, Any]:
    """The `event_log_storage` key: where Dagster's default keeps a home's event logs."""
    base_dir = str(home.resolve() / "history" / "runs")
    return {**BATCHING_EVENT_LOG, "config": {"base_dir": base_dir, "event_batch_size": DEFAULT_EVENT_BATCH_SIZE}}


def _is_ours(value: Any) -> bool:
    return isinstance(value, dict) and all(value.get(k) == v for k, v in BATCHING_EVENT_LOG.items())


class StorageConflict(ValueError):
    """dagster.yaml already chooses another storage than the one EV_DAGSTER_STORAGE_URL asks for."""


# What earlier versions generated and no longer want: a pool limit of 1 that a dead run could hold
# forever (correctness now rests on the warehouse's lock, not on a slot).
_OBSOLETE = {"concurrency": {"pools": {"default_limit": 1}}}


def write_instance_config(home: Path, *, postgres_storage: bool = False) -> tuple[Path, list[str]]:
    """Create or upgrade `home/dagster.yaml`; returns its path and the keys added or removed.

    postgres_storage: the instance should store its data in PostgreSQL (EV_DAGSTER_STORAGE_URL is
    set). Added to a file that chooses no storage yet (an upgrade from SQLite: the new instance starts
    with no run history, which the pipeline does not need: its state is in the warehouse); a file
    that already chooses another storage raises StorageConflict rather than being overwritten."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    current: dict[str, Any] = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    changed = []
    if postgres_storage and _is_ours(current.get("event_log_storage")):
        del current["event_log_storage"]  # PostgreSQL stores the event log; ours was SQLite's
        changed.append("-event_log_storage (SQLite)")
    if postgres_storage and current.get("storage") == EARLIER_POSTGRES_STORAGE:
        del current["storage"]
        current.update(POSTGRES_STORAGE)
        changed.append("~storage (postgres, batched event log)")
    if postgres_storage and not _postgres_chosen(current):
        chosen = [key for key in _STORAGE_KEYS if key in current]
        if chosen:
            raise StorageConflict(
                f"{path} already configures the instance storage ({', '.join(chosen)}): remove "
                f"{'that key' if len(chosen) == 1 else 'those keys'} to store the instance in PostgreSQL "
                f"({STORAGE_URL_VARIABLE}), or unset {STORAGE_URL_VARIABLE} to keep it"
            )
        current.update(POSTGRES_STORAGE)
        changed.append("+storage (postgres)")
    if not postgres_storage:
        wanted = batching_event_log(home)
        if not any(key in current for key in _STORAGE_KEYS):
            current["event_log_storage"] = wanted
            changed.append("+event_log_storage (SQLite, batched)")
        elif _is_ours(current.get("event_log_storage")) and current["event_log_storage"] != wanted:
            current["event_log_storage"] = wanted  # the home moved: its event logs are here now
            changed.append("~event_log_storage (SQLite, batched)")
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


def _postgres_chosen(config: dict[str, Any]) -> bool:
    return all(config.get(key) == value for key, value in POSTGRES_STORAGE.items())


def uses_postgres_storage(home: Path) -> bool:
    """Whether `home/dagster.yaml` reads its storage URL from EV_DAGSTER_STORAGE_URL (as this
    version writes it, or as an earlier `init` did)."""
    path = home / "dagster.yaml"
    if not path.exists():
        return False
    config = yaml.safe_load(path.read_text()) or {}
    return _postgres_chosen(config) or config.get("storage") == EARLIER_POSTGRES_STORAGE
