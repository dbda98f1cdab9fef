"""Feed stage: list the landing folder, read payload files, parse them into a frame of records.

Pure: file I/O and polars, no Dagster, no database. The output keeps every field as the string
received (JSON numbers become their literal text), so the contract stage sees exactly what came
in and every record stays traceable to its file and position.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

# The spec's field names, in the spec's order.
FIELDS: tuple[str, ...] = (
    "ServicePointID",
    "MeterID",
    "MeterNumber",
    "ESN",
    "TransformerID",
    "PremiseID",
    "ReceivedTime",
    "ChargeStartTime",
    "ChargeEndTime",
    "ChargeW",
    "ChargeDuration",
    "ChargeEnergy",
)
# Field names match case-insensitively (the vendor's schema spells both ServicePointID and
# ServicePointId), and the spec's data-values table misspells ChargeDuration (DOMAIN.md).
CANONICAL_FIELD: dict[str, str] = {name.lower(): name for name in FIELDS} | {"chargeduratjion": "ChargeDuration"}
PAYLOAD_KEY = "EVChargingEvents"
FEED_SUFFIX = ".json"
FEED_GLOB = f"*{FEED_SUFFIX}"

RECORD_COLUMNS: tuple[str, ...] = (
    "file_name",
    "file_sha256",
    "record_index",
    *FIELDS,
    "extra_fields",
    "record_problems",
)


@dataclass(frozen=True)
class FeedFile:
    """A payload file in the landing folder."""

    name: str
    folder: Path
    size: int
    arrived_ns: int

    @property
    def path(self) -> Path:
        # Made when asked for, not when listed: building a Path costs more than the file's stat,
        # and a listing of a 100,000-file backlog needs few of them.
        return self.folder / self.name

    @property
    def position(self) -> tuple[int, str]:
        """Where the file stands in arrival order: the sensor's cursor compares these."""
        return (self.arrived_ns, self.name)


def list_landing(landing_dir: Path) -> list[FeedFile]:
    """The landing folder's payload files in arrival order (inode change time, then name).

    Arrival is the inode's change time (ctime), not the modification time: a writer, `cp -p` or
    rsync can set mtime to anything (the simulator sets it to the end of the file's simulated
    window), but ctime is always when the file was created or renamed into place here. Writers
    must write a file under another name and rename it into place (the simulator writes
    `name.json.tmp` first), so a half-written file is never listed.
    """
    if not landing_dir.exists():
        return []
    # os.scandir, not Path.glob and Path.stat: every ingest step lists the folder (its batch is a
    # span of it), and a backlog can hold 100,000 files.
    files = []
    with os.scandir(landing_dir) as entries:
        for entry in entries:
            if entry.name.endswith(FEED_SUFFIX) and entry.is_file():
                stat = entry.stat()
                files.append(FeedFile(entry.name, landing_dir, stat.st_size, stat.st_ctime_ns))
    return sorted(files, key=lambda f: f.position)


ARCHIVE_DIR = "archive"


def archive_files(paths: list[Path], landing_dir: Path, day: str) -> int:
    """Move files whose content the warehouse has committed into `landing/archive/<day>/`, so the
    landing folder holds only what is still to read and a sensor tick costs O(new files).

    A rename within one file system: atomic, and a file never exists in both places. A name already
    in that day's archive (a re-delivery under the same name) keeps both, the later one suffixed.
    Files already gone (archived by another run) are skipped. Returns the number moved.
    """
    target = landing_dir / ARCHIVE_DIR / day
    target.mkdir(parents=True, exist_ok=True)
    moved = 0
    for path in paths:
        if not path.exists() or path.parent != landing_dir:
            continue
        destination = target / path.name
        n = 1
        while destination.exists():
            destination = target / f"{path.stem}.{n}{path.suffix}"
            n += 1
        try:
            path.rename(destination)
            moved += 1
        except FileNotFoundError:
            continue
    return moved


