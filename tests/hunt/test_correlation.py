"""Sigma correlation rules: real pySigma parsing of multi-document YAML, hand-built base-rule hits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.rule import SigmaRule

from casefile.errors import RuleError
from casefile.hunt import hunt, load_rules
from casefile.hunt.correlation import (
    CompiledCorrelation,
    CorrelationType,
    ExprAnd,
    ExprNot,
    ExprRule,
    Operator,
    compile_correlation,
    correlate,
    input_rule_ids,
    rule_key,
    suppressed_rule_ids,
)
from casefile.models import Detection, DetectionKind, Event, IngestWarning, Level, RuleInfo

T0 = datetime(2022, 7, 15, 8, 0, tzinfo=UTC)

ID_A = "aaaaaaaa-0000-4000-8000-00000000000a"
ID_B = "bbbbbbbb-0000-4000-8000-00000000000b"
ID_C = "cccccccc-0000-4000-8000-00000000000c"
ID_FAIL = "f0000000-0000-4000-8000-0000000000f1"
ID_OK = "f0000000-0000-4000-8000-0000000000f2"

BASE = f"""
title: Recon whoami
id: {ID_A}
name: recon_a
level: low
tags: [attack.discovery, attack.t1033]
logsource: {{product: windows, category: process_creation}}
detection:
    sel: {{Image|endswith: '\\whoami.exe'}}
    condition: sel
---
title: Recon net group
id: {ID_B}
name: recon_b
level: low
tags: [attack.t1069.002]
logsource: {{product: windows, category: process_creation}}
detection:
    sel: {{Image|endswith: '\\net.exe'}}
    condition: sel
---
title: Recon nltest
id: {ID_C}
name: recon_c
level: low
logsource: {{product: windows, category: process_creation}}
detection:
    sel: {{Image|endswith: '\\nltest.exe'}}
    condition: sel
---
title: Failed logon
id: {ID_FAIL}
name: failed_logon
logsource: {{product: windows, service: security}}
detection:
    sel: {{EventID: 4625}}
    condition: sel
---
title: Successful logon
id: {ID_OK}
name: successful_logon
logsource: {{product: windows, service: security}}
detection:
    sel: {{EventID: 4624}}
    condition: sel
"""


def compile_all(correlation_yaml: str) -> list[CompiledCorrelation]:
    """Parse base rules + correlation documents with pySigma and compile every correlation."""
    collection = SigmaCollection.from_yaml(BASE + "\n---\n" + correlation_yaml)
    return [compile_correlation(r) for r in collection.rules if isinstance(r, SigmaCorrelationRule)]


def _infos() -> dict[str, RuleInfo]:
    out: dict[str, RuleInfo] = {}
    for r in SigmaCollection.from_yaml(BASE).rules:
        assert isinstance(r, SigmaRule)
        out[str(r.name)] = RuleInfo(
            id=rule_key(r),
            title=r.title,
            level=Level.parse(str(r.level) if r.level else None),
            status=None,
            author=None,
            tags=tuple(str(t) for t in r.tags),
        )
    return out


INFO = _infos()
_record = iter(range(1, 1_000_000))


def hit(rule: str, seconds: float, **fields: Any) -> Detection:
    """A base-rule detection `seconds` after T0; `Computer` defaults to ws1."""
    fields.setdefault("Computer", "ws1")
    record = next(_record)
    return Detection(
        rule=INFO[rule],
        kind=DetectionKind.SIGMA,
        timestamp=T0 + timedelta(seconds=seconds),
        computer=fields["Computer"],
        channel="Security",
        event_id=4688,
        record_id=record,
        file="Security.evtx",
        matched={},
        fields=fields,
    )


def fired(
    correlations: Sequence[CompiledCorrelation], detections: Sequence[Detection]
) -> list[tuple[str, dict[str, Any], datetime | None]]:
    """(correlation title, group, timestamp) of every correlation detection."""
    out = []
    for d in correlate(correlations, detections):
        assert d.kind is DetectionKind.CORRELATION
        out.append((d.rule.title, dict(d.group), d.timestamp))
    return out


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# ------------------------------------------------------------------------------------------------
# compiling


def test_compile_reads_every_part_of_the_rule() -> None:
    (corr,) = compile_all(
        f"""
title: Recon burst
id: 99999999-0000-4000-8000-000000000001
name: recon_burst
author: CERT
level: high
status: experimental
tags: [attack.discovery]
correlation:
    type: temporal
    rules: [recon_a, {ID_B}]
    group-by: [Computer, user]
    timespan: 90s
    generate: true
    aliases:
        user:
            recon_a: User
            {ID_B}: SubjectUserName
