"""Detection writers for `casefile hunt --format`: one registered writer per machine format."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from casefile.models import Detection, DetectionKind, Event, RuleInfo, utc_text
from casefile.registry import Registry

Writer = Callable[[Iterable[Detection], TextIO], int]
#: A detection already written as its JSONL line (`JsonlLines.utf8`): (its rule's id, the line's UTF-8,
#: without its newline).
RuleLine = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class LineBlock:
    """Detections written as JSONL lines where they were found (`pack_lines`): `text`, their UTF-8, each
    line ending in a newline, and the id of each line's rule, in order.

    A hunt worker sends its lines so: the parent writes them as they are, one write a block, where a line
    each cost it more than the rest of its work (unpickled, decoded, passed along and encoded again)."""

    text: bytes
    rule_ids: tuple[str, ...]

    def lines(self) -> list[str]:
        """The lines, without their newlines."""
        return split_lines(self.text)


def split_lines(text: bytes) -> list[str]:
    """The lines of UTF-8 JSONL `text` (each ending in a newline), without their newlines (no line holds
    one: JSON escapes it)."""
    return text.decode().split("\n")[:-1]


#: About the most text a `LineBlock` holds: larger objects are mapped and unmapped by malloc, each time paying
#: page faults for fresh memory where they are unpickled (a fifth more of the parent's kernel time).
BLOCK_BYTES = 1 << 16


def pack_lines(hits: Iterable[Detection | RuleLine | LineBlock]) -> list[Detection | LineBlock]:
    """`hits` with each run of lines packed into `LineBlock`s of about `BLOCK_BYTES`; Detections (and
    blocks) stay where they are."""
    out: list[Detection | LineBlock] = []
    texts: list[bytes] = []
    ids: list[str] = []
    size = 0
    for hit in hits:
        if type(hit) is tuple:
            ids.append(hit[0])
            texts.append(hit[1])
            size += len(hit[1])
            if size >= BLOCK_BYTES:
                out.append(_block(texts, ids))
                texts, ids, size = [], [], 0
            continue
        if ids:
            out.append(_block(texts, ids))
            texts, ids, size = [], [], 0
        out.append(hit)  # type: ignore[arg-type]
    if ids:
        out.append(_block(texts, ids))
    return out


def _block(texts: list[bytes], ids: list[str]) -> LineBlock:
    texts.append(b"")  # the last line's newline
    return LineBlock(b"\n".join(texts), tuple(ids))

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
#: `event_part`'s: the one datetime it hands orjson is a UTC one, which `utc_text` writes the same way.
_PART_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_DATACLASS


#: Rules whose leading keys a `JsonlLines` keeps encoded before it starts again (the parent meets each
#: task's rules as new objects, unpickled with its detections).
_MAX_HEADS = 4096


class JsonlLines:
    """Detections as `write_jsonl` writes them, one line each (without its newline).

    A line is the compact JSON of `Detection.to_record()`. Its leading keys (`Detection.rule_record`:
    the rule's id, title, level, status, author, tags, and the kind) are the same for every hit of a
    rule, so they are encoded once per rule object and only `Detection.hit_record` is encoded per
    detection: orjson writes no spaces, so the two texts joined are the record's. A record orjson refuses
    (a lone surrogate, an integer wider than 64 bits, in either part) is written by `json` with ASCII
    escapes, as a whole. NaN and infinities, which JSON lacks, are null.
    """

    def __init__(self) -> None:
        # (id(rule), kind) -> (the rule, held so that no other object takes its id; its keys as `{...,`, or
        # None). By id: a rule's hash reads all its fields.
        self._heads: dict[tuple[int, str], tuple[RuleInfo, bytes | None]] = {}

    def line(self, d: Detection) -> str:
        return self.utf8(d).decode()

    def utf8(self, d: Detection) -> bytes:
        """`line`'s UTF-8 (the `json` fallback escapes all but ASCII, so every line encodes)."""
        key = (id(d.rule), d.kind)
        entry = self._heads.get(key)
        if entry is None:
            if len(self._heads) >= _MAX_HEADS:
                self._heads.clear()
            entry = self._heads[key] = (d.rule, _head(d.rule_record()))
        head = entry[1]
        if head is not None:
            try:
                tail = orjson.dumps(d.hit_record(), default=_json_default, option=_ORJSON_OPTIONS)
                return head + tail[1:]
            except orjson.JSONEncodeError:
                pass
        return _LINE.encode(d.to_record()).encode()

    def sigma_line(self, rule: RuleInfo, event_part: bytes, matched: Mapping[str, Any]) -> bytes | None:
        """`utf8` of a Sigma detection of `rule` with these `matched` fields on the event whose `event_part`
        is given, without making the Detection: the rule's keys (once `line` has encoded them), the event's,
        then `matched` and the keys a Sigma detection leaves empty. None where `line` must write it (a rule
        not met yet, or a value orjson refuses)."""
        entry = self._heads.get((id(rule), DetectionKind.SIGMA))
        if entry is None or entry[1] is None:
            return None
        try:
            found = orjson.dumps(matched, default=_json_default, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:
            return None
        return b"".join((entry[1], event_part, b'"matched":', found, _SIGMA_END))  # (one copy)


def event_part(event: Event) -> bytes | None:
    """The keys of a line (`Detection.hit_record`'s) that come from the event a Sigma rule hit, as
    `"timestamp":...,"file":...,`: encoded once for all of the event's detections (`sigma_line`). None
    where orjson refuses them."""
    ts = event.timestamp
    stamp: datetime | str | None = ts  # a UTC datetime orjson writes as `utc_text` does, without a str made
    if ts is not None and not (type(ts) is datetime and ts.tzinfo is UTC):
        stamp = utc_text(ts)
    try:
        part = orjson.dumps(
            {
                "timestamp": stamp,
                "computer": event.computer,
                "channel": event.channel,
                "event_id": event.event_id,
                "record_id": event.record_id,
                "file": event.source_file,
            },
            default=_json_default, option=_PART_OPTIONS,
        )
    except orjson.JSONEncodeError:
        return None
    return part[1:-1] + b","


#: What ends a Sigma detection's line after `matched` (`Detection.hit_record`'s last keys, left empty).
_SIGMA_END = b',"group":{},"indicator":null,"source":null}'


def _head(keys: dict[str, Any]) -> bytes | None:
    """`keys` as the start of a compact JSON object that more keys follow (`{...,`); None if orjson
    refuses them."""
    try:
        return orjson.dumps(keys, default=_json_default, option=_ORJSON_OPTIONS)[:-1] + b","
    except orjson.JSONEncodeError:
        return None


def write_jsonl(detections: Iterable[Detection], out: TextIO) -> int:
    """One `Detection.to_record()` JSON object per line, compact (no spaces after `:` and `,`): see
    `JsonlLines`.

    Encoded by orjson, many times faster than `json` when the parent process writes hundreds of thousands
    of lines while the workers hunt.
    """
    return write_lines(map(JsonlLines().line, detections), out)


def write_lines(lines: Iterable[str], out: TextIO) -> int:
    """Lines (without their newline) written one per line; returns how many."""
    n = 0
    write = out.write
    for line in lines:
        write(line)
        write("\n")
        n += 1
    return n


def write_utf8(chunks: Iterable[bytes], out: TextIO) -> None:
    """UTF-8 `chunks` (whole lines: `LineBlock.text`, `JsonlLines.utf8` and a newline) written to `out`: to
    its byte buffer where it has one and writes UTF-8 (a file, stdout), else decoded."""
    buffer = getattr(out, "buffer", None)
    if buffer is not None and codecs.lookup(out.encoding).name == "utf-8":
        out.flush()  # what the text layer holds comes first
        write = buffer.write
        for chunk in chunks:
            write(chunk)
        return
    for chunk in chunks:
        out.write(chunk.decode())


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
