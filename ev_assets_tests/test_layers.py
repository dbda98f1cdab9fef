"""The layers the README promises, checked on the imports themselves: pure stages know neither
Dagster nor the database; nothing below the Dagster layer imports Dagster; the pipeline never
imports the synthetic utility (only the CLI commands that run it do)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ev_assets"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_of(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _forbidden(paths: list[Path], prefixes: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in paths:
        bad = sorted(m for m in imported_modules(path) if m.split(".")[0] in prefixes or m.startswith(prefixes))
        if bad:
            found[str(path.relative_to(PACKAGE))] = bad
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        (
            "core",
            (
                "dagster",
                "sqlalchemy",
                "alembic",
                "ev_assets.warehouse",
                "ev_assets.pipeline",
                "ev_assets.defs",
                "ev_assets.synthetic",
            ),
        ),
        ("warehouse", ("dagster", "ev_assets.pipeline", "ev_assets.defs", "ev_assets.synthetic")),
        ("pipeline", ("dagster", "ev_assets.defs", "ev_assets.synthetic")),
        ("defs", ("ev_assets.synthetic", "ev_assets.cli", "ev_assets.runner")),
        ("receiver", ("dagster", "ev_assets.synthetic", "ev_assets.defs")),
        ("vendor", ("dagster", "ev_assets.synthetic", "ev_assets.defs")),
        ("live", ("dagster", "ev_assets.synthetic", "ev_assets.defs")),
    ],
)
def test_layer_imports(folder, forbidden):
    assert _forbidden(modules_of(folder), forbidden) == {}


def test_only_the_cli_runs_the_synthetic_utility():
    outside = [p for p in PACKAGE.rglob("*.py") if "synthetic" not in p.parts and p.name != "cli.py"]
    assert _forbidden(outside, ("ev_assets.synthetic",)) == {}