"""
    )
    assert corr.id == "99999999-0000-4000-8000-000000000001"
    assert corr.name == "recon_burst"
    assert corr.type is CorrelationType.TEMPORAL
    assert corr.rule_ids == (ID_A, ID_B)  # a name and an id both resolve to the rule's id
    assert [r.name for r in corr.rules] == ["recon_a", "recon_b"]
    assert corr.group_by == ("Computer", "user")
    assert corr.timespan == timedelta(seconds=90)
    assert corr.generate is True
    assert corr.condition.op is Operator.GTE and corr.condition.threshold == 2  # temporal default
    assert corr.aliases == {"user": {ID_A: "User", ID_B: "SubjectUserName"}}
    assert corr.field_for("user", 0) == "User"
    assert corr.field_for("user", 1) == "SubjectUserName"
    assert corr.field_for("Computer", 1) == "Computer"
    assert corr.info.level is Level.HIGH
    assert corr.info.author == "CERT"
    assert corr.info.status == "experimental"
    assert corr.info.tactics == ("discovery",)
    assert corr.sliding is True


def test_compile_value_condition_and_percentile() -> None:
    (corr,) = compile_all(
        """
title: Big transfers
correlation:
    type: value_percentile
    rules: recon_a
    group-by: Computer
    timespan: 1h
    condition: {field: Bytes, percentile: 90, gt: 1000}
"""
    )
    assert corr.id == "Big transfers"  # no id and no name: the title identifies it
    assert corr.condition.fields == ("Bytes",)
    assert corr.condition.percentile == 90
    assert corr.condition.op is Operator.GT
    assert corr.sliding is False  # a percentile is not monotone: evaluated when the window closes


def test_compile_value_percentile_without_percentile_is_a_rule_error() -> None:
    with pytest.raises(RuleError, match="needs 'percentile'"):
        compile_all(
            """
title: No percentile
id: 99999999-0000-4000-8000-000000000002
correlation:
    type: value_percentile
    rules: recon_a
    group-by: Computer
    timespan: 1h
    condition: {field: Bytes, lte: 1}
"""
        )


def test_compile_unresolved_reference_is_a_rule_error() -> None:
    collection = SigmaCollection.from_yaml(
        """
title: Dangling
id: 99999999-0000-4000-8000-000000000003
correlation:
    type: event_count
    rules: [does_not_exist]
    group-by: Computer
    timespan: 1m
    condition: {gte: 2}
""",
        resolve_references=False,
    )
    (rule,) = collection.rules
    assert isinstance(rule, SigmaCorrelationRule)
    with pytest.raises(RuleError, match="does_not_exist") as err:
        compile_correlation(rule)
    assert err.value.rule_id == "99999999-0000-4000-8000-000000000003"


def test_odd_correlations_are_skipped_one_by_one(tmp_path: Path) -> None:
    """A dangling reference, a timespan no date range holds, a document pySigma cannot read: each is
    skipped with its reason, and the correlation beside them loads (one dangling reference stopped the
    whole load: pySigma resolved every correlation at once)."""

    def corr(n: int, rules: str, timespan: str = "1m") -> str:
        return (
            f"title: c{n}\nid: 99999999-0000-4000-8000-0000000001{n:02d}\ncorrelation:\n"
            f"    type: event_count\n    rules: {rules}\n    group-by: Computer\n"
            f"    timespan: {timespan}\n    condition: {{gte: 2}}\n"
        )

    (tmp_path / "base.yml").write_text(BASE, encoding="utf-8")
    (tmp_path / "c1.yml").write_text(corr(1, "[does_not_exist]"), encoding="utf-8")
    (tmp_path / "c2.yml").write_text(corr(2, "[recon_a]", timespan="99999999999d"), encoding="utf-8")
    (tmp_path / "c3.yml").write_text(corr(3, "[recon_a]").replace("condition: {gte: 2}", "condition: 5"),
                                     encoding="utf-8")
    (tmp_path / "c4.yml").write_text(corr(4, "[recon_a]"), encoding="utf-8")
    rs = load_rules([tmp_path])
    assert [c.info.title for c in rs.correlations] == ["c4"]
    reasons = {Path(s.path).name: s.reason for s in rs.skipped}
    assert set(reasons) == {"c1.yml", "c2.yml", "c3.yml"}
    assert "does_not_exist" in reasons["c1.yml"]
    assert "longer than any date range" in reasons["c2.yml"]


def test_compile_ordered_extended_condition_with_or_is_a_rule_error() -> None:
    with pytest.raises(RuleError, match="temporal_ordered supports only 'and'"):
        compile_all(
            """
title: Ordered or
id: 99999999-0000-4000-8000-000000000004
correlation:
    type: temporal_ordered
    rules: [recon_a, recon_b]
    group-by: Computer
    timespan: 1m
    condition: recon_a or recon_b
"""
        )


# ------------------------------------------------------------------------------------------------
# event_count


def event_count(timespan: str = "5m", condition: str = "gte: 3", group_by: str = "[Computer]") -> str:
    return f"""
title: Logon brute force
id: 99999999-0000-4000-8000-000000000010
level: high
correlation:
    type: event_count
    rules: failed_logon
    group-by: {group_by}
    timespan: {timespan}
    condition: {{{condition}}}
