#!/bin/bash
# The demo's `ev-awareness run`, timed: init, two simulated days, then `run` under /usr/bin/time,
# everything in a fresh temp dir. Prints "LABEL wall/user/sys SECONDS...". Extra environment (e.g.
# DAGSTER_EVENT_BATCH_SIZE=0) is passed through. Usage: bench/demo_run_time.sh LABEL
set -e
cd "$(dirname "$0")/.."
T=$(mktemp -d)
export DAGSTER_HOME=$T/dagster EV_FEED_DIR=$T/landing EV_REFERENCE_DIR=$T/reference EV_WAREHOUSE_URL=sqlite:///$T/ev.sqlite
mkdir -p "$DAGSTER_HOME" "$EV_REFERENCE_DIR"
cp data/reference/*.csv "$EV_REFERENCE_DIR/"
.venv/bin/ev-awareness init > "$T/init.log" 2>&1
.venv/bin/ev-awareness simulate --start "$(date -d '3 days ago' +%F)" --days 2 > "$T/sim.log" 2>&1
/usr/bin/time -f "%e %U %S" -o "$T/time.txt" .venv/bin/ev-awareness run > "$T/run.log" 2>&1 || echo "run rc=$?"
echo "${1:-run} wall/user/sys $(cat "$T/time.txt") ($T)"
