"""The vectorised fast path gives exactly the serial reference engine's detections.

Compared: rule id, file, record id, matched fields, all event fields, order, event counts and
warnings, over (a) SigmaHQ's regression data, (b) a sample of the EVTX corpus with every rule,
(c) small inline events exercising every IR node through the pre-filter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from casefile.hunt import RuleSet, ir, load_rules, run_hunt
from casefile.hunt.engine import RuleIndex, match_event
from casefile.hunt.parallel import _normalise
from casefile.hunt.rules import CompiledRule
from casefile.hunt.vector import BatchHunter, RawJson, VectorIndex, guard, regex_literal, specialise
from casefile.models import Detection, Level, RuleInfo


def _key(d: Detection) -> tuple[Any, ...]:
    return (
        d.rule.id, d.file, d.record_id, d.event_id,
        json.dumps(d.matched, sort_keys=True, default=str),
        json.dumps(d.fields, sort_keys=True, default=str),
    )


@pytest.fixture(scope="module")
def all_rules(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    sigma = shared_data / "sigma"
    dirs = [sigma / "rules", sigma / "rules-emerging-threats", sigma / "rules-threat-hunting"]
    return load_rules(dirs, cache_dir=tmp_path_factory.mktemp("rule-cache"))


def _compare(paths: list[Path], rules: RuleSet, workers: int) -> int:
    fast = run_hunt(paths, rules, vectorised=True, workers=workers)
    ref = run_hunt(paths, rules, vectorised=False)
    assert [_key(d) for d in fast.detections] == [_key(d) for d in ref.detections]
    assert fast.stats.events == ref.stats.events
    assert sorted(map(str, fast.warnings)) == sorted(map(str, ref.warnings))
    return len(ref.detections)


def test_regression_data_identical(shared_data: Path, all_rules: RuleSet) -> None:
    hits = _compare([shared_data / "sigma" / "regression_data"], all_rules, workers=1)
    assert hits > 150  # nearly every regression sample fires its rule


def test_evtx_sample_identical_with_two_workers(shared_data: Path, all_rules: RuleSet) -> None:
    files = sorted(
        f for f in (shared_data / "evtx").rglob("*.evtx")
        if "hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES" not in f.as_posix()
    )
    sample = files[::6]  # ~100 files, every log source family of the corpus
    assert _compare(sample, all_rules, workers=2) > 500


# --- inline events, one IR node each ----------------------------------------------------------

def _evtx_json(event_id: int, channel: str, data: dict[str, Any] | None, record: int = 1) -> str:
    system = {
        "Provider": {"#attributes": {"Name": "Test-Provider"}},
        "EventID": event_id,
        "TimeCreated": {"#attributes": {"SystemTime": "2024-01-02T03:04:05.000000Z"}},
        "EventRecordID": record,
        "Channel": channel,
        "Computer": "HOST1",
    }
    return json.dumps({"Event": {"System": system, "EventData": data}})


EVENTS = [
    {"Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami /all", "User": "CORP\\Bob"},
    {"Image": "C:\\Tools\\MIMIKATZ.EXE", "CommandLine": "sekurlsa::logonpasswords", "ParentImage": None},
    {"Image": "C:\\x\\İstanbul.exe", "CommandLine": "ΑΣ run", "LogonType": "3", "Count": 12},
    {"Image": "c:\\a_b%c.exe", "CommandLine": "", "IpAddress": "10.1.2.3", "Flag": True},
    {"Image": "C:\\Windows\\explorer.exe", "Data": ["one", "two"], "CommandLine": "x\ny"},
    {"Image": "C:\\w\\cmd.exe", "ParentImage": "C:\\w\\cmd.exe", "CommandLine": "0042"},
]

F = "Image"
CONDITIONS: list[ir.Node] = [
    ir.StrMatch(F, "endswith", "\\cmd.exe"),
    ir.StrMatch(F, "eq", "c:\\tools\\mimikatz.exe"),
    ir.StrMatch(F, "startswith", "c:\\windows"),
    ir.StrMatch("CommandLine", "contains", "whoami"),
    ir.StrMatch("CommandLine", "contains", "WHOAMI", cased=True),
    ir.StrMatch("CommandLine", "contains", "whoami", cased=True),
    ir.StrMatch(F, "glob", "c:\\a?b%c.*", parts=("c:\\a", ir.Wildcard.SINGLE, "b%c.", ir.Wildcard.MULTI)),
    ir.StrMatch(F, "contains", "i̇stanbul"),  # Python's lower() of İ is two code points
    ir.StrMatch("CommandLine", "contains", "ας"),  # final sigma
    ir.StrMatch(None, "contains", "logonpasswords"),  # keyword
    ir.StrMatch(None, "contains", "host1"),  # keyword on a System field
    ir.RegexMatch("CommandLine", r"who(ami)?\s+/all"),
    ir.RegexMatch("CommandLine", r"SEKURLSA::", frozenset({"i"})),
    ir.RegexMatch("CommandLine", r"^x$", frozenset({"m"})),
    ir.CidrMatch("IpAddress", "10.0.0.0/8"),
    ir.NumEq("LogonType", 3),
    ir.NumEq("CommandLine", 42),
    ir.NumEq("EventID", 1),
    ir.Compare("Count", "gte", 10),
    ir.BoolEq("Flag", True),
    ir.Exists("ParentImage", True),
    ir.Exists("ParentImage", False),
    ir.IsNull("ParentImage"),
    ir.StrMatch("CommandLine", "eq", ""),
    ir.StrMatch("Data", "eq", "two"),
    ir.FieldRef("Image", "ParentImage"),
    ir.Not(ir.StrMatch(F, "endswith", "\\cmd.exe")),
    ir.And((ir.StrMatch(F, "endswith", ".exe"), ir.Not(ir.StrMatch("CommandLine", "contains", "whoami")))),
    ir.Or((ir.StrMatch("image", "contains", "mimikatz"), ir.StrMatch("Command Line", "contains", "ας"))),
    ir.And((ir.NumEq("EventID", 2), ir.StrMatch(F, "contains", "cmd"))),  # EventID decided: never
    ir.Const(True),
]


def _rules() -> list[CompiledRule]:
    out = []
    for i, cond in enumerate(CONDITIONS):
        info = RuleInfo(id=f"rule-{i}", title=f"rule {i}", level=Level.MEDIUM, status=None, author=None)
        route = ir.Route(channels=("Microsoft-Windows-Sysmon/Operational",), event_ids=(1,))
        out.append(CompiledRule(info, (ir.Program(info.id, "test", route, cond),)))
    return out


def test_every_ir_node_matches_the_reference() -> None:
    rules = _rules()
    records = [
        RawJson(_evtx_json(1, "Microsoft-Windows-Sysmon/Operational", data, record=i + 1), i + 1, "t.evtx")
        for i, data in enumerate(EVENTS)
    ]
    hunter = BatchHunter(VectorIndex(rules), _normalise)
    fast = hunter.run(records, lambda w: pytest.fail(str(w))).detections
    index = RuleIndex(rules)
    ref = []
    for r in records:
        event = _normalise(r, lambda w: pytest.fail(str(w)))
        assert event is not None
        ref.extend(match_event(index, event))
    assert [_key(d) for d in fast] == [_key(d) for d in ref]
    fired = {d.rule.id for d in ref}
    # the inline cases really exercise both outcomes
    assert {"rule-0", "rule-7", "rule-8", "rule-9", "rule-11", "rule-25"} <= fired
    assert "rule-29" not in fired


def test_uncertain_structures_go_to_the_exact_path() -> None:
    """UserData records and nested EventData values are decided on their normalised fields."""
    rules = _rules()
    user_data = json.loads(_evtx_json(1, "Microsoft-Windows-Sysmon/Operational", None))
    user_data["Event"]["UserData"] = {"X": {"Image": "C:\\w\\cmd.exe"}}
    nested = _evtx_json(1, "Microsoft-Windows-Sysmon/Operational", {"Image": {"#text": "C:\\w\\cmd.exe"}})
    records = [RawJson(json.dumps(user_data), 1, "u.evtx"), RawJson(nested, 2, "u.evtx")]
    result = BatchHunter(VectorIndex(rules), _normalise).run(records, lambda w: None)
    assert result.rows_python == 2
    assert {d.rule.id for d in result.detections} >= {"rule-0"}


def test_guards_are_implied_by_their_conditions() -> None:
    cond = ir.And((
        ir.Or((ir.StrMatch(F, "endswith", "\\cmd.exe"), ir.StrMatch("OriginalFileName", "eq", "Cmd.Exe"))),
        ir.StrMatch("CommandLine", "contains", "/c"),
        ir.Not(ir.StrMatch("User", "contains", "system")),
    ))
    clauses = guard(cond)
    assert [(F, "endswith", "\\cmd.exe"), ("OriginalFileName", "eq", "cmd.exe")] in clauses
    assert [("CommandLine", "contains", "/c")] in clauses
    assert all(a[0] != "User" for c in clauses for a in c)  # a negated test gives no anchor
    assert guard(ir.Or((ir.StrMatch(F, "eq", "a"), ir.CidrMatch("Ip", "10.0.0.0/8")))) == []


def test_an_or_takes_the_selective_clause_of_each_branch() -> None:
    # EDR-Freeze's shape: "Image contains \\EDR-Freeze and Image endswith .exe" or an imphash; ".exe" holds on
    # nearly every image, so the branch is represented by its rarer clause.
    img = ir.And((ir.StrMatch(F, "contains", "\\EDR-Freeze"), ir.StrMatch(F, "endswith", ".exe")))
    (clause,) = guard(ir.Or((img, ir.StrMatch("Hashes", "contains", "IMPHASH=1195F7"))))
    assert clause == [(F, "contains", "\\edr-freeze"), ("Hashes", "contains", "imphash=1195f7")]
    plain = ir.And((ir.StrMatch(F, "contains", "\\EDR-Freeze"), ir.StrMatch(F, "endswith", "\\edr.exe")))
    assert guard(ir.Or((plain, ir.StrMatch("Hashes", "eq", "x"))))[0][0] == (F, "endswith", "\\edr.exe")


def test_regex_literals_are_required_parts_only() -> None:
    assert regex_literal(r"Invoke-(Mimikatz|Kerberoast)", frozenset()) == "invoke-"
    assert regex_literal(r"(a|b)cd?e", frozenset()) is None  # 'c' alone is too short
    assert regex_literal(r"x?powershell\.exe", frozenset({"i"})) == "powershell.exe"
    assert regex_literal(r"(?x) power shell", frozenset()) is None  # verbose: spaces are markup


def test_specialise_decides_event_id_and_channel() -> None:
    cond = ir.And(
        (ir.NumEq("EventID", 4688), ir.StrMatch("Channel", "eq", "security"), ir.StrMatch(F, "eq", "x"))
    )
    assert specialise(cond, "Security", 4688) == ir.StrMatch(F, "eq", "x")
    assert specialise(cond, "Security", 4624) == ir.Const(False)
    assert specialise(ir.Not(ir.NumEq("EventID", 1)), "Security", 1) == ir.Const(False)


@pytest.mark.parametrize("n_literals", [3, 40])  # below and above the automaton threshold
def test_field_anchor_index_finds_exactly_the_anchors_a_value_holds(n_literals: int) -> None:
    import random

    from casefile.hunt.vector import _AUTOMATON_MIN, _FieldAnchors

    rng = random.Random(n_literals)
    alphabet = "ab\\.xé-"  # few letters: overlapping and repeated literals, one non-ASCII letter
    anchors = _FieldAnchors()
    expected: list[tuple[str, str, int]] = []
    for pos in range(n_literals):
        op = rng.choice(["contains", "contains", "eq", "startswith", "endswith"])
        lit = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        anchors.add(op, lit, pos)
        expected.append((op, lit, pos))
    anchors.finish()
    assert (anchors.automaton is not None) == (n_literals > _AUTOMATON_MIN)
    for _ in range(2000):
        v = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        got: set[int] = set()
        anchors.hits(v, got)
        want = {
            pos
            for op, lit, pos in expected
            if (op == "contains" and lit in v)
            or (op == "eq" and v == lit)
            or (op == "startswith" and v.startswith(lit))
            or (op == "endswith" and v.endswith(lit))
        }
        assert got >= want, (v, want - got)  # never drop a match
        assert got == want, (v, got - want)  # and no stray hits on this alphabet


def test_candidate_bit_sets_agree_with_the_owner_sets() -> None:
    import random

    from casefile.hunt.vector import _SLOTS, MAX_CLAUSES, PartitionPlan, _bits

    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 60)
        need = {pos: rng.randint(1, MAX_CLAUSES) for pos in range(n) if rng.random() < 0.8}
        always = tuple(pos for pos in range(n) if pos not in need)
        plan = PartitionPlan(tuple(range(n)), None, (), (), always, frozenset(), need=need)
        owners = {
            pos * _SLOTS + k for pos, clauses in need.items() for k in range(clauses) if rng.random() < 0.6
        }
        assert plan.candidates_bits(_bits(owners)) == plan.candidates(owners)
        assert plan.candidates_bits(0) == list(always)