"""


def test_event_count_fires_only_for_the_group_that_reached_the_threshold() -> None:
    corrs = compile_all(event_count())
    dets = [
        hit("failed_logon", 0, Computer="dc1"),
        hit("failed_logon", 10, Computer="dc2"),
        hit("failed_logon", 60, Computer="dc1"),
        hit("failed_logon", 70, Computer="dc2"),
        hit("failed_logon", 120, Computer="dc1"),
        hit("failed_logon", 130, Computer="ws9"),
    ]
    out = correlate(corrs, dets)
    assert len(out) == 1
    (d,) = out
    assert d.rule.title == "Logon brute force" and d.rule.level is Level.HIGH
    assert d.group == {"Computer": "dc1"}
    assert d.timestamp == at(120)
    assert d.record_id == dets[4].record_id  # coordinates of the event that completed it
    assert d.matched["value"] == 3
    assert d.matched["event_count"] == 3
    assert d.matched["rules"] == [ID_FAIL]
    assert [e["record_id"] for e in d.matched["events"]] == [
        dets[0].record_id,
        dets[2].record_id,
        dets[4].record_id,
    ]


def test_event_count_spread_wider_than_the_timespan_does_not_fire() -> None:
    corrs = compile_all(event_count())
    # three failures, but the first and last are 5m01s apart: no 5-minute window holds all three
    dets = [hit("failed_logon", 0), hit("failed_logon", 150), hit("failed_logon", 301)]
    assert correlate(corrs, dets) == []


def test_event_count_window_boundary_is_inclusive() -> None:
    corrs = compile_all(event_count(condition="gte: 2"))
    assert fired(corrs, [hit("failed_logon", 0), hit("failed_logon", 300)]) == [
        ("Logon brute force", {"Computer": "ws1"}, at(300))
    ]
    assert fired(corrs, [hit("failed_logon", 0), hit("failed_logon", 300.001)]) == []


def test_event_count_emits_once_per_non_overlapping_window() -> None:
    corrs = compile_all(event_count())
    dets = [hit("failed_logon", s) for s in range(0, 70, 10)]  # 7 failures in one minute
    # fires at the 3rd, then the 6th; the 7th starts a window that never fills
    assert [d.timestamp for d in correlate(corrs, dets)] == [at(20), at(50)]


def test_event_count_gt_needs_one_more() -> None:
    corrs = compile_all(event_count(condition="gt: 3"))
    assert fired(corrs, [hit("failed_logon", s) for s in (0, 1, 2)]) == []
    assert len(fired(corrs, [hit("failed_logon", s) for s in (0, 1, 2, 3)])) == 1


def test_event_count_input_order_does_not_matter() -> None:
    corrs = compile_all(event_count())
    dets = [hit("failed_logon", 240), hit("failed_logon", 0), hit("failed_logon", 120)]
    assert fired(corrs, dets) == [("Logon brute force", {"Computer": "ws1"}, at(240))]


def test_event_count_lt_is_judged_on_whole_windows() -> None:
    # "fewer than 3 in 5 minutes": ws1 has 2 in its window, dc1 has 4, so only ws1 fires,
    # once, when its window is complete (at the last event of the window)
    corrs = compile_all(event_count(condition="lt: 3"))
    dets = [
        hit("failed_logon", 0, Computer="ws1"),
        hit("failed_logon", 100, Computer="ws1"),
        *(hit("failed_logon", s, Computer="dc1") for s in (0, 10, 20, 30)),
    ]
    assert fired(corrs, dets) == [("Logon brute force", {"Computer": "ws1"}, at(100))]


def test_event_count_eq_counts_the_tumbling_window() -> None:
    corrs = compile_all(event_count(condition="eq: 2"))
    # window 1 [0, 300]: 3 events (no); window 2 starts at 400: [400, 700] holds 2 (yes)
    dets = [hit("failed_logon", s) for s in (0, 100, 200, 400, 650, 1000, 1001, 1002)]
    assert [d.timestamp for d in correlate(corrs, dets)] == [at(650)]


def test_event_count_without_group_by_is_one_global_group() -> None:
    (corr,) = compile_all(
        """
title: Anywhere
id: 99999999-0000-4000-8000-000000000011
correlation:
    type: event_count
    rules: failed_logon
    timespan: 1m
    condition: {gte: 2}
