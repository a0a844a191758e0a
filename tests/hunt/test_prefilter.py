"""`_prefilter.field_hits` (C) against `BatchHunter._field_hits`, the Python loop it stands in for: the same
owner bits and the same memo for every record, over anchors with negations, names that differ in case, list,
integer and missing values."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from casefile.hunt import ir
from casefile.hunt.evaluate import EventView, fold_keys
from casefile.hunt.parallel import EvtxRecords
from casefile.hunt.rules import CompiledRule
from casefile.hunt.vector import BatchHunter, VectorIndex
from casefile.models import Level, RuleInfo

prefilter = pytest.importorskip(
    "casefile.hunt._prefilter", reason="no compiled build of _prefilter (no C compiler at install)"
)

ROUTE = ir.Route(channels=("Security",), event_ids=(4688,))
VALUES = ["C:\\Windows\\cmd.exe", "cmd", "whoami /all", "", "x", "C:\\Tools\\PsExec.exe", "ΣΑΣ"]


def _rules() -> list[CompiledRule]:
    leaves: list[ir.Node] = [
        ir.StrMatch("NewProcessName", "endswith", "\\cmd.exe"),
        ir.StrMatch("CommandLine", "contains", "whoami"),
        ir.StrMatch("commandline", "contains", "/all"),  # found without case where the exact name is not
        ir.Not(ir.StrMatch("ParentProcessName", "startswith", "c:\\windows\\")),  # negated: bits when missing
        ir.StrMatch("Data", "eq", "cmd"),  # list values
        ir.StrMatch("LogonType", "eq", "3"),  # integer values
        ir.StrMatch("Missing", "contains", "never"),
    ]
    return [
        CompiledRule(
            RuleInfo(id=f"r{i}", title=f"r{i}", level=Level.MEDIUM, status=None, author=None),
            (ir.Program(f"r{i}", "test", ROUTE, node),),
        )
        for i, node in enumerate(leaves)
    ]


def _fields(rng: random.Random) -> dict[str, Any]:
    fields: dict[str, Any] = {"EventID": 4688, "Channel": "Security"}
    for name in ("NewProcessName", "CommandLine", "COMMANDLINE", "ParentProcessName", "Data", "LogonType"):
        roll = rng.random()
        if roll < 0.2:
            continue  # missing
        if name == "Data" and roll < 0.6:
            fields[name] = [rng.choice([*VALUES, None, 3]) for _ in range(rng.randint(0, 3))]
        elif name == "LogonType" and roll < 0.7:
            fields[name] = rng.choice([3, 2, True, 3.0])
        else:
            fields[name] = rng.choice(VALUES)
    return fields


def test_field_hits_in_c_are_the_python_loops() -> None:
    index = VectorIndex(_rules())
    plan = index.plan("Security", 4688)
    c_hunter = BatchHunter(index, EvtxRecords())
    py_hunter = BatchHunter(index, EvtxRecords())
    empty: dict[str, Any] = {}
    c_hunter._hits(plan, EventView(empty, {}))  # its anchors, memos empty: the Python hunter gets a copy
    anchors = c_hunter._states[id(plan)][0]
    py_anchors = copy.deepcopy(anchors)
    assert all(not seen for *_, seen, _ in anchors)
    rng = random.Random(4688)
    hits = 0
    for _ in range(3000):
        fields = _fields(rng)
        view = EventView(fields, fold_keys(fields))
        c_bits = prefilter.field_hits(anchors, fields, view.folded, view, c_hunter)
        py_bits = py_hunter._field_hits(py_anchors, fields, view.folded or {}, view)
        assert c_bits == py_bits, fields
        hits += bool(c_bits)
        assert [seen for *_, seen, _ in anchors] == [seen for *_, seen, _ in py_anchors]
    assert 0 < hits < 3000
    assert c_hunter._memo_cost == py_hunter._memo_cost > 0


def test_field_hits_refuses_a_folded_table_of_other_fields() -> None:
    index = VectorIndex(_rules())
    plan = index.plan("Security", 4688)
    hunter = BatchHunter(index, EvtxRecords())
    fields = {"EventID": 4688, "Channel": "Security"}
    view = EventView(fields, fold_keys(fields))
    hunter._hits(plan, view)
    with pytest.raises(KeyError):  # not a crash: the table names a field these fields lack
        prefilter.field_hits(
            hunter._states[id(plan)][0], fields, {"commandline": "CommandLine"}, view, hunter
        )