@dataclass(frozen=True)
class ParsedFile:
    """One payload file after parsing. status: parsed, repaired or quarantined."""

    name: str
    sha256: str
    size: int
    status: str
    records: list[Any]
    error: str | None
    content: bytes
    text: str | None  # the (repaired) JSON text; None when quarantined

    @property
    def quarantined(self) -> bool:
        return self.status == "quarantined"


# A JSON string literal, or a comma followed only by white space before a closing bracket. Strings
# are matched first so that a ",}" inside a string is left alone.
_TRAILING_COMMA = re.compile(r'("(?:\\.|[^"\\])*")|,(\s*[}\]])')


def remove_trailing_commas(text: str) -> str:
    return _TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), text)


def _loads_as_text(text: str) -> Any:
    # Numbers are kept as their literal text: the feed sends "1237.375166" and some senders send
    # 1237.375166; both reach the contract as the same string.
    return json.loads(text, parse_float=str, parse_int=str, parse_constant=str)


def parse_payload(name: str, content: bytes) -> ParsedFile:
    """Parse one payload file. Never raises: a file that cannot be read is quarantined whole."""
    sha256 = hashlib.sha256(content).hexdigest()

    def quarantine(error: str) -> ParsedFile:
        return ParsedFile(name, sha256, len(content), "quarantined", [], error, content, None)

    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return quarantine(f"not UTF-8 text: {exc}")
    status = "parsed"
    try:
        payload = _loads_as_text(text)
    except json.JSONDecodeError as strict_error:
        # The spec's own example ends its record with a trailing comma: accept such a file, and
        # count it as repaired, but nothing else that is not JSON.
        repaired = remove_trailing_commas(text)
        try:
            payload = _loads_as_text(repaired)
        except json.JSONDecodeError:
            return quarantine(f"invalid JSON: {strict_error}")
        except RecursionError:
            return quarantine("invalid JSON: nested too deeply")
        text, status = repaired, "repaired"
    except RecursionError:
        return quarantine("invalid JSON: nested too deeply")

    records = _payload_records(payload)
    if records is None:
        return quarantine(
            f"wrong top-level shape: expected an object with an {PAYLOAD_KEY!r} list, got {_shape(payload)}"
        )
    return ParsedFile(name, sha256, len(content), status, records, None, content, text)


def _payload_records(payload: Any) -> list[Any] | None:
    if not isinstance(payload, dict):
        return None
    for key, value in payload.items():
        if key.lower() == PAYLOAD_KEY.lower() and isinstance(value, list):
            return value
    return None


def _shape(payload: Any) -> str:
    if isinstance(payload, dict):
        return f"an object with keys {sorted(payload)[:5]}"
    return f"a JSON {type(payload).__name__}"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def records_frame(parsed: list[ParsedFile]) -> pl.DataFrame:
    """All records of the parsed (not quarantined) files as one frame of strings.

    Columns: file_name, file_sha256, record_index, the spec's fields (strings as received, null
    when absent or JSON null), extra_fields (JSON of fields the spec does not define, or null) and
    record_problems (what made a record unreadable as flat strings, or null).

    One frame is built for the whole batch, not one per file: agent files are small (a few
    messages each), so a per-file frame would cost more than the records in it.
    """
    files = [p for p in parsed if not p.quarantined and p.records]
    if not files:
        return pl.DataFrame(schema={c: _record_dtype(c) for c in RECORD_COLUMNS})
    origin = pl.DataFrame(
        {
            "file_name": [p.name for p in files],
            "file_sha256": [p.sha256 for p in files],
            "_n": [len(p.records) for p in files],
        }
    ).select(
        pl.col("file_name").repeat_by("_n").explode(),
        pl.col("file_sha256").repeat_by("_n").explode(),
        pl.int_ranges(0, pl.col("_n"), dtype=pl.Int64).explode().alias("record_index"),
    )
    return _records_to_frame([r for p in files for r in p.records], origin)


# Files whose records become one frame at a time in `parse_batch`.
FILES_PER_FRAME = 1000