"""
    )
    out = correlate([corr], [hit("failed_logon", 0, Computer="a"), hit("failed_logon", 5, Computer="b")])
    assert [(d.group, d.computer) for d in out] == [({}, "b")]


def test_event_count_group_by_two_fields_is_and() -> None:
    corrs = compile_all(event_count(condition="gte: 2", group_by="[Computer, TargetUserName]"))
    dets = [
        hit("failed_logon", 0, TargetUserName="alice"),
        hit("failed_logon", 1, TargetUserName="bob"),
        hit("failed_logon", 2, TargetUserName="bob", Computer="dc1"),
        hit("failed_logon", 3, TargetUserName="bob"),
    ]
    assert fired(corrs, dets) == [("Logon brute force", {"Computer": "ws1", "TargetUserName": "bob"}, at(3))]


def test_missing_group_by_field_is_warned_and_not_counted() -> None:
    corrs = compile_all(event_count(condition="gte: 2", group_by="[TargetUserName]"))
    warnings: list[IngestWarning] = []
    dets = [hit("failed_logon", 0, TargetUserName="bob"), hit("failed_logon", 1), hit("failed_logon", 2)]
    assert correlate(corrs, dets, on_warning=warnings.append) == []
    assert len(warnings) == 1
    assert warnings[0].file == "Security.evtx"
    assert warnings[0].record == dets[1].record_id
    assert "2 detection(s) lack group-by field(s) TargetUserName" in warnings[0].reason


def test_detection_without_timestamp_is_warned_and_skipped() -> None:
    corrs = compile_all(event_count(condition="gte: 2"))
    untimed = Detection(
        rule=INFO["failed_logon"],
        kind=DetectionKind.SIGMA,
        timestamp=None,
        computer="ws1",
        channel="Security",
        event_id=4625,
        record_id=77,
        file="broken.json",
        fields={"Computer": "ws1"},
    )
    warnings: list[IngestWarning] = []
    assert correlate(corrs, [hit("failed_logon", 0), untimed], on_warning=warnings.append) == []
    assert [(w.file, w.record) for w in warnings] == [("broken.json", 77)]
    assert "no timestamp" in warnings[0].reason


def test_events_at_the_ends_of_the_calendar_are_counted() -> None:
    # a forged or clock-reset record stamped at the first or last instants `datetime` holds
    corrs = compile_all(event_count(condition="gte: 2"))
    first = datetime.min.replace(tzinfo=UTC)
    last = datetime.max.replace(tzinfo=UTC)
    for base in (first, last - timedelta(seconds=60)):
        dets = [replace(hit("failed_logon", 0), timestamp=base + timedelta(seconds=s)) for s in (0, 30)]
        assert [d.timestamp for d in correlate(corrs, dets)] == [base + timedelta(seconds=30)]


def test_naive_timestamps_are_taken_as_utc() -> None:
    corrs = compile_all(event_count(condition="gte: 2"))
    naive = Detection(
        rule=INFO["failed_logon"],
        kind=DetectionKind.SIGMA,
        timestamp=datetime(2022, 7, 15, 8, 0, 30),
        computer="ws1",
        channel=None,
        event_id=None,
        record_id=None,
        file=None,
        fields={"Computer": "ws1"},
    )
    assert [d.timestamp for d in correlate(corrs, [hit("failed_logon", 0), naive])] == [at(30)]


# ------------------------------------------------------------------------------------------------
# value_count


VALUE_COUNT = """
title: Password spray
id: 99999999-0000-4000-8000-000000000020
correlation:
    type: value_count
    rules: failed_logon
    group-by: IpAddress
    timespan: 10m
    condition: {field: TargetUserName, gte: 3}
"""


def test_value_count_counts_distinct_values() -> None:
    corrs = compile_all(VALUE_COUNT)
    same_user_often = [hit("failed_logon", s, IpAddress="10.0.0.5", TargetUserName="admin") for s in range(5)]
    assert correlate(corrs, same_user_often) == []
    spray = [
        hit("failed_logon", 0, IpAddress="10.0.0.9", TargetUserName="alice"),
        hit("failed_logon", 1, IpAddress="10.0.0.9", TargetUserName="alice"),
        hit("failed_logon", 2, IpAddress="10.0.0.9", TargetUserName="bob"),
        hit("failed_logon", 3, IpAddress="10.0.0.7", TargetUserName="carol"),  # other source
        hit("failed_logon", 4, IpAddress="10.0.0.9", TargetUserName="carol"),
    ]
    out = correlate(corrs, same_user_often + spray)
    assert [(d.group, d.timestamp) for d in out] == [({"IpAddress": "10.0.0.9"}, at(4))]
    assert out[0].matched["value"] == 3
    assert out[0].matched["values"] == ["alice", "bob", "carol"]
    assert out[0].matched["field"] == "TargetUserName"


def test_value_count_forgets_values_that_left_the_window() -> None:
    corrs = compile_all(VALUE_COUNT)
    dets = [
        hit("failed_logon", 0, IpAddress="10.0.0.9", TargetUserName="alice"),
        hit("failed_logon", 300, IpAddress="10.0.0.9", TargetUserName="bob"),
        hit("failed_logon", 601, IpAddress="10.0.0.9", TargetUserName="carol"),  # alice is 10m01s old
    ]
    assert correlate(corrs, dets) == []


# ------------------------------------------------------------------------------------------------
# temporal and temporal_ordered


def temporal(
    kind: str, timespan: str = "5m", extra: str = "", rules: str = "recon_a, recon_b, recon_c"
) -> str:
    return f"""
