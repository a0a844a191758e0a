"""A small real case (DuckDB on disk) with hostile evidence text, built from Detection objects."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from casefile.attribute.models import Attribution, EvidenceItem, GroupHypothesis, SponsorHypothesis
from casefile.case.clusters import cluster_detections
from casefile.case.store import Case, EvidenceBatch, TechniqueInfo
from casefile.models import Detection, DetectionKind, Event, IngestWarning, Level, RuleInfo

XSS_COMMAND = (
    'cmd.exe /c echo "><img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
    " </script><script>window.__pwned=2</script>"
)
T0 = datetime(2022, 7, 15, 6, 0, tzinfo=UTC)
CREATED = datetime(2022, 7, 20, 12, 0, tzinfo=UTC)

WEB_RULE = RuleInfo(
    "0b6f2d1e-0000-4000-8000-000000000001",
    "Web worker spawns <b>shell</b>",
    Level.HIGH,
    "test",
    "casefile",
    ("attack.persistence", "attack.t1505.003", "attack.execution", "attack.t1059.003"),
    description="w3wp starting cmd",
)
PSEXEC_RULE = RuleInfo(
    "0b6f2d1e-0000-4000-8000-000000000002",
    "PsExec service",
    Level.CRITICAL,
    "test",
    "casefile",
    ("attack.lateral-movement", "attack.t1021.002", "attack.s0029"),
)
WIPER_RULE = RuleInfo(
    "0b6f2d1e-0000-4000-8000-000000000003",
    "Raw disk driver",
    Level.CRITICAL,
    "test",
    "casefile",
    ("attack.impact", "attack.t1561.002"),
)


def _event(host: str, minutes: int, record: int, **fields: object) -> Event:
    return Event(
        T0 + timedelta(minutes=minutes),
        host,
        "Security",
        "p",
        4688,
        record,
        f"{host}.json",
        {"EventID": 4688, **fields},
    )


def _det(rule: RuleInfo, ev: Event) -> Detection:
    return Detection(
        rule,
        DetectionKind.SIGMA,
        ev.timestamp,
        ev.computer,
        ev.channel,
        ev.event_id,
        ev.record_id,
        ev.source_file,
        {"CommandLine": ev.fields.get("CommandLine")},
        dict(ev.fields),
    )


def build_sample_case(root: Path, *, attributed: bool = True) -> Case:
    """Two hosts, an intrusion burst and a later wiper burst, one warning, hostile command lines."""
    case = Case.create(root, clock=lambda: CREATED)
    web = EvidenceBatch("a" * 64, "WEB01.json", 1234, "json")
    for i in range(3):
        ev = _event(
            "WEB01",
            i * 5,
            10 + i,
            CommandLine=XSS_COMMAND,
            User="CORP\\svc_sp",
            Image="C:\\Windows\\System32\\cmd.exe",
            ParentImage="C:\\w3wp.exe",
        )
        web.add_event(ev)
        web.detections.append(_det(WEB_RULE, ev))
    web.add_event(_event("WEB01", 2, 99, CommandLine="notepad.exe"))
    web.warnings.append(IngestWarning("WEB01.json", "invalid JSON <script>window.__pwned=3</script>", 7))
    case.add_evidence(web)
    dc = EvidenceBatch("b" * 64, "DC01.json", 999, "json")
    ev = _event("DC01", 20, 1, ServiceName="PSEXESVC", TargetUserName="svc_sp", TargetDomainName="CORP")
    dc.add_event(ev)
    dc.detections.append(_det(PSEXEC_RULE, ev))
    ev = _event("DC01", 600, 2, ServiceName="ElRawDisk", ImagePath="C:\\Windows\\Temp\\rwdsk.sys")
    dc.add_event(ev)
    dc.detections.append(_det(WIPER_RULE, ev))
    case.add_evidence(dc)
    case.set_clusters(cluster_detections([(s.id, s.detection) for s in case.detections()]))
    case.add_rule_texts([(WEB_RULE.id, WEB_RULE.title, None, f"title: x\nid: {WEB_RULE.id}\n")])
    if attributed:
        hyp = GroupHypothesis(
            "G0049",
            "OilRig <i>",
            "IR",
            0.55,
            (EvidenceItem("technique", "T1505.003", "Web Shell", 1.4, "used by <b>OilRig</b>"),),
            (EvidenceItem("technique", "T1561.002", "Disk Structure Wipe", -0.4),),
            ("APT34", "Helix Kitten"),
        )
        other = GroupHypothesis("G0059", "Magic Hound", "IR", 0.2)
        att = Attribution((hyp, other), (SponsorHypothesis("IR", 0.75),), 0.25, kb_version="18.1")
        results = {"case": att, **{c.id: att for c in case.clusters()}}
        case.set_attributions(
            results,
            attack_version="18.1",
            techniques=[
                TechniqueInfo("T1505", "Server Software Component", ("persistence",), False),
                TechniqueInfo("T1505.003", "Web Shell", ("persistence",), True),
                TechniqueInfo("T1059", "Command and Scripting Interpreter", ("execution",), False),
                TechniqueInfo("T1021", "Remote Services", ("lateral-movement",), False),
                TechniqueInfo("T1561", "Disk Wipe", ("impact",), False),
                TechniqueInfo("T1003", "OS Credential Dumping", ("credential-access",), False),
            ],
            tactics=[
                ("persistence", "Persistence"),
                ("execution", "Execution"),
                ("credential-access", "Credential Access"),
                ("lateral-movement", "Lateral Movement"),
                ("impact", "Impact"),
            ],
        )
        case.set_software([("S0029", "PsExec", "tool")])
    return case


@pytest.fixture
def sample_case(tmp_path: Path) -> Iterator[Case]:
    case = build_sample_case(tmp_path / "case")
    yield case
    case.close()
