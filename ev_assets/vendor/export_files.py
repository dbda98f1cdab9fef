"""An export's files (Json, Csv, Parquet, Orc) -> the JSON payload form the feed contract reads.

Pure: polars (and pyarrow for ORC), no HTTP. Field names are kept as the export spells them (the
feed matches them case-insensitively); typed times become ISO-8601 UTC with milliseconds, typed
numbers JSON numbers, text stays text (blank = null, as in the stream).
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime
from typing import Any

import polars as pl

from ev_assets.core.avro_schema import iso_utc

FILE_TYPES = ("Parquet", "Orc", "Json", "Csv")
EXTENSION = {"Parquet": ".parquet", "Orc": ".orc", "Json": ".json", "Csv": ".csv"}


def _frame_records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    records = frame.to_dicts()
    for record in records:
        for key, value in record.items():
            if isinstance(value, datetime):
                record[key] = iso_utc(value)
    return records


def file_records(name: str, content: bytes) -> list[dict[str, Any]]:
    """The records of one export file, by its extension."""
    lower = name.lower()
    if lower.endswith(".json"):
        payload = json.loads(content)
        if isinstance(payload, dict):
            for key, value in payload.items():
                if key.lower() == "evchargingevents" and isinstance(value, list):
                    return value
        if isinstance(payload, list):
            return payload
        raise ValueError(f"{name}: not an EVChargingEvents payload")
    if lower.endswith(".csv"):
        # Every column as text: the contract, not the CSV reader, decides what a value means.
        return pl.read_csv(io.BytesIO(content), infer_schema=False).to_dicts()
    if lower.endswith(".parquet"):
        return _frame_records(pl.read_parquet(io.BytesIO(content)))
    if lower.endswith(".orc"):
        import pyarrow.orc as orc

        return _frame_records(pl.from_arrow(orc.ORCFile(io.BytesIO(content)).read()))
    raise ValueError(f"{name}: unknown export file type")


def zip_payloads(content: bytes) -> list[tuple[str, bytes]]:
    """(member name, JSON payload bytes) per data file of an export zip, in name order."""
    out = []
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.is_dir() or info.filename.startswith(("__MACOSX", ".")):
                continue
            records = file_records(info.filename, archive.read(info))
            body = json.dumps({"EVChargingEvents": records}, ensure_ascii=False, separators=(",", ":"))
            out.append((info.filename, body.encode("utf-8")))
    return out


def write_export(frame: pl.DataFrame, filetype: str) -> bytes:
    """One export file of `frame` (spec field names; times typed UTC, numbers typed) in `filetype`."""
    buffer = io.BytesIO()
    if filetype == "Parquet":
        frame.write_parquet(buffer)
    elif filetype == "Orc":
        import pyarrow.orc as orc

        orc.write_table(frame.to_arrow(), buffer)
    elif filetype == "Csv":
        frame.with_columns(pl.col(pl.Datetime).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")).write_csv(buffer)
    elif filetype == "Json":
        return json.dumps({"EVChargingEvents": _frame_records(frame)}).encode("utf-8")
    else:
        raise ValueError(f"filetype must be one of {', '.join(FILE_TYPES)}")
    return buffer.getvalue()