title: Recon sequence
id: 99999999-0000-4000-8000-000000000030
correlation:
    type: {kind}
    rules: [{rules}]
    group-by: [Computer]
    timespan: {timespan}
{extra}
"""


def test_temporal_requires_every_rule_in_one_group() -> None:
    corrs = compile_all(temporal("temporal"))
    across_hosts = [
        hit("recon_a", 0, Computer="h1"),
        hit("recon_b", 10, Computer="h2"),
        hit("recon_c", 20, Computer="h1"),
    ]
    assert fired(corrs, across_hosts) == []
    one_host = [
        hit("recon_c", 0, Computer="h1"),
        hit("recon_a", 10, Computer="h1"),
        hit("recon_b", 20, Computer="h1"),
    ]
    assert fired(corrs, across_hosts + one_host) == [("Recon sequence", {"Computer": "h1"}, at(20))]


def test_temporal_repeated_rule_is_not_every_rule() -> None:
    corrs = compile_all(temporal("temporal"))
    assert fired(corrs, [hit("recon_a", s) for s in range(5)] + [hit("recon_b", 6)]) == []


def test_temporal_all_rules_must_fit_the_timespan() -> None:
    corrs = compile_all(temporal("temporal"))
    assert fired(corrs, [hit("recon_a", 0), hit("recon_b", 200), hit("recon_c", 301)]) == []
    # a fresh recon_a inside the window completes it
    assert fired(
        corrs, [hit("recon_a", 0), hit("recon_b", 200), hit("recon_c", 301), hit("recon_a", 302)]
    ) == [("Recon sequence", {"Computer": "ws1"}, at(302))]


def test_temporal_count_condition_counts_distinct_rules() -> None:
    corrs = compile_all(temporal("temporal", extra="    condition: {gte: 2}"))
    assert fired(corrs, [hit("recon_c", 0), hit("recon_c", 1)]) == []
    assert fired(corrs, [hit("recon_c", 0), hit("recon_a", 1)]) == [
        ("Recon sequence", {"Computer": "ws1"}, at(1))
    ]


def test_temporal_ordered_fires_only_in_listed_order() -> None:
    corrs = compile_all(temporal("temporal_ordered"))
    assert fired(corrs, [hit("recon_a", 0), hit("recon_b", 10), hit("recon_c", 20)]) == [
        ("Recon sequence", {"Computer": "ws1"}, at(20))
    ]


@pytest.mark.parametrize(
    "sequence",
    [
        ("recon_a", "recon_c", "recon_b"),  # order broken after the first step
        ("recon_b", "recon_a", "recon_c"),  # order broken at the first step
        ("recon_c", "recon_b", "recon_a"),
        ("recon_b", "recon_c", "recon_a"),
    ],
)
def test_temporal_ordered_rejects_every_other_order(sequence: tuple[str, str, str]) -> None:
    corrs = compile_all(temporal("temporal_ordered"))
    assert fired(corrs, [hit(rule, 10 * i) for i, rule in enumerate(sequence)]) == []
    # the unordered variant accepts all of them
    assert (
        len(fired(compile_all(temporal("temporal")), [hit(rule, 10 * i) for i, rule in enumerate(sequence)]))
        == 1
    )


def test_temporal_ordered_finds_the_order_among_noise() -> None:
    corrs = compile_all(temporal("temporal_ordered"))
    # C and B come too early; A, B, C in order is still there: A(20) < B(30) < C(40)
    sequence = ["recon_c", "recon_b", "recon_a", "recon_b", "recon_c"]
    assert fired(corrs, [hit(rule, 10 * i) for i, rule in enumerate(sequence)]) == [
        ("Recon sequence", {"Computer": "ws1"}, at(40))
    ]


def test_temporal_ordered_respects_group_and_timespan() -> None:
    corrs = compile_all(temporal("temporal_ordered"))
    split = [
        hit("recon_a", 0, Computer="h1"),
        hit("recon_b", 10, Computer="h2"),
        hit("recon_c", 20, Computer="h1"),
    ]
    assert fired(corrs, split) == []
    too_slow = [hit("recon_a", 0), hit("recon_b", 100), hit("recon_c", 301)]
    assert fired(corrs, too_slow) == []
    # a later A restarts the chain, but B must follow it again
    assert fired(corrs, [*too_slow, hit("recon_a", 302), hit("recon_c", 303)]) == []
    assert fired(corrs, [*too_slow, hit("recon_a", 302), hit("recon_b", 303), hit("recon_c", 304)]) == [
        ("Recon sequence", {"Computer": "ws1"}, at(304))
    ]


def test_temporal_ordered_equal_timestamps_keep_input_order() -> None:
    corrs = compile_all(temporal("temporal_ordered"))
    assert len(fired(corrs, [hit("recon_a", 5), hit("recon_b", 5), hit("recon_c", 5)])) == 1
    assert fired(corrs, [hit("recon_a", 5), hit("recon_c", 5), hit("recon_b", 5)]) == []


def test_temporal_ordered_boundary_is_inclusive() -> None:
    corrs = compile_all(temporal("temporal_ordered", timespan="60s"))
    assert len(fired(corrs, [hit("recon_a", 0), hit("recon_b", 30), hit("recon_c", 60)])) == 1
    assert fired(corrs, [hit("recon_a", 0), hit("recon_b", 30), hit("recon_c", 60.5)]) == []


def test_extended_temporal_condition_with_not() -> None:
    (corr,) = compile_all(
        temporal("temporal", extra="    condition: recon_a and not recon_b", rules="recon_a, recon_b")
    )
    assert corr.expression == ExprAnd((ExprRule(0), ExprNot(ExprRule(1))))
    assert corr.sliding is False
    dets = [
        hit("recon_a", 0, Computer="h1"),
        hit("recon_a", 5, Computer="h1"),
        hit("recon_a", 0, Computer="h2"),
        hit("recon_b", 200, Computer="h2"),  # h2 saw B in the same window: no
        hit("recon_b", 0, Computer="h3"),
    ]
    assert fired([corr], dets) == [("Recon sequence", {"Computer": "h1"}, at(5))]


def test_extended_temporal_condition_with_or_is_sliding() -> None:
    (corr,) = compile_all(temporal("temporal", extra="    condition: recon_a and (recon_b or recon_c)"))
    assert corr.sliding is True
    assert fired([corr], [hit("recon_a", 0), hit("recon_a", 1)]) == []
    assert fired([corr], [hit("recon_c", 0), hit("recon_a", 1)]) == [
        ("Recon sequence", {"Computer": "ws1"}, at(1))
    ]


# ------------------------------------------------------------------------------------------------
# aliases


def test_aliases_map_different_fields_to_one_group() -> None:
    corrs = compile_all(
        """
