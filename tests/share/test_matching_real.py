"""Indicator matching on real EVTX (EVTX-ATTACK-SAMPLES): the DuckDB joins find exactly the events a
plain Python scan of the same fields finds."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import duckdb
import pytest

from casefile.ingest import read_events
from casefile.ingest.columnar import write_events
from casefile.models import Event, IngestWarning
from casefile.share import FieldMap, IntelStore, import_intel, match_indicators

pytestmark = pytest.mark.shared


def _addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        a = ipaddress.ip_address(text.strip().strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def _hashes(text: str) -> set[str]:
    return {p.split("=", 1)[-1].strip().lower() for p in text.split(",")}


def test_joins_agree_with_a_python_scan_on_real_evtx(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "evtx" / "EVTX-ATTACK-SAMPLES" / "Command and Control"
    files = sorted(folder.glob("*.evtx"))
    assert files, f"no EVTX under {folder}"
    warnings: list[IngestWarning] = []
    events = list(read_events(files, on_warning=warnings.append))
    assert not warnings
    con = duckdb.connect()
    write_events(con, events)

    # Indicators drawn from the evidence itself: one SHA1, one /24 and one IPv6 address.
    sha1 = next(next(iter(_hashes(str(e.fields["Hashes"])))) for e in events if "Hashes" in e.fields)
    v4 = next(
        _addr(str(e.fields["DestinationIp"]))
        for e in events
        if e.fields.get("DestinationIp", "")[:3] == "10."
    )
    v6 = next(str(e.fields["DestinationIp"]) for e in events if ":" in str(e.fields.get("DestinationIp", "")))
    net = ipaddress.ip_network(f"{v4}/24", strict=False)
    feed = tmp_path / "drawn.csv"
    feed.write_text(f"type,value\nsha1,{sha1}\ncidr,{net}\nipv6,{v6}\n", encoding="utf-8")
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        assert import_intel(store, feed).issues == []
        indicators = store.indicators()
        hits = match_indicators(con, indicators)
    label = {
        i.id: {"hash": "hash", "ip": "net" if "/" in i.atoms[0].value else "v6"}[i.atoms[0].kind]
        for i in indicators
    }

    def expected(e: Event) -> set[str]:
        found: set[str] = set()
        for f in FieldMap.HASH:
            if f in e.fields and sha1 in _hashes(str(e.fields[f])):
                found.add("hash")
        for f in FieldMap.IP:
            a = _addr(str(e.fields.get(f, "")))
            if a is not None and a.version == 4 and a in net:
                found.add("net")
            if a is not None and a == ipaddress.ip_address(v6):
                found.add("v6")
        return found

    oracle = sorted((e.source_file, e.record_id, k) for e in events for k in expected(e))
    got = sorted((d.file, d.record_id, label[d.rule.id]) for d in hits)
    assert got == oracle
    assert {k for *_, k in oracle} == {"hash", "net", "v6"}  # every kind found something
