"""Micro-batch planning for the feed sensor: which landing files go into which run.

Pure: a list of files and limits in, batches out. A backlog of a thousand files becomes a few
runs, not a thousand (launching a run costs seconds), and each batch gets an id derived from its
files' names and content (SHA-256 of the bytes, as the file ledger keys them), so evaluating the
sensor again names the same batch the same way (its run key), and a file re-sent under the same
name with new content makes a new batch, never a re-run of the old one.
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
    bytes: int = 0

    @property
    def paths(self) -> list[str]:
        return [str(f.path) for f in self.files]

    @property
    def span(self) -> BatchSpan:
        return BatchSpan(
            first_arrived_ns=self.files[0].arrived_ns,
            first_name=self.files[0].name,
            last_arrived_ns=self.files[-1].arrived_ns,
            last_name=self.files[-1].name,
            files=len(self.files),
        )


@dataclass(frozen=True)
class BatchSpan:
    """Where a batch's files stand in the landing folder's arrival order: its first and last
    file's position and how many files it holds. The batch is the landing files between the two
    positions that the file ledger does not hold: a few fields in place of up to max_files paths.

    Planned once by a sensor tick from files that were settled (core.batching.settled), the span
    holds the same files later, with two exceptions, both harmless to exactly-once: a file of it
    committed by another batch meanwhile (then archived, or held by the file ledger: either way no
    longer in the batch), and a file renamed into place inside the span after the plan (a coarse
    clock and a full scan without settling): read with the batch. The batch id (a digest of the
    files' names and content, `batch_id`) tells the two apart from the plan.
    """

    first_arrived_ns: int
    first_name: str
    last_arrived_ns: int
    last_name: str
    files: int

    def select(self, files: list[FeedFile]) -> list[FeedFile]:
        """The files (in arrival order) whose position lies within the span, its ends included."""
        first, last = (self.first_arrived_ns, self.first_name), (self.last_arrived_ns, self.last_name)
        return [f for f in files if first <= f.position <= last]


def _count(content: bytes) -> int:
    return content.lower().count(_RECORD_MARKER)


def plan_batches(
    files: list[FeedFile], *, max_files: int, max_messages: int, max_bytes: int | None = None
) -> list[Batch]:
    """Consecutive files grouped so no batch exceeds max_files, nor (unless one file alone does)
    max_messages or max_bytes. Files keep their arrival order.

    Bytes are the bound that follows a batch's memory: the ingest step holds the parsed payloads,
    the records frame and the contract's result at once, about 15 bytes of memory per byte of JSON
    (measured in BENCHMARKS.md), whatever the files' or messages' count. A sensor tick sees what
    landed since the last one, so its batches stay small; a backlog (a backfill, an outage) becomes
    as few runs as the bounds allow, each run's fixed cost (creating it, Dagster's event log) paid
    once per batch rather than once per few thousand files."""
    batches: list[Batch] = []
    current: list[tuple[FeedFile, str]] = []
    messages = size = 0
    for f in files:
        content = f.path.read_bytes()  # read once: counted, measured and hashed
        n = _count(content)
        too_big = messages + n > max_messages or (max_bytes is not None and size + len(content) > max_bytes)
        if current and (len(current) >= max_files or too_big):
            batches.append(_batch(current, messages, size))
            current, messages, size = [], 0, 0
        current.append((f, hashlib.sha256(content).hexdigest()))
        messages += n
        size += len(content)
    if current:
        batches.append(_batch(current, messages, size))
    return batches


def batch_id(files: list[tuple[str, str]]) -> str:
    """The id of a batch of (file name, SHA-256 of its bytes), in order: the same files with the
    same content always get the same id; any change of content, a new one."""
    digest = hashlib.sha256("\n".join(f"{name}\t{sha}" for name, sha in files).encode()).hexdigest()[:16]
    return f"{Path(files[0][0]).stem}+{len(files)}-{digest}"


def _batch(files: list[tuple[FeedFile, str]], messages: int, size: int) -> Batch:
    return Batch(
        batch_id=batch_id([(f.name, sha) for f, sha in files]),
        files=tuple(f for f, _ in files),
        messages=messages,
        bytes=size,
    )


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