title: Error then connection back
id: 99999999-0000-4000-8000-000000000040
correlation:
    type: temporal
    rules: [recon_a, recon_b]
    group-by: [internal_ip, remote_ip]
    timespan: 10s
    aliases:
        internal_ip:
            recon_a: DestinationIp
            recon_b: SourceIp
        remote_ip:
            recon_a: SourceIp
            recon_b: DestinationIp
"""
    )
    dets = [
        hit("recon_a", 0, SourceIp="203.0.113.7", DestinationIp="10.0.0.2"),
        hit("recon_b", 1, SourceIp="10.0.0.3", DestinationIp="203.0.113.7"),  # other internal host
        hit("recon_b", 2, SourceIp="203.0.113.7", DestinationIp="10.0.0.2"),  # not swapped
        hit("recon_b", 3, SourceIp="10.0.0.2", DestinationIp="203.0.113.7"),  # swapped: matches
    ]
    assert fired(corrs, dets) == [
        ("Error then connection back", {"internal_ip": "10.0.0.2", "remote_ip": "203.0.113.7"}, at(3))
    ]


# ------------------------------------------------------------------------------------------------
# value_sum / value_avg / value_percentile / value_median


def value_rule(kind: str, condition: str) -> str:
    return f"""
title: Volume
id: 99999999-0000-4000-8000-000000000050
correlation:
    type: {kind}
    rules: recon_a
    group-by: Computer
    timespan: 1m
    condition: {{field: Bytes, {condition}}}
"""


def test_value_sum_skips_non_numeric_values() -> None:
    corrs = compile_all(value_rule("value_sum", "gte: 1000"))
    dets = [
        hit("recon_a", 0, Bytes=400),
        hit("recon_a", 1, Bytes="n/a"),
        hit("recon_a", 2, Bytes=True),  # a flag, not a number
        hit("recon_a", 3, Bytes="500"),
        hit("recon_a", 4),
        hit("recon_a", 5, Bytes="0x64"),  # 100
        hit("recon_a", 0, Bytes=999, Computer="other"),
    ]
    out = correlate(corrs, dets)
    assert [(d.group, d.timestamp, d.matched["value"]) for d in out] == [({"Computer": "ws1"}, at(5), 1000)]
    assert out[0].matched["numeric_values"] == 3


def test_value_sum_window_slides() -> None:
    corrs = compile_all(value_rule("value_sum", "gt: 100"))
    assert correlate(corrs, [hit("recon_a", 0, Bytes=60), hit("recon_a", 61, Bytes=60)]) == []


def test_value_avg_over_the_window() -> None:
    corrs = compile_all(value_rule("value_avg", "gt: 10"))
    low = [hit("recon_a", s, Bytes=v, Computer="a") for s, v in ((0, 2), (10, 30), (20, 1))]  # avg 11
    mixed = [hit("recon_a", s, Bytes=v, Computer="b") for s, v in ((0, 40), (10, 0), (20, 0))]  # avg 13.3
    calm = [hit("recon_a", s, Bytes=v, Computer="c") for s, v in ((0, 10), (10, 10))]  # avg 10
    out = correlate(corrs, low + mixed + calm)
    assert sorted((d.group["Computer"], d.matched["value"]) for d in out) == [("a", 11.0), ("b", 40 / 3)]


def test_value_percentile_and_median() -> None:
    values = [1, 2, 3, 4, 100]
    dets = [hit("recon_a", i, Bytes=v) for i, v in enumerate(values)]
    (p90,) = compile_all(value_rule("value_percentile", "percentile: 90, gte: 50"))
    out = correlate([p90], dets)
    assert [d.matched["value"] for d in out] == [pytest.approx(61.6)]  # 4 + 0.6 * (100 - 4)
    assert out[0].timestamp == at(4)
    (median,) = compile_all(value_rule("value_median", "gt: 3"))
    assert correlate([median], dets) == []
    assert [d.matched["value"] for d in correlate([median], [*dets, hit("recon_a", 5, Bytes=50)])] == [3.5]


# ------------------------------------------------------------------------------------------------
# generate flag and chaining


def test_generate_false_suppresses_referenced_rules_by_id_and_name() -> None:
    off = compile_all(temporal("temporal"))
    on = compile_all(temporal("temporal", extra="    generate: true"))
    assert suppressed_rule_ids(off) == {ID_A, ID_B, ID_C, "recon_a", "recon_b", "recon_c"}
    assert suppressed_rule_ids(on) == frozenset()
    assert input_rule_ids(on) == {ID_A, ID_B, ID_C, "recon_a", "recon_b", "recon_c"}


CHAIN = f"""
title: Brute force then success
id: 99999999-0000-4000-8000-000000000060
level: critical
correlation:
    type: temporal_ordered
    rules: [many_failed, successful_logon]
    group-by: TargetUserName
    timespan: 10m
