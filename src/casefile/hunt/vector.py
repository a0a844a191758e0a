"""Vectorised hunting: batches of raw EVTX records pre-filtered per log-source partition.

The reference evaluator (`evaluate.py`) stays the judge. A batch of raw JSON records goes through
DuckDB once to find each record's partition (channel, event id) and structure; per partition, one
query extracts the fields the partition's rules test (one JSON parse, no Python decoding). Every
rule is reduced to *guards*: clauses of anchors (`field endswith '\\cmd.exe'`, `CommandLine
contains 'mimikatz'`, a keyword in the raw text, a required regex literal) of which each clause
must hit whenever the rule matches. Anchors of all rules are indexed per field (hash lookups for
eq/endswith/startswith, rarest 3-gram buckets for contains), so one pass over a record's values
finds every rule that might match; only those (record, rule) pairs are normalised exactly as
ingest does and confirmed by the reference evaluator. The pre-filter must never drop a match:

- guards are implied by the condition (a cased test implies the lower-cased one; And keeps all
  children's clauses, Or merges one clause per child; Not, cidr, numbers give no anchor), and
  EventID/Channel tests are decided from the partition before guards are taken;
- a value whose SQL string may differ from the reference one (lists, objects, floats, odd System
  integers) makes every anchor on that field a hit;
- records whose structure the JSON paths cannot mirror exactly (UserData, nested EventData values,
  names the reference's folded lookup resolves differently, unusual System children) are
  normalised first and pre-filtered on their exact field values.
"""

from __future__ import annotations

import heapq
import json
import re
import re._constants as re_constants  # type: ignore[import-not-found]  # the parser `re` uses
import re._parser as re_parser  # type: ignore[import-not-found]
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import ahocorasick
import duckdb
import pyarrow as pa

from casefile.hunt import ir
from casefile.hunt.evaluate import EventView, Predicate, _fold, compile_node
from casefile.hunt.rules import CompiledRule
from casefile.models import Detection, DetectionKind, Event, IngestWarning, RuleInfo

# --- how the evtx-json shape flattens System (mirrors casefile/ingest/shapes/evtx_json.py) ---------
#: System children whose value (or `#text`) becomes a field of the same name.
SYSTEM_SCALARS = frozenset(
    {"EventID", "Version", "Level", "Task", "Opcode", "Keywords", "EventRecordID", "Channel", "Computer"}
)
#: System children whose `#attributes` become `<child>_<attribute>` fields.
SYSTEM_ATTRIBUTES = frozenset({"Provider", "TimeCreated", "Execution", "Security", "Correlation", "EventID"})
#: Every System child the pre-filter knows; a record with any other child is evaluated in Python.
SYSTEM_KNOWN = SYSTEM_SCALARS | SYSTEM_ATTRIBUTES
#: System values the shape converts to int (`as_int`): a string there is only exact when canonical.
SYSTEM_INTS = frozenset(
    {"EventID", "Version", "Level", "Task", "Opcode", "EventRecordID", "Execution_ProcessID",
     "Execution_ThreadID", "EventID_Qualifiers"}
)
#: Field names the System section can produce; an EventData key equal to one is renamed by ingest.
_ATTRIBUTE_NAMES = {
    "Provider": ("Name", "Guid", "EventSourceName"),
    "TimeCreated": ("SystemTime",),
    "Execution": ("ProcessID", "ThreadID", "ProcessorID", "SessionID", "KernelTime", "UserTime"),
    "Security": ("UserID",),
    "Correlation": ("ActivityID", "RelatedActivityID"),
    "EventID": ("Qualifiers",),
}
SYSTEM_FIELD_NAMES = frozenset(
    set(SYSTEM_KNOWN) | {f"{k}_{a}" for k, attrs in _ATTRIBUTE_NAMES.items() for a in attrs}
)
_SYSTEM_FOLDED = {n.replace(" ", "").lower(): n for n in SYSTEM_FIELD_NAMES}
_EVENT_SECTIONS = frozenset({"#attributes", "System", "EventData"})
# Characters a case-insensitive RE2 search does not fold as Python's `str.lower()` does (checked by a test
# over every code point): U+0130 lower-cases to two code points, final sigma depends on context.
UNSAFE_LOWER = ("\u0130", "\u03a3")
_PLAIN_TYPES = frozenset({"VARCHAR", "UBIGINT", "BIGINT", "BOOLEAN"})
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")
_JSON_PATH_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _lit(text: str) -> str:
    """A SQL string literal (rule text, never evidence: evidence is only ever a bound table)."""
    if "\x00" in text:
        raise ValueError("NUL in literal")
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class _Field:
    """Where one rule field lives in the raw record, and the SQL column prefix for it."""

    name: str
    col: str
    path: str
    text_path: str | None  # System scalars may be {"#text": v, "#attributes": ...}
    system_int: bool
    event_data: bool


def _field_spec(name: str, col: str) -> _Field | None:
    """The JSON path of a field, or None when no path can name it (the leaf is then unknown)."""
    if name in SYSTEM_SCALARS:
        base = f"$.Event.System.{name}"
        return _Field(name, col, base, f"{base}.#text", name in SYSTEM_INTS, False)
    head, _, attr = name.partition("_")
    if attr and head in SYSTEM_ATTRIBUTES and name in SYSTEM_FIELD_NAMES:
        path = f"$.Event.System.{head}.#attributes.{attr}"
        return _Field(name, col, path, None, name in SYSTEM_INTS, False)
    if _fold(name) in _SYSTEM_FOLDED or not _JSON_PATH_KEY.match(name):
        return None  # a case variant of a System field, or a name a JSON path cannot quote
    return _Field(name, col, f"$.Event.EventData.{name}", None, False, True)


