"""ev_event_commits: the commit order of new events, for the events API's stream

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

A consumer following the stream resumes after the last commit it saw. message_id, ingested_at or
any id assigned early in a transaction grows in start order, not in commit order: with writers in
parallel, a transaction that started first may commit last, and a cursor past it would skip its
events. commit_seq is taken last in the transaction under an advisory lock held to its end, so
commit N is visible before commit N + 1 can be numbered.

Written out explicitly: a migration is a frozen step, it must not read ev_assets.warehouse.tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_TABLE = "ev_event_commits"


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column(
            "commit_seq",
            sa.BigInteger(),
            primary_key=True,
            nullable=False,
            comment="Commit sequence number: 1, 2, ... in the order the writes committed.",
        ),
        sa.Column(
            "batch_id",
            sa.Text(),
            nullable=False,
            comment="Micro-batch whose new events this commit wrote (ev_charging_events.batch_id).",
        ),
        sa.Column("event_count", sa.BigInteger(), nullable=False, comment="New events the commit wrote."),
        sa.Column(
            "committed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the writing transaction took its number (just before its commit).",
        ),
        comment=(
            "One row per committed write of new events (an ingest or replay batch), numbered in commit order: the "
            "events API's stream (`/v1/ev-charging-events/stream`) follows commit_seq, so a consumer resuming after "
            "commit N sees every event committed later and none twice. The number is taken last in the writing "
            "transaction, under its own PostgreSQL advisory lock (SQLite: the single writer), so numbers grow in "
            "the order transactions become visible, even when writers run in parallel."
        ),
    )
    op.create_index("ix_ev_event_commits_batch_id", _TABLE, ["batch_id"])


def downgrade() -> None:
    op.drop_index("ix_ev_event_commits_batch_id", table_name=_TABLE)
    op.drop_table(_TABLE)
