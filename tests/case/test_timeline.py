"""Timeline rows and their CSV / JSONL / Timesketch exports."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from casefile.case.store import StoredDetection, TechniqueInfo
from casefile.case.timeline import TIMELINE_FORMATS, entries_from
from casefile.models import Detection, DetectionKind, Level, RuleInfo


def stored(i: int, ts: datetime | None, tags: tuple[str, ...], **fields: object) -> StoredDetection:
    rule = RuleInfo(f"r{i}", f"Rule {i}", Level.MEDIUM, None, None, tags)
    return StoredDetection(
        f"id{i}",
        Detection(rule, DetectionKind.SIGMA, ts, "WS1", "Security", 4688, i, "f.evtx", {}, fields),
        "sha",
    )


ROWS = [
    stored(
        1,
        datetime(2022, 7, 15, 6, 0, 1, 500000, tzinfo=UTC),
        ("attack.t1003.001",),
        SubjectUserName="adm",
        NewProcessName="C:\\m.exe",
        ProcessCommandLine="=cmd|' /C calc'!A0",
    ),
    stored(
        2,
        None,
        ("attack.lateral-movement", "attack.t1021.002"),
        TargetUserName="bob",
        TargetDomainName="CORP",
    ),
]
CATALOG = {"T1003": TechniqueInfo("T1003", "OS Credential Dumping", ("credential-access",), False)}


def test_entries_take_tactics_from_tags_else_from_the_knowledge_base() -> None:
    first, second = entries_from(ROWS, catalog=CATALOG)
    assert first.tactics == ("credential-access",)  # via the parent technique in the catalog
    assert second.tactics == ("lateral-movement",)
    assert (first.host, first.account, first.process) == ("WS1", "adm", "C:\\m.exe")
    assert second.account == "CORP\\bob"
    assert entries_from(ROWS)[0].tactics == ()


def export(name: str) -> str:
    out = io.StringIO()
    TIMELINE_FORMATS.get(name)(entries_from(ROWS, catalog=CATALOG), out)
    return out.getvalue()


def test_csv_neutralises_formulas() -> None:
    rows = list(csv.DictReader(io.StringIO(export("csv"))))
    assert rows[0]["command_line"] == "'=cmd|' /C calc'!A0"
    assert rows[0]["timestamp"] == "2022-07-15T06:00:01.500000Z"
    assert rows[1]["timestamp"] == "" and rows[1]["tactics"] == "lateral-movement"


def test_jsonl_round_trips() -> None:
    recs = [json.loads(line) for line in export("jsonl").splitlines()]
    assert [r["detection_id"] for r in recs] == ["id1", "id2"]
    assert recs[0]["command_line"] == "=cmd|' /C calc'!A0"


def test_timesketch_has_required_fields_and_skips_untimed() -> None:
    (rec,) = [json.loads(line) for line in export("timesketch").splitlines()]
    assert rec["datetime"] == "2022-07-15T06:00:01.500000+00:00"
    assert rec["timestamp"] == 1657864801500000
    assert rec["timestamp_desc"] == "Event Recorded"
    assert rec["message"] == "[medium] Rule 1 on WS1 as adm : =cmd|' /C calc'!A0"
    assert rec["tag"] == ["attack.credential-access", "T1003.001"]


def test_technique_tactics_trusts_the_knowledge_base_over_mismatched_tags() -> None:
    from casefile.case.timeline import technique_tactics

    cat = {
        "T1505": TechniqueInfo("T1505", "Server Software Component", ("persistence",), False),
        "T1078": TechniqueInfo(
            "T1078", "Valid Accounts", ("defense-evasion", "persistence", "initial-access"), False
        ),
    }
    # The tag names a tactic the technique is not in: the technique's own tactic is used instead.
    assert technique_tactics("T1505.003", ("execution",), cat) == ("persistence",)
    # Tags narrow a multi-tactic technique to the columns the rule means.
    assert technique_tactics("T1078", ("initial-access", "execution"), cat) == ("initial-access",)
    assert technique_tactics("T1078", (), cat) == ("defense-evasion", "persistence", "initial-access")
    # Without the knowledge base the tags are all there is.
    assert technique_tactics("T9999", ("impact",), cat) == ("impact",)