class _Sql:
    """Compiles IR trees to (possible, certain) SQL boolean pairs over one partition's columns."""

    def __init__(self) -> None:
        self.fields: dict[str, _Field | None] = {}

    def col(self, name: str) -> _Field | None:
        if name not in self.fields:
            self.fields[name] = _field_spec(name, f"f{len(self.fields)}")
        return self.fields[name]


@dataclass(frozen=True, slots=True)
class Entry:
    """One program of one rule, as the serial engine's RuleIndex holds it."""

    info: RuleInfo
    program: ir.Program


Anchor = tuple[str, str, str]  # (field, op, lower-cased literal)
_GRAM = 3
#: `contains` literals on one field above which they are searched with an Aho-Corasick automaton.
_AUTOMATON_MIN = 8


Clause = list[Anchor]


def guard(node: ir.Node) -> list[Clause]:
    """Clauses (each a list of anchors) that all hold, on the lower-cased fields, whenever `node` does.

    A clause holds when one of its anchors does; no clauses means no known constraint (the rule
    is then a candidate on every row). Sound because a case-sensitive test implies the same test
    on lower-cased text, an And needs every child (their clauses are all kept) and an Or needs
    some child (one clause of each child, merged, is implied).
    """
    if isinstance(node, ir.StrMatch):
        if node.field is None:
            return _keyword_guard(node)
        value = node.value.lower()
        if node.op == "glob":
            longest = max((p.lower() for p in node.parts if isinstance(p, str)), key=len, default="")
            return [[(node.field, "contains", longest)]] if longest else []
        if node.op != "eq" and not value:
            return []
        return [[(node.field, node.op, value)]]
    if isinstance(node, ir.RegexMatch) and node.field is not None:
        lit = regex_literal(node.pattern, node.flags)
        return [[(node.field, "regex-i" if "i" in node.flags else "contains", lit)]] if lit else []
    if isinstance(node, ir.And):
        return [clause for child in node.children for clause in guard(child)]
    if isinstance(node, ir.Or):
        return _either([guard(child) for child in node.children])
    if isinstance(node, ir.Not):
        return _negated(node.child)
    return []


def _negated(node: ir.Node) -> list[Clause]:
    """Clauses implied by `not node`: negations pushed down to exact string tests.

    `not (field op lit or field op2 lit2 ...)` becomes one anchor (`NOT`, its tests as JSON) that holds
    when the field is missing or its lower-cased value passes none of the tests. Only tests an anchor
    decides exactly qualify (not cased, not glob or regex): negating an over-approximation drops matches.
    """
    if isinstance(node, ir.Not):
        return guard(node.child)
    children = node.children if isinstance(node, ir.Or) else (node,)
    by_field: dict[str, list[tuple[str, str]]] = {}
    rest: list[ir.Node] = []
    for child in children:
        if (
            isinstance(child, ir.StrMatch) and child.field is not None and child.field != RAW
            and not child.cased and child.op in ("eq", "contains", "startswith", "endswith")
            and (child.value or child.op == "eq") and child.value == child.value.lower()
        ):
            by_field.setdefault(child.field, []).append((child.op, child.value))
        else:
            rest.append(child)
    out: list[Clause] = [[(f, NOT, json.dumps(sorted(set(tests))))] for f, tests in by_field.items()]
    if isinstance(node, ir.Or):  # not (a or b) = not a and not b
        out.extend(clause for child in rest for clause in _negated(child))
    elif isinstance(node, ir.And):  # not (a and b) = not a or not b
        out.extend(_either([_negated(child) for child in node.children]))
    return out


def _either(alternatives: list[list[Clause]]) -> list[Clause]:
    """Clauses implied by the Or of alternatives, each given by its own clauses.

    (A1 and A2) or B implies (A1 or B) and (A2 or B): every choice of one clause per alternative, merged,
    is implied. Each alternative offers its cheapest few, and the product is capped cheapest first
    (a merged clause costs the sum of its parts, so choices are ranked before any is built).
    """
    combos: list[tuple[float, tuple[Clause, ...]]] = [(0.0, ())]
    for clauses in alternatives:
        options = sorted(((_cost(c), c) for c in clauses), key=lambda pair: pair[0])[:_OR_OPTIONS]
        if not options:
            return []
        combos = heapq.nsmallest(
            _OR_COMBOS,
            ((cost + extra, (*chosen, clause)) for cost, chosen in combos for extra, clause in options),
            key=lambda pair: pair[0],
        )
    return _minimal([list(dict.fromkeys(a for clause in chosen for a in clause)) for _, chosen in combos])


def _minimal(clauses: list[Clause]) -> list[Clause]:
    """`clauses` without those a smaller one implies (a superset of another holds whenever it does)."""
    sets = [frozenset(c) for c in clauses]
    return [
        c for i, c in enumerate(clauses)
        if not any(j != i and sets[j] <= sets[i] and (sets[j] != sets[i] or j < i) for j in range(len(sets)))
    ]


#: Clauses kept per rule: the cheapest few already prune nearly every row.
MAX_CLAUSES = 4
#: Clauses each child of an Or offers, and clauses an Or yields at most (see `guard`).
_OR_OPTIONS = 3
_OR_COMBOS = 16
#: Owner ids of anchors: entry position * _SLOTS + clause number.
_SLOTS = 8


