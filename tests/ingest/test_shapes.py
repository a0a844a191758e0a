"""Each JSON shape, from hand-written fixtures, to exact Events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from casefile.ingest import RawRecord, normalise, read_events
from casefile.models import Event, IngestWarning

DATA = Path(__file__).parent.parent / "data" / "ingest"


def _read(path: Path) -> tuple[list[Event], list[IngestWarning]]:
    warnings: list[IngestWarning] = []
    return list(read_events([path], on_warning=warnings.append)), warnings


def test_evtx_json_shape() -> None:
    events, warnings = _read(DATA / "evtx_shapes.json")
    assert warnings == []
    proc, app, cleared, defender = events
    source = str(DATA / "evtx_shapes.json")
    assert proc == Event(
        timestamp=datetime(2022, 7, 15, 8, 12, 1, 299004, tzinfo=UTC),  # 100 ns ticks cut to us
        computer="DC01.corp.example",
        channel="Security",
        provider="Microsoft-Windows-Security-Auditing",
        event_id=4688,
        record_id=1001,
        source_file=source,
        fields={
            "Provider_Name": "Microsoft-Windows-Security-Auditing",
            "Provider_Guid": "{54849625-5478-4994-a5ba-3e3b0328c30d}",
            "EventID": 4688, "Version": 2, "Level": 0, "Task": 13312, "Opcode": 0,
            "Keywords": "0x8020000000000000",
            "TimeCreated_SystemTime": "2022-07-15T08:12:01.2990045Z",
            "EventRecordID": 1001, "Correlation": None,
            "Execution_ProcessID": 4, "Execution_ThreadID": 96,
            "Channel": "Security", "Computer": "DC01.corp.example", "Security": None,
            "SubjectUserName": "svc_backup",
            "NewProcessName": "C:\\Windows\\System32\\cmd.exe",
            "CommandLine": 'cmd.exe /c "vssadmin delete shadows /all /quiet" ',  # whitespace kept
            "ProcessId": "0x1a2c",
            "MandatoryLabel": "S-1-16-12288",
        },
    )
    # EventID with Qualifiers; unnamed <Data> elements become the list field "Data".
    assert app.event_id == 1000
    assert app.fields["EventID"] == 1000 and app.fields["EventID_Qualifiers"] == 16384
    assert app.fields["Data"] == ["homecrypt.exe", "1.0.0.0", ""]
    assert app.fields["Binary"] == "00FF"
    assert app.fields["Provider_EventSourceName"] == "Application Error"
    # UserData leaves by leaf name; a leaf named like a System field keeps a qualified name.
    assert cleared.channel == "System"
    assert cleared.fields["Channel"] == "System"
    assert cleared.fields["UserData_Channel"] == "Security"
    assert cleared.fields["SubjectUserName"] == "Administrator"
    assert cleared.fields["BackupPath"] is None
    assert "xmlns" not in cleared.fields
    assert cleared.fields["Security_UserID"] == "S-1-5-21-1-2-3-500"
    assert cleared.fields["Correlation_ActivityID"] == "{6E1A750F-42C6-491E-941A-12F6AF57EBD2}"
    # Forwarded events carry System ints as text: they become ints.
    assert (defender.event_id, defender.record_id) == (1116, 171)
    assert defender.fields["EventID"] == 1116
    assert defender.fields["Execution_ProcessID"] == 4172
    assert defender.fields["Version"] == 0
    assert defender.fields["Threat Name"] == "HackTool:Win64/Mimikatz"
    # RenderingInfo strings never pose as System fields.
    assert "Level" not in defender.fields
    assert defender.fields["RenderingInfo_Level"] == "Warning"
    assert defender.fields["RenderingInfo_Message"] == "Microsoft Defender Antivirus has detected malware"
    assert defender.fields["RenderingInfo_Culture"] == "en-US"


def test_flat_shape_otrf_style() -> None:
    events, warnings = _read(DATA / "nested" / "flat_otrf.jsonl")
    assert [(w.record, w.reason) for w in warnings] == [
        (3, "invalid JSON at line 3 column 154: Invalid control character; record skipped, "
            "resumed at line 4"),
    ]
    sysmon, logon, logoff = events
    assert (sysmon.channel, sysmon.event_id, sysmon.computer, sysmon.provider, sysmon.record_id) == (
        "Microsoft-Windows-Sysmon/Operational", 1, "WORKSTATION5.theshire.local", "Microsoft-Windows-Sysmon",
        757026,
    )
    # TimeCreated (the event's time) wins over @timestamp (when the shipper saw it).
    assert sysmon.timestamp == datetime(2020, 12, 19, 6, 59, 28, 410000, tzinfo=UTC)
    f = sysmon.fields
    assert f["Image"] == "C:\\Windows\\System32\\schtasks.exe"
    assert f["ProcessId"] == "3108"  # values keep the type the export gave them
    assert f["tags"] == ["mordorDataset"]
    assert (f["Computer"], f["Hostname"], f["host"]) == (
        "WORKSTATION5.theshire.local", "WORKSTATION5.theshire.local", "wec.internal.cloudapp.net",
    )
    assert (f["Provider_Name"], f["SourceName"]) == ("Microsoft-Windows-Sysmon", "Microsoft-Windows-Sysmon")
    assert f["Provider_Guid"] == "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}"
    assert f["EventRecordID"] == 757026
    # EventID as text becomes an int; Sysmon-style UtcTime beats the local, offset-less EventTime.
    assert logon.event_id == 4624 and logon.fields["EventID"] == 4624
    assert logon.timestamp == datetime(2020, 8, 7, 14, 32, 22, 692000, tzinfo=UTC)
    assert logon.fields["Execution_ProcessID"] == 3888
    assert logon.fields["Security_UserID"] == "S-1-5-18"
    # Last resort: EventTime without offset, read as UTC.
    assert logoff.timestamp == datetime(2020, 8, 7, 10, 40, tzinfo=UTC)
    assert logoff.provider is None


def test_ecs_winlogbeat_shape() -> None:
    events, warnings = _read(DATA / "nested" / "deeper" / "winlogbeat.json")
    assert warnings == []
    script, cleared = events
    assert (script.timestamp, script.computer, script.channel, script.provider, script.event_id,
            script.record_id) == (
        datetime(2022, 7, 15, 9, 0, 0, 123000, tzinfo=UTC), "WS17.corp.example",
        "Microsoft-Windows-PowerShell/Operational", "Microsoft-Windows-PowerShell", 4104, 52113,
    )
    f = script.fields
    assert f["EventID"] == 4104  # winlog.event_id is a string in ECS
    assert f["ScriptBlockText"].startswith("IEX (New-Object Net.WebClient)")
    assert (f["Execution_ProcessID"], f["Execution_ThreadID"]) == (5544, 6120)
    assert f["Security_UserID"] == "S-1-5-21-1-2-3-1104"
    assert f["Provider_Guid"] == "{A0C1853B-5C40-4B15-8766-3CF1C58F985A}"
    # Every other key is kept under its dotted ECS name.
    assert f["event.code"] == "4104" and f["host.name"] == "ws17.corp.example"
    assert f["winlog.user.name"] == "jdoe" and f["message"] == "Creating Scriptblock text (1 of 1)"
    assert "winlog.event_data.ScriptBlockText" not in f
    # user_data leaves; Computer falls back to host.name.
    assert cleared.computer == "dc01" and cleared.event_id == 1102
    assert cleared.fields["SubjectUserName"] == "Administrator"


def test_powershell_utf16_export() -> None:
    (event,), warnings = _read(DATA / "powershell_utf16.json")
    assert warnings == []
    assert (event.timestamp, event.computer, event.channel, event.provider, event.event_id,
            event.record_id) == (
        datetime(2022, 7, 15, 8, 0, tzinfo=UTC), "DC01", "Security", "Microsoft-Windows-Security-Auditing",
        4720, 77,
    )
    assert event.fields["Message"] == "A user account was created. — Ünïcode"
    assert event.fields["Properties"] == [{"Value": "backdoor"}]


@pytest.mark.parametrize(
    ("record", "fields"),
    [
        # evtx_dump without the Event wrapper
        ({"System": {"EventID": "1"}}, {"EventID": 1}),
        # ECS: System names added, original keys kept dotted
        ({"winlog": {"event_id": "1"}}, {"EventID": 1, "winlog.event_id": "1"}),
        ({"@timestamp": "2022-07-15T00:00:00Z", "event": {"code": "1"}},
         {"EventID": 1, "@timestamp": "2022-07-15T00:00:00Z", "event.code": "1"}),
        # flat: anything else
        ({"EventID": "1", "a": {"b": 2}}, {"EventID": 1, "a.b": 2}),
    ],
)
def test_shape_sniffing(record: dict[str, object], fields: dict[str, object]) -> None:
    event = normalise(RawRecord(1, record), "x.json", lambda w: pytest.fail(str(w)))
    assert event is not None and event.event_id == 1
    assert event.fields == fields


def test_record_that_defeats_its_shape_is_a_warning() -> None:
    warnings: list[IngestWarning] = []
    # The EVTX reader labels records evtx-json; one without System cannot be normalised.
    raw = RawRecord(7, {"Event": {"EventData": {}}}, shape="evtx-json")
    event = normalise(raw, "a.evtx", warnings.append)
    assert event is None
    assert warnings == [IngestWarning("a.evtx", "record could not be normalised: KeyError: 'System'", 7)]


def test_timestamp_fast_path_agrees_with_the_text_path() -> None:
    """`parse_timestamp` tries `fromisoformat` on the string as it stands first; whatever it takes there,
    the full text path (padding, long fractions, " UTC", epoch milliseconds) must read as the same instant."""
    import random

    from casefile.ingest.shapes._common import _LONG_FRACTION, _parse_text, parse_timestamp

    rng = random.Random(5)
    fractions = ["", ".1", ".123", ".123456", ".1234567", ".12345678901", ",1234567"]
    zones = ["", "Z", "+02:00", "-0530", " UTC", "+00:00:30", "z", "+24:00", "+00:00:30.1234567"]
    seen_fast = seen_text = 0
    for _ in range(20000):
        date = rng.choice(["2022-07-15", "20220715", "2022-W28-5", "2022-02-30", "2022-7-15"])
        clock = rng.choice(["T08:12:01", " 08:12:01", "T08:12", "T0812", "T24:00:00", "T08:12:61", ""])
        text = date + clock + rng.choice(fractions) + rng.choice(zones)
        text = rng.choice(["", " ", "\t"]) + text + rng.choice(["", " ", "\n"])
        try:
            datetime.fromisoformat(text)
            fast = _LONG_FRACTION.search(text) is None
        except ValueError:
            fast = False
        seen_fast += fast
        seen_text += not fast
        got = parse_timestamp(text)
        assert got == _parse_text(text), text
        assert got is None or got.tzinfo is UTC, text
    assert seen_fast > 200 and seen_text > 200  # both paths taken
    # EVTX's own form, taken without the search; dots elsewhere in a string of its length are searched
    for text in ["2022-07-15T08:12:01.299004Z", "20220715.1234567890.123456Z"]:
        assert len(text) == 27 and parse_timestamp(text) == _parse_text(text), text
    ticks = datetime(2022, 7, 15, 8, 12, 1, 299004, tzinfo=UTC)
    assert parse_timestamp("2022-07-15T08:12:01.2990047Z") == ticks
    assert parse_timestamp("/Date(1657872721000)/") == datetime(2022, 7, 15, 8, 12, 1, tzinfo=UTC)
    assert parse_timestamp(" 2022-07-15 08:12:01 UTC ") == datetime(2022, 7, 15, 8, 12, 1, tzinfo=UTC)


def test_system_elements_with_text_attributes_and_children() -> None:
    """Every part of a System element is kept: attributes, text, and the rare nested child element."""
    record = {"Event": {"System": {
        "Provider": {"#attributes": {"Name": "P"}, "Extra": {"Inner": "x"}, "Note": "n"},
        "EventID": {"#attributes": {"Qualifiers": "16384"}, "#text": "4624"},
        "Version": "0x2",
        "Correlation": {"#attributes": None},
        "Channel": "Security",
        "Keywords": {"#text": "0x8020000000000000"},
    }}}
    event = normalise(RawRecord(index=1, data=record, shape="evtx-json"), "t.evtx", lambda w: None)
    assert event is not None
    assert list(event.fields.items()) == [
        ("Provider_Name", "P"), ("Inner", "x"), ("Provider_Note", "n"),
        ("EventID_Qualifiers", 16384), ("EventID", 4624), ("Version", 2),
        ("Channel", "Security"), ("Keywords", "0x8020000000000000"),
    ]
    assert (event.event_id, event.channel, event.provider) == (4624, "Security", "P")


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00", "0001-01-01 00:00:00.1234567+05:00",
        10**400, "/Date(" + "9" * 400 + ")/",  # epochs too large for a float
    ],
)
def test_timestamp_outside_the_calendar_in_utc_leaves_the_event_without_one(stamp: str | int) -> None:
    """A forged offset that moves the instant before year 1 or after 9999 in UTC: the record is still
    evidence (its fields, its rules), it only has no timestamp; the read goes on to the next record."""
    record: dict[str, Any] = {
        "@timestamp": stamp, "event": {"code": 1}, "process": {"command_line": "whoami"}
    }
    good: dict[str, Any] = {"@timestamp": "2022-07-15T08:12:01Z", "event": {"code": 1}}
    fail = lambda w: pytest.fail(str(w))  # noqa: E731
    events = [normalise(RawRecord(n, r), "x.json", fail) for n, r in enumerate((record, good))]
    when = datetime(2022, 7, 15, 8, 12, 1, tzinfo=UTC)
    assert [e.timestamp if e else "lost" for e in events] == [None, when]
    assert events[0] is not None and events[0].fields["process.command_line"] == "whoami"


@pytest.mark.parametrize(
    ("record", "shape"),
    [
        ({"EventID": "0x" + "f" * 5000, "CommandLine": "whoami"}, None),
        ({"winlog": {"event_id": "0x" + "f" * 5000}}, None),
        ({"Event": {"System": {"EventID": "0x" + "f" * 5000, "Channel": "Security"}}}, "evtx-json"),
    ],
)
def test_hex_integer_too_long_to_write_in_decimal_stays_text(
    record: dict[str, Any], shape: str | None
) -> None:
    """Decimal text beyond sys.get_int_max_str_digits() never becomes an int, but hex text of any length
    did: an EventID of 5000 hex digits made an int that `str` refuses, and the hunt (its plan cache names a
    partition by `repr`) and the case store (fields as text) failed with a traceback. It stays text."""
    import duckdb

    from casefile.ingest.columnar import read_table, write_events

    event = normalise(RawRecord(1, record, shape=shape), "x.json", lambda w: pytest.fail(str(w)))
    assert event is not None and event.event_id is None
    assert event.fields["EventID"] == "0x" + "f" * 5000
    con = duckdb.connect()
    assert write_events(con, [event]) == 1
    assert list(read_table(con)) == [event]
