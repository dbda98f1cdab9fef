"""Dagster's SQLite event log, writing a batch of asset events as one batch.

A daily-load run over a range reports one materialization per asset and day (6 assets x 31 days:
186 events). With DAGSTER_EVENT_BATCH_SIZE > 0 (set by the code location) Dagster hands a step's
per-partition materializations to `store_event_batch`. dagster-postgres writes them with one
INSERT; Dagster's SQLite event log loops over `store_event`, which opens a new engine on the run's
file and on the cross-run index file, inserts, and commits, for every event: about 10 ms each,
2 s of every 31-day run and more than half of a three-year backfill's daily load (BENCHMARKS.md).

`BatchingSqliteEventLogStorage` is that SQLite event log with the batch path dagster-postgres has:
one transaction on the index shard (the rows, their tags, the asset's latest event) and one
statement on the run's shard. Same files and schema as Dagster's own, so a home switches to it and
back freely. `ev-awareness init` configures it (`event_log_storage` in dagster.yaml) when the
instance stays in SQLite. Anything but a batch of one run's materializations (or observations)
takes Dagster's own path. When a batch's write fails Dagster stores its events one by one: the
index transaction goes first and rolls back whole, so only a failure of the run file's single
statement after it (a full disk) could leave that batch twice in the index.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable

# The event kinds dagster-postgres batches: a step's per-partition asset events.
_BATCHABLE = ({DagsterEventType.ASSET_MATERIALIZATION}, {DagsterEventType.ASSET_OBSERVATION})


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage whose `store_event_batch` writes one run's asset events at once."""

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # the parent builds its own class
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        kinds = {event.get_dagster_event().event_type for event in events}
        runs = {event.run_id for event in events}
        if len(events) < 2 or kinds not in _BATCHABLE or len(runs) != 1:
            super().store_event_batch(events)
            return
        insert = self.prepare_insert_event_batch(events)
        # The index shard first, in one transaction: if it fails nothing is written and Dagster
        # stores the batch event by event; the ids it returns key the asset tags.
        with self.index_transaction() as conn:
            # SQLite numbers one INSERT's rows in the order of its VALUES; RETURNING's own order is
            # unspecified, so the ids are put back in that order.
            ids = sorted(conn.execute(insert.returning(SqlEventLogStorageTable.c.id)).scalars())
            self._store_asset_event_tags(conn, events, ids)
            # As dagster-postgres does: the asset's latest-event row needs only the last of them.
            self._store_asset_event(conn, events[-1], ids[-1])
        with self.run_connection(runs.pop()) as conn:
            conn.execute(insert)