def specialise(node: ir.Node, channel: str | None, event_id: int | None) -> ir.Node:
    """`node` on the events of one partition: tests of EventID (and Channel equality) decided.

    Exact for the rows the pre-filter sees: their `EventID` field is the partition's event id and
    their `Channel` field its channel (records where either could differ go to the Python path).
    """
    if isinstance(node, ir.And | ir.Or):
        kids = [specialise(c, channel, event_id) for c in node.children]
        stop = isinstance(node, ir.Or)  # the value that decides the group
        if any(isinstance(k, ir.Const) and k.value is stop for k in kids):
            return ir.Const(stop)
        kids = [k for k in kids if not isinstance(k, ir.Const)]
        if not kids:
            return ir.Const(not stop)
        return kids[0] if len(kids) == 1 else type(node)(tuple(kids))
    if isinstance(node, ir.Not):
        kid = specialise(node.child, channel, event_id)
        return ir.Const(not kid.value) if isinstance(kid, ir.Const) else ir.Not(kid)
    if isinstance(node, ir.NumEq) and node.field == "EventID" and event_id is not None:
        return ir.Const(node.value == event_id)
    if (
        isinstance(node, ir.StrMatch) and node.field == "EventID" and node.op == "eq"
        and not node.cased and event_id is not None
    ):
        return ir.Const(node.value == str(event_id))
    if (
        isinstance(node, ir.StrMatch) and node.field == "Channel" and node.op == "eq"
        and not node.cased and channel is not None and channel.isascii()
    ):
        return ir.Const(node.value == channel.lower())
    return node


#: The pseudo-field of keyword anchors: the raw record text, lower-cased.
RAW = ""
#: The op of a negated anchor; its literal is a JSON list of the [op, literal] tests none of which may pass.
NOT = "not"


def _keyword_guard(node: ir.StrMatch) -> list[Clause]:
    """A keyword in some field value implies its JSON-escaped form in the raw record text."""
    lit = _keyword_literal(node)
    return [[(RAW, "contains", lit)]] if lit is not None else []


def _keyword_literal(node: ir.StrMatch) -> str | None:
    """The literal a keyword leaf requires in the lower-cased raw record text, if it gives one."""
    if node.field is not None or node.op != "contains" or not node.value:
        return None
    escaped = json.dumps(node.value.lower(), ensure_ascii=False)[1:-1]
    return escaped.lower() if escaped.isascii() else None


def regex_literal(pattern: str, flags: frozenset[str]) -> str | None:
    """The longest ASCII literal every match of `pattern` must contain (lower-cased), if any.

    Only top-level literal runs count (no groups, alternations or optional parts), so the literal
    is in any text the regex finds a match in. One character is too common to prune, unless it is
    one of `_RARE_CHARS`.
    """
    flag = re.IGNORECASE if "i" in flags else 0
    try:
        parsed = re_parser.parse(pattern, flag)
    except (re.error, RecursionError, OverflowError):
        return None
    if parsed.state.flags & re.VERBOSE:
        return None
    best, run = "", []
    for op, av in [*list(parsed), (None, None)]:
        if op is re_constants.LITERAL and isinstance(av, int) and 32 <= av < 127:
            run.append(chr(av))
            continue
        text = "".join(run)
        if len(text) > len(best):
            best = text
        run = []
    if "\u03a3" in best or (len(best) < 2 and best not in _RARE_CHARS):
        return None
    return best.lower()


#: Single characters rare enough in log values to be worth a regex's only anchor (PowerShell's escape `).
_RARE_CHARS = frozenset("`{}$^~")


#: Literals nearly every value holds (a file extension at the end of an image path, one or two characters):
#: a clause with one of them prunes nothing, so another clause of the same rule is preferred.
_UBIQUITOUS = re.compile(r"\.[a-z0-9]{1,4}|.{0,2}", re.DOTALL)


def _cost(anchors: Iterable[Anchor]) -> float:
    """How often a clause is expected to hold (lower prunes more): a rough rank, not a probability.

    A negated anchor usually holds (a value rarely starts with a given filter's path), unless what it
    negates is nearly universal (`not Image endswith .exe`, `not Image contains \\`).
    """
    return sum(_anchor_cost(op, lit) for _, op, lit in anchors)


def _anchor_cost(op: str, lit: str) -> float:
    if op == NOT:
        tests = json.loads(lit)
        if any(o in ("contains", "endswith") and _UBIQUITOUS.fullmatch(t) for o, t in tests):
            return 10.0
        return 30.0 if len(tests) >= 3 else 100.0
    if _UBIQUITOUS.fullmatch(lit):
        return 100.0
    return 3.0 if op == "contains" else 1.0


