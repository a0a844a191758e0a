"""Rule loading, log-source routing, detection contents, levels and correlation wiring."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from casefile.hunt import RuleSet, hunt, load_rules
from casefile.models import DetectionKind, Event, Level

PROC = """\
title: Whoami Execution
id: 0d7c4a52-5a1f-4b3e-9c6b-0f3f6a4b1a01
status: test
author: Test Author
tags:
    - attack.discovery
    - attack.t1033
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\\whoami.exe'
        CommandLine|contains: '/all'
    condition: selection
level: {level}
"""

SYSMON = "Microsoft-Windows-Sysmon/Operational"


def test_process_creation_routes_to_sysmon_1_and_security_4688(
    rules_from: Callable[..., RuleSet], make_event: Callable[..., Event]
) -> None:
    rs = rules_from(PROC.format(level="medium"))
    sources = [p.source for p in rs.rules[0].programs]
    assert sources == ["process_creation/sysmon", "process_creation/security"]
    sysmon = make_event({"Image": r"C:\Windows\System32\whoami.exe", "CommandLine": "whoami /all"},
                        channel=SYSMON, event_id=1, record_id=7)
    security = make_event(
        {"NewProcessName": r"C:\Windows\System32\whoami.exe", "CommandLine": "whoami /all"},
        channel="Security", event_id=4688, record_id=8,
    )
    wrong_id = make_event({"Image": r"C:\Windows\System32\whoami.exe", "CommandLine": "whoami /all"},
                          channel=SYSMON, event_id=5, record_id=9)
    wrong_channel = make_event({"Image": r"C:\Windows\System32\whoami.exe", "CommandLine": "whoami /all"},
                               channel="Application", event_id=1, record_id=10)
    hits = list(hunt([sysmon, security, wrong_id, wrong_channel], rs))
    assert [h.record_id for h in hits] == [7, 8]
    assert hits[1].matched == {
        "NewProcessName": r"C:\Windows\System32\whoami.exe", "CommandLine": "whoami /all"
    }


def test_detection_carries_rule_and_event_coordinates(
    rules_from: Callable[..., RuleSet], make_event: Callable[..., Event]
) -> None:
    rs = rules_from(PROC.format(level="high"))
    ts = datetime(2022, 7, 15, 8, 0, tzinfo=UTC)
    ev = make_event({"Image": r"C:\x\WHOAMI.EXE", "CommandLine": "whoami /all", "User": "bob"},
                    channel=SYSMON, event_id=1, record_id=42, ts=ts)
    (d,) = hunt([ev], rs)
    assert d.kind is DetectionKind.SIGMA
    assert (d.rule.id, d.rule.title, d.rule.level, d.rule.status, d.rule.author) == (
        "0d7c4a52-5a1f-4b3e-9c6b-0f3f6a4b1a01", "Whoami Execution", Level.HIGH, "test", "Test Author"
    )
    assert d.rule.techniques == ("T1033",)
    assert (d.timestamp, d.computer, d.channel, d.event_id, d.record_id, d.file) == (
        ts, "host1", SYSMON, 1, 42, "inline.evtx"
    )
    assert d.matched == {"Image": r"C:\x\WHOAMI.EXE", "CommandLine": "whoami /all"}
    assert d.fields["User"] == "bob"
    rec = d.to_record()
    assert rec["rule_id"] == d.rule.id and rec["event_id"] == 1 and rec["author"] == "Test Author"


def test_min_level_filters(rules_from: Callable[..., RuleSet], make_event: Callable[..., Event]) -> None:
    rs = rules_from(PROC.format(level="low"))
    ev = make_event({"Image": r"C:\whoami.exe", "CommandLine": "/all"}, channel=SYSMON, event_id=1)
    assert len(list(hunt([ev], rs, min_level=Level.LOW))) == 1
    assert list(hunt([ev], rs, min_level=Level.MEDIUM)) == []


def test_every_bad_rule_is_listed_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(PROC.format(level="low"), encoding="utf-8")
    (tmp_path / "broken.yml").write_text("title: x\ndetection: [unclosed\n", encoding="utf-8")
    (tmp_path / "linux.yml").write_text(
        PROC.format(level="low").replace("product: windows", "product: linux")
        .replace("1a01", "1a02"),
        encoding="utf-8",
    )
    (tmp_path / "nocond.yml").write_text(
        "title: No condition\nid: 0d7c4a52-5a1f-4b3e-9c6b-0f3f6a4b1a03\nlogsource: {product: windows}\n"
        "detection:\n    sel:\n        A: b\n",
        encoding="utf-8",
    )
    (tmp_path / "deprecated").mkdir()
    (tmp_path / "deprecated" / "old.yml").write_text(
        PROC.format(level="low").replace("1a01", "1a04"),
        encoding="utf-8",
    )
    (tmp_path / "dup.yml").write_text(PROC.format(level="high"), encoding="utf-8")
    # a number given to |re: pySigma accepts it, but makes no regular expression of it
    (tmp_path / "renum.yml").write_text(
        PROC.format(level="low").replace("1a01", "1a05").replace("contains: '/all'", "re: 1"),
        encoding="utf-8",
    )
    # two errors pySigma collects: one entry for the rule, with both
    (tmp_path / "twice.yml").write_text(
        PROC.format(level="bogus").replace("1a01", "1a06").replace("'/all'", "'*'").replace("contains", "re"),
        encoding="utf-8",
    )
    rs = load_rules([tmp_path])
    assert [r.info.title for r in rs.rules] == ["Whoami Execution"]
    reasons = {Path(s.path).name: s.reason for s in rs.skipped}
    assert len(reasons) == len(rs.skipped)  # one entry per rule
    # files load in sorted path order, so dup.yml wins and good.yml is the duplicate
    assert set(reasons) == {
        "broken.yml", "linux.yml", "nocond.yml", "old.yml", "good.yml", "renum.yml", "twice.yml"
    }
    assert reasons["renum.yml"].startswith("cannot compile: AttributeError")
    assert "'bogus' is not a valid Sigma rule level" in reasons["twice.yml"]
    assert "Regular expression '*' is invalid" in reasons["twice.yml"]
    assert "invalid Sigma YAML" in reasons["broken.yml"]
    assert "product 'linux'" in reasons["linux.yml"]
    assert "condition" in reasons["nocond.yml"].lower()
    assert "deprecated" in reasons["old.yml"]
    assert reasons["good.yml"].startswith("duplicate rule id")
    assert rs.files == 8


def test_placeholders_expand_or_skip(
    rules_from: Callable[..., RuleSet], make_event: Callable[..., Event]
) -> None:
    rule = """\
    title: Admin logon
    id: 0d7c4a52-5a1f-4b3e-9c6b-0f3f6a4b1a05
    logsource: {product: windows, service: security}
    detection:
        sel:
            TargetUserName|expand: '%Admins%'
        condition: sel
    level: low
    """
    skipped = rules_from(rule)
    assert not skipped.rules and "%Admins%" in skipped.skipped[0].reason
    rs = rules_from(rule, placeholders={"Admins": ["root", "adm*"]})
    events = [
        make_event({"TargetUserName": n}, channel="Security", event_id=4624) for n in ("admin7", "bob")
    ]
    assert [d.fields["TargetUserName"] for d in hunt(events, rs)] == ["admin7"]


def test_correlation_generate_false_suppresses_base_rule(
    rules_from: Callable[..., RuleSet], make_event: Callable[..., Event]
) -> None:
    rs = rules_from(
        """\
        title: Failed logon
        id: 0d7c4a52-5a1f-4b3e-9c6b-0f3f6a4b1a06
        name: failed_logon
        logsource: {product: windows, service: security}
        detection:
            sel:
                EventID: 4625
            condition: sel
        level: low
        ---
        title: Many failed logons
        id: 0d7c4a52-5a1f-4b3e-9c6b-0f3f6a4b1a07
        correlation:
            type: event_count
            rules: [failed_logon]
            group-by: [TargetUserName]
            timespan: 5m
            condition: {gte: 3}
        level: high
        """
    )
    assert len(rs.rules) == 1 and len(rs.correlations) == 1, rs.skipped
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    events = [
        make_event({"TargetUserName": "alice"}, channel="Security", event_id=4625, record_id=i,
                   ts=t0 + timedelta(seconds=10 * i))
        for i in range(3)
    ]
    hits = list(hunt(events, rs))
    assert [(h.kind, h.rule.title) for h in hits] == [(DetectionKind.CORRELATION, "Many failed logons")]


def test_programs_pickle(shared_data: Path) -> None:
    """Compiled IR survives pickling (the rule cache and worker processes rely on it)."""
    rs = load_rules([shared_data / "sigma" / "rules" / "windows" / "process_creation"])
    assert len(rs.rules) > 500
    programs = [p for r in rs.rules for p in r.programs]
    assert pickle.loads(pickle.dumps(programs)) == programs


def test_rule_cache_reuses_and_invalidates(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    rule = rules / "proc.yml"
    rule.write_text(PROC.format(level="low"), encoding="utf-8")
    (rules / "corr.yml").write_text(
        "title: Many\nid: 0d7c4a52-5a1f-4b3e-9c6b-0f3f6a4b1a08\ncorrelation:\n  type: event_count\n"
        "  rules: [0d7c4a52-5a1f-4b3e-9c6b-0f3f6a4b1a01]\n  group-by: [Computer]\n  timespan: 1h\n"
        "  condition: {gte: 2}\nlevel: high\n",
        encoding="utf-8",
    )
    cache = tmp_path / "cache"
    first = load_rules([rules], cache_dir=cache)
    assert len(first.rules) == 1 and len(first.correlations) == 1
    (stored,) = cache.glob("rules-*.pickle")
    again = load_rules([rules], cache_dir=cache)
    assert again == first and list(cache.glob("rules-*.pickle")) == [stored]
    rule.write_text(PROC.format(level="critical"), encoding="utf-8")  # size changes: cache is stale
    changed = load_rules([rules], cache_dir=cache)
    assert changed.rules[0].info.level is Level.CRITICAL
    assert stored not in list(cache.glob("rules-*.pickle"))
    stored_new = next(cache.glob("rules-*.pickle"))
    stored_new.write_bytes(b"not a pickle")  # a damaged cache is rebuilt, never an error
    assert load_rules([rules], cache_dir=cache).rules[0].info.level is Level.CRITICAL


def test_parallel_run_matches_sequential(shared_data: Path) -> None:
    """Two worker processes give the same detections, in the same order, as one."""
    from casefile.hunt import run_hunt

    folder = "rules/windows/registry"
    rs = load_rules([shared_data / "sigma" / folder])
    evidence = sorted((shared_data / "sigma" / "regression_data" / folder).rglob("*.evtx"))[:12]
    one = run_hunt(evidence, rs)
    two = run_hunt(evidence, rs, workers=2)
    assert one.stats.detections >= 12 and one.stats.events == two.stats.events
    key = [(d.rule.id, d.file, d.record_id, dict(d.matched)) for d in one.detections]
    assert key == [(d.rule.id, d.file, d.record_id, dict(d.matched)) for d in two.detections]


def test_an_event_id_of_infinity_is_no_event_id(rules_from: Callable[..., RuleSet], tmp_path: Path) -> None:
    """JSON logs may hold `Infinity` (Python's json reads it): such an EventID routes as none, as text does,
    on both paths, and the hunt goes on to the next record."""
    from casefile.hunt import run_hunt

    rs = rules_from(PROC.format(level="medium").replace("category: process_creation", "service: sysmon"))
    log = tmp_path / "odd.jsonl"
    whoami = (
        r'"Channel": "Microsoft-Windows-Sysmon/Operational", '
        r'"Image": "C:\\w\\whoami.exe", "CommandLine": "whoami /all"'
    )
    log.write_text(
        "".join(f'{{"EventID": {eid}, "EventRecordID": {n}, {whoami}}}\n' for n, eid in enumerate(
            ["Infinity", "-Infinity", '"x"', "1"]
        )),
        encoding="utf-8",
    )
    for vectorised in (False, True):
        result = run_hunt([log], rs, vectorised=vectorised)
        assert result.stats.events == 4 and not result.warnings
        assert [d.record_id for d in result.detections] == [0, 1, 2, 3]
