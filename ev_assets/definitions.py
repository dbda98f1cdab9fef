"""The Dagster code location: every Dagster object under `ev_assets/defs/`, found by Dagster's own
project layout (`[tool.dg]` in pyproject.toml, `load_from_defs_folder`), plus the resources and the
executor, which belong to the location rather than to an area.

Importing this module reads settings and writes nothing: no file (`ev-awareness init` writes the
instance configuration, `ev-awareness db upgrade` the schema), no environment variable. Dagster's
event batching is configured by the instance: the event logs `init` writes into dagster.yaml turn it
on in every process that opens the instance (ev_assets.dagster_event_log), run workers included.
"""

from pathlib import Path

import dagster as dg

from ev_assets.defs.resources import environment_resources
from ev_assets.defs.vendor import vendor_resource_from_environment

defs = dg.Definitions.merge(
    dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
    dg.Definitions(
        resources={**environment_resources(), "vendor": vendor_resource_from_environment()},
        # A run's steps follow one another and each works in the warehouse: running them in the run's
        # own process saves a Python start (seconds) per step.
        executor=dg.in_process_executor,
    ),
)
