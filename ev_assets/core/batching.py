"""Micro-batch planning for the feed sensor: which landing files go into which run.

Pure: a list of files and limits in, batches out. A backlog of a thousand files becomes a few
runs, not a thousand (launching a run costs seconds), and each batch gets an id derived from its
files alone, so evaluating the sensor again names the same batch the same way (its run key).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ev_assets.core.feed import FeedFile

# Records are counted by their one mandatory field; a cheap byte count, not a parse.
_RECORD_MARKER = b'"receivedtime"'


@dataclass(frozen=True)
class Batch:
    batch_id: str
    files: tuple[FeedFile, ...]
    messages: int

    @property
    def paths(self) -> list[str]:
        return [str(f.path) for f in self.files]


def count_messages(path: Path) -> int:
    return path.read_bytes().lower().count(_RECORD_MARKER)


def plan_batches(files: list[FeedFile], *, max_files: int, max_messages: int) -> list[Batch]:
    """Consecutive files grouped so no batch exceeds max_files or (unless one file alone does)
    max_messages. Files keep their arrival order."""
    batches: list[Batch] = []
    current: list[FeedFile] = []
    messages = 0
    for f in files:
        n = count_messages(f.path)
        if current and (len(current) >= max_files or messages + n > max_messages):
            batches.append(_batch(current, messages))
            current, messages = [], 0
        current.append(f)
        messages += n
    if current:
        batches.append(_batch(current, messages))
    return batches


def _batch(files: list[FeedFile], messages: int) -> Batch:
    digest = hashlib.sha1("\n".join(f.name for f in files).encode()).hexdigest()[:12]
    first = Path(files[0].name).stem
    return Batch(batch_id=f"{first}+{len(files)}-{digest}", files=tuple(files), messages=messages)


@dataclass(frozen=True)
class FeedCursor:
    """High-water mark of the files already handed to runs: (arrived_ns, name) of the last one."""

    arrived_ns: int = -1
    name: str = ""

    @classmethod
    def from_json(cls, text: str | None) -> FeedCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(arrived_ns=int(data["arrived_ns"]), name=str(data["name"]))

    def to_json(self) -> str:
        return json.dumps({"arrived_ns": self.arrived_ns, "name": self.name})

    def after(self, files: list[FeedFile]) -> list[FeedFile]:
        return [f for f in files if f.position > (self.arrived_ns, self.name)]

    @classmethod
    def at(cls, f: FeedFile) -> FeedCursor:
        return cls(arrived_ns=f.arrived_ns, name=f.name)


def settled(files: list[FeedFile], *, now_ns: int, settle_ns: int) -> list[FeedFile]:
    """The files that arrived at least `settle_ns` ago, up to the first that did not.

    File timestamps come from a coarse clock (a few ms on Linux): a file landing in the same tick
    as the last one a sensor tick saw, with a smaller name, would sort before the cursor and never
    be seen. Leaving the last moments to the next tick closes that gap.
    """
    out = []
    for f in files:
        if f.arrived_ns > now_ns - settle_ns:
            break
        out.append(f)
    return out


def contiguous_spans(days: list) -> list[tuple]:
    """[(first, last), ...] covering the given dates with no gaps inside a span."""
    spans: list[list] = []
    for day in sorted(set(days)):
        if spans and (day - spans[-1][1]).days == 1:
            spans[-1][1] = day
        else:
            spans.append([day, day])
    return [tuple(s) for s in spans]