def parse_batch(paths: list[Path], *, files_per_frame: int = FILES_PER_FRAME) -> tuple[list[ParsedFile], pl.DataFrame]:
    """Parse a micro-batch's files and return them with their records as one frame
    (`records_frame`), built `files_per_frame` files at a time: a record's Python objects live
    only until its group's frame is made (a 40 MB batch held whole as dicts and strings takes
    several hundred MB; its frame takes tens). The same file (name and content) twice is one
    file, read once. The files returned keep no records (the frame has them) and their bytes only
    when quarantined (stored whole); their text stays, to quote rejected records as received."""
    files: dict[tuple[str, str], ParsedFile] = {}
    group: list[ParsedFile] = []
    frames: list[pl.DataFrame] = []

    def flush() -> None:
        frames.append(records_frame(group))
        for parsed in group:
            files[(parsed.name, parsed.sha256)] = dataclasses.replace(
                parsed, records=[], content=parsed.content if parsed.quarantined else b""
            )
        group.clear()

    for path in paths:
        parsed = parse_payload(path.name, path.read_bytes())
        if (parsed.name, parsed.sha256) in files:
            continue
        files[(parsed.name, parsed.sha256)] = parsed
        group.append(parsed)
        if len(group) >= files_per_frame:
            flush()
    if group or not frames:
        flush()
    return list(files.values()), pl.concat(frames) if len(frames) > 1 else frames[0]


def _record_dtype(column: str) -> pl.DataType:
    return pl.Int64() if column == "record_index" else pl.String()


def _records_to_frame(records: list[Any], origin: pl.DataFrame) -> pl.DataFrame:
    try:
        # Fast path: every record a flat object of strings and nulls, which is what the agent sends.
        # (polars reads a list of strings or of lists as columns, not rows: those go the slow way.)
        if not all(isinstance(r, dict) for r in records):
            raise TypeError("records that are not JSON objects")
        raw = pl.DataFrame(records, infer_schema_length=None)
        if any(dtype not in (pl.String, pl.Null) for dtype in raw.dtypes):
            raise TypeError("non-string values")
        problems = pl.lit(None, dtype=pl.String)
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        sanitized, problem_list = zip(*(_sanitize(r) for r in records), strict=True)
        raw = pl.DataFrame(list(sanitized), infer_schema_length=None)
        problems = pl.Series("record_problems", list(problem_list), dtype=pl.String)
    if raw.width == 0:
        raw = pl.DataFrame({"__empty__": [None] * len(records)}, schema={"__empty__": pl.String})

    by_field: dict[str, list[str]] = {}
    extras: list[str] = []
    for column in raw.columns:
        canonical = CANONICAL_FIELD.get(column.lower())
        if canonical is None:
            if column != "__empty__":
                extras.append(column)
        else:
            by_field.setdefault(canonical, []).append(column)

    fields = []
    conflicts = []
    for f in FIELDS:
        columns = by_field.get(f, [])
        if len(columns) <= 1:
            fields.append(
                pl.col(columns[0]).cast(pl.String).alias(f) if columns else pl.lit(None, dtype=pl.String).alias(f)
            )
            continue
        # The same field under two spellings (MeterID and meterid): the one with a value wins, and
        # two different values are a problem of the record, never a choice made for it.
        given = [_non_blank(c) for c in columns]
        fields.append(pl.coalesce([*given, *(pl.col(c).cast(pl.String) for c in columns)]).alias(f))
        distinct = pl.concat_list([g.str.strip_chars() for g in given]).list.drop_nulls().list.n_unique()
        conflicts.append(pl.when(distinct > 1).then(pl.lit(f)))
    if conflicts:
        conflicting = pl.concat_str(conflicts, separator=", ", ignore_nulls=True)
        problem = pl.when(conflicting != "").then(
            pl.lit("fields given more than once (in different letter case) with different values: ") + conflicting
        )
        combined = pl.concat_str(
            [pl.lit(problems) if isinstance(problems, pl.Series) else problems, problem],
            separator="; ",
            ignore_nulls=True,
        )
        problems = pl.when(combined != "").then(combined)
    extra = _extra_fields_json(extras) if extras else pl.lit(None, dtype=pl.String)
    return raw.hstack(origin).select(
        "file_name",
        "file_sha256",
        "record_index",
        *fields,
        extra.alias("extra_fields"),
        problems.alias("record_problems"),
    )


