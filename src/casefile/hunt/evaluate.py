"""The reference evaluator: exact, single-threaded Python evaluation of IR programs over event fields.

`compile_node` turns an IR tree into a predicate closure once (regexes compiled, globs translated);
the predicate takes an `EventView` (the event's fields with cached string forms) and, when given a
dict, records the fields whose tests made the condition true.

Semantics (also in docs/hunt.md):
- case-insensitive string tests compare `str.lower()` of both sides;
- a value's string form is `str(value)`, except None -> "" and bools -> "true"/"false";
- a list value matches when any element matches;
- field names are looked up exactly, then case-insensitively with spaces removed;
- a keyword leaf (`field is None`) matches when any field value matches.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import ahocorasick_rs

from casefile.hunt import ir
from casefile.hunt.regexes import search_test

_MISSING = object()


def _as_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fold(name: str) -> str:
    """Field-name key for the fallback lookup: case-folded, spaces removed (Sigma strips the spaces
    of names such as Defender's `Source Name` -> `SourceName`)."""
    return name.replace(" ", "").lower()


def route_key(
    channel: str | None, event_id: int | None, fields: Mapping[str, Any]
) -> tuple[str | None, int | None]:
    """The (channel, event id) partition an event's rules are routed by: its `Event.channel` and
    `Event.event_id`, else its `Channel` field (a string) and `EventID` field (as an integer)."""
    if channel is None:
        value = fields.get("Channel")
        channel = value if isinstance(value, str) else None
    if event_id is None:
        value = fields.get("EventID")
        try:
            event_id = int(value) if value is not None else None
        except (TypeError, ValueError, OverflowError):  # OverflowError: an EventID of Infinity (JSON logs)
            event_id = None
    return channel, event_id


def fold_keys(fields: Mapping[str, Any]) -> dict[str, str]:
    """The fields' names by folded name (the first of names that fold alike)."""
    out: dict[str, str] = {}
    for k in fields:
        out.setdefault(_fold(k), k)
    return out


class EventView:
    """An event's fields, with exact/case-insensitive lookup and cached string forms."""

    __slots__ = ("_lower", "fields", "folded")

    def __init__(self, fields: Mapping[str, Any], folded: dict[str, str] | None = None) -> None:
        """`folded`, if given, must be `fields`' names by folded name (records of one shape share it); it is
        made when first needed otherwise."""
        self.fields = fields
        self.folded = folded
        # made on first use: most events are never confirmed (their guards rule every rule out)
        self._lower: dict[str, tuple[str, ...]] | None = None

    def get(self, name: str) -> Any:
        """The field's value, or `_MISSING`."""
        v = self.fields.get(name, _MISSING)
        if v is _MISSING:
            if self.folded is None:
                self.folded = fold_keys(self.fields)
            real = self.folded.get(_fold(name))
            if real is not None:
                return self.fields[real]
        return v

    def has(self, name: str) -> bool:
        return self.get(name) is not _MISSING

    def key(self, name: str) -> str:
        """The event's own spelling of a field name (for reporting matched fields)."""
        if name in self.fields:
            return name
        if self.folded is None:
            self.folded = fold_keys(self.fields)
        return self.folded.get(_fold(name), name)

    def strings(self, name: str) -> tuple[str, ...]:
        """String forms of the field's value(s) (one per list element); empty when missing."""
        v = self.get(name)
        if type(v) is str:  # most values: their own string form
            return (v,)
        if v is _MISSING:
            return ()
        if isinstance(v, (list, tuple)):
            return tuple(_as_str(x) for x in v)
        return (_as_str(v),)

    def lowered(self, name: str) -> tuple[str, ...]:
        lower = self._lower
        if lower is None:
            lower = self._lower = {}
        cached = lower.get(name)
        if cached is None:
            v = self.get(name)
            # most values are one string: no generator for the one lower-cased form
            cached = (v.lower(),) if type(v) is str else tuple(s.lower() for s in self.strings(name))
            lower[name] = cached
        return cached

    def names(self) -> Iterator[str]:
        return iter(self.fields)


Predicate = Callable[[EventView, "dict[str, Any] | None"], bool]


def _record(view: EventView, field: str, rec: dict[str, Any] | None) -> None:
    if rec is not None:
        key = view.key(field)
        rec[key] = view.fields.get(key)


def glob_regex(parts: tuple[ir.GlobPart, ...]) -> str:
    """A glob (literal parts and wildcards) as an anchored-by-fullmatch regex pattern."""
    out = []
    for p in parts:
        if p is ir.Wildcard.MULTI:
            out.append(".*")
        elif p is ir.Wildcard.SINGLE:
            out.append(".")
        else:
            assert isinstance(p, str)
            out.append(re.escape(p))
    return "".join(out)


def _str_test(op: ir.StrOp, leaves: Sequence[ir.StrMatch]) -> Callable[[str], object]:
    """One test for several same-field, same-op string leaves ORed together; the result is truthy
    on a match. Where possible it is a bound C method (no Python frame per value)."""
    values = [leaf.value for leaf in leaves]
    if op == "eq":
        return frozenset(values).__contains__
    if op == "startswith":
        prefixes = tuple(values)
        return lambda s: s.startswith(prefixes)
    if op == "endswith":
        suffixes = tuple(values)
        return lambda s: s.endswith(suffixes)
    if op == "contains":
        return _contains_any(values)
    return re.compile("|".join(f"(?:{glob_regex(leaf.parts)})" for leaf in leaves), re.DOTALL).fullmatch


#: Code points with no UTF-8 form (`json` keeps lone surrogates), which an Aho-Corasick automaton
#: (`ahocorasick-rs`, here and in `vector`) cannot take.
_SURROGATES = re.compile("[\ud800-\udfff]")


def _contains_any(values: Sequence[str]) -> Callable[[str], object]:
    """Whether a string holds one of several literals.

    Many literals are searched with one Aho-Corasick automaton (a Rust pass over the string, which finds
    a match whenever one exists): Python's `re` tries each alternative of `a|b|c...` at every position
    and compiles big alternations slowly; SigmaHQ has 2,641 such lists, 39 of them over 64 literals.
    """
    words = tuple(dict.fromkeys(values))
    if "" in words:
        return lambda s: True  # every string contains the empty one
    if len(words) == 1:
        word = words[0]
        return lambda s: word in s
    if len(words) == 2:
        first, second = words
        return lambda s: first in s or second in s
    if any(_SURROGATES.search(w) for w in words):
        return re.compile("|".join(re.escape(w) for w in words), re.DOTALL).search
    find = ahocorasick_rs.AhoCorasick(words).find_matches_as_indexes

    def test(s: str) -> object:
        try:
            return find(s)  # a list of matches: empty when none
        except UnicodeEncodeError:  # a lone surrogate in the value: no literal holds one
            return any(w in s for w in words)

    return test


def _str_leaf(field: str | None, cased: bool, test: Callable[[str], object]) -> Predicate:
    if field is None:
        return _keyword(test, cased)
    fname = field

    def pred(view: EventView, rec: dict[str, Any] | None) -> bool:
        values: tuple[str, ...] | None
        if cased:
            values = view.strings(fname)
        else:
            # hot path: read the per-event cache of lower-cased values, fill it on first use
            lower = view._lower
            values = lower.get(fname) if lower is not None else None
            if values is None:
                values = view.lowered(fname)
        for s in values:
            if test(s):
                if rec is not None:
                    _record(view, fname, rec)
                return True
        return False

    return pred


def _or_strings(children: Sequence[ir.Node]) -> list[Predicate]:
    """Compile an Or's children, fusing same-field, same-op string leaves into one test."""
    groups: dict[tuple[str | None, ir.StrOp, bool], list[ir.StrMatch]] = {}
    out: list[Predicate] = []
    for c in children:
        if isinstance(c, ir.StrMatch):
            groups.setdefault((c.field, c.op, c.cased), []).append(c)
        else:
            out.append(compile_node(c))
    fused = [_str_leaf(f, cased, _str_test(op, leaves)) for (f, op, cased), leaves in groups.items()]
    return fused + out


def _keyword(test: Callable[[str], object], cased: bool) -> Predicate:
    def pred(view: EventView, rec: dict[str, Any] | None) -> bool:
        hit = False
        for name in view.names():
            values = view.strings(name) if cased else view.lowered(name)
            if any(test(s) for s in values):
                if rec is None:
                    return True
                hit = True
                _record(view, name, rec)
        return hit

    return pred


def _leaf(field: str, test: Callable[[EventView], bool]) -> Predicate:
    def pred(view: EventView, rec: dict[str, Any] | None) -> bool:
        if test(view):
            _record(view, field, rec)
            return True
        return False

    return pred


def _number(v: Any) -> int | float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            try:
                return float(s)
            except ValueError:
                return None
    return None


def _values(view: EventView, field: str) -> list[Any]:
    v = view.get(field)
    if v is _MISSING:
        return []
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


_CMP: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a field value spells, None when it is not one (logs repeat a few addresses a lot)."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def in_network(net: ipaddress.IPv4Network | ipaddress.IPv6Network, v: Any) -> bool:
    """`cidr`: the value's string form is an address of the network's version, inside it."""
    addr = _ip(_as_str(v))
    return addr is not None and addr.version == net.version and addr in net



def compile_node(node: ir.Node) -> Predicate:
    """A predicate closure for an IR tree (compile once per program, call once per event)."""
    if isinstance(node, ir.Const):
        const = node.value
        return lambda view, rec: const
    if isinstance(node, ir.And):
        kids = [compile_node(c) for c in node.children]

        def and_(view: EventView, rec: dict[str, Any] | None) -> bool:
            if rec is None:
                for k in kids:  # noqa: SIM110  (hot path: no generator per call)
                    if not k(view, None):
                        return False
                return True
            local: dict[str, Any] = {}
            for k in kids:
                if not k(view, local):
                    return False
            rec.update(local)
            return True

        return and_
    if isinstance(node, ir.Or):
        alts = _or_strings(node.children)

        def or_(view: EventView, rec: dict[str, Any] | None) -> bool:
            for k in alts:  # noqa: SIM110  (hot path: no generator per call)
                if k(view, rec):
                    return True
            return False

        return or_
    if isinstance(node, ir.Not):
        kid = compile_node(node.child)
        return lambda view, rec: not kid(view, None)
    if isinstance(node, ir.StrMatch):
        return _str_leaf(node.field, node.cased, _str_test(node.op, [node]))
    if isinstance(node, ir.RegexMatch):
        flags = 0
        for f in node.flags:
            flags |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}[f]
        rtest = search_test(node.pattern, flags)
        if node.field is None:
            return _keyword(rtest, True)
        rfield = node.field

        def regex(view: EventView) -> bool:
            for s in view.strings(rfield):  # noqa: SIM110  (hot path: no generator per call)
                if rtest(s):
                    return True
            return False

        return _leaf(rfield, regex)
    if isinstance(node, ir.CidrMatch):
        net = ipaddress.ip_network(node.network, strict=False)
        cfield = node.field
        return _leaf(cfield, lambda view: any(in_network(net, v) for v in _values(view, cfield)))
    if isinstance(node, ir.NumEq):
        target = node.value
        if node.field is None:
            return _keyword(lambda s: s == str(target), True)
        nfield = node.field

        def num_eq(view: EventView) -> bool:
            for v in _values(view, nfield):
                n = _number(v)
                if n is not None and n == target:
                    return True
            return False

        return _leaf(nfield, num_eq)
    if isinstance(node, ir.BoolEq):
        want = "true" if node.value else "false"
        bfield = node.field
        return _leaf(bfield, lambda view: any(s == want for s in view.lowered(bfield)))
    if isinstance(node, ir.Compare):
        cmp = _CMP[node.op]
        bound = node.value
        kfield = node.field

        def compare(view: EventView) -> bool:
            for v in _values(view, kfield):
                n = _number(v)
                if n is not None and cmp(n, bound):
                    return True
            return False

        return _leaf(kfield, compare)
    if isinstance(node, ir.Exists):
        efield, present = node.field, node.present
        if present:
            return _leaf(efield, lambda view: view.has(efield))
        return lambda view, rec: not view.has(efield)
    if isinstance(node, ir.IsNull):
        zfield = node.field

        def is_null(view: EventView, rec: dict[str, Any] | None) -> bool:
            v = view.get(zfield)
            return v is _MISSING or v is None or v == "" or v == []

        return is_null
    if isinstance(node, ir.FieldRef):
        return _fieldref(node)
    raise TypeError(f"unknown IR node {type(node).__name__}")


#: `fieldref` tests by op: whether a value `a` of the field holds a value `b` of the other field.
FIELDREF_TESTS: dict[str, Callable[[str, str], bool]] = {
    "eq": str.__eq__,
    "startswith": str.startswith,
    "endswith": str.endswith,
    "contains": str.__contains__,  # b in a
}


def _fieldref(node: ir.FieldRef) -> Predicate:
    field, other, cased = node.field, node.other, node.cased
    op = FIELDREF_TESTS[node.op]

    def pred(view: EventView, rec: dict[str, Any] | None) -> bool:
        if not view.has(other):
            return False
        left = view.strings(field) if cased else view.lowered(field)
        right = view.strings(other) if cased else view.lowered(other)
        if any(op(a, b) for a in left for b in right):
            _record(view, field, rec)
            _record(view, other, rec)
            return True
        return False

    return pred
