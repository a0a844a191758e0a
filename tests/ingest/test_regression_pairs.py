"""The SigmaHQ regression data: each test's `.evtx` and `.json` give the same Events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from casefile.ingest import read_events
from casefile.models import Event, IngestWarning

# Tests whose .json was not produced from their .evtx byte for byte (a value differs beyond the
# whitespace trimming REGRESSION.md describes): field -> (value from .evtx, value from .json).
KNOWN_DIFFERENCES: dict[str, dict[str, tuple[Any, Any]]] = {
    "ad691d92-15f2-4181-9aa4-723c74f9ddc3": {
        "ParentCommandLine": ("C:\\Windows\\Explorer.EXE", "C:\\Windows\\Explorer.exe"),
        "TimeCreated_SystemTime": ("2026-03-20T08:31:26.751156Z", "2026-03-20T08:31:26.751156500Z"),
    },
}


def _trimmed(fields: Any) -> dict[str, Any]:
    return {k: v.strip() if isinstance(v, str) else v for k, v in fields.items()}


def _read(path: Path) -> list[Event]:
    warnings: list[IngestWarning] = []
    events = list(read_events([path], on_warning=warnings.append))
    assert warnings == []
    return events


@pytest.mark.shared
def test_every_regression_evtx_matches_its_json(shared_data: Path) -> None:
    pairs = sorted((shared_data / "sigma" / "regression_data").rglob("*.evtx"))
    assert len(pairs) == 202
    for evtx_path in pairs:
        from_evtx = _read(evtx_path)
        from_json = _read(evtx_path.with_suffix(".json"))
        assert 1 <= len(from_evtx) <= 7, evtx_path
        assert len(from_evtx) == len(from_json), evtx_path
        known = KNOWN_DIFFERENCES.get(evtx_path.stem, {})
        for a, b in zip(from_evtx, from_json, strict=True):
            assert (a.timestamp, a.computer, a.channel, a.provider, a.event_id, a.record_id) == (
                b.timestamp, b.computer, b.channel, b.provider, b.event_id, b.record_id,
            ), evtx_path
            fa, fb = _trimmed(a.fields), _trimmed(b.fields)
            for name, (va, vb) in known.items():
                assert (fa.pop(name), fb.pop(name)) == (va, vb)
            assert fa == fb, evtx_path
            assert isinstance(a.fields["EventID"], int)
            assert a.fields["Channel"] == a.channel


@pytest.mark.shared
def test_regression_event_fields(shared_data: Path) -> None:
    regression = shared_data / "sigma" / "regression_data"
    path = next(regression.rglob("8a2f4b1c-3d5e-4f7a-9b2c-1e4f6d8a9c2b.evtx"))
    (event,) = _read(path)
    assert event.event_id == 7
    assert event.channel == "Microsoft-Windows-Sysmon/Operational"
    assert event.provider == "Microsoft-Windows-Sysmon"
    assert event.computer == "swachchhanda"
    assert event.record_id == 571146
    assert event.timestamp is not None and event.timestamp.isoformat() == "2025-11-27T07:40:10.165324+00:00"
    assert event.source_file == str(path)
    f = event.fields
    assert f["ImageLoaded"] == "C:\\Windows\\System32\\dbgcore.dll"
    assert f["ProcessId"] == 4460
    assert f["Provider_Guid"] == "5770385F-C22A-43E0-BF4C-06F5698FFBD9"
    assert (f["Execution_ProcessID"], f["Execution_ThreadID"]) == (3544, 4272)
    assert f["Security_UserID"] == "S-1-5-18"
    assert f["EventRecordID"] == 571146
