"""STIX patterns for indicator hits: bare values by shape; existing patterns (CIDR, multi-value) unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import stix2
from stix2patterns.validator import validate

from casefile.case import Case
from casefile.case.store import EvidenceBatch
from casefile.ingest.columnar import write_events
from casefile.models import Event
from casefile.report.stix import case_bundle, indicator_pattern
from casefile.share import IntelStore, import_intel, match_indicators


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("D41D8CD98F00B204E9800998ECF8427E", "[file:hashes.'MD5' = 'd41d8cd98f00b204e9800998ecf8427e']"),
        ("203.0.113.5", "[ipv4-addr:value = '203.0.113.5']"),
        ("2001:db8::1", "[ipv6-addr:value = '2001:db8::1']"),
        ("203.0.113.0/24", "[ipv4-addr:value = '203.0.113.0/24']"),
        ("2001:db8::/32", "[ipv6-addr:value = '2001:db8::/32']"),
        ("https://evil.example/a?b=1", "[url:value = 'https://evil.example/a?b=1']"),
        ("Evil.Example", "[domain-name:value = 'evil.example']"),
        ("A" * 128, "[file:hashes.'SHA-512' = '" + "a" * 128 + "']"),
        ("dc_01.corp.example", "[domain-name:value = 'dc_01.corp.example']"),
        ("evil.xn--p1ai", "[domain-name:value = 'evil.xn--p1ai']"),
        ("evil.exe'x", "[file:name = 'evil.exe\\'x']"),
        (
            "[ipv4-addr:value = '198.51.100.0/24'] OR [domain-name:value = 'c2.example']",
            "[ipv4-addr:value = '198.51.100.0/24'] OR [domain-name:value = 'c2.example']",
        ),
    ],
)
def test_indicator_pattern(value: str, expected: str) -> None:
    got = indicator_pattern(value)
    assert got == expected
    assert validate(got, ret_errs=False, print_errs=False)


def test_broken_pattern_text_is_quoted_as_a_value_not_passed_through() -> None:
    got = indicator_pattern("[file:name = ")
    assert got == "[file:name = '[file:name =']"
    assert validate(got, ret_errs=False, print_errs=False)


def test_cidr_and_multi_value_hits_export_their_patterns_in_a_valid_bundle(tmp_path: Path) -> None:
    """Real hits from the intel store (a CIDR indicator, a two-value indicator) through a case into
    the case's STIX bundle: the indicators carry the partners' patterns, and stix2 parses the bundle."""
    cidr = "[ipv4-addr:value ISSUBSET '198.51.100.0/24']"
    pair = "[ipv4-addr:value = '203.0.113.9'] OR [domain-name:value = 'c2.example']"
    when = "2022-07-01T00:00:00Z"
    feed = tmp_path / "partner.json"
    feed.write_text(
        stix2.Bundle(
            stix2.Indicator(pattern=cidr, pattern_type="stix", valid_from=when),
            stix2.Indicator(pattern=pair, pattern_type="stix", valid_from=when),
        ).serialize(),
        encoding="utf-8",
    )
    events = [
        _event(1, DestinationIp="198.51.100.77"),
        _event(2, DestinationIp="203.0.113.9", DestinationHostname="c2.example"),
        _event(3, DestinationIp="192.0.2.1"),
    ]
    con = duckdb.connect()
    write_events(con, events)
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        assert import_intel(store, feed).issues == []
        hits = match_indicators(con, store.indicators())
    assert sorted(h.indicator or "" for h in hits) == sorted([cidr, pair])  # whole patterns, not values

    root = tmp_path / "case"
    case = Case.create(root, clock=lambda: datetime(2022, 7, 20, tzinfo=UTC))
    batch = EvidenceBatch("d" * 64, "fs01.evtx", 4096, "evtx")
    for e in events:
        batch.add_event(e)
    batch.detections.extend(hits)
    case.add_evidence(batch)
    bundle = case_bundle(case)
    case.close()

    parsed = stix2.parse(bundle, allow_custom=True)
    patterns = sorted(o.pattern for o in parsed.objects if o.type == "indicator")
    assert patterns == sorted([cidr, pair])
    sighted = {o.sighting_of_ref for o in parsed.objects if o.type == "sighting"}
    assert sighted == {o.id for o in parsed.objects if o.type == "indicator"}


def test_sha512_and_domain_hits_reimport_as_the_same_atoms(tmp_path: Path) -> None:
    """A SHA-512, a domain with `_` and one with a punycode TLD were exported as `file:name` patterns:
    a partner importing the case's bundle got nothing to match."""
    sha512 = "ab" * 64
    feed = tmp_path / "partner.csv"
    feed.write_text(f"type,value\nsha512,{sha512}\ndomain,dc_01.corp.example\ndomain,evil.xn--p1ai\n")
    events = [
        _event(1, hashes=f"SHA512={sha512.upper()}"),
        _event(2, DestinationHostname="dc_01.corp.example"),
        _event(3, DestinationHostname="evil.xn--p1ai"),
    ]
    con = duckdb.connect()
    write_events(con, events)
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        assert import_intel(store, feed).issues == []
        sent = sorted(a for i in store.indicators() for a in i.atoms)
        hits = match_indicators(con, store.indicators())
    assert len(hits) == 3
    case = Case.create(tmp_path / "case", clock=lambda: datetime(2022, 7, 20, tzinfo=UTC))
    batch = EvidenceBatch("d" * 64, "fs01.evtx", 4096, "evtx")
    for e in events:
        batch.add_event(e)
    batch.detections.extend(hits)
    case.add_evidence(batch)
    bundle = tmp_path / "case.stix.json"
    bundle.write_text(json.dumps(case_bundle(case)), encoding="utf-8")
    case.close()
    with IntelStore.open(tmp_path / "back.duckdb") as back:
        assert import_intel(back, bundle).issues == []
        assert sorted(a for i in back.indicators() for a in i.atoms) == sent


def _event(record: int, **fields: str) -> Event:
    return Event(
        datetime(2022, 7, 15, 8, 0, record, tzinfo=UTC),
        "FS01",
        "Microsoft-Windows-Sysmon/Operational",
        "p",
        3,
        record,
        "fs01.evtx",
        {"EventID": 3, **fields},
    )
