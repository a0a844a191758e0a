"""Hunting EVTX records in batches (other inputs one event at a time), each rule offered only the
records its guards cannot rule out.

The reference evaluator (`evaluate.py`) stays the judge. Every record is parsed once and normalised
exactly as ingest does; its partition (channel, event id) picks the programs the serial engine would
run on it. Every rule is reduced to *guards*: clauses of anchors (`field endswith '\\cmd.exe'`,
`CommandLine contains 'mimikatz'`, a keyword in some value, a required regex literal, a field
reference, or a negation: none of a field's exact string or cidr tests passes) of which each clause must
hit whenever the rule matches. Anchors of all rules of a partition are indexed per field (hash lookups for
eq/endswith/startswith, rarest 3-gram buckets or one Aho-Corasick automaton for contains), so one pass
over a record's values finds every rule that might match, and the anchors a value hits are remembered
(across batches, up to `MEMO_BYTES`), since logs repeat their values. Only the (record, rule) pairs
that get through are confirmed by the reference evaluator. The pre-filter must never drop a match:

- guards are implied by the condition (a cased test implies the lower-cased one, but for a literal
  holding a capital sigma, whose lower case depends on its neighbours; And keeps all children's
  clauses, Or keeps one clause of each child; numbers, field references, and cidr outside a negation
  give no anchor), and EventID/Channel tests are decided from the partition before guards are taken;
- anchors are matched on the very values the reference tests: the normalised fields, looked up
  exactly and then by folded name, and their lower-cased string forms.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import json
import re
import re._constants as re_constants  # type: ignore[import-not-found]  # the parser `re` uses
import re._parser as re_parser  # type: ignore[import-not-found]
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import ahocorasick_rs

from casefile.hunt import ir
from casefile.hunt.evaluate import (
    _MISSING,
    _SURROGATES,
    FIELDREF_TESTS,
    EventView,
    Predicate,
    _as_str,
    _fold,
    compile_node,
    fold_keys,
    in_network,
    route_key,
)
from casefile.hunt.output import JsonlLines, RuleLine, event_part
from casefile.hunt.rules import CompiledRule
from casefile.models import Detection, DetectionKind, Event, IngestWarning, RuleInfo

if TYPE_CHECKING:
    from casefile.hunt.cache import PlanStore


@dataclass(frozen=True, slots=True)
class Entry:
    """One program of one rule, as the serial engine's RuleIndex holds it."""

    info: RuleInfo
    program: ir.Program


Anchor = tuple[str, str, str]  # (field, op, lower-cased literal)
_GRAM = 3
#: `contains` literals on one field above which they are searched with an Aho-Corasick automaton.
_AUTOMATON_MIN = 8
#: Words per automaton of a gate: the automaton crate's SIMD prefilter (Teddy) takes at most 64 patterns.
_GATE_PART = 64
#: Most keyword literals a gate is put before (see `_FieldAnchors.gated`), in automata of `_GATE_PART`: on a
#: record's keyword text the gate of the antivirus partitions' 89 keywords (two automata) takes 0.47 us a
#: record, joining and scanning the values 2.2 us; each automaton adds about a quarter of a microsecond.
_GATE_MAX = 256
Clause = list[Anchor]


def guard(node: ir.Node) -> list[Clause]:
    """Clauses (each a list of anchors) that all hold, on the lower-cased fields, whenever `node` does.

    A clause holds when one of its anchors does; no clauses means no known constraint (the rule
    is then a candidate on every row). Sound because a case-sensitive test implies the same test
    on lower-cased text (but for a capital sigma, which gives no anchor), an And needs every child
    (their clauses are all kept) and an Or needs some child (one clause of each child is implied).
    """
    if isinstance(node, ir.StrMatch):
        if node.cased and _SIGMA in node.value:
            return []  # `ΑΣ`.lower() ends in a final sigma: a cased `Σ` in it is no `σ` once lower-cased
        if node.field is None:
            return _keyword_guard(node)
        value = node.value.lower()
        if node.op == "glob":
            longest = max((p.lower() for p in node.parts if isinstance(p, str)), key=len, default="")
            return [[(node.field, "contains", longest)]] if longest else []
        if node.op != "eq" and not value:
            return []
        return [[(node.field, node.op, value)]]
    if isinstance(node, ir.FieldRef) and (node.op == "eq" or not node.cased):
        # the reference's own test on the lower-cased values (a cased `eq` implies it; a cased prefix may
        # not stay one once lower-cased: `ΑΣ` is a prefix of `ΑΣΒ`, `ας` not of `ασβ`)
        return [[(node.field, REF + node.op, node.other)]]
    if isinstance(node, ir.RegexMatch) and node.field is not None:
        lits = regex_literals(node.pattern, node.flags)
        op = "regex-i" if _folds_case(node.pattern, node.flags) else "contains"
        return [[(node.field, op, lit) for lit in lits]] if lits else []
    if isinstance(node, ir.And):
        return [clause for child in node.children for clause in guard(child)]
    if isinstance(node, ir.Or):
        return _either([guard(child) for child in node.children])
    if isinstance(node, ir.Not):
        return _negated(node.child)
    return []


