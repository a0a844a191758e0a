"""Detection writers for `casefile hunt --format`: one registered writer per machine format."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import orjson

from casefile.models import Detection
from casefile.registry import Registry

Writer = Callable[[Iterable[Detection], TextIO], int]

#: Machine-readable output formats (the CLI renders `table` itself).
WRITERS: Registry[Writer] = Registry("detection output format")

CSV_COLUMNS = (
    "timestamp", "level", "rule_title", "rule_id", "computer", "channel", "event_id", "record_id",
    "file", "matched", "tags", "author", "status",
)


def _json_default(value: Any) -> Any:
    """Event values are JSON-native or strings; anything else is written as its string form."""
    return str(value)


#: The fallback encoder for lines orjson refuses: ASCII escapes keep lone surrogates and any other string
#: exact (`json.loads` gives the value back), and integers wider than 64 bits are written as they are.
_LINE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=_json_default)
#: Values orjson would write its own way are handed to `_json_default`, as `json` does.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def write_jsonl(detections: Iterable[Detection], out: TextIO) -> int:
    """One `Detection.to_record()` JSON object per line, compact (no spaces after `:` and `,`).

    Encoded by orjson, many times faster than `json` when the parent process writes hundreds of thousands
    of lines while the workers hunt; a record orjson refuses (a lone surrogate, an integer wider than
    64 bits) is written by `json` with ASCII escapes. NaN and infinities, which JSON lacks, are null.
    """
    n = 0
    dumps, options, default = orjson.dumps, _ORJSON_OPTIONS, _json_default
    for d in detections:
        record = d.to_record()
        try:
            line = dumps(record, default=default, option=options).decode()
        except orjson.JSONEncodeError:
            line = _LINE.encode(record)
        out.write(line)
        out.write("\n")
        n += 1
    return n


def write_json(detections: Iterable[Detection], out: TextIO) -> int:
    """A JSON array of `Detection.to_record()` objects, written one element at a time.

    The text is that of `json.dump(records, indent=2)` (JSON strings never hold a raw newline,
    so indenting each element's lines by two spaces nests it exactly).
    """
    n = 0
    for d in detections:
        text = json.dumps(d.to_record(), ensure_ascii=False, indent=2, default=_json_default)
        out.write("[\n  " if n == 0 else ",\n  ")
        out.write(text.replace("\n", "\n  "))
        n += 1
    out.write("\n]\n" if n else "[]\n")
    return n


def write_csv(detections: Iterable[Detection], out: TextIO) -> int:
    """CSV with a header; `matched` as a JSON object, `tags` joined with spaces.

    Cells starting with a formula character are prefixed with a quote so a spreadsheet never
    evaluates attacker-written text.
    """
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    n = 0
    for d in detections:
        r = d.to_record()
        row = {
            **r,
            "matched": json.dumps(r["matched"], ensure_ascii=False, default=_json_default),
            "tags": " ".join(r["tags"]),
        }
        w.writerow([_cell(row.get(c)) for c in CSV_COLUMNS])
        n += 1
    return n


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


WRITERS.register("jsonl", write_jsonl)
WRITERS.register("json", write_json)
WRITERS.register("csv", write_csv)


def write_detections(detections: Iterable[Detection], fmt: str, out: TextIO) -> int:
    """Write detections in format `fmt` (a name in WRITERS); returns how many were written."""
    return WRITERS.get(fmt)(detections, out)
