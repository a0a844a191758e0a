"""Events as columns: bounded Arrow RecordBatches per log source, and a DuckDB `events` table.

Layout (one schema for batches and table):

    timestamp    TIMESTAMP WITH TIME ZONE (Arrow timestamp[us, UTC])
    computer, channel, provider, source_file   VARCHAR
    event_id     INTEGER      record_id BIGINT
    fields       MAP(VARCHAR, VARCHAR)  every data field in event order, values as text
    fields_typed VARCHAR      JSON object of the fields whose value is not a string or null
                              (ints, bools, floats, lists), with their parsed types; NULL if none

Why a MAP: DuckDB looks a key up in a MAP without parsing anything
(`fields['CommandLine'] ILIKE '%-enc%'`), which is what rule and indicator queries do, while a
JSON column is re-parsed on every row (measured by `benchmarks/ingest_columnar.py`: several
times slower per query). The MAP is stringly typed, so `fields_typed` keeps the few non-string
values exactly (ints stay ints, `Data` lists stay lists) and Events come back identical;
storing every field twice as JSON would double the database for the sake of those few.

Partitioning: batches are built per log source `(channel, event_id)`, so every batch holds one
source and a reader can skip the sources a rule cannot match. In DuckDB all events live in one
table; rows arrive clustered by source (batch by batch), so the per-row-group min/max indexes
on `channel`/`event_id` let a `WHERE channel = ? AND event_id = ?` scan only matching row
groups. One table (not one per source) keeps queries across sources, such as indicator joins
and timelines, a plain SELECT.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from casefile.errors import CasefileError
from casefile.ingest.pipeline import read_file, with_next
from casefile.ingest.plugins import WarningSink
from casefile.ingest.sources import discover
from casefile.models import Event, IngestWarning

#: A log source: (channel, event id).
PartitionKey = tuple[str | None, int | None]

FIELDS_TYPE = pa.map_(pa.string(), pa.string())
EVENT_SCHEMA = pa.schema([
    pa.field("timestamp", pa.timestamp("us", tz="UTC")),
    pa.field("computer", pa.string()),
    pa.field("channel", pa.string()),
    pa.field("provider", pa.string()),
    pa.field("event_id", pa.int32()),
    pa.field("record_id", pa.int64()),
    pa.field("source_file", pa.string()),
    pa.field("fields", FIELDS_TYPE),
    pa.field("fields_typed", pa.string()),
])
#: Rows per batch (and the bound on rows buffered per source).
DEFAULT_BATCH_ROWS = 16_384
#: Rows buffered across all sources before the largest buffer is flushed early.
DEFAULT_MAX_BUFFERED = 131_072

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_COLUMNS = ", ".join(f'"{f.name}"' for f in EVENT_SCHEMA)
_DDL_TYPES = {
    "timestamp": "TIMESTAMPTZ", "computer": "VARCHAR", "channel": "VARCHAR", "provider": "VARCHAR",
    "event_id": "INTEGER", "record_id": "BIGINT", "source_file": "VARCHAR",
    "fields": "MAP(VARCHAR, VARCHAR)", "fields_typed": "VARCHAR",
}


def partition_key(event: Event) -> PartitionKey:
    """The log source an event belongs to."""
    return (event.channel, event.event_id)


def column_int(value: int | None, bits: int) -> int | None:
    """`value` when a signed integer column of `bits` bits holds it, else None. Crafted logs can hold
    any integer (an EVTX record number is unsigned 64-bit, a JSON `EventID` unbounded); the field it came
    from keeps the value itself, as text in the `fields` MAP."""
    if value is None or -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        return value
    return None


def field_text(value: Any) -> str | None:
    """A field value as the text the `fields` MAP holds: strings as is, numbers in decimal,
    booleans `true`/`false`, lists and objects as JSON, null as NULL."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def storable(text: str) -> str:
    """`text` as Arrow and DuckDB take it (valid UTF-8): a lone surrogate, which JSON escapes (`"\\ud800"`)
    and undecodable file names (`os.fsdecode`) put in a string, becomes its escape, `\\ud800`, as text."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def arrow_array(values: Iterable[Any], kind: pa.DataType) -> pa.Array:
    """`pa.array(values, kind)`; a string holding a lone surrogate (a JSON escape or an undecodable file name
    in the evidence), which Arrow refuses, is given as `storable` text (in a JSON text, the escape that reads
    back as the same string)."""
    values = list(values)
    try:
        return pa.array(values, type=kind)
    except UnicodeEncodeError:
        return pa.array([_storable(v) for v in values], type=kind)


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def _batch(events: Sequence[Event]) -> pa.RecordBatch:
    try:
        return _batch_of(events, exact=False)
    except UnicodeEncodeError:  # a lone surrogate somewhere in the batch (rare): the slower, careful way
        return _batch_of(events, exact=True)


def _batch_of(events: Sequence[Event], *, exact: bool) -> pa.RecordBatch:
    """The batch of `events`; `exact`: strings with lone surrogates written as `storable` text in the MAP and
    the other columns, and exactly in `fields_typed` (JSON escapes them), whence `events_from_batch` reads
    them back. Field names are written as `storable` text."""
    text: Callable[[str | None], str | None] = (
        (lambda v: None if v is None else storable(v)) if exact else (lambda v: v)
    )
    offsets = [0]
    keys: list[str] = []
    values: list[str | None] = []
    typed_column: list[str | None] = []
    append = values.append
    for e in events:
        fields = e.fields
        keys.extend(map(storable, fields) if exact else fields)
        typed: dict[str, Any] | None = None
        # One pass per event: strings (most values) go straight to the MAP.
        for k, v in fields.items():
            if v.__class__ is str or v is None:
                if exact and v is not None and storable(v) != v:
                    append(storable(v))
                    if typed is None:
                        typed = {}
                    typed[storable(k)] = v
                else:
                    append(v)
            else:
                append(text(field_text(v)))
                if typed is None:
                    typed = {}
                typed[storable(k) if exact else k] = v
        offsets.append(len(keys))
        typed_column.append(
            json.dumps(typed, ensure_ascii=exact, default=_json_default) if typed is not None else None
        )
    fields_array = pa.MapArray.from_arrays(
        pa.array(offsets, type=pa.int32()),
        pa.array(keys, type=pa.string()),
        pa.array(values, type=pa.string()),
    )
    arrays = [
        pa.array([e.timestamp for e in events], type=pa.timestamp("us", tz="UTC")),
        pa.array([text(e.computer) for e in events], type=pa.string()),
        pa.array([text(e.channel) for e in events], type=pa.string()),
        pa.array([text(e.provider) for e in events], type=pa.string()),
        pa.array([column_int(e.event_id, 32) for e in events], type=pa.int32()),
        pa.array([column_int(e.record_id, 64) for e in events], type=pa.int64()),
        pa.array([text(e.source_file) for e in events], type=pa.string()),
        fields_array,
        pa.array(typed_column, type=pa.string()),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=EVENT_SCHEMA)


def to_batches(
    events: Iterable[Event],
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    max_buffered: int = DEFAULT_MAX_BUFFERED,
) -> Iterator[tuple[PartitionKey, pa.RecordBatch]]:
    """Group an event stream into RecordBatches of one log source each, with bounded memory.

    A source's buffer is emitted when it reaches `batch_rows`; when all buffers together hold
    `max_buffered` rows the largest is emitted early; the rest are emitted at the end in sorted
    source order. Events keep their stream order within a source.
    """
    if batch_rows < 1 or max_buffered < batch_rows:
        raise CasefileError("to_batches: need 1 <= batch_rows <= max_buffered")
    buffers: dict[PartitionKey, list[Event]] = {}
    buffered = 0
    for event in events:
        key = partition_key(event)
        buffer = buffers.setdefault(key, [])
        buffer.append(event)
        buffered += 1
        if len(buffer) >= batch_rows:
            yield key, _batch(buffer)
            buffered -= len(buffer)
            del buffers[key]
        elif buffered >= max_buffered:
            largest = max(buffers, key=lambda k: len(buffers[k]))
            yield largest, _batch(buffers[largest])
            buffered -= len(buffers.pop(largest))
    for key in sorted(buffers, key=lambda k: (k[0] or "", -1 if k[1] is None else k[1])):
        yield key, _batch(buffers[key])


def events_from_batch(batch: pa.RecordBatch | pa.Table) -> Iterator[Event]:
    """The Events of a batch (or of any Arrow data with the EVENT_SCHEMA columns)."""
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    columns = {name: table.column(name).to_pylist() for name in _SCALARS}
    fields_column = table.column("fields").combine_chunks()
    offsets = fields_column.offsets.to_pylist()
    base = offsets[0]
    keys = fields_column.keys.to_pylist()
    items = fields_column.items.to_pylist()
    for row in range(table.num_rows):
        start, end = offsets[row] - base, offsets[row + 1] - base
        fields: dict[str, Any] = dict(zip(keys[start:end], items[start:end], strict=True))
        typed = columns["fields_typed"][row]
        if typed is not None:
            fields.update(json.loads(typed))
        timestamp = columns["timestamp"][row]
        yield Event(
            timestamp=timestamp.astimezone(UTC) if timestamp is not None else None,
            computer=columns["computer"][row],
            channel=columns["channel"][row],
            provider=columns["provider"][row],
            event_id=columns["event_id"][row],
            record_id=columns["record_id"][row],
            source_file=columns["source_file"][row],
            fields=fields,
        )


_SCALARS = (
    "timestamp", "computer", "channel", "provider", "event_id", "record_id", "source_file", "fields_typed"
)


def _table_name(table: str) -> str:
    if not _IDENTIFIER.match(table):
        raise CasefileError(f"invalid table name {table!r}: use letters, digits and _ (max 63)")
    return f'"{table}"'


def create_events_table(con: duckdb.DuckDBPyConnection, table: str = "events") -> None:
    """Create the events table (if missing) with the columnar schema."""
    columns = ", ".join(f'"{name}" {sql_type}' for name, sql_type in _DDL_TYPES.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS {_table_name(table)} ({columns})")


def write_batches(
    con: duckdb.DuckDBPyConnection,
    batches: Iterable[pa.RecordBatch | tuple[PartitionKey, pa.RecordBatch]],
    table: str = "events",
    *,
    insert_rows: int = DEFAULT_MAX_BUFFERED,
) -> int:
    """Append batches (as from `to_batches`) to the events table; returns the rows written.

    Small batches are gathered into inserts of about `insert_rows` rows: one INSERT per tiny
    log source would spend its time on statement overhead.
    """
    create_events_table(con, table)
    name = _table_name(table)
    view = "_casefile_ingest_batch"
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    written = 0

    def flush() -> None:
        con.register(view, pa.Table.from_batches(pending, schema=EVENT_SCHEMA))
        try:
            con.execute(f"INSERT INTO {name} ({_COLUMNS}) SELECT {_COLUMNS} FROM {view}")
        finally:
            con.unregister(view)
        pending.clear()

    for item in batches:
        batch = item[1] if isinstance(item, tuple) else item
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= insert_rows:
            flush()
            written += pending_rows
            pending_rows = 0
    if pending:
        flush()
        written += pending_rows
    return written


def write_events(
    con: duckdb.DuckDBPyConnection, events: Iterable[Event], table: str = "events", **batching: int
) -> int:
    """Append an Event stream to the events table, batched per log source; returns rows written."""
    return write_batches(con, to_batches(events, **batching), table)


@dataclass(frozen=True, slots=True)
class SourceCount:
    """How many events of one log source a table holds."""

    channel: str | None
    event_id: int | None
    events: int


def sources(con: duckdb.DuckDBPyConnection, table: str = "events") -> list[SourceCount]:
    """The log sources in the table with their event counts, most frequent first."""
    rows = con.execute(
        f"SELECT channel, event_id, count(*) AS n FROM {_table_name(table)} "
        "GROUP BY ALL ORDER BY n DESC, channel, event_id"
    ).fetchall()
    return [SourceCount(c, e, n) for c, e, n in rows]


def read_table(
    con: duckdb.DuckDBPyConnection,
    table: str = "events",
    *,
    sources: Iterable[PartitionKey] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[Event]:
    """Events back from the table, optionally only those of the given log sources.

    `sources` entries are (channel, event_id); None in either place matches any value.
    """
    sql = f"SELECT {_COLUMNS} FROM {_table_name(table)}"
    params: list[Any] = []
    if sources is not None:
        clauses = []
        for channel, event_id in sources:
            parts = []
            if channel is not None:
                parts.append("channel = ?")
                params.append(channel)
            if event_id is not None:
                parts.append("event_id = ?")
                params.append(event_id)
            clauses.append("(" + (" AND ".join(parts) or "TRUE") + ")")
        if not clauses:
            return
        sql += " WHERE " + " OR ".join(clauses)
    relation = con.sql(sql, params=params)
    # DuckDB 2 renamed fetch_record_batch to to_arrow_reader.
    open_reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
    for batch in open_reader(batch_rows):
        yield from events_from_batch(batch)


@dataclass(frozen=True, slots=True)
class IngestSummary:
    """What one ingest run read and stored."""

    files: int
    events: int
    warnings: int
    sources: int


def ingest_to_duckdb(
    paths: Sequence[str | Path],
    con: duckdb.DuckDBPyConnection,
    *,
    on_warning: WarningSink,
    table: str = "events",
) -> IngestSummary:
    """Read every evidence file under `paths` into the events table; count files, events, warnings."""
    warnings = 0

    def warn(warning: IngestWarning) -> None:
        nonlocal warnings
        warnings += 1
        on_warning(warning)

    evidence = discover(paths, on_warning=warn)
    keys: set[PartitionKey] = set()

    def events() -> Iterator[Event]:
        for file, following in with_next(evidence):
            for event in read_file(file, warn, following=following):
                keys.add(partition_key(event))
                yield event

    written = write_events(con, events(), table)
    return IngestSummary(files=len(evidence), events=written, warnings=warnings, sources=len(keys))
