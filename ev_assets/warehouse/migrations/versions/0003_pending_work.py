"""ev_batch_pairing, ev_load_days_pending: the work still to do, kept in the warehouse

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

A batch in ev_ingest_batches but not in ev_batch_pairing waits for pairing; a day in
ev_load_days_pending waits for its daily load. Existing warehouses were fully paired and loaded by
the code before this revision (it paired and loaded in the run that ingested), so both start as
"nothing to do": every batch already in the ledger is recorded as paired.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ev_batch_pairing",
        sa.Column(
            "batch_id", sa.Text(), nullable=False, primary_key=True, comment="Micro-batch (ev_ingest_batches.batch_id)."
        ),
        sa.Column(
            "sessions_written", sa.BigInteger(), nullable=False, comment="Sessions written when the batch was paired."
        ),
        sa.Column("paired_at", sa.DateTime(timezone=True), nullable=False, comment="When its sessions were paired."),
        comment=(
            "Batches whose events have been paired into sessions. A batch in ev_ingest_batches but not "
            "here is waiting for pairing (the sessions step picks it up, whoever runs it, after any crash)."
        ),
    )
    op.create_table(
        "ev_load_days_pending",
        sa.Column("load_date", sa.Date(), nullable=False, primary_key=True, comment="Local date (EV_TIMEZONE)."),
        sa.Column(
            "queued_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the latest change to the day was committed.",
        ),
        comment=(
            "Local days whose sessions changed since their daily load was last computed. The daily-load "
            "sensor requests them; the daily-load step deletes them in the transaction that recomputes them."
        ),
    )
    op.execute(
        "INSERT INTO ev_batch_pairing (batch_id, sessions_written, paired_at) "
        "SELECT batch_id, 0, processed_at FROM ev_ingest_batches"
    )


def downgrade() -> None:
    op.drop_table("ev_load_days_pending")
    op.drop_table("ev_batch_pairing")
