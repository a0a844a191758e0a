"""The OTRF Security-Datasets zips (flat NXLog/Logstash exports) read in place."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from casefile.ingest import discover, read_events
from casefile.models import IngestWarning


@pytest.mark.shared
def test_otrf_zips(shared_data: Path) -> None:
    root = shared_data / "json" / "OTRF-Security-Datasets" / "datasets" / "atomic"
    zips = sorted(root.rglob("*.zip"))
    assert len(zips) == 17
    warnings: list[IngestWarning] = []
    found = discover(zips, on_warning=warnings.append)
    # One JSON member per zip; the macOS resource fork beside one of them is not evidence.
    assert len(found) == 17
    assert all(f.format == "json" and f.member and f.path == f"{f.location}!{f.member}" for f in found)
    events = list(read_events(zips, on_warning=warnings.append))
    assert warnings == []
    assert len(events) == 54_122
    per_file = Counter(e.source_file for e in events)
    assert len(per_file) == 17
    assert all(e.timestamp is not None and e.event_id is not None for e in events)
    assert all(e.channel and e.computer and e.provider for e in events)
    assert all(isinstance(e.fields["EventID"], int) for e in events)
    ntds = [e for e in events if e.source_file.endswith("cmd_dumping_ntds_dit_file_ntdsutil.json")]
    sysmon_1 = [e for e in ntds if e.channel == "Microsoft-Windows-Sysmon/Operational" and e.event_id == 1]
    assert any("ntdsutil" in str(e.fields.get("CommandLine", "")).lower() for e in sysmon_1)
