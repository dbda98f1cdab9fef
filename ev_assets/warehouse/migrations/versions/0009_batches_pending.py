"""ev_batches_pending: the queue of batches waiting to be paired

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25

What waits for pairing was found by an anti-join of the whole batch ledger (ev_ingest_batches, a
row per batch ever ingested: a micro-batch a minute is 500,000 a year) against ev_batch_pairing, a
read that grows with history. From this revision the ingest step queues its batch here in the
transaction that commits it, and the sessions step removes it in the transaction that pairs it;
ev_batch_pairing stays the record of what was paired. The queue starts with the ledger's batches
not paired yet (a run that died between ingest and pairing), oldest first as before.

Write the operations out explicitly: a migration is a frozen step, it must not read
ev_assets.warehouse.tables (the declarations move on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_PAIRING_COMMENT_BEFORE = (
    "Batches whose events have been paired into sessions. A batch in ev_ingest_batches but not "
    "here is waiting for pairing (the sessions step picks it up, whoever runs it, after any crash)."
)
_PAIRING_COMMENT = (
    "Batches whose events have been paired into sessions: the record of what was paired, with "
    "the sessions each pairing wrote (what waits for pairing is ev_batches_pending)."
)


def upgrade() -> None:
    op.create_table(
        "ev_batches_pending",
        sa.Column(
            "batch_id", sa.Text(), nullable=False, primary_key=True, comment="Micro-batch (ev_ingest_batches.batch_id)."
        ),
        sa.Column(
            "queued_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the batch was committed (ev_ingest_batches.processed_at): pairing goes oldest first.",
        ),
        comment=(
            "Batches whose events wait to be paired into sessions. The ingest step queues its batch in the "
            "transaction that commits the batch's events; the sessions step pairs the queued batches, "
            "whoever runs it, after any crash, and removes them in the transaction that pairs them. "
            "Small (what is not paired yet), so finding the work costs the same after a million batches."
        ),
    )
    # The last time the whole ledger is read for this: batches committed but never paired.
    op.execute(
        "INSERT INTO ev_batches_pending (batch_id, queued_at) "
        "SELECT b.batch_id, b.processed_at FROM ev_ingest_batches b "
        "WHERE NOT EXISTS (SELECT 1 FROM ev_batch_pairing p WHERE p.batch_id = b.batch_id)"
    )
    # ev_batch_pairing's description now points to the queue. Only where the database keeps
    # comments: on SQLite a batch "ALTER" would copy the whole table to change nothing it stores.
    if op.get_bind().dialect.supports_comments:
        op.create_table_comment("ev_batch_pairing", _PAIRING_COMMENT, existing_comment=_PAIRING_COMMENT_BEFORE)


def downgrade() -> None:
    if op.get_bind().dialect.supports_comments:
        op.create_table_comment("ev_batch_pairing", _PAIRING_COMMENT_BEFORE, existing_comment=_PAIRING_COMMENT)
    op.drop_table("ev_batches_pending")