@dataclass
class _FieldAnchors:
    """The anchors on one field, indexed so that one row's value is checked against all at once."""

    eq: dict[str, list[int]] = field(default_factory=dict)
    basename: dict[str, list[int]] = field(default_factory=dict)
    # endswith/startswith literals of >= 3 characters by their last/first 3; shorter ones by length
    ends: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    starts: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    ends_short: list[tuple[str, int]] = field(default_factory=list)
    starts_short: list[tuple[str, int]] = field(default_factory=list)
    short: list[tuple[str, int]] = field(default_factory=list)  # contains, shorter than a gram
    grams: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # contains, by rarest gram
    all: set[int] = field(default_factory=set)
    #: Case-insensitive regex anchors: Python folds some non-ASCII letters onto ASCII ones
    #: (`ſ` matches `s`), so a non-ASCII value makes them candidates.
    fold_unsafe: set[int] = field(default_factory=set)

    #: Negated anchors (`NOT`): the tests of each, indexed as positive anchors under its own id in `neg`;
    #: `neg_owner[id]` is its owner, `neg_count` how many negated anchors an owner has here, and `neg_bits`
    #: every such owner as a bit set (all of them hold on a missing field).
    neg: _FieldAnchors | None = None
    neg_owner: list[int] = field(default_factory=list)
    neg_count: dict[int, int] = field(default_factory=dict)
    neg_bits: int = 0
    all_bits: int = 0  # `all` as a bit set, once the anchors are all added (`finish`)

    def add(self, op: str, lit: str, pos: int) -> None:
        self.all.add(pos)
        if op == NOT:
            if self.neg is None:
                self.neg = _FieldAnchors()
            for test_op, test_lit in json.loads(lit):
                self.neg.add(test_op, test_lit, len(self.neg_owner))
            self.neg_owner.append(pos)
            self.neg_count[pos] = self.neg_count.get(pos, 0) + 1
            self.neg_bits |= 1 << pos
            return
        if op == "regex-i":
            self.fold_unsafe.add(pos)
            op = "contains"
        if op == "eq":
            self.eq.setdefault(lit, []).append(pos)
        elif op == "endswith" and lit.startswith("\\") and lit.count("\\") == 1:
            # `\\name.exe`: the value ends with it exactly when its last path part is it.
            self.basename.setdefault(lit, []).append(pos)
        elif op == "endswith" and len(lit) >= _GRAM:
            self.ends.setdefault(lit[-_GRAM:], []).append((lit, pos))
        elif op == "endswith":
            self.ends_short.append((lit, pos))
        elif op == "startswith" and len(lit) >= _GRAM:
            self.starts.setdefault(lit[:_GRAM], []).append((lit, pos))
        elif op == "startswith":
            self.starts_short.append((lit, pos))
        elif len(lit) < _GRAM:
            self.short.append((lit, pos))
        else:
            self.grams.setdefault("", []).append((lit, pos))  # re-bucketed by finish()

    long: list[tuple[str, int]] = field(default_factory=list)
    n_long: int = 0
    #: Every `contains` literal in one Aho-Corasick automaton (literal -> owners), when there are enough of
    #: them that one pass over the value beats testing each: then `short` and `grams` are left empty.
    automaton: Any = None

    def finish(self) -> None:
        self.all_bits = _bits(self.all)
        if self.neg is not None:
            self.neg.finish()
        pending = self.grams.pop("", [])
        if len(pending) + len(self.short) > _AUTOMATON_MIN:
            owners: dict[str, list[int]] = defaultdict(list)
            for lit, pos in [*pending, *self.short]:
                owners[lit].append(pos)
            auto = ahocorasick.Automaton()
            for lit, poss in owners.items():
                auto.add_word(lit, tuple(poss))
            auto.make_automaton()
            self.automaton = auto
            self.short = []
            return
        self.long, self.n_long = pending, len(pending)
        freq: dict[str, int] = defaultdict(int)
        for lit, _ in pending:
            for g in {lit[i:i + _GRAM] for i in range(len(lit) - _GRAM + 1)}:
                freq[g] += 1
        for lit, pos in pending:
            rare = min((lit[i:i + _GRAM] for i in range(len(lit) - _GRAM + 1)), key=lambda g: freq[g])
            self.grams.setdefault(rare, []).append((lit, pos))

    def negated_bits(self, v: str) -> int:
        """Owner bits of the negated anchors that hold on the lower-cased value `v`.

        An anchor fails when one of its tests passes, and an owner holds unless all its negated anchors
        here fail; the positive tests of `neg` are exact, which is what makes their negation safe.
        """
        if self.neg is None:
            return 0
        matched: set[int] = set()
        self.neg.hits(v, matched)
        if not matched:
            return self.neg_bits
        passed: dict[int, int] = {}
        for i in matched:
            o = self.neg_owner[i]
            passed[o] = passed.get(o, 0) + 1
        return self.neg_bits & ~_bits(o for o, n in passed.items() if n == self.neg_count[o])

    def hits(self, v: str, out: set[int]) -> None:
        if self.fold_unsafe and not v.isascii():
            out |= self.fold_unsafe
        got = self.eq.get(v)
        if got:
            out.update(got)
        n = len(v)
        if self.basename:
            cut = v.rfind("\\")
            if cut >= 0:
                got = self.basename.get(v[cut:])
                if got:
                    out.update(got)
        if n >= _GRAM:
            for lit, pos in self.ends.get(v[-_GRAM:], ()):
                if v.endswith(lit):
                    out.add(pos)
            for lit, pos in self.starts.get(v[:_GRAM], ()):
                if v.startswith(lit):
                    out.add(pos)
        for lit, pos in self.ends_short:
            if v.endswith(lit):
                out.add(pos)
        for lit, pos in self.starts_short:
            if v.startswith(lit):
                out.add(pos)
        for lit, pos in self.short:
            if lit in v:
                out.add(pos)
        if self.automaton is not None:
            for _end, owners in self.automaton.iter(v):
                out.update(owners)
        elif self.n_long * 8 <= n:
            # Few literals, long text: searching each is cheaper than listing the text's grams.
            for lit, pos in self.long:
                if lit in v:
                    out.add(pos)
        elif self.grams and n >= _GRAM:
            present = {v[i:i + _GRAM] for i in range(n - _GRAM + 1)}
            for g in present.intersection(self.grams):
                for lit, pos in self.grams[g]:
                    if lit in v:
                        out.add(pos)


