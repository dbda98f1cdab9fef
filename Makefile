# Two commands on a fresh machine: `make demo` and `make test`. Everything else is optional.
.PHONY: setup demo test test-postgres ui validate lint clean

# uv runs as a Python module, so it works wherever pip put it (no PATH or shim needed).
UV ?= python3 -m uv
POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

# Installs uv with pip when it is missing, then the locked environment.
setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet --compile-bytecode

# Init the instance and the warehouse, simulate the two days before yesterday of the committed
# 2,000-meter utility (recent days, inside the daily partitions init records), run the pipeline, show
# the busiest transformers.
demo: setup
	$(UV) run ev-awareness init
	$(UV) run ev-awareness simulate --start $$(date -d '3 days ago' +%F) --days 2
	$(UV) run ev-awareness run
	$(UV) run ev-awareness top --limit 10

# The whole suite: SQLite always, PostgreSQL too when EV_TEST_POSTGRES_URL is set (CI sets it).
test: setup
	$(UV) run pytest -n 2 -q

test-postgres: setup
	EV_TEST_POSTGRES_URL=$(POSTGRES_URL) $(UV) run pytest -n 2 -q

# The formatter's style and the linter (line length 120; pyproject.toml [tool.ruff]), as CI checks them.
lint: setup
	$(UV) run ruff format --check .
	$(UV) run ruff check .

# The code location loads (the workspace, as `dagster dev` reads it) and Dagster's project layout
# finds every definition under ev_assets/defs/ (`dg check defs`; `dg list defs` lists them).
validate: setup
	$(UV) run dagster definitions validate -w workspace.yaml
	$(UV) run dg check defs

# DAGSTER_HOME must be set before dagster starts (else runs and cursors go to a temporary folder).
ui: setup
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} $(UV) run ev-awareness init
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} $(UV) run dagster dev -w workspace.yaml

clean:
	rm -rf data/landing data/warehouse .dagster_home

# Benchmarks (bench/run_bench.py, BENCHMARKS.md): a Markdown report on stdout, figures in bench/results.json.
# `make bench` measures every throughput goal at its own size (about an hour on 2 cores);
# `make bench-quick` is the small smoke run CI can afford (under 2 minutes).
.PHONY: bench bench-quick
bench: setup
	$(UV) run python bench/run_bench.py

bench-quick: setup
	$(UV) run python bench/run_bench.py --quick
