"""Generated parts of the README: the data dictionary, the rejection codes and the settings table.

`python -m ev_assets.warehouse.data_dictionary` rewrites them in README.md from the table declarations and the
contract's codes; a test fails when the README is out of step.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ev_assets.core.contract import REJECTION_CODES
from ev_assets.settings import PROJECT_ROOT, settings_table
from ev_assets.warehouse.tables import data_dictionary

README = PROJECT_ROOT / "README.md"


def rejection_codes_table() -> str:
    rows = ["| code | meaning |", "|---|---|"] + [f"| `{code}` | {text} |" for code, text in REJECTION_CODES.items()]
    return "\n".join(rows)


SECTIONS = {"data-dictionary": data_dictionary, "rejection-codes": rejection_codes_table, "settings": settings_table}


def render(text: str) -> str:
    for name, build in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README lacks the <!-- {name}:start/end --> markers")
        text = pattern.sub(lambda m, build=build: m.group(1) + build() + "\n" + m.group(2), text)
    return text


def main(path: Path = README) -> int:
    path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