@dataclass
class PartitionPlan:
    """The programs one (channel, event id) partition is offered, and how to pre-filter them.

    `sql` extracts, from one row of table `part(ri, j)`, each anchored field's decoded string and
    JSON type (`slots` says where); `anchors[i]` indexes the anchors on the i-th field. `always`
    are entry positions without a usable guard.
    """

    entries: tuple[int, ...]
    sql: str | None
    anchors: tuple[_FieldAnchors, ...]
    slots: tuple[tuple[int, int | None, bool], ...]  # (value index, `#text` index, System int)
    always: tuple[int, ...]
    event_data_fields: frozenset[str]
    raw: _FieldAnchors | None = None  # keyword anchors, on the lower-cased raw record
    need: dict[int, int] = field(default_factory=dict)  # entry position -> clauses to satisfy
    by_name: dict[str, _FieldAnchors] = field(default_factory=dict)  # every field's anchors

    #: (guarded positions, and per clause number the positions that have that clause), each as a bit
    #: mask with bit pos * _SLOTS per position; built on first use (not pickled state worth keeping)
    _masks: tuple[int, tuple[int, ...]] | None = None

    def candidates_bits(self, owners: int) -> list[int]:
        """Entry positions whose every clause has a hit in `owners` (bit o for owner o), plus the unguarded
        ones, in order.

        A row's hits OR together as integers, and a position survives when, for every clause it needs,
        the clause's bit is set; big-integer operations do that for all positions at once.
        """
        if self._masks is None:
            base = 0
            per_clause = [0] * MAX_CLAUSES
            for pos, n in self.need.items():
                base |= 1 << (pos * _SLOTS)
                for k in range(n):
                    per_clause[k] |= 1 << (pos * _SLOTS)
            self._masks = (base, tuple(per_clause))
        survivors, per_clause_masks = self._masks
        if owners:
            for k, mask in enumerate(per_clause_masks):
                survivors &= ~(mask & ~(owners >> k))
        else:
            survivors = 0
        out = list(self.always)
        while survivors:
            low = survivors & -survivors
            out.append((low.bit_length() - 1) // _SLOTS)
            survivors ^= low
        out.sort()
        return out


def build_plan(
    entries: tuple[int, ...], conditions: Sequence[ir.Node], channel: str | None, event_id: int | None
) -> PartitionPlan:
    """Guards of every condition, grouped by field, and the SQL extracting those fields."""
    sql = _Sql()
    by_field: dict[str, _FieldAnchors] = {}
    always: list[int] = []
    need: dict[int, int] = {}
    for pos, original in enumerate(conditions):
        cond = specialise(original, channel, event_id)
        if isinstance(cond, ir.Const) and not cond.value:
            continue  # cannot match in this partition
        clauses = [c for c in guard(cond) if all(f == RAW or sql.col(f) is not None for f, _, _ in c)]
        clauses = sorted(clauses, key=_cost)[:MAX_CLAUSES]
        if not clauses:
            always.append(pos)
            continue
        need[pos] = len(clauses)
        for k, clause in enumerate(clauses):
            for f, op, lit in clause:
                by_field.setdefault(f, _FieldAnchors()).add(op, lit, pos * _SLOTS + k)
    for fa in by_field.values():
        fa.finish()
    names = [n for n, known in sql.fields.items() if known is not None and n in by_field]
    raw = by_field.get(RAW)
    fields_by_name = {n: fa for n, fa in by_field.items() if n != RAW}
    ed_fields = frozenset(
        name
        for c in conditions
        for leaf in ir.leaves(c)
        for name in (getattr(leaf, "field", None), getattr(leaf, "other", None))
        if isinstance(name, str)
    )
    if not names:
        return PartitionPlan(entries, None, (), (), tuple(always), ed_fields, raw, need, fields_by_name)
    paths: list[str] = []
    slots: list[tuple[int, int | None, bool]] = []
    for n in names:
        spec = sql.fields[n]
        assert spec is not None
        paths.append(spec.path)
        alt = None
        if spec.text_path is not None:
            paths.append(spec.text_path)
            alt = len(paths) - 1
        slots.append((len(paths) - 1 - (1 if alt is not None else 0), alt, spec.system_int))
    path_list = "[" + ", ".join(_lit(p) for p in paths) + "]"
    query = f"SELECT ri, json_extract_string(j, {path_list}) AS xs, json_type(j, {path_list}) AS xt FROM part"
    return PartitionPlan(
        entries, query, tuple(by_field[n] for n in names), tuple(slots), tuple(always), ed_fields, raw, need,
        fields_by_name,
    )


def _keyword_sql(keywords: list[str]) -> str:
    """SQL on a record's text `j` that is false only when none of `keywords` is in it as `_raw_hits`
    lower-cases it: a case-insensitive RE2 search, whose folding matches every character Python's `lower()`
    maps onto an ASCII one but `UNSAFE_LOWER`; a record holding one of those is always scanned.
    """
    def literal(ch: str) -> str:  # RE2 syntax: a code point by number is literal whatever it is
        return ch if ch.isascii() and ch.isalnum() else f"\\x{{{ord(ch):x}}}"

    pattern = "|".join("".join(map(literal, kw)) for kw in keywords)
    unsafe = " OR ".join(f"contains(j, {_lit(ch)})" for ch in UNSAFE_LOWER)
    return f"(regexp_matches(j, {_lit(pattern)}, 'i') OR {unsafe})"


class VectorIndex:
    """Programs by partition, as `engine.RuleIndex` routes them, with their pre-filter SQL per partition."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.entries: list[Entry] = []
        self._table: dict[tuple[str | None, int | None], list[int]] = defaultdict(list)
        for rule in rules:
            for program in rule.programs:
                self.entries.append(Entry(rule.info, program))
                n = len(self.entries) - 1
                channels: tuple[str | None, ...] = tuple(c.lower() for c in program.route.channels) or (None,)
                ids: tuple[int | None, ...] = program.route.event_ids or (None,)
                for ch in channels:
                    for eid in ids:
                        self._table[(ch, eid)].append(n)
        self._plans: dict[tuple[str | None, int | None], PartitionPlan] = {}
        self._predicates: list[Predicate | None] = [None] * len(self.entries)
        # Every keyword literal of every rule: each RAW anchor of any partition is one of them, so a record
        # holding none needs no scan for keywords.
        keywords = {
            lit
            for e in self.entries
            for leaf in ir.leaves(e.program.condition)
            if isinstance(leaf, ir.StrMatch) and (lit := _keyword_literal(leaf)) is not None
        }
        self.route_sql = _route_group_sql(_keyword_sql(sorted(keywords)) if keywords else "FALSE")

    def __getstate__(self) -> dict[str, Any]:
        # Predicates are closures (not picklable); workers rebuild them on first use.
        state = dict(self.__dict__)
        state["_predicates"] = [None] * len(self.entries)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def predicate(self, n: int) -> Predicate:
        pred = self._predicates[n]
        if pred is None:
            pred = compile_node(self.entries[n].program.condition)
            self._predicates[n] = pred
        return pred

    def candidates(self, channel: str | None, event_id: int | None) -> tuple[int, ...]:
        """Entry numbers in the order `engine.RuleIndex.candidates` gives them."""
        ch = channel.lower() if channel else None
        keys: list[tuple[str | None, int | None]] = [(None, None), (None, event_id)]
        if ch is not None:
            keys += [(ch, None), (ch, event_id)]
        seen: set[int] = set()
        out: list[int] = []
        for k in dict.fromkeys(keys):
            for e in self._table.get(k, ()):
                if e not in seen:
                    seen.add(e)
                    out.append(e)
        return tuple(out)

    def plan(self, channel: str | None, event_id: int | None) -> PartitionPlan:
        key = (channel.lower() if channel else None, event_id)
        plan = self._plans.get(key)
        if plan is None:
            entries = self.candidates(*key)
            conds = [self.entries[e].program.condition for e in entries]
            plan = build_plan(entries, conds, key[0], key[1])
            self._plans[key] = plan
        return plan

    def warm(self) -> None:
        """Compile the SQL of every partition a route names (cached with the rule set)."""
        for ch, eid in list(self._table):
            self.plan(ch, eid)


# --- running one batch ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RawJson:
    """One raw EVTX record: its JSON text, its ordinal in the file, and the file's event name."""

    text: str
    index: int
    source: str


Normaliser = Callable[[RawJson, Callable[[IngestWarning], None]], Event | None]

_ROUTE_SQL = """
SELECT ri,
  CASE WHEN left(x[1], 1) = '"' THEN json_extract_string(x[1], '$')
       WHEN x[1] IS NULL OR x[1] = 'null' THEN NULL ELSE '\x00' END AS ch,
  CASE WHEN left(x[2], 1) = '{' THEN x[3] ELSE x[2] END AS eid_x,
  t[1] AS event_t, t[2] AS data_t, hash(k) AS shape, k, vt, kw
FROM (SELECT ri,
        json_extract(j, ['$.Event.System.Channel', '$.Event.System.EventID',
                         '$.Event.System.EventID.#text']) AS x,
        json_type(j, ['$.Event', '$.Event.EventData']) AS t,
        json_keys(j, ['$.Event', '$.Event.System', '$.Event.EventData']) AS k,
        json_type(j, '$.Event.EventData.*') AS vt,
        {keywords} AS kw
      FROM batch)
"""


def _route_group_sql(keywords: str) -> str:
    """Records of table `batch(ri, j)` grouped by partition and structure; `keywords` is SQL on `j` that
    says whether the record may hold a keyword (`kws`, one per row)."""
    return f"""
SELECT ch, eid, ok, shape, list(ri ORDER BY ri) AS rows, any_value(k) AS keys, list(kw ORDER BY ri) AS kws
FROM (
  SELECT ri, ch, shape, k, kw,
    CASE WHEN regexp_full_match(eid_s, '0|[1-9][0-9]{{0,17}}') THEN CAST(eid_s AS BIGINT) END AS eid,
    (ch IS NULL OR ch <> '\x00') AND event_t = 'OBJECT' AND coalesce(data_t IN ('OBJECT', 'NULL'), TRUE)
      AND nested = 0 AND eid_s IS NOT NULL AND regexp_full_match(eid_s, '0|[1-9][0-9]{{0,17}}') AS ok
  FROM (SELECT ri, ch, shape, k, kw, event_t, data_t, nested,
          CASE WHEN left(eid_x, 1) = '"' THEN json_extract_string(eid_x, '$') ELSE eid_x END AS eid_s
        FROM (SELECT *, len(list_filter(vt, lambda v: v IN ('OBJECT', 'ARRAY'))) AS nested
              FROM ({_ROUTE_SQL.replace("{keywords}", keywords)})))
) GROUP BY ALL
"""


@dataclass
class BatchResult:
    detections: list[Detection] = field(default_factory=list)
    events: int = 0
    rows_sql: int = 0
    rows_python: int = 0
    confirmations: int = 0
    not_events: list[int] = field(default_factory=list)  # rows that did not normalise (warned)


class BatchHunter:
    """Hunts batches of raw records with one DuckDB connection (one per worker process)."""

    def __init__(self, index: VectorIndex, normalise: Normaliser, *, threads: int = 1) -> None:
        self.index = index
        self.normalise = normalise
        self.con = duckdb.connect(config={"threads": threads})
        self._shapes: dict[tuple[int, frozenset[str]], bool] = {}

    def close(self) -> None:
        self.con.close()

    def _shape_ok(self, shape: int, keys: list[list[str] | None] | None, fields: frozenset[str]) -> bool:
        key = (shape, fields)
        ok = self._shapes.get(key)
        if ok is None:
            ok = keys is not None and len(keys) == 3 and _shape_is_plain(
                list(keys[0] or ()), list(keys[1] or ()), list(keys[2] or ()), fields
            )
            self._shapes[key] = ok
        return ok

    def run(self, records: Sequence[RawJson], on_warning: Callable[[IngestWarning], None]) -> BatchResult:
        """Detections of one batch, in record order and, per record, in the serial engine's order."""
        result = BatchResult()
        if not records:
            return result
        batch = pa.table({
            "ri": pa.array(range(len(records)), pa.int64()),
            "j": pa.array([r.text.encode() for r in records], pa.binary()).cast(pa.string()),
        })
        self.con.register("batch", batch)
        try:
            groups = self.con.sql(self.index.route_sql).fetchall()
        except (duckdb.InvalidInputException, duckdb.ConversionException):
            groups = None  # a record DuckDB cannot parse: let the Python path report it exactly
        finally:
            self.con.unregister("batch")
        found: list[tuple[int, int, Detection]] = []
        events: dict[int, Event | None] = {}

        views: dict[int, EventView] = {}  # one per record: its lower-cased values are shared by rules

        def event(ri: int) -> Event | None:
            if ri not in events:
                events[ri] = ev = self.normalise(records[ri], on_warning)
                if ev is not None:
                    views[ri] = EventView(ev.fields)
            return events[ri]

        python_rows: list[int] = []
        sql_rows = 0
        if groups is None:
            python_rows = list(range(len(records)))
        else:
            for ch, eid, ok, shape, rows, keys, kws in groups:
                plan = self.index.plan(ch, eid) if ok else None
                if plan is not None and not plan.entries:
                    sql_rows += len(rows)
                    continue
                if plan is None or not self._shape_ok(shape, keys, plan.event_data_fields):
                    python_rows.extend(rows)
                    continue
                sql_rows += len(rows)
                scan = {ri for ri, kw in zip(rows, kws, strict=True) if kw}
                for ri, pos in self._prefilter(plan, batch, rows, records, scan):
                    n = plan.entries[pos]
                    ev = event(ri)
                    if ev is None:
                        continue
                    result.confirmations += 1
                    self._confirm(n, pos, ri, ev, views[ri], found)
        for ri in python_rows:
            ev = event(ri)
            if ev is None:
                continue
            channel = ev.channel if ev.channel is not None else ev.fields.get("Channel")
            ch = channel if isinstance(channel, str) else None
            eid = _event_id(ev)
            plan = self.index.plan(ch, eid)
            view = views[ri]
            if view.get("EventID") == eid and isinstance(eid, int) and view.get("Channel") == ch:
                # The partition's specialised guards hold for this event: pre-filter in Python.
                positions = plan.candidates_bits(self._python_hits(plan, view, records[ri].text))
            else:
                positions = list(range(len(plan.entries)))
            for pos in positions:
                self._confirm(plan.entries[pos], pos, ri, ev, view, found)
        found.sort(key=lambda t: (t[0], t[1]))
        result.detections = [d for _, _, d in found]
        result.not_events = sorted(ri for ri, ev in events.items() if ev is None)
        result.events = len(records) - len(result.not_events)
        result.rows_sql, result.rows_python = sql_rows, len(python_rows)
        return result

    def match_event(self, event: Event) -> list[Detection]:
        """Every routed program on one event, as `engine.match_event` does (non-EVTX inputs)."""
        channel = event.channel if event.channel is not None else event.fields.get("Channel")
        entries = self.index.candidates(channel if isinstance(channel, str) else None, _event_id(event))
        found: list[tuple[int, int, Detection]] = []
        view = EventView(event.fields)
        for pos, n in enumerate(entries):
            self._confirm(n, pos, 0, event, view, found)
        return [d for _, _, d in found]

    def _confirm(
        self, n: int, pos: int, ri: int, ev: Event, view: EventView, found: list[tuple[int, int, Detection]]
    ) -> None:
        pred = self.index.predicate(n)
        if pred(view, None):
            matched: dict[str, Any] = {}
            pred(view, matched)
            found.append((ri, pos, _detection(self.index.entries[n].info, ev, matched)))

    def _prefilter(
        self,
        plan: PartitionPlan,
        batch: pa.Table,
        rows: list[int],
        records: Sequence[RawJson],
        scan: set[int],
    ) -> Iterator[tuple[int, int]]:
        """(row, entry position) pairs the guards cannot rule out, in row order.

        Only the rows in `scan` may hold a keyword (the routing query's pre-check): the others skip the
        scan of their whole text."""
        if plan.sql is None:
            for ri in rows:
                keyword_hits: set[int] = set()
                if plan.raw is not None and ri in scan:
                    self._raw_hits(plan.raw, records[ri].text, keyword_hits)
                yield from ((ri, pos) for pos in plan.candidates_bits(_bits(keyword_hits)))
            return
        part = batch.take(pa.array(rows, pa.int64()))
        self.con.register("part", part)
        try:
            out = self.con.sql(plan.sql).to_arrow_table()
        finally:
            self.con.unregister("part")
        ri_col = out.column(0).to_pylist()
        xs_col = out.column(1).to_pylist()
        xt_col = out.column(2).to_pylist()
        # Logs repeat their values (the same image paths, services, accounts): the anchors one value hits
        # are looked up once per query, per field (a pure function of the value, so nothing changes).
        memo: list[dict[str, int]] = [{} for _ in plan.anchors]
        all_bits = [fa.all_bits for fa in plan.anchors]
        missing_bits = [fa.neg_bits for fa in plan.anchors]
        for ri, xs, xt in zip(ri_col, xs_col, xt_col, strict=True):
            hit = 0  # owner bits (see PartitionPlan.candidates_bits)
            if plan.raw is not None and ri in scan:
                raw_hit: set[int] = set()
                self._raw_hits(plan.raw, records[ri].text, raw_hit)
                hit = _bits(raw_hit)
            for k, (fa, (i, alt, system_int)) in enumerate(zip(plan.anchors, plan.slots, strict=True)):
                t, v = xt[i], xs[i]
                if t == "OBJECT" and alt is not None:
                    t, v = xt[alt], xs[alt]
                if t is None:
                    # missing: every test on it is false, as in the reference, so its negations hold
                    hit |= missing_bits[k]
                    continue
                if t == "NULL":
                    v = ""
                elif t not in _PLAIN_TYPES or v is None or (
                    system_int and t == "VARCHAR" and not _CANONICAL_INT.fullmatch(v)
                ):
                    hit |= all_bits[k]  # no exact string form here: the reference decides
                    continue
                known = memo[k].get(v)
                if known is None:
                    found: set[int] = set()
                    low = v.lower()
                    fa.hits(low, found)
                    memo[k][v] = known = _bits(found) | fa.negated_bits(low)
                hit |= known
            for pos in plan.candidates_bits(hit):
                yield ri, pos


    def _python_hits(self, plan: PartitionPlan, view: EventView, text: str) -> int:
        """Anchor hits, as owner bits, on an already normalised event (its values are exact)."""
        hit: set[int] = set()
        negated = 0
        if plan.raw is not None:
            self._raw_hits(plan.raw, text, hit)
        for name, fa in plan.by_name.items():
            values = view.lowered(name)
            if not values:
                negated |= fa.neg_bits  # missing or an empty list: no value passes any test
            for v in values:
                fa.hits(v, hit)
                negated |= fa.negated_bits(v)
        return _bits(hit) | negated

    @staticmethod
    def _raw_hits(anchors: _FieldAnchors, text: str, hit: set[int]) -> None:
        if "\u03a3" in text:  # final-sigma lower-casing depends on the neighbours
            hit |= anchors.all
        else:
            anchors.hits(text.lower(), hit)


def _bits(owners: Iterable[int]) -> int:
    """A set of anchor owners as an integer bit set."""
    out = 0
    for o in owners:
        out |= 1 << o
    return out


def _shape_is_plain(
    event_keys: list[str], system_keys: list[str], data_keys: list[str], fields: frozenset[str]
) -> bool:
    """Whether the SQL field paths read exactly what ingest's evtx-json shape would put in fields."""
    if not set(event_keys) <= _EVENT_SECTIONS or "System" not in event_keys:
        return False
    if not set(system_keys) <= SYSTEM_KNOWN or "Channel" not in system_keys or "EventID" not in system_keys:
        return False
    data = set(data_keys)
    if "#attributes" in data or "#text" in data or data & SYSTEM_FIELD_NAMES:
        return False
    if any(k.startswith(tuple(f"{s}_" for s in SYSTEM_ATTRIBUTES)) for k in data):
        return False
    folded = {_fold(k) for k in data} | {_fold(k) for k in SYSTEM_FIELD_NAMES}
    # The reference's fallback lookup (case and spaces folded) must not find a field the exact
    # JSON path does not read.
    return not any(f not in data and f not in SYSTEM_FIELD_NAMES and _fold(f) in folded for f in fields)


def _event_id(event: Event) -> int | None:
    if event.event_id is not None:
        return event.event_id
    v = event.fields.get("EventID")
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _detection(info: RuleInfo, event: Event, matched: dict[str, Any]) -> Detection:
    return Detection(
        rule=info,
        kind=DetectionKind.SIGMA,
        timestamp=event.timestamp,
        computer=event.computer,
        channel=event.channel,
        event_id=event.event_id,
        record_id=event.record_id,
        file=event.source_file,
        matched=matched,
        fields=dict(event.fields),
    )


def iter_batches(records: Iterable[RawJson], size: int) -> Iterator[list[RawJson]]:
    batch: list[RawJson] = []
    for r in records:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["BatchHunter", "BatchResult", "Entry", "PartitionPlan", "RawJson", "VectorIndex"]
