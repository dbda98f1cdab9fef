"""Every private Dagster API the project uses, in one module, written for Dagster 1.13 (and
dagster-postgres 0.29). pyproject.toml pins those minor versions; `ev_assets_tests/test_dagster_adapter.py`
fails, naming what changed, when the installed Dagster is another minor version or a name below is gone.

What is used, and what it buys (BENCHMARKS.md "Private Dagster APIs", measured on the demo:
`ev-awareness init; simulate --days 2; run`):

- `DAGSTER_EVENT_BATCH_SIZE`, the environment switch Dagster's instance reads
  (`dagster._core.instance.methods.event_methods`, `os.getenv` on every event) to hand a step's
  per-partition materializations, and a run's planned ones, to the event log's `store_event_batch`
  instead of `store_event` one at a time. Dagster offers no configuration key for it. The event
  logs below set it from their own instance configuration (`event_batch_size` in dagster.yaml,
  written by `ev-awareness init`) when an instance is opened, in every process that opens one (the
  CLI, the daemon, run workers); an operator's own exported value wins.
- `SqliteEventLogStorage` (`dagster._core.storage.event_log`), subclassed for a batch path: Dagster's
  SQLite event log opens an engine on the run's file and the index file and commits once per event
  (about 10 ms each). The batch path writes a group in one transaction on each file, with the private
  helpers that keep the index's tags and each asset's latest-event row as `store_event` would:
  `_store_asset_event_tags`, `_store_asset_event`, `prepare_insert_event_batch`, `index_transaction`,
  `run_connection`, and the table `SqlEventLogStorageTable`.
- `PostgresEventLogStorage` (dagster-postgres), the same batch path for a run's planned
  materializations (one connection each otherwise), with `_connect` and dagster-postgres's config
  helpers `pg_url_from_config`, `get_token_provider_from_config`.

Together they save 13 % of the CPU of the demo's `ev-awareness run` and 29 to 47 % of its wall time
(paired runs with DAGSTER_EVENT_BATCH_SIZE=0), and more than half of a long range's daily load. The
CLI's runner, whose private APIs bought no time, uses public ones only (`dg.execute_job`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import dagster
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config
from sqlalchemy import Connection

__all__ = [
    "DAGSTER_MINOR",
    "DAGSTER_POSTGRES_MINOR",
    "DEFAULT_EVENT_BATCH_SIZE",
    "EVENT_BATCH_SIZE_VARIABLE",
    "PRIVATE_METHODS",
    "PostgresEventLogStorage",
    "SqlEventLogStorageTable",
    "SqliteEventLogStorage",
    "enable_event_batches",
    "get_token_provider_from_config",
    "index_asset_event",
    "index_asset_event_tags",
    "pg_url_from_config",
]

# The minor versions this module was written (and measured) for.
DAGSTER_MINOR = (1, 13)
DAGSTER_POSTGRES_MINOR = (0, 29)

EVENT_BATCH_SIZE_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
# Larger than any batch Dagster hands over here (a run's planned events: assets x days of a range).
DEFAULT_EVENT_BATCH_SIZE = 1000

# The storages' private methods the batch path calls (the adapter test checks each exists).
PRIVATE_METHODS: dict[type, tuple[str, ...]] = {
    SqliteEventLogStorage: (
        "_store_asset_event_tags",
        "_store_asset_event",
        "prepare_insert_event_batch",
        "index_transaction",
        "run_connection",
        "store_event_batch",
    ),
    PostgresEventLogStorage: (
        "_store_asset_event_tags",
        "_store_asset_event",
        "prepare_insert_event_batch",
        "_connect",
        "store_event_batch",
    ),
}


def installed_minor() -> tuple[int, int]:
    major, minor = dagster.__version__.split(".")[:2]
    return int(major), int(minor)


def enable_event_batches(size: int) -> None:
    """Turn Dagster's event batching on in this process (`size` events at most per batch), unless the
    operator exported DAGSTER_EVENT_BATCH_SIZE (`0` turns it off). Called by the event logs when an
    instance is opened: Dagster reads the switch only from the environment."""
    os.environ.setdefault(EVENT_BATCH_SIZE_VARIABLE, str(size))


def index_asset_event_tags(storage, conn: Connection, events: Sequence, ids: Sequence[int]) -> None:
    """The index's tag rows of asset events already inserted with `ids` (what `store_event` writes)."""
    storage._store_asset_event_tags(conn, events, ids)


def index_asset_event(storage, conn: Connection, event, event_id: int) -> None:
    """An asset's latest-event row, set from one of its events (what `store_event` writes)."""
    storage._store_asset_event(conn, event, event_id)
