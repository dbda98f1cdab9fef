"""The history's month partitions on PostgreSQL (ev_assets.warehouse.month_partitions): a daily run
makes the partitions of the months ahead (EV_PARTITION_MONTHS_AHEAD) and moves out of DEFAULT the
rows of any month that arrived without its partition. `ev-awareness db upgrade` and `init` do the
same; this keeps the months ahead made on a deployment nobody upgrades for months. Nothing on SQLite.

Retention (detaching or dropping old months) is a decision, not a schedule: `ev-awareness db
detach-month YYYY-MM` (docs/production.md)."""

import dagster as dg

from ev_assets.defs.resources import WarehouseResource
from ev_assets.settings import Settings
from ev_assets.warehouse.month_partitions import ensure_month_partitions


@dg.op(description="Create the month partitions ahead, and those of months waiting in DEFAULT (PostgreSQL).")
def ensure_month_partitions_op(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    wh = warehouse.get()
    created = ensure_month_partitions(wh.engine, Settings().partition_months_ahead)
    context.log.info(f"{len(created)} month partitions created" + (f": {', '.join(created)}" if created else ""))


@dg.job(description="The history's month partitions ahead (PostgreSQL; nothing on SQLite).")
def month_partitions_job():
    ensure_month_partitions_op()


@dg.schedule(
    cron_schedule="15 0 * * *",
    job=month_partitions_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: the month partitions of this month and EV_PARTITION_MONTHS_AHEAD ahead (PostgreSQL).",
)
def month_partitions_schedule(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"month_partitions:{context.scheduled_execution_time.date().isoformat()}")
