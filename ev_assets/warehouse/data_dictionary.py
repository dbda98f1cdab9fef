"""Generated parts of the docs: the data dictionary, the rejection codes and the settings table.

`python -m ev_assets.warehouse.data_dictionary` rewrites them in `docs/` from the table declarations, the
contract's codes and the settings declaration; a test fails when a document is out of step.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from ev_assets.core.contract import REJECTION_CODES
from ev_assets.settings import PROJECT_ROOT, settings_table
from ev_assets.warehouse.tables import data_dictionary

DOCS = PROJECT_ROOT / "docs"


def rejection_codes_table() -> str:
    rows = ["| code | meaning |", "|---|---|"] + [f"| `{code}` | {text} |" for code, text in REJECTION_CODES.items()]
    return "\n".join(rows)


# document -> {marker name: what builds the text between its markers}
SECTIONS: dict[Path, dict[str, Callable[[], str]]] = {
    DOCS / "data-dictionary.md": {"data-dictionary": data_dictionary},
    DOCS / "operating.md": {"rejection-codes": rejection_codes_table},
    DOCS / "settings.md": {"settings": settings_table},
}


def render(text: str, sections: dict[str, Callable[[], str]]) -> str:
    for name, build in sections.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"the document lacks the <!-- {name}:start/end --> markers")
        text = pattern.sub(lambda m, build=build: m.group(1) + build() + "\n" + m.group(2), text)
    return text


def main() -> int:
    for path, sections in SECTIONS.items():
        path.write_text(render(path.read_text(), sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