---
title: Many failed logons
id: 99999999-0000-4000-8000-000000000061
name: many_failed
correlation:
    type: event_count
    rules: {ID_FAIL}
    group-by: TargetUserName
    timespan: 10m
    condition: {{gte: 3}}
"""


def test_chained_correlation_failed_logins_then_success() -> None:
    corrs = compile_all(CHAIN)
    outer = next(c for c in corrs if c.name is None)
    inner = next(c for c in corrs if c.name == "many_failed")
    assert [r.is_correlation for r in outer.rules] == [True, False]
    assert suppressed_rule_ids(corrs) >= {inner.id, "many_failed", ID_FAIL, ID_OK}
    dets = [
        hit("successful_logon", 0, TargetUserName="alice"),  # success before the failures: no
        *(hit("failed_logon", 10 + s, TargetUserName="alice") for s in range(3)),
        *(hit("failed_logon", 10 + s, TargetUserName="bob") for s in range(2)),  # only two
        hit("successful_logon", 100, TargetUserName="bob"),
        hit("successful_logon", 200, TargetUserName="alice"),
    ]
    out = correlate(corrs, dets)
    # the inner correlation feeds the outer one and, being suppressed, is not reported itself
    assert [(d.rule.id, dict(d.group), d.timestamp) for d in out] == [
        (outer.id, {"TargetUserName": "alice"}, at(200))
    ]
    assert out[0].rule.level is Level.CRITICAL
    # the window also holds alice's early success (not part of the chain): listed, first seen first
    assert out[0].matched["rules"] == [ID_OK, inner.id]
    assert out[0].matched["value"] == 2
    assert out[0].matched["events_truncated"] is False


def test_chained_inner_hits_are_reported_when_outer_generates() -> None:
    corrs = compile_all(
        CHAIN.replace("    timespan: 10m\n---", "    timespan: 10m\n    generate: true\n---", 1)
    )
    dets = [
        *(hit("failed_logon", s, TargetUserName="alice") for s in range(3)),
        hit("successful_logon", 9, TargetUserName="alice"),
    ]
    titles = [d.rule.title for d in correlate(corrs, dets)]
    assert titles == ["Many failed logons", "Brute force then success"]


def test_correlation_hits_carry_base_rule_techniques() -> None:
    corrs = compile_all(temporal("temporal"))
    (d,) = correlate(corrs, [hit("recon_a", 0), hit("recon_b", 1), hit("recon_c", 2)])
    assert d.matched["techniques"] == ["T1033", "T1069.002"]
    assert d.matched["rules"] == [ID_A, ID_B, ID_C]
    assert d.to_record()["kind"] == "correlation"


def test_unrelated_detections_are_ignored() -> None:
    corrs = compile_all(event_count(condition="gte: 2"))
    other = [hit("recon_a", s) for s in range(10)]
    assert correlate(corrs, other) == []


def test_value_sum_is_exact_after_values_leave_the_window() -> None:
    # a float running total would lose the 1.0 next to -1e16 and stay below 1 after eviction
    corrs = compile_all(value_rule("value_sum", "gte: 1"))
    dets = [hit("recon_a", 0, Bytes=-1e16), hit("recon_a", 50, Bytes=1.0), hit("recon_a", 61, Bytes=0.5)]
    assert [(d.timestamp, d.matched["value"]) for d in correlate(corrs, dets)] == [(at(61), 1.5)]


def test_reference_cycle_is_a_rule_error() -> None:
    collection = SigmaCollection.from_yaml(
        """
title: X
name: corr_x
correlation: {type: event_count, rules: [corr_y], group-by: [Computer], timespan: 1m, condition: {gte: 1}}
---
title: Y
name: corr_y
correlation: {type: event_count, rules: [corr_x], group-by: [Computer], timespan: 1m, condition: {gte: 1}}
"""
    )
    corrs = [compile_correlation(r) for r in collection.rules if isinstance(r, SigmaCorrelationRule)]
    with pytest.raises(RuleError, match=r"reference cycle: corr_(x|y) -> corr_(x|y) -> corr_(x|y)"):
        correlate(corrs, [])


def test_alias_may_name_a_rule_listed_by_id() -> None:
    (corr,) = compile_all(
        f"""
title: Same account
id: 99999999-0000-4000-8000-000000000041
correlation:
    type: temporal
    rules: [{ID_FAIL}, {ID_OK}]
    group-by: [account]
    timespan: 1m
    aliases:
        account:
            failed_logon: TargetUserName
            successful_logon: SubjectUserName
"""
    )
    assert corr.aliases == {"account": {ID_FAIL: "TargetUserName", ID_OK: "SubjectUserName"}}
    dets = [
        hit("failed_logon", 0, TargetUserName="alice"),
        hit("successful_logon", 1, SubjectUserName="bob", TargetUserName="alice"),
        hit("successful_logon", 2, SubjectUserName="alice"),
    ]
    assert fired([corr], dets) == [("Same account", {"account": "alice"}, at(2))]


def test_value_count_over_several_fields_counts_distinct_combinations() -> None:
    (corr,) = compile_all(
        """