def _negated(node: ir.Node) -> list[Clause]:
    """Clauses implied by `not node`: negations pushed down to exact string and cidr tests.

    `not (field op lit or field op2 lit2 ...)` becomes one anchor (`NOT`, its tests as JSON) that holds
    when the field is missing or its lower-cased value passes none of the tests. Only tests an anchor
    decides exactly qualify (not cased, not glob or regex): negating an over-approximation drops matches.
    A `cidr` test qualifies as the reference runs it (`not 1 of filter_local_ranges` on IpAddress).
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
        elif isinstance(child, ir.CidrMatch) and child.field != RAW and _network(child.network) is not None:
            # the reference's own test, on the lower-cased value: case does not change what address a
            # string spells (hex digits, an IPv6 zone), so it is exact there too
            by_field.setdefault(child.field, []).append((CIDR, child.network))
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
    if all(len(clauses) == 1 for clauses in alternatives):
        # one choice (the common Or of plain tests): what the general case below gives, without ranking
        return [list(dict.fromkeys(a for (clause,) in alternatives for a in clause))]
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
#: Owner ids of anchors: entry position * _SLOTS + clause number; the bit above a position's clauses is
#: where `PartitionPlan.candidates_bits` carries to.
_SLOTS = MAX_CLAUSES + 1


def specialise(
    node: ir.Node, channel: str | None, event_id: int | None, fixed: set[int] | None = None
) -> ir.Node:
    """`node` on the events of one partition: tests of EventID (and Channel equality) decided.

    Exact for the rows the pre-filter sees: their `EventID` field is the partition's event id and
    their `Channel` field its channel (on other records every program of the partition is confirmed).
    `fixed` (`fixed_nodes`), when given, names subtrees with nothing to decide, which are not visited.
    """
    if fixed is not None and id(node) in fixed:
        return node
    if isinstance(node, ir.And | ir.Or):
        kids = [specialise(c, channel, event_id, fixed) for c in node.children]
        stop = isinstance(node, ir.Or)  # the value that decides the group
        if any(isinstance(k, ir.Const) and k.value is stop for k in kids):
            return ir.Const(stop)
        if all(k is c for k, c in zip(kids, node.children, strict=True)):
            return node  # nothing decided: no copy (`build_plan` then finds its clauses at once)
        kids = [k for k in kids if not isinstance(k, ir.Const)]
        if not kids:
            return ir.Const(not stop)
        return kids[0] if len(kids) == 1 else type(node)(tuple(kids))
    if isinstance(node, ir.Not):
        kid = specialise(node.child, channel, event_id, fixed)
        if kid is node.child:
            return node
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


def fixed_nodes(roots: Iterable[ir.Node]) -> set[int]:
    """Ids of the nodes under `roots` that `specialise` leaves as they are, whatever the partition: no
    EventID or Channel test and no constant below them. Valid while `roots` live.

    A rule is specialised once per partition it is offered (every Security event id): skipping these
    subtrees, most of a rule, takes 60% off specialising (0.35 -> 0.14 s for the corpus's 362 plans).
    """
    fixed: set[int] = set()

    def visit(node: ir.Node) -> bool:  # whether `specialise` may change the node
        if isinstance(node, ir.And | ir.Or):
            changes = False
            for child in node.children:
                changes = visit(child) or changes
        elif isinstance(node, ir.Not):
            changes = visit(node.child)
        else:
            changes = isinstance(node, ir.Const) or getattr(node, "field", None) in ("EventID", "Channel")
        if not changes:
            fixed.add(id(node))
        return changes

    for root in roots:
        visit(root)
    return fixed


#: The pseudo-field of keyword anchors: every field's value.
RAW = ""
#: The op of a negated anchor; its literal is a JSON list of the [op, literal] tests none of which may pass.
NOT = "not"
#: A test of a negated anchor: the value is an address in the network (its literal).
CIDR = "cidr"
#: Ops of field-reference anchors (`ref-eq`, `ref-startswith`, ...): the literal is the other field's name.
REF = "ref-"
_REF_TESTS = {REF + op: test for op, test in FIELDREF_TESTS.items()}  # the reference's own tests
#: Capital sigma lower-cases to `σ`, or to `ς` ending a word: the one letter whose lower case needs context.
_SIGMA = "\u03a3"


def _keyword_guard(node: ir.StrMatch) -> list[Clause]:
    """A keyword is in the lower-cased value of some field."""
    if node.op != "contains" or not node.value or _SEP in node.value:
        return []
    return [[(RAW, "contains", node.value.lower())]]


def regex_literals(pattern: str, flags: frozenset[str]) -> tuple[str, ...]:
    """Strings (ASCII, lower-cased) of which every match of `pattern` must contain one; none if unknown.

    Only top-level runs count (no groups, alternations or optional parts), so a run is in any text the
    regex finds a match in. A run is literal characters and small character classes (at most
    `_CLASS_MAX` characters, once each): `\\.[ "']` gives `. `, `."` and `.'`, up to `_MAX_ALTERNATIVES`
    strings. The longest run wins (then the one with fewer strings). One character is too common to
    prune, unless it is one of `_RARE_CHARS`.
    """
    parsed = _parse_regex(pattern, re.IGNORECASE if "i" in flags else 0)
    if parsed is None or parsed.state.flags & re.VERBOSE:
        return ()
    best: list[str] = []
    run = [""]
    for op, av in [*list(parsed), (None, None)]:
        chars = _run_chars(op, av)
        if chars is not None and len(run) * len(chars) <= _MAX_ALTERNATIVES:
            run = [text + c for text in run for c in chars]
            continue
        if run[0] and (not best or len(run[0]) > len(best[0]) or (
            len(run[0]) == len(best[0]) and len(run) < len(best)
        )):
            best = run
        run = list(chars) if chars is not None else [""]
    out = tuple(dict.fromkeys(text.lower() for text in best))
    if not out or (len(out[0]) < 2 and not (len(out) == 1 and out[0] in _RARE_CHARS)):
        return ()
    return out


def _folds_case(pattern: str, flags: frozenset[str]) -> bool:
    """Whether the regex ignores case: its `i` flag, or `(?i)` in the pattern (which makes `s` match `ſ`,
    whose lower case is no `s`: see `_FieldAnchors.fold_unsafe`)."""
    if "i" in flags:
        return True
    parsed = _parse_regex(pattern, 0)
    return parsed is None or bool(parsed.state.flags & re.IGNORECASE)  # None: never searched; the safe answer


@functools.lru_cache(maxsize=512)
def _parse_regex(pattern: str, flag: int) -> Any:
    """`re`'s parse tree of `pattern` (None when it does not parse), read, never changed, by a regex's guard
    and its case test; remembered, since one rule's regex is guarded again in every partition it meets."""
    try:
        return re_parser.parse(pattern, flag)
    except (re.error, RecursionError, OverflowError):
        return None


#: Strings a regex guard may offer: the product of a run's character classes.
_MAX_ALTERNATIVES = 8
#: Character classes of at most this many characters extend a run.
_CLASS_MAX = 4


def _run_chars(op: Any, av: Any) -> tuple[str, ...] | None:
    """The characters one top-level regex item matches, when it is one printable ASCII character out of
    a few (a literal, a small class, either repeated exactly once); None otherwise."""
    if op is re_constants.LITERAL:
        return (chr(av),) if isinstance(av, int) and 32 <= av < 127 else None
    if op is re_constants.IN:
        if len(av) > _CLASS_MAX:
            return None
        out = []
        for item_op, item in av:
            if item_op is not re_constants.LITERAL or not isinstance(item, int) or not 32 <= item < 127:
                return None  # a range, a category, a negation
            out.append(chr(item))
        return tuple(dict.fromkeys(out))
    if op in (re_constants.MAX_REPEAT, re_constants.MIN_REPEAT):
        low, high, sub = av
        if low == high == 1 and len(sub) == 1:
            return _run_chars(*sub[0])
    return None


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
    if op in _REF_TESTS:
        return 3.0  # two fields seldom agree
    if op == NOT:
        tests = json.loads(lit)
        if any(o in ("contains", "endswith") and _UBIQUITOUS.fullmatch(t) for o, t in tests):
            return 10.0
        return 30.0 if len(tests) >= 3 else 100.0
    if _UBIQUITOUS.fullmatch(lit):
        return 100.0
    return 3.0 if op == "contains" else 1.0


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network a `cidr` test holds, as the reference parses it; None when it does not parse."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


@functools.lru_cache(maxsize=256)
def _automaton(words: tuple[str, ...]) -> ahocorasick_rs.AhoCorasick:
    """One automaton per list of literals: partitions of one channel share many (every Security event id
    is offered the same keyword anchors), and building one costs more than a hundred searches. The
    SigmaHQ set needs 85 for the corpus's 362 plans (about 9 MB); the bound keeps a long-lived process
    that loads other rule sets from growing."""
    return ahocorasick_rs.AhoCorasick(words)


class _Gate:
    """Whether any of some words lies in a UTF-8 text, not where: leftmost-first search on bytes lets the
    automaton crate skip ahead with its SIMD prefilter, about 3x faster than listing the overlapping matches
    of a text where none lies; one automaton per `_GATE_PART` words, the most that prefilter takes."""

    __slots__ = ("parts",)

    def __init__(self, words: tuple[str, ...]) -> None:
        self.parts = tuple(
            ahocorasick_rs.BytesAhoCorasick(
                [w.encode() for w in words[i:i + _GATE_PART]],
                matchkind=ahocorasick_rs.MATCHKIND_LEFTMOST_FIRST,
            )
            for i in range(0, len(words), _GATE_PART)
        )

    def finds(self, data: bytes) -> bool:
        for part in self.parts:  # noqa: SIM110 (a loop, not a generator made per record)
            if part.find_matches_as_indexes(data):
                return True
        return False


@functools.lru_cache(maxsize=64)
def _gate(words: tuple[str, ...]) -> _Gate:
    """The gate of `words`, one per list (partitions share their keyword lists, as `_automaton`'s)."""
    return _Gate(words)


@dataclass
class _FieldAnchors:
    """The anchors on one field, indexed so that one value is checked against all at once.

    Owners are kept as bit masks (bit o for owner o), which is what candidate selection ORs together.
    """

    eq: dict[str, int] = field(default_factory=dict)
    basename: dict[str, int] = field(default_factory=dict)
    # endswith/startswith literals of >= 3 characters by their last/first 3; shorter ones by length
    ends: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    starts: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    ends_short: list[tuple[str, int]] = field(default_factory=list)
    starts_short: list[tuple[str, int]] = field(default_factory=list)
    short: list[tuple[str, int]] = field(default_factory=list)  # contains, shorter than a gram
    grams: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # contains, by rarest gram
    #: Case-insensitive regex anchors: Python folds some non-ASCII letters onto ASCII ones
    #: (`ſ` matches `s`), so a non-ASCII value makes them candidates.
    fold_unsafe: int = 0
    #: Whether the automaton's literals are expected to be missing from nearly every value (keyword anchors,
    #: tested on every record's values): a `_gate` then tells first whether any lies there at all. Field
    #: literals are not gated: half the values that reach their automata hold one (measured on the corpus).
    gated: bool = False

    #: Negated anchors (`NOT`): the tests of each, indexed as positive anchors under its own id in `neg`;
    #: `neg_owner[id]` is its owner, `neg_count` how many negated anchors an owner has here, and `neg_bits`
    #: every such owner as a bit set (all of them hold on a missing field).
    neg: _FieldAnchors | None = None
    neg_owner: list[int] = field(default_factory=list)
    neg_count: dict[int, int] = field(default_factory=dict)
    neg_bits: int = 0

    def add(self, op: str, lit: str, pos: int) -> None:
        bit = 1 << pos
        if op == NOT:
            if self.neg is None:
                self.neg = _FieldAnchors()
            for test_op, test_lit in json.loads(lit):
                self.neg.add(test_op, test_lit, len(self.neg_owner))
            self.neg_owner.append(pos)
            self.neg_count[pos] = self.neg_count.get(pos, 0) + 1
            self.neg_bits |= bit
            return
        if op == CIDR:
            net = _network(lit)
            assert net is not None  # `_negated` takes only networks that parse
            self.cidrs.append((net, bit))
            return
        if op == "regex-i":
            self.fold_unsafe |= bit
            op = "contains"
        if op == "eq":
            self.eq[lit] = self.eq.get(lit, 0) | bit
        elif op == "endswith" and lit.startswith("\\") and lit.count("\\") == 1:
            # `\\name.exe`: the value ends with it exactly when its last path part is it.
            self.basename[lit] = self.basename.get(lit, 0) | bit
        elif op == "endswith" and len(lit) >= _GRAM:
            self.ends.setdefault(lit[-_GRAM:], []).append((lit, bit))
        elif op == "endswith":
            self.ends_short.append((lit, bit))
        elif op == "startswith" and len(lit) >= _GRAM:
            self.starts.setdefault(lit[:_GRAM], []).append((lit, bit))
        elif op == "startswith":
            self.starts_short.append((lit, bit))
        elif len(lit) < _GRAM:
            self.short.append((lit, bit))
        else:
            self.grams.setdefault("", []).append((lit, bit))  # re-bucketed by finish()

    long: list[tuple[str, int]] = field(default_factory=list)
    n_long: int = 0
    #: Every `contains` literal in one Aho-Corasick automaton, when there are enough of them that one pass
    #: over the value beats testing each (then `short` and `grams` are left empty); `auto_words[i]` is the
    #: automaton's literal i and `auto_bits[i]` its owner bits. The automaton is rebuilt from `auto_words`
    #: after unpickling (it cannot be pickled).
    automaton: ahocorasick_rs.AhoCorasick | None = None
    #: `_gate(auto_words)` when `gated` and the words are few enough (`_GATE_MAX`); rebuilt with `automaton`.
    gate: _Gate | None = None
    #: Whether the gate alone decides an ASCII text (set with it): see `_automata`.
    decides: bool = False
    #: Whether it decides any keyword text (`RecordShape.keyword_text`) too: its words are ASCII.
    decides_utf8: bool = False
    auto_words: list[str] = field(default_factory=list)
    auto_bits: list[int] = field(default_factory=list)
    odd: list[tuple[str, int]] = field(default_factory=list)
    #: `cidr` tests (only inside negated anchors: see `_negated`)
    cidrs: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]] = field(default_factory=list)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["automaton"] = state["gate"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.auto_words:
            self._automata()

    def _automata(self) -> None:
        words = tuple(self.auto_words)
        self.automaton = _automaton(words)
        if self.gated and len(words) <= _GATE_MAX:
            self.gate = _gate(words)
        # Whether `positive` of an ASCII text is 0 wherever the gate finds none of its words there: when the
        # automaton's literals are all there is (a lone surrogate's literal cannot lie in ASCII, and the
        # regexes' folding concerns only non-ASCII).
        self.decides = self.gate is not None and not (
            self.eq or self.basename or self.ends or self.starts or self.ends_short or self.starts_short
            or self.short or self.cidrs
        )
        # In other text an ASCII word lies only where it lies in its lower case (`RecordShape.keyword_text`),
        # and no regex folds a non-ASCII letter onto an ASCII one.
        self.decides_utf8 = self.decides and not self.fold_unsafe and all(w.isascii() for w in words)

    def finish(self) -> None:
        if self.neg is not None:
            self.neg.finish()
        pending = self.grams.pop("", [])
        if len(pending) + len(self.short) > _AUTOMATON_MIN:
            owners: dict[str, int] = defaultdict(int)
            for lit, bit in [*pending, *self.short]:
                owners[lit] |= bit
            # A literal with a lone surrogate (YAML's "\\ud800" escape) has no UTF-8 form: tested on its own.
            self.odd = [(lit, bits) for lit, bits in owners.items() if _SURROGATES.search(lit)]
            self.auto_words = [lit for lit in owners if not _SURROGATES.search(lit)]
            self.auto_bits = [owners[lit] for lit in self.auto_words]
            self.short = []
            self._automata()
            return
        self.long, self.n_long = pending, len(pending)
        freq: dict[str, int] = defaultdict(int)
        for lit, _ in pending:
            for g in {lit[i:i + _GRAM] for i in range(len(lit) - _GRAM + 1)}:
                freq[g] += 1
        for lit, bit in pending:
            rare = min((lit[i:i + _GRAM] for i in range(len(lit) - _GRAM + 1)), key=lambda g: freq[g])
            self.grams.setdefault(rare, []).append((lit, bit))

    def bits(self, v: str) -> int:
        """Owner bits of the anchors, positive and negated, that hold on the lower-cased value `v`."""
        return (self.positive(v) | self.negated_bits(v)) if self.neg is not None else self.positive(v)

    def negated_bits(self, v: str) -> int:
        """Owner bits of the negated anchors that hold on the lower-cased value `v`.

        An anchor fails when one of its tests passes, and an owner holds unless all its negated anchors
        here fail; the positive tests of `neg` are exact, which is what makes their negation safe.
        """
        if self.neg is None:
            return 0
        failed = self.neg.positive(v)
        if not failed:
            return self.neg_bits
        counts: dict[int, int] = {}
        while failed:
            low = failed & -failed
            o = self.neg_owner[low.bit_length() - 1]
            counts[o] = counts.get(o, 0) + 1
            failed ^= low
        return self.neg_bits & ~_bits(o for o, n in counts.items() if n == self.neg_count[o])

    def _scan(self, automaton: ahocorasick_rs.AhoCorasick, v: str) -> int:
        """Owner bits of the automaton's literals that `v` holds."""
        try:
            found = automaton.find_matches_as_indexes(v, overlapping=True)
        except UnicodeEncodeError:
            # A lone surrogate (`json` keeps them) has no UTF-8 form for the automaton; no literal holds
            # one, so no match spans one, and the parts between them are searched alone.
            out = 0
            for part in _SURROGATES.split(v):
                out |= self._scan(automaton, part)
            return out
        bits = self.auto_bits
        out = 0
        for i, _start, _end in found:
            out |= bits[i]
        return out

    @staticmethod
    def _may_hold(gate: _Gate, v: str) -> bool:
        """Whether some literal of the gate may lie in `v` (a lone surrogate: maybe)."""
        try:
            data = v.encode()
        except UnicodeEncodeError:
            return True
        return gate.finds(data)

    def positive(self, v: str) -> int:
        """Owner bits of the positive anchors the lower-cased value `v` holds."""
        out = self.fold_unsafe if self.fold_unsafe and not v.isascii() else 0
        for net, bit in self.cidrs:
            if in_network(net, v):
                out |= bit
        if self.eq:
            out |= self.eq.get(v, 0)
        n = len(v)
        if self.basename:
            cut = v.rfind("\\")
            if cut >= 0:
                out |= self.basename.get(v[cut:], 0)
        if n >= _GRAM:
            for lit, bit in self.ends.get(v[-_GRAM:], ()):
                if v.endswith(lit):
                    out |= bit
            for lit, bit in self.starts.get(v[:_GRAM], ()):
                if v.startswith(lit):
                    out |= bit
        for lit, bit in self.ends_short:
            if v.endswith(lit):
                out |= bit
        for lit, bit in self.starts_short:
            if v.startswith(lit):
                out |= bit
        for lit, bit in self.short:
            if lit in v:
                out |= bit
        if self.automaton is not None:
            if self.gate is None or self._may_hold(self.gate, v):
                try:  # `_scan`, inlined: this runs for every value the memo has not seen
                    found = self.automaton.find_matches_as_indexes(v, overlapping=True)
                except UnicodeEncodeError:
                    out |= self._scan(self.automaton, v)
                else:
                    bits = self.auto_bits
                    for i, _start, _end in found:
                        out |= bits[i]
            for lit, bit in self.odd:
                if lit in v:
                    out |= bit
        elif self.n_long * 8 <= n:
            # Few literals, long text: searching each is cheaper than listing the text's grams.
            for lit, bit in self.long:
                if lit in v:
                    out |= bit
        elif self.grams and n >= _GRAM:
            present = {v[i:i + _GRAM] for i in range(n - _GRAM + 1)}
            for g in present.intersection(self.grams):
                for lit, bit in self.grams[g]:
                    if lit in v:
                        out |= bit
        return out


@dataclass
class PartitionPlan:
    """The programs one (channel, event id) partition is offered, and how to pre-filter them.

    `by_name` indexes the anchors on each field, `raw` the keyword anchors (on every field's value);
    `always` are entry positions without a usable guard.
    """

    entries: tuple[int, ...]
    always: tuple[int, ...]
    raw: _FieldAnchors | None = None
    #: Whether some keyword anchor could lie in an integer's decimal form (digits and `-` only): if
    #: not, integer values are left out of the keyword scan.
    raw_ints: bool = True
    need: dict[int, int] = field(default_factory=dict)  # entry position -> clauses to satisfy
    by_name: dict[str, _FieldAnchors] = field(default_factory=dict)
    #: Field-reference anchors: (field, other field, op in `_REF_TESTS`, owner bit)
    refs: tuple[tuple[str, str, str, int], ...] = ()

    #: (the clause bits each guarded position needs, pos * _SLOTS + k for its clauses k; its lowest clause
    #: bit; the bit just above its clauses), built on first use (not pickled state worth keeping)
    _masks: tuple[int, int, int] | None = None

    def candidates_bits(self, owners: int) -> Sequence[int]:
        """Entry positions whose every clause has a hit in `owners` (bit o for owner o), plus the unguarded
        ones, in order.

        A row's hits OR together as integers, and a position survives when, for every clause it needs,
        the clause's bit is set: adding 1 to its clause bits carries into the bit above them exactly when
        all are set, and no further (a position's slot has a bit to spare), so three big-integer operations
        decide every position at once. (Where none survives, which is most of the time, `always` itself.)
        """
        if self._masks is None:
            required = ones = above = 0
            for pos, n in self.need.items():
                required |= ((1 << n) - 1) << (pos * _SLOTS)
                ones |= 1 << (pos * _SLOTS)
                above |= 1 << (pos * _SLOTS + n)
            self._masks = (required, ones, above)
        required, ones, above = self._masks
        survivors = ((owners & required) + ones) & above if owners else 0
        if not survivors:
            return self.always
        out = list(self.always)
        while survivors:  # lowest first: in order
            low = survivors & -survivors
            out.append((low.bit_length() - 1) // _SLOTS)
            survivors ^= low
        if self.always:
            out.sort()
        return out


def build_plan(
    entries: tuple[int, ...], conditions: Sequence[ir.Node], channel: str | None, event_id: int | None,
    clauses_of: dict[ir.Node, list[Clause]] | None = None, fixed: set[int] | None = None,
) -> PartitionPlan:
    """Guards of every condition, their anchors indexed by field.

    `clauses_of` remembers the clauses of each specialised condition (IR nodes compare by value): a rule
    offered many partitions (every Security event id) is mostly specialised to the same tree, guarded once.
    `fixed`: `fixed_nodes` of the conditions, if known.
    """
    by_field: dict[str, _FieldAnchors] = {}
    always: list[int] = []
    need: dict[int, int] = {}
    raw_literals: list[str] = []
    refs: list[tuple[str, str, str, int]] = []
    memo = {} if clauses_of is None else clauses_of
    for pos, original in enumerate(conditions):
        cond = specialise(original, channel, event_id, fixed)
        if isinstance(cond, ir.Const) and not cond.value:
            continue  # cannot match in this partition
        clauses = memo.get(cond)
        if clauses is None:
            clauses = memo[cond] = sorted(guard(cond), key=_cost)[:MAX_CLAUSES]
        if not clauses:
            always.append(pos)
            continue
        need[pos] = len(clauses)
        for k, clause in enumerate(clauses):
            for f, op, lit in clause:
                if op in _REF_TESTS:
                    refs.append((f, lit, op, 1 << (pos * _SLOTS + k)))
                    continue
                anchors = by_field.get(f)
                if anchors is None:  # not setdefault: a _FieldAnchors made per anchor was a quarter of a plan
                    anchors = by_field[f] = _FieldAnchors(gated=f == RAW)
                anchors.add(op, lit, pos * _SLOTS + k)
                if f == RAW:
                    raw_literals.append(lit)
    for fa in by_field.values():
        fa.finish()
    raw = by_field.pop(RAW, None)
    raw_ints = any(set(lit) <= _INT_CHARS for lit in raw_literals)
    return PartitionPlan(entries, tuple(always), raw, raw_ints, need, by_field, tuple(refs))


class VectorIndex:
    """Programs by partition, as `engine.RuleIndex` routes them, with each partition's pre-filter plan."""

    def __init__(self, rules: Sequence[CompiledRule], store: PlanStore | None = None) -> None:
        """`store`: where plans built for these rules are kept between processes and runs."""
        self.store = store
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
        self._clauses: dict[ir.Node, list[Clause]] = {}  # see `build_plan`
        self._fixed: set[int] | None = None  # see `build_plan`; made on first use

    def __getstate__(self) -> dict[str, Any]:
        # Predicates are closures (not picklable); workers rebuild them on first use, and their plans'
        # clauses with the plans.
        state = dict(self.__dict__)
        state["_predicates"] = [None] * len(self.entries)
        state["_clauses"] = {}
        state["_fixed"] = None  # ids of this process's objects
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
            stored = self.store.load(key) if self.store is not None else None
            if isinstance(stored, PartitionPlan) and stored.entries == entries:
                plan = stored
            else:
                conds = [self.entries[e].program.condition for e in entries]
                if self._fixed is None:
                    self._fixed = fixed_nodes(entry.program.condition for entry in self.entries)
                plan = build_plan(entries, conds, key[0], key[1], self._clauses, self._fixed)
                if self.store is not None:
                    self.store.save(key, plan)
            self._plans[key] = plan
        return plan


# --- running one batch ------------------------------------------------------------------------
@dataclass(slots=True)
class RawJson:
    """One raw EVTX record: its JSON text (a str, or UTF-8 bytes), its ordinal in the file, and the file's
    event name.

    Not frozen, for the reason `RawRecord` is not: one is made per record hunted."""

    text: str | bytes
    index: int
    source: str


#: About how many bytes a hunter's memo of anchor hits may hold before it is emptied (checked between
#: batches, and between events handed over one at a time). Logs repeat their values across batches
#: (images, accounts, hosts, services), so the memo is kept while it fits: memory stays bounded whatever
#: the size of the evidence.
MEMO_BYTES = 64 * 1024 * 1024
#: What one remembered entry costs beside its objects: its share of the dict's table.
_ENTRY_BYTES = 48

class RecordShape(Protocol):
    """How a batch's raw records become what the hunt reads: fields first, the Event only when needed."""

    def fields(self, raw: RawJson, on_warning: Callable[[IngestWarning], None], /) -> dict[str, Any] | None:
        """The record's `Event.fields`, or None after a warning (the serial path's, for the same record)."""
        ...

    def channel_and_id(self, fields: dict[str, Any], /) -> tuple[str | None, int | None]:
        """`Event.channel` and `Event.event_id` of the record with these fields."""
        ...

    def event(self, fields: dict[str, Any], source_file: str, /) -> Event:
        """The record's Event; must not raise, since records no rule can match never build one."""
        ...

    def keyword_text(self, fields: dict[str, Any], /) -> bytes | None:
        """The record's values as the keyword gate may read them, if reading the record made them: the
        string forms `_joined_values` joins (integers included), each intact after a NUL, in UTF-8 with
        their ASCII letters lower-cased, and none holding U+0130 or U+212A (the only characters whose lower
        case holds an ASCII letter), so that an ASCII word lies in it wherever it lies in the lower-cased
        joined values; None otherwise (the gate then reads the joined values)."""
        ...

    def layout_key(self, fields: dict[str, Any], /) -> str | None:
        """If reading the record made one, a str that stands for its field names in order (equal exactly for
        equal names), the same object for the records of one layout as far as it can: what the hunt looks
        their folded names up by, without hashing the names again. None otherwise."""
        ...


@dataclass
class BatchResult:
    detections: list[Detection | RuleLine] = field(default_factory=list)  # lines: see `BatchHunter`
    events: int = 0
    confirmations: int = 0
    not_events: list[int] = field(default_factory=list)  # rows that did not normalise (warned)


#: Per field a partition's plan anchors, as `BatchHunter._hits` walks them: its name, folded name, anchors,
#: the memo of the owner bits each value gave them, and the anchors' negated bits (`_FieldAnchors.neg_bits`).
_Anchored = tuple[str, str, "_FieldAnchors", dict[Any, int], int]
#: Per plan, as `BatchHunter._hits` reads it: its `_Anchored` fields, its keyword anchors (`raw`), the gate's
#: `finds` where the gate decides ASCII text (else None), whether it decides UTF-8 text too, `raw_ints`, and
#: `refs`.
_PlanState = tuple[
    list[_Anchored], "_FieldAnchors | None", "Callable[[bytes], bool] | None", bool, bool,
    tuple[tuple[str, str, str, int], ...],
]

_compiled_field_hits: Callable[..., int] | None
try:  # Cython proper: only a compiled install has it (`BatchHunter._field_hits` otherwise)
    from casefile.hunt._prefilter import field_hits as _compiled_field_hits
except ImportError:
    _compiled_field_hits = None


class BatchHunter:
    """Hunts batches of raw records against one index's partition plans (one per worker process)."""

    def __init__(
        self, index: VectorIndex, records: RecordShape, *, fields_of: frozenset[str] | None = None,
        lines: JsonlLines | None = None, lines_except: frozenset[str] = frozenset(),
    ) -> None:
        """`records`: how `run` reads its raw records; `fields_of`: the rule ids whose detections carry their
        event's fields (None: every rule's). With `lines`, `run` delivers the detections of rules outside
        `lines_except` as their JSONL lines (`RuleLine`), made without a Detection (`JsonlLines.sigma_line`),
        the event's part of them once for all its detections."""
        self.index = index
        self.records = records
        self.fields_of = fields_of
        self.lines = lines
        self.lines_except = lines_except
        #: See MEMO_BYTES.
        self.memo_bytes = MEMO_BYTES
        # Per plan (by id: plans live as long as the index), what `_hits` reads of it (`_PlanState`), read
        # once: it runs for most records, and a dozen attribute lookups were a tenth of its time. Its fields'
        # anchors as `_hits` walks them (`_Anchored`) hold the memo of the owner bits each value string gave
        # them (and each list value: `_list_bits`). Emptied once the memos hold about `memo_bytes`
        # (`_memo_cost`), so memory does not grow with the evidence.
        self._states: dict[int, _PlanState] = {}
        # Records of one source repeat their field names: the folded-name lookup table is made once per list
        # of names (by the names, or their `RecordShape.layout_key`), and forgotten with the memo.
        self._folded: dict[str | tuple[str, ...], dict[str, str]] = {}
        self._memo_cost = 0

    def run(self, records: Sequence[RawJson], on_warning: Callable[[IngestWarning], None]) -> BatchResult:
        """Detections of one batch, in record order and, per record, in the serial engine's order."""
        result = BatchResult(events=len(records))
        if self._memo_cost > self.memo_bytes:
            self._forget()
        shape = self.records
        read, partition, make, keywords = shape.fields, shape.channel_and_id, shape.event, shape.keyword_text
        layout = shape.layout_key
        found = result.detections
        as_line = self._as_line if self.lines is not None else None
        # `_view` and `_candidates` spelt out: their calls and lookups cost a tenth of a record's pre-filter
        folded_of = self._folded
        index = self.index
        plan_of = index.plan
        compiled, entries, lines_except = index._predicates, index.entries, self.lines_except
        positions_of = self._positions
        plans: dict[tuple[str | None, int | None], PartitionPlan] = {}  # by the route key as read
        positions: Sequence[int]
        for ri, raw in enumerate(records):
            fields = read(raw, on_warning)
            if fields is None:
                result.not_events.append(ri)
                continue
            channel, event_id = partition(fields)
            key = layout(fields)
            folded = folded_of.get(key) if key is not None else None
            view = EventView(fields, folded) if folded is not None else self._view(fields, key)
            if channel is None or event_id is None:
                channel, event_id = route_key(channel, event_id, fields)
            route = (channel, event_id)
            plan = plans.get(route)
            if plan is None:
                plan = plans[route] = plan_of(channel, event_id)
            positions = positions_of(plan, channel, event_id, view, keywords(fields)) if plan.entries else []
            if positions:  # most records have none
                ev = None  # made for the first detection: most candidates are not confirmed
                part: bytes | None = None
                for pos in positions:
                    n = plan.entries[pos]
                    pred = compiled[n]  # (`_confirm` spelt out: two calls fewer per confirmation)
                    if pred is None:
                        pred = index.predicate(n)
                    matched: dict[str, Any] = {}
                    if pred(view, matched):
                        if ev is None:
                            ev = make(fields, raw.source)
                            part = event_part(ev) if as_line is not None else None
                        info = entries[n].info
                        if as_line is not None and info.id not in lines_except:
                            found.append(as_line(info, ev, part, matched))
                        else:
                            found.append(self._detection_of(info, ev, matched))
                result.confirmations += len(positions)
        result.events -= len(result.not_events)
        return result

    def match_event(self, event: Event) -> list[Detection]:
        """Detections of one event, as `engine.match_event` gives them (inputs other than EVTX)."""
        if self._memo_cost > self.memo_bytes:
            self._forget()
        found: list[Detection] = []
        view = self._view(event.fields)
        plan, positions = self._candidates(event.fields, event.channel, event.event_id, view)
        for pos in positions:
            n = plan.entries[pos]
            matched = self._confirm(n, view)
            if matched is not None:
                found.append(self._detection_of(self.index.entries[n].info, event, matched))
        return found

    def _forget(self) -> None:
        self._states.clear()
        self._folded.clear()
        self._memo_cost = 0

    def _view(self, fields: Mapping[str, Any], layout: str | None = None) -> EventView:
        """The event's view, with the folded names of its layout (`RecordShape.layout_key`, or the names)."""
        shape: str | tuple[str, ...] = layout if layout is not None else tuple(fields)
        folded = self._folded.get(shape)
        if folded is None:
            folded = self._folded[shape] = fold_keys(fields)
            self._memo_cost += sys.getsizeof(shape) + sys.getsizeof(folded) + 2 * _ENTRY_BYTES * len(fields)
        return EventView(fields, folded)

    def _candidates(
        self, fields: Mapping[str, Any], channel: str | None, event_id: int | None, view: EventView,
        keyword_text: bytes | None = None,
    ) -> tuple[PartitionPlan, Sequence[int]]:
        """The partition plan of the event with these fields, `Event.channel` and `Event.event_id`, and the
        positions of its entries the guards cannot rule out (`keyword_text`: see `RecordShape`)."""
        ch, eid = route_key(channel, event_id, fields)
        plan = self.index.plan(ch, eid)
        if not plan.entries:
            return plan, []
        return plan, self._positions(plan, ch, eid, view, keyword_text)

    def _positions(
        self, plan: PartitionPlan, ch: str | None, eid: int | None, view: EventView,
        keyword_text: bytes | None,
    ) -> Sequence[int]:
        """The positions of `plan`'s entries (some) that the guards cannot rule out, for an event of route key
        `ch`, `eid` (`route_key`)."""
        # The plan's guards decide EventID and Channel tests from the partition (`specialise`): they hold
        # when the fields carry the partition's values, or when the partition leaves them undecided (None).
        fields = view.fields  # (both names as the records spell them, most of the time: no call)
        field_eid = fields.get("EventID", _MISSING)
        if field_eid is _MISSING:
            field_eid = view.get("EventID")
        field_ch = fields.get("Channel", _MISSING) if ch is not None else None
        if field_ch is _MISSING:
            field_ch = view.get("Channel")
        if (eid is None or (type(field_eid) is int and field_eid == eid)) and (ch is None or field_ch == ch):
            return plan.candidates_bits(self._hits(plan, view, keyword_text))
        return list(range(len(plan.entries)))

    def _hits(self, plan: PartitionPlan, view: EventView, keyword_text: bytes | None = None) -> int:
        """Owner bits of the anchors the event's values hit (see `PartitionPlan.candidates_bits`)."""
        fields = view.fields
        folded = view.folded
        if folded is None:
            folded = fold_keys(fields)
        state = self._states.get(id(plan))
        if state is None:
            state = self._state(plan)
        anchors, raw, finds, decides_utf8, raw_ints, refs = state
        if _compiled_field_hits is not None and type(fields) is dict and type(folded) is dict:
            out = _compiled_field_hits(anchors, fields, folded, view, self)
        else:
            out = self._field_hits(anchors, fields, folded, view)
        # The gate on the record's own keyword text (which holds every joined value) spares joining them where
        # it finds no keyword, which is nearly everywhere; where it finds one, the exact scan.
        if raw is not None and (
            keyword_text is None or finds is None or (not decides_utf8 and not keyword_text.isascii())
            or finds(keyword_text)
        ):
            out |= raw.positive(_joined_values(view, raw_ints))
        for name, other, op, bit in refs:
            # the reference's test on the lower-cased values; `lowered` keeps them for the confirmation
            rights = view.lowered(other)
            test = _REF_TESTS[op]
            if rights and any(test(a, b) for a in view.lowered(name) for b in rights):
                out |= bit
        return out

    def _state(self, plan: PartitionPlan) -> _PlanState:
        """`plan`'s `_PlanState`, its anchors' memos empty (made on the first record of its partition)."""
        anchors: list[_Anchored] = [
            (name, _fold(name), fa, {}, fa.neg_bits) for name, fa in plan.by_name.items()
        ]
        raw = plan.raw
        finds = raw.gate.finds if raw is not None and raw.gate is not None and raw.decides else None
        state = self._states[id(plan)] = (
            anchors, raw, finds, raw is not None and raw.decides_utf8, plan.raw_ints, plan.refs
        )
        return state

    def _field_hits(
        self, anchors: list[_Anchored], fields: Mapping[str, Any], folded: Mapping[str, str], view: EventView
    ) -> int:
        """Owner bits of the anchors on the event's fields (`_prefilter.field_hits` does this in C)."""
        out = 0
        for name, key, fa, seen, neg_bits in anchors:
            v = fields.get(name, _MISSING)
            if v is _MISSING:
                real = folded.get(key)  # the reference's folded-name lookup (`EventView.get`)
                if real is None:
                    out |= neg_bits  # every test on it is false, so its negations hold
                    continue
                v = fields[real]
            if type(v) is not str:
                if isinstance(v, (list, tuple)):
                    out |= self._list_bits(fa, name, v, view, seen)
                    continue
                v = _as_str(v)
            bits = seen.get(v)
            if bits is None:
                bits = self._miss(fa, v, seen)
            out |= bits
        return out

    def _miss(self, fa: _FieldAnchors, v: str, seen: dict[Any, int]) -> int:
        """The owner bits of string value `v`, which the memo `seen` lacks; remembered there."""
        bits = seen[v] = fa.bits(v.lower())
        # the value (kept alive by the memo) and the bits, a big integer in large partitions
        self._memo_cost += sys.getsizeof(v) + sys.getsizeof(bits) + _ENTRY_BYTES
        return bits

    def _list_bits(
        self, fa: _FieldAnchors, name: str, v: list[Any] | tuple[Any, ...], view: EventView,
        seen: dict[Any, int],
    ) -> int:
        """Owner bits for the list value `v` of field `name`: any of its elements' string forms. Remembered in
        `seen` by the tuple of its elements when they are strings or None (which compare equal to nothing of
        another type; `1` and `True` do, and have other string forms)."""
        items = tuple(v)
        key: tuple[Any, ...] | None = items
        for x in items:
            if x is not None and type(x) is not str:
                key = None
                break
        if key is not None:
            known = seen.get(key)
            if known is not None:
                return known
        values = view.lowered(name)
        bits = fa.neg_bits  # an empty list: no value passes any test
        if values:
            bits = 0
            for low in values:
                bits |= fa.bits(low)
        if key is not None:
            seen[key] = bits
            cost = sys.getsizeof(key) + sys.getsizeof(bits) + _ENTRY_BYTES
            for x in items:
                cost += sys.getsizeof(x)
            self._memo_cost += cost
        return bits

    def _confirm(self, n: int, view: EventView) -> dict[str, Any] | None:
        """The fields entry `n`'s condition matched on the event, or None when it does not hold."""
        # One evaluation that records: the reference evaluates without, then again with, a record; an And
        # records only once all its children hold and an Or stops at the first that holds, so a true answer
        # records what the reference's second evaluation does, and a false one nothing.
        matched: dict[str, Any] = {}
        return matched if self.index.predicate(n)(view, matched) else None

    def _as_line(self, info: RuleInfo, ev: Event, part: bytes | None, matched: dict[str, Any]) -> RuleLine:
        """A detection of rule `info` as its line (`event_part(ev)` is `part`)."""
        lines = self.lines
        assert lines is not None
        text = lines.sigma_line(info, part, matched) if part is not None else None
        if text is None:  # (the rule's first line, or values orjson refuses)
            text = lines.utf8(_detection(info, ev, matched, False))
        return info.id, text

    def _detection_of(self, info: RuleInfo, ev: Event, matched: dict[str, Any]) -> Detection:
        return _detection(info, ev, matched, self.fields_of is None or info.id in self.fields_of)


_INT_CHARS = frozenset("0123456789-")

#: Joins an event's values for the keyword scan; no keyword anchor holds it, so no match spans two values.
_SEP = "\x00"


def _joined_values(view: EventView, ints: bool = True) -> str:
    """Every field's lower-cased string forms, as the reference's keyword tests see them, in one string.

    Keyword anchors are `contains` literals, so one scan of the joined values finds what a scan of each
    would. The values are lower-cased one by one when a capital sigma is about, since its lower case
    depends on its neighbours (which the separator would otherwise be). Integers are left out unless
    `ints`."""
    parts: list[str] = []
    for name, v in view.fields.items():
        if type(v) is str:
            parts.append(v)
        elif type(v) is int and not ints:
            continue
        elif isinstance(v, (list, tuple)):
            parts.extend(view.strings(name))
        else:
            parts.append(_as_str(v))
    text = _SEP.join(parts)
    if _SIGMA in text:
        return _SEP.join(p.lower() for p in parts)
    return text.lower()


def _bits(owners: Iterable[int]) -> int:
    """A set of anchor owners as an integer bit set."""
    out = 0
    for o in owners:
        out |= 1 << o
    return out


def _detection(info: RuleInfo, event: Event, matched: dict[str, Any], with_fields: bool = True) -> Detection:
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
        # The event is this batch's own and is dropped after it, so its detections share its fields rather
        # than copy them (one dict per event, pickled once per task however many rules hit it).
        fields=event.fields if with_fields else {},
    )


__all__ = ["BatchHunter", "BatchResult", "Entry", "PartitionPlan", "RawJson", "VectorIndex"]
