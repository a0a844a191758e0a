"""EvtxECmd output (JSON lines and CSV) and generic CSV exports."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from casefile.ingest import EvidenceFile, discover, read_events
from casefile.models import Event, IngestWarning

DATA = Path(__file__).parent.parent / "data" / "ingest"


def _read(path: Path) -> tuple[list[Event], list[IngestWarning]]:
    warnings: list[IngestWarning] = []
    return list(read_events([path], on_warning=warnings.append)), warnings


def test_evtxecmd_json_and_csv_give_the_same_sigma_fields() -> None:
    from_json, w1 = _read(DATA / "evtxecmd.json")
    from_csv, w2 = _read(DATA / "evtxecmd.csv")
    assert w1 == w2 == []
    assert [f.format for f in discover([DATA / "evtxecmd.csv"])] == ["csv"]
    for events in (from_json, from_csv):
        proc, cleared = events
        assert (
            proc.timestamp, proc.computer, proc.channel, proc.provider, proc.event_id, proc.record_id
        ) == (
            datetime(2022, 7, 15, 8, 30, 0, 123456, tzinfo=UTC), "WS17.corp.example",
            "Microsoft-Windows-Sysmon/Operational", "Microsoft-Windows-Sysmon", 1, 88412,
        )
        f = proc.fields
        assert f["EventID"] == 1 and f["EventRecordID"] == 88412
        assert f["Image"] == "C:\\Windows\\System32\\rundll32.exe"
        assert f["CommandLine"] == "rundll32.exe C:\\ProgramData\\mr.dll,DllRegisterServer"
        # Sysmon's ProcessId is the event-data one; EvtxECmd's ProcessId column is the logging
        # process: System's Execution_ProcessID, its column kept as EvtxECmd_ProcessId.
        assert f["ProcessId"] == "6120"
        assert f["Execution_ProcessID"] == 3012 and str(f["EvtxECmd_ProcessId"]) == "3012"
        assert f["MapDescription"] == "Process creation"
        assert f["SourceFile"].endswith("Microsoft-Windows-Sysmon%4Operational.evtx")
        assert f["Payload"].startswith('{"EventData"')  # the original is kept
        assert cleared.event_id == 1102 and cleared.channel == "Security"
        assert cleared.fields["SubjectUserName"] == "Administrator"
        assert "xmlns" not in cleared.fields and "@xmlns" not in cleared.fields
    sigma = {"EventID", "Channel", "Computer", "Provider_Name", "Image", "CommandLine", "ParentImage",
             "ProcessId", "UtcTime", "RuleName"}
    assert {k: from_json[0].fields[k] for k in sigma} == {k: from_csv[0].fields[k] for k in sigma}


def test_generic_csv_uses_the_flat_shape(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "Id,LogName,ProviderName,MachineName,RecordId,Message\n"
        '4720,Security,Microsoft-Windows-Security-Auditing,DC01,77,"A user account was created.\n'
        'Account: backdoor"\n'
        "4726,Security,Microsoft-Windows-Security-Auditing,DC01,78,deleted,extra-cell\n"
        "\n"
        "4732,Security,Microsoft-Windows-Security-Auditing,DC01,79,added\n",
        encoding="utf-8",
    )
    events, warnings = _read(path)
    assert [(e.event_id, e.channel, e.computer, e.provider, e.record_id) for e in events] == [
        (4720, "Security", "DC01", "Microsoft-Windows-Security-Auditing", 77),
        (4726, "Security", "DC01", "Microsoft-Windows-Security-Auditing", 78),
        (4732, "Security", "DC01", "Microsoft-Windows-Security-Auditing", 79),
    ]
    assert events[0].fields["Message"] == "A user account was created.\nAccount: backdoor"
    assert events[1].fields["_extra"] == ["extra-cell"]
    assert [(w.record, w.reason) for w in warnings] == [
        (4, "CSV row has 7 cells, the header 6; extra cells kept as _extra"),
    ]


def test_malformed_csv_rows_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b'EventID,Channel\n1,Security\n2,"Sec"urity\n3,Sec\x00urity\n4,"never closed\n5,Security\n'
    )
    events, warnings = _read(path)
    assert [(e.event_id, e.channel) for e in events] == [(1, "Security"), (3, "Sec\x00urity")]
    assert [(w.record, w.reason) for w in warnings] == [
        (3, "invalid CSV row: ',' expected after '\"'; skipped"),
        (5, "invalid CSV row: unexpected end of data; skipped"),
    ]


def test_semicolon_csv_is_recognised(tmp_path: Path) -> None:
    """The reader takes `;` as the delimiter when the header has most of them (Excel in German or French
    locales), but the sniff knew only `,` and tab: such a file was `not a recognised log format`."""
    path = tmp_path / "export.csv"
    path.write_text("Id;LogName;MachineName\n4720;Security;DC01\n", encoding="utf-8")
    events, warnings = _read(path)
    assert [(e.event_id, e.channel, e.computer) for e in events] == [(4720, "Security", "DC01")]
    assert warnings == []


def test_csv_in_utf16_without_a_bom_is_read_as_utf16(tmp_path: Path) -> None:
    """Read as UTF-8 it gave a NUL between every character of every name and value, and no warning: no
    rule could match."""
    text = "Id,LogName,MachineName,Message\r\n4720,Security,DC01,Account: backdoor\r\n"
    for codec in ("utf-16-le", "utf-16-be"):
        path = tmp_path / f"export-{codec}.csv"
        path.write_bytes(text.encode(codec))
        events, warnings = _read(path)
        assert [(e.event_id, e.channel, e.computer) for e in events] == [(4720, "Security", "DC01")], codec
        assert events[0].fields["Message"] == "Account: backdoor" and warnings == []


def test_a_csv_line_longer_than_the_bound_is_skipped_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed bomb of one line took memory in proportion to the line; past MAX_LINE_CHARS the line is
    read past in pieces, and the rows after it are read with their own line numbers."""
    from casefile.ingest.readers import csvlog

    monkeypatch.setattr(csvlog, "MAX_LINE_CHARS", 1000)
    path = tmp_path / "export.csv"
    path.write_text(
        "Id,LogName,MachineName,Message\n4720,Security,DC01,one\n"
        f"4721,Security,DC01,{'x' * 100_000}\n4722,Security,DC01,three\n",
        encoding="utf-8",
    )
    events, warnings = _read(path)
    assert [(e.event_id, e.fields["Message"]) for e in events] == [(4720, "one"), (4722, "three")]
    assert [(w.record, w.reason) for w in warnings] == [(3, "CSV line longer than 1,000 characters; skipped")]