def _extra_fields_json(columns: list[str]) -> pl.Expr:
    """A JSON object of the record's own unknown fields (those it has a value for), or null.

    Each member is encoded by polars (`{"key":"value"}` less its braces), so keys and values are
    escaped properly; a record never lists the unknown fields of other records in its batch.
    """
    members = [
        pl.when(pl.col(c).is_not_null()).then(
            pl.struct(pl.col(c).cast(pl.String)).struct.json_encode().str.slice(1).str.strip_suffix("}")
        )
        for c in columns
    ]
    joined = pl.concat_str(members, separator=",", ignore_nulls=True)
    return pl.when(joined != "").then(pl.concat_str([pl.lit("{"), joined, pl.lit("}")]))


def _non_blank(column: str) -> pl.Expr:
    value = pl.col(column).cast(pl.String)
    return pl.when(value.str.strip_chars() != "").then(value)


def _sanitize(record: Any) -> tuple[dict[str, str | None], str | None]:
    """A record reduced to flat strings, with a note of what had to be changed.

    Only the spec's fields must be strings or numbers: an unknown field holding an object, array or
    boolean is kept aside as its JSON text, not a problem (unknown fields are never fatal). Text
    that is not valid Unicode (a lone surrogate escape such as "\\ud800") is kept with the
    surrogate written as an escape; in a spec field it makes the record unreadable.
    """
    if not isinstance(record, dict):
        return {}, f"record is not a JSON object: {str(record)[:60]!r}"
    flat: dict[str, str | None] = {}
    wrong = []
    not_unicode = []
    for key, value in record.items():
        known = key.lower() in CANONICAL_FIELD
        key = _unicode_text(key)
        if value is None:
            flat[key] = value
        elif isinstance(value, str):
            flat[key] = _unicode_text(value)
            if known and flat[key] != value:
                not_unicode.append(key)
        else:
            flat[key] = json.dumps(value)
            if known:
                wrong.append(key)
    problems = []
    if wrong:
        problems.append(
            f"fields with a JSON object, array or boolean where a string or number belongs: {', '.join(wrong)}"
        )
    if not_unicode:
        problems.append(f"fields with text that is not valid Unicode: {', '.join(not_unicode)}")
    return flat, "; ".join(problems) or None


def _unicode_text(text: str) -> str:
    """The text itself, or, when it holds lone surrogates (valid JSON escapes, not valid Unicode),
    the text with those written as backslash escapes: polars and the databases take Unicode only."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def raw_records(parsed: list[ParsedFile], wanted: pl.DataFrame) -> pl.DataFrame:
    """The records named by `wanted` (file_sha256, record_index) as JSON text exactly as received
    (numbers as numbers, strings as strings), re-read from their files: only the quarantined
    records need it, so the hot path never serialises records."""
    by_sha = {p.sha256: p for p in parsed if not p.quarantined}
    cache: dict[str, list[Any]] = {}
    texts = []
    for sha, index in wanted.select("file_sha256", "record_index").iter_rows():
        if sha not in cache:
            cache[sha] = _payload_records(json.loads(by_sha[sha].text)) or []
        text = json.dumps(cache[sha][index], ensure_ascii=False)
        # A lone surrogate escape cannot be written as UTF-8: keep such a record ASCII-escaped.
        texts.append(text if _unicode_text(text) == text else json.dumps(cache[sha][index]))
    return wanted.with_columns(pl.Series("raw_record", texts, dtype=pl.String))
