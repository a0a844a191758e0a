"""Objects that cross processes or sit in the rule cache pickle by value (`casefile.pickling.by_fields`)
and come back equal; pickles made the generic dataclass way, as caches written before hold, still load."""

from __future__ import annotations

import pickle
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from casefile.hunt import load_rules
from casefile.hunt.rules import RuleSet
from casefile.ingest import discover
from casefile.models import Detection, DetectionKind, Event, IngestWarning

RULES = r"""title: Many kinds of test
id: 6f1c2a52-5a1f-4b3e-9c6b-0f3f6a4b1a01
status: test
author: Tester
tags: [attack.execution, attack.t1059.001]
logsource: {product: windows, category: process_creation}
detection:
    sel_img:
        Image|endswith: ['\cmd.exe', '\powershell.exe']
        CommandLine|contains|all: ['-enc', 'http']
    sel_re:
        CommandLine|re: '\s[a-f0-9]{16}'
    sel_num:
        ProcessId: 4
        Hashes: null
        IntegrityLevel|exists: true
    sel_ref:
        Image|fieldref: ParentImage
    filter_net:
        DestinationIp|cidr: ['10.0.0.0/8', 'fe80::/10']
    keywords: ['mimikatz', 'sekurlsa']
    condition: (sel_img or sel_re or keywords) and not filter_net or (sel_num and sel_ref)
level: high
"""


def _instances(obj: Any, out: dict[type, Any]) -> None:
    """One instance of every dataclass reachable from `obj`."""
    if is_dataclass(obj) and not isinstance(obj, type):
        out.setdefault(type(obj), obj)
        for f in fields(obj):
            _instances(getattr(obj, f.name), out)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _instances(x, out)


@pytest.fixture
def objects(tmp_path: Path) -> dict[type, Any]:
    (tmp_path / "r.yml").write_text(RULES, encoding="utf-8")
    (tmp_path / "broken.yml").write_text("title: [\n", encoding="utf-8")
    (tmp_path / "events.json").write_text('{"EventID": 1}\n', encoding="utf-8")
    ruleset = load_rules([tmp_path / "r.yml", tmp_path / "broken.yml"])
    rule = ruleset.rules[0]
    when = datetime(2022, 7, 15, tzinfo=UTC)
    event = Event(when, "ws1", "Security", "p", 4688, 7, "f.evtx", {"a": 1})
    detection = Detection(
        rule.info, DetectionKind.SIGMA, when, "ws1", "Security", 4688, 7, "f.evtx", {"Image": "x"}, {"a": 1},
        {"g": "v"}, "ioc", "feed",
    )
    found: dict[type, Any] = {}
    _instances([ruleset, event, detection, IngestWarning("f", "why", 3), *discover([tmp_path])], found)
    return found


def test_round_trip_by_value(objects: dict[type, Any]) -> None:
    names = {t.__name__ for t in objects}
    assert {
        "RuleSet", "CompiledRule", "SkippedRule", "RuleInfo", "Program", "Route", "Detection", "Event",
        "EvidenceFile", "IngestWarning", "StrMatch", "RegexMatch", "CidrMatch", "FieldRef", "Not",
    } <= names
    for cls, obj in objects.items():
        if cls is RuleSet:  # not slotted: pickled with its __dict__
            continue
        assert "__reduce__" in vars(cls), f"{cls.__name__} pickles the generic way"
        assert pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)) == obj


def test_generic_pickles_still_load(objects: dict[type, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    slotted = [cls for cls in objects if "__reduce__" in vars(cls)]
    with monkeypatch.context() as m:
        for cls in slotted:
            m.delattr(cls, "__reduce__")
        old = {cls: pickle.dumps(objects[cls], pickle.HIGHEST_PROTOCOL) for cls in slotted}
    for cls in slotted:
        assert b"__reduce__" not in old[cls]
        assert pickle.loads(old[cls]) == objects[cls]
