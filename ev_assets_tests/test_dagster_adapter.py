"""The private Dagster APIs of `ev_assets.dagster_adapter` still exist in the installed Dagster, which
is the minor version the adapter was written for: on an upgrade these fail first, saying what to
re-check, instead of the batching silently turning off or a storage failing mid-run."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ev_assets import dagster_adapter
from ev_assets.settings import PROJECT_ROOT

UPGRADE_HINT = (
    "ev_assets/dagster_adapter.py was written for Dagster {written}; re-check every private API it lists "
    "(and BENCHMARKS.md 'Private Dagster APIs'), then update DAGSTER_MINOR and the pins in pyproject.toml"
)


def _minor(distribution: str) -> tuple[int, int]:
    major, minor = importlib.metadata.version(distribution).split(".")[:2]
    return int(major), int(minor)


@pytest.mark.parametrize(
    ("distribution", "written_for"),
    [
        ("dagster", dagster_adapter.DAGSTER_MINOR),
        ("dagster-webserver", dagster_adapter.DAGSTER_MINOR),
        ("dagster-postgres", dagster_adapter.DAGSTER_POSTGRES_MINOR),
    ],
)
def test_the_installed_dagster_is_the_minor_version_the_adapter_was_written_for(distribution, written_for):
    installed = _minor(distribution)
    assert installed == written_for, (
        f"{distribution} {importlib.metadata.version(distribution)} is installed. "
        + UPGRADE_HINT.format(written=".".join(map(str, written_for)))
    )


def test_pyproject_pins_the_minor_versions_the_adapter_was_written_for():
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    major, minor = dagster_adapter.DAGSTER_MINOR
    pg_major, pg_minor = dagster_adapter.DAGSTER_POSTGRES_MINOR
    for distribution, (lo_major, lo_minor) in [
        ("dagster", (major, minor)),
        ("dagster-webserver", (major, minor)),
        ("dagster-postgres", (pg_major, pg_minor)),
    ]:
        pin = rf'"{distribution}>={lo_major}\.{lo_minor}(\.\d+)?,<{lo_major}\.{lo_minor + 1}"'
        assert re.search(pin, pyproject), (
            f"pyproject.toml should pin {distribution} to {lo_major}.{lo_minor}.* (what dagster_adapter.py is for)"
        )


@pytest.mark.parametrize("storage", list(dagster_adapter.PRIVATE_METHODS), ids=lambda storage: storage.__name__)
def test_every_private_method_the_event_logs_call_exists(storage):
    missing = [name for name in dagster_adapter.PRIVATE_METHODS[storage] if not callable(getattr(storage, name, None))]
    assert not missing, (
        f"{storage.__module__}.{storage.__name__} no longer has {', '.join(missing)}. "
        + UPGRADE_HINT.format(written=".".join(map(str, dagster_adapter.DAGSTER_MINOR)))
    )


def test_the_private_helpers_take_the_arguments_the_adapter_passes():
    """`_store_asset_event_tags(conn, events, event_ids)` and `_store_asset_event(conn, event, event_id)`:
    a changed signature would fail only when a batch is written (and fall back to one by one)."""
    expected = {
        "_store_asset_event_tags": ["self", "conn", "events", "event_ids"],
        "_store_asset_event": ["self", "conn", "event", "event_id"],
    }
    for storage in dagster_adapter.PRIVATE_METHODS:
        for name, parameters in expected.items():
            found = list(inspect.signature(getattr(storage, name)).parameters)
            assert found == parameters, (
                f"{storage.__name__}.{name}{found}: the adapter passes {parameters[1:]}. "
                + UPGRADE_HINT.format(written=".".join(map(str, dagster_adapter.DAGSTER_MINOR)))
            )
    assert "id" in dagster_adapter.SqlEventLogStorageTable.c, "SqlEventLogStorageTable has no `id` column"


def test_the_instance_still_reads_the_batch_switch_from_the_environment():
    """The batching rests on the instance reading DAGSTER_EVENT_BATCH_SIZE: with another spelling (or
    none) an upgrade would turn it off without a word. Checked on a real instance in a fresh process."""
    code = (
        "import os, dagster as dg\n"
        f"os.environ[{dagster_adapter.EVENT_BATCH_SIZE_VARIABLE!r}] = '7'\n"
        "with dg.DagsterInstance.ephemeral() as instance:\n"
        "    print(instance._get_event_batch_size(), instance._is_batch_writing_enabled())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["7", "True"], (
        f"the instance no longer reads {dagster_adapter.EVENT_BATCH_SIZE_VARIABLE} ({done.stderr[-500:]}). "
        + UPGRADE_HINT.format(written=".".join(map(str, dagster_adapter.DAGSTER_MINOR)))
    )


def test_no_module_but_the_adapter_imports_dagster_internals():
    private = re.compile(r"^\s*(from|import)\s+dagster(_postgres)?\._", re.MULTILINE)
    utils = re.compile(r"^\s*from\s+dagster_postgres\.(utils|event_log)\b", re.MULTILINE)
    package = Path(dagster_adapter.__file__).parent
    offenders = [
        str(path.relative_to(package.parent))
        for path in sorted(package.rglob("*.py"))
        if path.name != "dagster_adapter.py" and (private.search(path.read_text()) or utils.search(path.read_text()))
    ]
    assert not offenders, f"private Dagster imports outside ev_assets/dagster_adapter.py: {offenders}"


def test_the_adapter_matches_the_installed_version_it_reports():
    assert dagster_adapter.installed_minor() == _minor("dagster")
    assert dg.__version__ == importlib.metadata.version("dagster")