_CELLS = [
    "plain", "C:\\Windows\\cmd.exe", '"with, comma"', '"say ""hi"""', '"two\nlines"', '"crlf\r\nlines"',
    "Ünïcode", "", '"; and\ttabs"', "4688",
]
# Rows the whole file's reader refuses or reads oddly: a quote in an unquoted cell, a quote that never
# closes (it swallows the rows after it), a lone carriage return (a line end to the reader), bad UTF-8.
_ODD_ROWS = ['2,"Sec"urity', '4,"never closed', '"a\rb",c', "x\xff,y", "5,6,7,8,9,10"]


@pytest.mark.parametrize("seed", range(40))
def test_csv_parts_read_as_the_whole_file(tmp_path: Path, seed: int) -> None:
    """Random CSV (quoted cells holding delimiters, quotes and line breaks, blank lines, a BOM, any of the
    three delimiters; in half the files odd rows), split in parts of a few rows: read part by part under
    the header, the records (with their line numbers) and warnings are the whole file's."""
    import dataclasses
    import itertools
    import random

    from casefile.ingest import read_records
    from casefile.ingest.readers import csvlog

    rng = random.Random(seed)
    delimiter = rng.choice([",", ";", "\t"])
    rows = [delimiter.join(["EventID", "Channel", "Note"])]
    for _ in range(rng.randint(20, 70)):
        roll = rng.random()
        if roll < 0.08:
            rows.append("")
        elif roll < 0.12 and seed % 2 and len(rows) > 12:
            rows.append(rng.choice(_ODD_ROWS).replace(",", delimiter))
        else:
            rows.append(delimiter.join(rng.choice(_CELLS) for _ in range(rng.choice([2, 3, 3, 4]))))
    text = "\n".join(rows) + rng.choice(["", "\n"])
    data = (b"\xef\xbb\xbf" if seed % 3 == 0 else b"") + text.encode("utf-8").replace(b"\xc3\xbf", b"\xff")
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    found = csvlog.csv_parts(path, 60)
    assert found is not None
    parts = list(found)
    odd = any(row in [r.replace(",", delimiter) for r in _ODD_ROWS] for row in rows)
    if not odd:
        assert len(parts) > 2
    assert parts[-1][1] == -1
    for (_, stop, _), (start, _, line) in itertools.pairwise(parts):
        assert start == stop
        if start < len(data):  # (a cut after the last row, which no newline ends, leaves an empty part)
            assert line == data.count(b"\n", 0, start) + 1

    (ev,) = discover([path])

    def read(evidence: EvidenceFile) -> tuple[list[tuple[int, dict[str, Any]]], list[IngestWarning]]:
        warnings: list[IngestWarning] = []
        records = [(r.index, r.data) for r in read_records(evidence, warnings.append)]
        return records, warnings

    whole = read(ev)
    in_parts: tuple[list[object], list[IngestWarning]] = ([], [])
    for part in parts:
        records, warnings = read(dataclasses.replace(ev, part=part))
        in_parts[0].extend(records)
        in_parts[1].extend(warnings)
    assert in_parts == whole and whole[0]


def test_csv_files_that_do_not_read_plainly_are_not_split(tmp_path: Path) -> None:
    from casefile.ingest.readers import csvlog

    rows = "1,Security\n" * 40
    for name, data in [
        ("small.csv", b"EventID,Channel\n1,Security\n"),
        ("utf16.csv", ("EventID,Channel\n" + rows).encode("utf-16")),
        ("header.csv", ('"EventID,Channel\n' + rows).encode()),  # the header's quote never closes
        ("cr.csv", ("EventID,Channel\r" + rows).encode()),  # a lone carriage return ends the header
    ]:
        (tmp_path / name).write_bytes(data)
        assert csvlog.csv_parts(tmp_path / name, 30) is None, name
    # what a compressed file's head is asked before it is unpacked to be split: UTF-8 (or ASCII) only
    reader = csvlog.CsvReader()
    assert reader.may_split(("EventID,Channel\n" + rows).encode())
    assert reader.may_split(("\ufeffEventID,Channel\n" + rows).encode("utf-8"))
    assert not reader.may_split(("EventID,Channel\n" + rows).encode("utf-16"))