title: Lateral spread
id: 99999999-0000-4000-8000-000000000021
correlation:
    type: value_count
    rules: successful_logon
    group-by: TargetUserName
    timespan: 1h
    condition: {field: [Computer, LogonType], gte: 3}
"""
    )
    assert corr.condition.fields == ("Computer", "LogonType")
    dets = [
        hit("successful_logon", 0, TargetUserName="svc", Computer="h1", LogonType=3),
        hit("successful_logon", 1, TargetUserName="svc", Computer="h1", LogonType=3),
        hit("successful_logon", 2, TargetUserName="svc", Computer="h1", LogonType=10),
        hit("successful_logon", 3, TargetUserName="svc", Computer="h2"),  # no LogonType: not a value
    ]
    assert correlate([corr], dets) == []
    out = correlate(
        [corr], [*dets, hit("successful_logon", 4, TargetUserName="svc", Computer="h2", LogonType=3)]
    )
    assert [(d.group, d.matched["values"]) for d in out] == [
        ({"TargetUserName": "svc"}, [("h1", 3), ("h1", 10), ("h2", 3)])
    ]


def test_chained_correlation_passes_on_base_techniques_and_path() -> None:
    collection = SigmaCollection.from_yaml(
        BASE
        + """
---
title: Recon then logon
id: 99999999-0000-4000-8000-000000000070
correlation:
    type: temporal_ordered
    rules: [recon_pair, successful_logon]
    group-by: Computer
    timespan: 5m
---
title: Recon pair
id: 99999999-0000-4000-8000-000000000071
name: recon_pair
correlation:
    type: temporal
    rules: [recon_a, recon_b]
    group-by: Computer
    timespan: 5m
"""
    )
    corrs = [
        compile_correlation(r, path="rules/mr_recon.yml")
        for r in collection.rules
        if isinstance(r, SigmaCorrelationRule)
    ]
    assert {c.info.path for c in corrs} == {"rules/mr_recon.yml"}
    (d,) = correlate(corrs, [hit("recon_b", 0), hit("recon_a", 1), hit("successful_logon", 2)])
    assert d.rule.title == "Recon then logon"
    assert d.matched["techniques"] == ["T1069.002", "T1033"]


# ------------------------------------------------------------------------------------------------
# through the hunt engine: the specification's own chained example, loaded from a rule file


SPEC_EXAMPLE = """
title: Correlation - Multiple Failed Logins Followed by Successful Login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
status: experimental
author: Florian Roth (Nextron Systems)
correlation:
    type: temporal_ordered
    rules:
        - multiple_failed_login
        - successful_login
    group-by:
        - User
    timespan: 10m
level: high
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
name: multiple_failed_login
correlation:
    type: event_count
    rules:
        - failed_login
    group-by:
        - User
    timespan: 10m
    condition:
        gte: 10
---
title: Single failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 529
            - 4625
    condition: selection
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
name: successful_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 528
            - 4624
    condition: selection
"""


def _logon(event_id: int, seconds: int, user: str, record: int) -> Event:
    return Event(
        timestamp=at(seconds),
        computer="dc1.corp.local",
        channel="Security",
        provider="Microsoft-Windows-Security-Auditing",
        event_id=event_id,
        record_id=record,
        source_file="Security.evtx",
        fields={"EventID": event_id, "Channel": "Security", "Computer": "dc1.corp.local", "User": user},
    )


def test_spec_example_through_load_rules_and_hunt(tmp_path: Path) -> None:
    rule_file = tmp_path / "mr_failed_then_success.yml"
    rule_file.write_text(SPEC_EXAMPLE, encoding="utf-8")
    ruleset = load_rules([rule_file])
    assert ruleset.skipped == ()
    assert len(ruleset.correlations) == 2
    events = [_logon(4625, 10 * i, "alice", i) for i in range(10)]  # 10 failures in 90 s
    events += [_logon(4625, 10 * i, "bob", 100 + i) for i in range(9)]  # only 9 for bob
    events += [_logon(4624, 200, "bob", 200), _logon(4624, 300, "alice", 201)]
    events.sort(key=lambda e: (e.timestamp, e.record_id))
    out = list(hunt(events, ruleset))
    # every base rule and the inner correlation are suppressed (generate: false): one detection
    assert [(d.kind, d.rule.id, dict(d.group), d.record_id) for d in out] == [
        (DetectionKind.CORRELATION, "b180ead8-d58f-40b2-ae54-c8940995b9b6", {"User": "alice"}, 201)
    ]
    assert out[0].rule.level is Level.HIGH
    assert out[0].timestamp == at(300)


def test_group_by_field_names_fall_back_like_the_rule_evaluator() -> None:
    corrs = compile_all(event_count(condition="gte: 2", group_by="[SourceName]"))
    dets = [
        hit("failed_logon", 0, **{"Source Name": "Defender"}),
        hit("failed_logon", 1, sourcename="Defender"),
    ]
    assert fired(corrs, dets) == [("Logon brute force", {"SourceName": "Defender"}, at(1))]
