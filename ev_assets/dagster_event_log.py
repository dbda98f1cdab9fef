"""Dagster's event logs (SQLite, and dagster-postgres's), writing a batch of asset events as one.

A daily-load run over a range reports one materialization per asset and day (6 assets x 31 days:
186 events), and Dagster records as many planned materializations when it creates the run. With
Dagster's event batching on (DAGSTER_EVENT_BATCH_SIZE > 0, which these event logs set from their
instance configuration, `event_batch_size`, written by `ev-awareness init`) Dagster hands a step's per-partition
materializations, and a run's planned events, to `store_event_batch`. dagster-postgres writes the
materializations with one INSERT, the planned events one connection each (10 to 15 ms each); Dagster's
SQLite event log loops over `store_event`, which opens a new engine on the run's file and on the
cross-run index file, inserts, and commits, for every event: about 10 ms each, 2 s of every 31-day
run and more than half of a three-year backfill's daily load (BENCHMARKS.md).

`BatchingSqliteEventLogStorage` is that SQLite event log with a batch path: one transaction on the
index shard (the rows, their tags, each asset's latest event) and one statement on the run's
shard. `BatchingPostgresEventLogStorage` is dagster-postgres's with the same path for the planned
events (one table holds the run's log and the index there: one transaction). Same files, tables
and schema as Dagster's own, so a home switches to them and back freely. `ev-awareness init`
configures one or the other (`event_log_storage` in dagster.yaml). The Dagster internals this
rests on all come from `ev_assets.dagster_adapter` (pinned to Dagster 1.13, tested there). Every
other event of a batch (a check's planned evaluation, a failure) takes Dagster's own path, in the batch's order. When a
group's write fails its events are stored one by one, as Dagster does with a failed batch (raising
would make Dagster store the groups already written again): on SQLite the index transaction goes
first and rolls back whole, so only a failure of the run file's single statement after it (a full
disk) could leave that group twice in the index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import groupby

import dagster as dg
from sqlalchemy import Connection

from ev_assets.dagster_adapter import (
    DEFAULT_EVENT_BATCH_SIZE,
    PostgresEventLogStorage,
    SqlEventLogStorageTable,
    SqliteEventLogStorage,
    enable_event_batches,
    get_token_provider_from_config,
    index_asset_event,
    index_asset_event_tags,
    pg_url_from_config,
)

# The instance configuration key (in `event_log_storage.config`) of the batch size: optional, the
# default when absent; an exported DAGSTER_EVENT_BATCH_SIZE wins over it.
BATCH_SIZE_KEY = "event_batch_size"
_BATCH_SIZE_FIELD = dg.Field(dg.IntSource, is_required=False, default_value=DEFAULT_EVENT_BATCH_SIZE)


# The asset events mirrored in the index shard that are written a batch at a time: a step's
# per-partition materializations or observations, and a run's planned materializations.
_BATCHABLE = {
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_OBSERVATION,
    dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
}


def _batchable(event: dg.EventLogEntry) -> bool:
    return event.get_dagster_event().event_type in _BATCHABLE


class _AssetEventBatches:
    """`store_event_batch` for one of Dagster's SQL event logs (a base class after this one):
    consecutive asset events of one run are written together by `_store_asset_events`, anything
    else event by event, so the run's log keeps the batch's order."""

    def store_event_batch(self, events: Sequence[dg.EventLogEntry]) -> None:
        if len({event.run_id for event in events}) != 1:
            super().store_event_batch(events)  # type: ignore[misc]
            return
        for batchable, group in groupby(events, key=_batchable):
            group = list(group)
            if batchable and len(group) > 1:
                try:
                    self._store_asset_events(group)
                    continue
                except Exception:  # noqa: BLE001 - Dagster's own fallback for a batch, kept to this group
                    # Raising would make Dagster store the whole batch again, the groups already
                    # written included.
                    logging.getLogger("ev_assets").warning(
                        "event batch not written as one; stored event by event", exc_info=True
                    )
            for event in group:
                self.store_event(event)  # type: ignore[attr-defined]

    def _store_asset_events(self, events: list[dg.EventLogEntry]) -> None:
        raise NotImplementedError

    def _index_asset_events(self, conn: Connection, events: list[dg.EventLogEntry], insert) -> list[int]:
        """Insert the events into the index (cross-run) table, with their tags and each asset's
        latest-event row; returns their ids in the events' order."""
        # The database numbers one INSERT's rows in the order of its VALUES; RETURNING's own order
        # is unspecified, so the ids are put back in that order.
        ids = sorted(conn.execute(insert.returning(SqlEventLogStorageTable.c.id)).scalars())
        index_asset_event_tags(self, conn, events, ids)
        # Each asset's latest-event row holds what its last event of the batch sets (as
        # dagster-postgres does for one asset's materializations): the others are overwritten.
        last = {
            event.get_dagster_event().asset_key: (event, event_id) for event, event_id in zip(events, ids, strict=True)
        }
        for event, event_id in last.values():
            index_asset_event(self, conn, event, event_id)
        return ids


class BatchingSqliteEventLogStorage(_AssetEventBatches, SqliteEventLogStorage):
    """SqliteEventLogStorage whose `store_event_batch` writes one run's asset events at once."""

    @classmethod
    def config_type(cls):
        return {**SqliteEventLogStorage.config_type(), BATCH_SIZE_KEY: _BATCH_SIZE_FIELD}

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # the parent builds its own class
        config = dict(config_value)
        enable_event_batches(config.pop(BATCH_SIZE_KEY, DEFAULT_EVENT_BATCH_SIZE))
        return cls(inst_data=inst_data, **config)

    def _store_asset_events(self, events: list[dg.EventLogEntry]) -> None:
        insert = self.prepare_insert_event_batch(events)
        # The index shard first, in one transaction: if it fails nothing is written and the group
        # is stored event by event.
        with self.index_transaction() as conn:
            self._index_asset_events(conn, events, insert)
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(insert)


class BatchingPostgresEventLogStorage(_AssetEventBatches, PostgresEventLogStorage):
    """dagster-postgres's event log whose `store_event_batch` also writes a run's planned
    materializations at once (dagster-postgres opens a connection per event for them: 10 to 15 ms
    each, 1.7 to 2.9 s for a 31-day range run's 186 here)."""

    @classmethod
    def config_type(cls):
        return {**PostgresEventLogStorage.config_type(), BATCH_SIZE_KEY: _BATCH_SIZE_FIELD}

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # the parent builds its own class
        enable_event_batches(config_value.get(BATCH_SIZE_KEY, DEFAULT_EVENT_BATCH_SIZE))
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def _store_asset_events(self, events: list[dg.EventLogEntry]) -> None:
        insert = self.prepare_insert_event_batch(events)
        # One table holds the run's log and the index: the rows, their tags and the assets' rows in
        # one transaction (the engine autocommits each statement otherwise), so a failure leaves
        # nothing to store twice.
        with self._connect() as conn:
            transactional = conn.execution_options(isolation_level="READ COMMITTED")
            with transactional.begin():
                self._index_asset_events(transactional, events, insert)
