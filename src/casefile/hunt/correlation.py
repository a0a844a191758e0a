"""Sigma correlation rules evaluated over base-rule detections.

`compile_correlation` turns a pySigma `SigmaCorrelationRule` (references already resolved by its
`SigmaCollection`) into a `CompiledCorrelation`; `correlate` runs compiled correlations over the
detections of their base rules and returns correlation detections. The window semantics are
documented in docs/correlation.md ("Correlation rules"); in short:

* events are grouped by the `group-by` values (aliases resolved per rule); an event that lacks a
  group-by field belongs to no group (as in SIEM `stats ... by`);
* a set of events is "within the timespan" when last - first <= timespan (inclusive);
* monotone conditions (`gt`/`gte` on counts, sums and temporal rules, extended temporal conditions
  without `not`) are evaluated on a sliding window ending at every event and fire at the first
  event that satisfies them; the events of a firing window are then consumed, so each event feeds
  at most one detection per correlation and group;
* every other condition (`lt`, `lte`, `eq`, `neq`, averages, percentiles, medians, `not`) is
  evaluated once per tumbling window [first, first + timespan] when the window closes.
"""

from __future__ import annotations

import functools
import math
import operator
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeAlias

from casefile.errors import RuleError
from casefile.models import Detection, DetectionKind, IngestWarning, Level, RuleInfo, utc_text
from casefile.registry import Registry

if TYPE_CHECKING:
    # pySigma is imported by the functions that compile rules: a hunt with a warm rule cache, and each of
    # its worker processes, never loads it.
    from sigma.correlations import CorrelationConditionItem, SigmaCorrelationRule, SigmaRuleReference

__all__ = [
    "CompiledCorrelation",
    "ConditionExpr",
    "CorrelationCondition",
    "CorrelationType",
    "ExprAnd",
    "ExprNot",
    "ExprOr",
    "ExprRule",
    "Operator",
    "RuleRef",
    "compile_correlation",
    "correlate",
    "input_rule_ids",
    "rule_key",
    "suppressed_rule_ids",
]

#: How many contributing events a correlation detection lists in `matched["events"]`.
MAX_LISTED_EVENTS = 50
#: How many distinct values a value_count detection lists in `matched["values"]`.
MAX_LISTED_VALUES = 50


class CorrelationType(StrEnum):
    """The correlation types pySigma parses (the spec's four plus the value aggregations)."""

    EVENT_COUNT = "event_count"
    VALUE_COUNT = "value_count"
    TEMPORAL = "temporal"
    TEMPORAL_ORDERED = "temporal_ordered"
    VALUE_SUM = "value_sum"
    VALUE_AVG = "value_avg"
    VALUE_PERCENTILE = "value_percentile"
    VALUE_MEDIAN = "value_median"


class Operator(StrEnum):
    """Comparison of the window's aggregate with the condition's threshold."""

    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    EQ = "eq"
    NEQ = "neq"


_COMPARE: Mapping[Operator, Callable[[float, float], bool]] = {
    Operator.GT: operator.gt,
    Operator.GTE: operator.ge,
    Operator.LT: operator.lt,
    Operator.LTE: operator.le,
    Operator.EQ: operator.eq,
    Operator.NEQ: operator.ne,
}


@dataclass(frozen=True, slots=True)
class RuleRef:
    """One rule referenced by a correlation, as written (`reference`) and as resolved."""

    reference: str
    id: str | None
    name: str | None
    title: str
    is_correlation: bool

    @property
    def key(self) -> str:
        """The id detections of this rule carry (`Detection.rule.id`): the UUID, else the name."""
        return self.id or self.name or self.reference

    @property
    def keys(self) -> frozenset[str]:
        """Every identifier a detection of this rule may carry (id and name)."""
        return frozenset(k for k in (self.id, self.name, self.reference) if k)


@dataclass(frozen=True, slots=True)
class CorrelationCondition:
    """`<op>: <threshold>` plus, for value_* types, the field(s) and the percentile."""

    op: Operator
    threshold: int
    fields: tuple[str, ...] = ()
    percentile: int | None = None

    def holds(self, value: float) -> bool:
        return _COMPARE[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.op.value} {self.threshold}"


@dataclass(frozen=True, slots=True)
class ExprRule:
    """Leaf of an extended temporal condition: rule number `index` of `CompiledCorrelation.rules`."""

    index: int


@dataclass(frozen=True, slots=True)
class ExprAnd:
    args: tuple[ConditionExpr, ...]


@dataclass(frozen=True, slots=True)
class ExprOr:
    args: tuple[ConditionExpr, ...]


@dataclass(frozen=True, slots=True)
class ExprNot:
    arg: ConditionExpr


ConditionExpr: TypeAlias = ExprRule | ExprAnd | ExprOr | ExprNot


def _expr_holds(expr: ConditionExpr, seen: frozenset[int] | set[int]) -> bool:
    if isinstance(expr, ExprRule):
        return expr.index in seen
    if isinstance(expr, ExprAnd):
        return all(_expr_holds(a, seen) for a in expr.args)
    if isinstance(expr, ExprOr):
        return any(_expr_holds(a, seen) for a in expr.args)
    return not _expr_holds(expr.arg, seen)


def _expr_has_not(expr: ConditionExpr) -> bool:
    if isinstance(expr, ExprRule):
        return False
    if isinstance(expr, ExprNot):
        return True
    return any(_expr_has_not(a) for a in expr.args)


def _expr_is_pure_and(expr: ConditionExpr) -> bool:
    if isinstance(expr, ExprRule):
        return True
    return isinstance(expr, ExprAnd) and all(_expr_is_pure_and(a) for a in expr.args)


@dataclass(frozen=True)
class CompiledCorrelation:
    """A correlation rule ready to run: what it reads, how it groups, when it fires.

    `aliases` maps an alias name to `{rule key: field name}`; `expression` is set for extended
    temporal conditions (`condition: a and not b`) and replaces the count condition then.
    """

    id: str
    name: str | None
    info: RuleInfo
    type: CorrelationType
    rules: tuple[RuleRef, ...]
    group_by: tuple[str, ...]
    timespan: timedelta
    timespan_spec: str
    condition: CorrelationCondition
    aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    generate: bool = False
    expression: ConditionExpr | None = None

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """The key of every referenced rule, in the order the rule lists them."""
        return tuple(r.key for r in self.rules)

    @property
    def keys(self) -> frozenset[str]:
        """Every identifier another correlation may use to reference this one."""
        return frozenset(k for k in (self.id, self.name) if k)

    @property
    def sliding(self) -> bool:
        """True when the condition is monotone and is checked at every event (see module doc)."""
        if self.expression is not None:
            return not _expr_has_not(self.expression)
        if self.type not in _MONOTONE_TYPES:
            return False
        return self.condition.op in (Operator.GT, Operator.GTE)

    def field_for(self, name: str, rule_index: int) -> str:
        """The event field that holds group-by/condition field `name` for rule number `rule_index`."""
        mapping = self.aliases.get(name)
        if mapping is None:
            return name
        return mapping.get(self.rules[rule_index].key, name)


_MONOTONE_TYPES = frozenset(
    {
        CorrelationType.EVENT_COUNT,
        CorrelationType.VALUE_COUNT,
        CorrelationType.TEMPORAL,
        CorrelationType.TEMPORAL_ORDERED,
        CorrelationType.VALUE_SUM,
    }
)


def rule_key(rule: Any) -> str:
    """The identifier casefile uses for a pySigma rule: its UUID string, else its name, else its title.

    The hunt engine must give base-rule detections this id (`Detection.rule.id`) for correlations
    to find them; the name is accepted too.
    """
    if rule.id is not None:
        return str(rule.id)
    if rule.name:
        return str(rule.name)
    return str(rule.title)


def _source(rule: SigmaCorrelationRule, path: str | None) -> str:
    if path is not None:
        return path
    if rule.source is not None:
        return str(rule.source.path)
    return f"correlation {rule.title!r}"


def _rule_info(rule: SigmaCorrelationRule, path: str | None) -> RuleInfo:
    return RuleInfo(
        id=rule_key(rule),
        title=rule.title,
        level=Level.parse(str(rule.level)) if rule.level is not None else Level.INFORMATIONAL,
        status=str(rule.status) if rule.status is not None else None,
        author=rule.author,
        tags=tuple(str(t) for t in rule.tags),
        description=rule.description,
        references=tuple(rule.references),
        path=path if path is not None else str(rule.source.path) if rule.source is not None else None,
    )


def _resolve_ref(ref: SigmaRuleReference, source: str, rule_id: str) -> RuleRef:
    from sigma.correlations import SigmaCorrelationRule

    target = getattr(ref, "rule", None)
    if target is None:
        raise RuleError(
            source,
            f"referenced rule {ref.reference!r} is not resolved; load it in the same rule collection",
            rule_id,
        )
    return RuleRef(
        reference=ref.reference,
        id=str(target.id) if target.id is not None else None,
        name=target.name,
        title=target.title,
        is_correlation=isinstance(target, SigmaCorrelationRule),
    )


def _compile_expr(
    node: CorrelationConditionItem | SigmaRuleReference,
    index_of: Callable[[str], int],
) -> ConditionExpr:
    from sigma.correlations import (
        CorrelationConditionAND,
        CorrelationConditionItem,
        CorrelationConditionNOT,
        CorrelationConditionOR,
        SigmaRuleReference,
    )

    if isinstance(node, SigmaRuleReference):
        return ExprRule(index_of(node.reference))
    args = tuple(
        _compile_expr(a, index_of)
        for a in node.args
        if isinstance(a, SigmaRuleReference | CorrelationConditionItem)
    )
    if isinstance(node, CorrelationConditionNOT):
        return ExprNot(args[0])
    if isinstance(node, CorrelationConditionAND):
        return ExprAnd(args)
    if isinstance(node, CorrelationConditionOR):
        return ExprOr(args)
    raise TypeError(f"unknown correlation condition node {type(node).__name__}")


def compile_correlation(rule: SigmaCorrelationRule, *, path: str | None = None) -> CompiledCorrelation:
    """Compile a pySigma correlation rule whose references its `SigmaCollection` resolved.

    `path` names the rule file (for `RuleInfo.path` and errors) when pySigma did not record it.

    Raises `RuleError` (naming the rule file and id) for unresolved references, alias entries for
    rules the correlation does not reference, a value_percentile without `percentile`, multiple
    fields where one number is needed, and ordered extended conditions other than a plain `and`.
    """
    from sigma.correlations import SigmaCorrelationCondition, SigmaExtendedCorrelationCondition

    source = _source(rule, path)
    key = rule_key(rule)
    if rule.errors:
        raise RuleError(source, f"invalid correlation rule: {rule.errors[0]}", key)
    try:
        ctype = CorrelationType(str(rule.type))
    except ValueError:
        raise RuleError(source, f"unsupported correlation type {rule.type!s}", key) from None

    refs = rule.referenced_rules or [*(rule.rules or [])]
    if not refs:
        raise RuleError(source, "correlation references no rules", key)
    rules = tuple(_resolve_ref(r, source, key) for r in refs)

    def index_of(reference: str) -> int:
        for i, r in enumerate(rules):
            if reference == r.reference:
                return i
        for i, r in enumerate(rules):
            if reference in r.keys:
                return i
        raise RuleError(source, f"{reference!r} is not one of the correlation's rules", key)

    aliases: dict[str, dict[str, str]] = {}
    for alias in rule.aliases:
        aliases[alias.alias] = {
            rules[index_of(ref.reference)].key: field_name for ref, field_name in alias.mapping.items()
        }

    expression: ConditionExpr | None = None
    cond = rule.condition
    if isinstance(cond, SigmaExtendedCorrelationCondition):
        expression = _compile_expr(cond.parsed, index_of)
        if ctype is CorrelationType.TEMPORAL_ORDERED:
            if not _expr_is_pure_and(expression):
                raise RuleError(
                    source,
                    "temporal_ordered supports only 'and' in an extended condition "
                    f"(order of {cond.expression!r} is undefined); use temporal or a plain rules list",
                    key,
                )
            # `a and b and c` ordered is the rules list in that order: fall back to a count condition.
            expression = None
        condition = CorrelationCondition(Operator.GTE, len(rules))
    elif isinstance(cond, SigmaCorrelationCondition):
        fieldref = cond.fieldref
        fields: tuple[str, ...]
        if fieldref is None:
            fields = ()
        elif isinstance(fieldref, str):
            fields = (fieldref,)
        else:
            fields = tuple(str(f) for f in fieldref)
        if ctype in _NUMERIC_TYPES and len(fields) != 1:
            raise RuleError(source, f"{ctype.value} needs exactly one condition field, got {fields}", key)
        if ctype is CorrelationType.VALUE_COUNT and not fields:
            raise RuleError(source, "value_count needs a condition field", key)
        percentile = cond.percentile
        if ctype is CorrelationType.VALUE_PERCENTILE:
            if percentile is None:
                raise RuleError(source, "value_percentile needs 'percentile' in its condition", key)
            if not 0 <= percentile <= 100:
                raise RuleError(source, f"percentile {percentile} is outside 0..100", key)
        elif ctype is CorrelationType.VALUE_MEDIAN:
            percentile = 50
        condition = CorrelationCondition(Operator(cond.op.name.lower()), int(cond.count), fields, percentile)
    else:
        raise RuleError(source, f"unsupported condition {cond!r}", key)
    try:
        timespan = timedelta(seconds=rule.timespan.seconds)
    except OverflowError:
        reason = f"timespan {rule.timespan.spec!r} is longer than any date range"
        raise RuleError(source, reason, key) from None

    return CompiledCorrelation(
        id=key,
        name=rule.name,
        info=_rule_info(rule, path),
        type=ctype,
        rules=rules,
        group_by=tuple(rule.group_by or ()),
        timespan=timespan,
        timespan_spec=rule.timespan.spec,
        condition=condition,
        aliases=aliases,
        generate=bool(rule.generate),
        expression=expression,
    )


_NUMERIC_TYPES = frozenset(
    {
        CorrelationType.VALUE_SUM,
        CorrelationType.VALUE_AVG,
        CorrelationType.VALUE_PERCENTILE,
        CorrelationType.VALUE_MEDIAN,
    }
)


def suppressed_rule_ids(correlations: Sequence[CompiledCorrelation]) -> frozenset[str]:
    """Identifiers of rules that must not be reported on their own (referenced with generate: false).

    Contains each such rule's UUID and name, so a filter on `Detection.rule.id` works either way.
    """
    out: set[str] = set()
    for c in correlations:
        if not c.generate:
            for r in c.rules:
                out |= r.keys
    return frozenset(out)


def input_rule_ids(correlations: Sequence[CompiledCorrelation]) -> frozenset[str]:
    """Identifiers of every rule whose detections `correlate` needs (keep them, even if suppressed)."""
    return frozenset(k for c in correlations for r in c.rules for k in r.keys)


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass(slots=True)  # not frozen: frozen __init__ is several times slower, and this is internal
class _Item:
    """One input detection as one correlation sees it (never mutated after construction)."""

    ts: datetime
    order: tuple[int, int]  # (input position, chain depth): ties at equal timestamps
    steps: tuple[int, ...]  # indices into CompiledCorrelation.rules
    value: Any  # the condition field value(s), or _MISSING
    detection: Detection
    number: float | int | None = None  # `value` as a number, for the value_* aggregations


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _lookup(d: Detection, name: str) -> Any:
    # A chained correlation's own group-by values live in `group`, the event's fields in `fields`.
    if name in d.group:
        return d.group[name]
    value = d.fields.get(name, _MISSING)
    if value is _MISSING:
        # Same fallback as the rule evaluator: case-insensitive, spaces removed ("Source Name").
        folded = _fold(name)
        for key, candidate in d.fields.items():
            if _fold(key) == folded:
                return candidate
    return value


def _fold(name: str) -> str:
    return name.replace(" ", "").lower()


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a field value (lists and dicts from JSON logs included)."""
    if type(value) in _SCALARS:  # the common case, checked first: this runs once per detection
        return value
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, set | frozenset):
        return tuple(sorted(repr(_freeze(v)) for v in value))
    return value


def _number(value: Any) -> float | int | None:
    """The numeric value of a field, or None when it is not a number (then it is skipped)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 0) if text.lower().startswith(("0x", "-0x")) else int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _percentile(values: Sequence[float | int], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, Hyndman-Fan type 7)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class _Aggregate(ABC):
    """Incremental aggregate over one group's window (added oldest first, removed oldest first)."""

    def __init__(self, corr: CompiledCorrelation) -> None:
        self.corr = corr

    @abstractmethod
    def add(self, item: _Item) -> None: ...

    @abstractmethod
    def remove(self, item: _Item) -> None: ...

    @abstractmethod
    def value(self, lower: datetime) -> float | int | None:
        """The aggregate of the window's items starting at or after `lower`; None when undefined."""

    def satisfied(self, lower: datetime) -> bool:
        value = self.value(lower)
        return value is not None and self.corr.condition.holds(value)

    def summary(self) -> dict[str, Any]:
        return {}


class _EventCount(_Aggregate):
    def __init__(self, corr: CompiledCorrelation) -> None:
        super().__init__(corr)
        self.n = 0

    def add(self, item: _Item) -> None:
        self.n += 1

    def remove(self, item: _Item) -> None:
        self.n -= 1

    def value(self, lower: datetime) -> int:
        return self.n


class _ValueCount(_Aggregate):
    """Distinct values of the condition field (a tuple of values when several fields are named)."""

    def __init__(self, corr: CompiledCorrelation) -> None:
        super().__init__(corr)
        self.counts: Counter[Any] = Counter()
        self.first: dict[Any, Any] = {}

    def add(self, item: _Item) -> None:
        if item.value is not _MISSING:
            frozen = _freeze(item.value)
            self.counts[frozen] += 1
            self.first.setdefault(frozen, item.value)

    def remove(self, item: _Item) -> None:
        if item.value is not _MISSING:
            frozen = _freeze(item.value)
            self.counts[frozen] -= 1
            if self.counts[frozen] <= 0:
                del self.counts[frozen]
                del self.first[frozen]

    def value(self, lower: datetime) -> int:
        return len(self.counts)

    def summary(self) -> dict[str, Any]:
        values = list(self.first.values())
        return {
            "values": values[:MAX_LISTED_VALUES],
            "values_truncated": len(values) > MAX_LISTED_VALUES,
        }


class _Numbers(_Aggregate):
    """Numeric values of the condition field; non-numeric and missing values are skipped.

    The running total is an exact Fraction, so removing values never leaves float residue that
    could flip a `gte` threshold.
    """

    def __init__(self, corr: CompiledCorrelation) -> None:
        super().__init__(corr)
        self.values: deque[float | int] = deque()
        self.total = Fraction(0)

    def add(self, item: _Item) -> None:
        if item.number is not None:
            self.values.append(item.number)
            self.total += Fraction(item.number)

    def remove(self, item: _Item) -> None:
        if item.number is not None:
            self.total -= Fraction(self.values.popleft())

    def summary(self) -> dict[str, Any]:
        return {"numeric_values": len(self.values)}


def _plain(number: Fraction) -> float | int:
    return number.numerator if number.denominator == 1 else float(number)


class _ValueSum(_Numbers):
    def value(self, lower: datetime) -> float | int | None:
        return _plain(self.total)


class _ValueAvg(_Numbers):
    def value(self, lower: datetime) -> float | int | None:
        return _plain(self.total / len(self.values)) if self.values else None


class _ValuePercentile(_Numbers):
    def value(self, lower: datetime) -> float | None:
        percentile = self.corr.condition.percentile
        if not self.values or percentile is None:
            return None
        return _percentile(list(self.values), percentile)


class _Temporal(_Aggregate):
    """Which referenced rules were seen in the window (all of them by default, or the expression)."""

    def __init__(self, corr: CompiledCorrelation) -> None:
        super().__init__(corr)
        self.seen: dict[int, int] = {}

    def add(self, item: _Item) -> None:
        for step in item.steps:
            self.seen[step] = self.seen.get(step, 0) + 1

    def remove(self, item: _Item) -> None:
        for step in item.steps:
            left = self.seen[step] - 1
            if left:
                self.seen[step] = left
            else:
                del self.seen[step]

    def value(self, lower: datetime) -> int:
        return len(self.seen)

    def satisfied(self, lower: datetime) -> bool:
        if self.corr.expression is not None:
            return _expr_holds(self.corr.expression, set(self.seen))
        return super().satisfied(lower)


class _TemporalOrdered(_Aggregate):
    """Longest prefix of the rules list seen in that order, every step after the previous one.

    `start[k]` is the latest start time of a chain rules[0] < ... < rules[k] seen so far; a later
    start is always at least as good, so one number per step suffices. Chains that started before
    the window's lower bound are ignored, which replaces removal.
    """

    def __init__(self, corr: CompiledCorrelation) -> None:
        super().__init__(corr)
        self.start: list[datetime | None] = [None] * len(corr.rules)

    def add(self, item: _Item) -> None:
        # Highest step first, so one event never fills two consecutive steps of the same chain.
        for step in sorted(item.steps, reverse=True):
            if step == 0:
                candidate: datetime | None = item.ts
            else:
                candidate = self.start[step - 1]
            current = self.start[step]
            if candidate is not None and (current is None or candidate > current):
                self.start[step] = candidate

    def remove(self, item: _Item) -> None:
        return None

    def value(self, lower: datetime) -> int:
        done = 0
        for begun in self.start:
            if begun is None or begun < lower:
                break
            done += 1
        return done


_AGGREGATES: Registry[Callable[[CompiledCorrelation], _Aggregate]] = Registry("correlation type")
_AGGREGATES.register(CorrelationType.EVENT_COUNT.value, _EventCount)
_AGGREGATES.register(CorrelationType.VALUE_COUNT.value, _ValueCount)
_AGGREGATES.register(CorrelationType.TEMPORAL.value, _Temporal)
_AGGREGATES.register(CorrelationType.TEMPORAL_ORDERED.value, _TemporalOrdered)
_AGGREGATES.register(CorrelationType.VALUE_SUM.value, _ValueSum)
_AGGREGATES.register(CorrelationType.VALUE_AVG.value, _ValueAvg)
_AGGREGATES.register(CorrelationType.VALUE_PERCENTILE.value, _ValuePercentile)
_AGGREGATES.register(CorrelationType.VALUE_MEDIAN.value, _ValuePercentile)


@functools.lru_cache(maxsize=4096)
def _techniques(rule: RuleInfo) -> tuple[str, ...]:
    return rule.techniques


class _Group:
    """Window state of one correlation for one group-by key."""

    def __init__(self, corr: CompiledCorrelation, key: tuple[Any, ...], group: dict[str, Any]) -> None:
        self.corr = corr
        self.key = key
        self.group = group
        self.items: deque[_Item] = deque()
        self.agg = _AGGREGATES.get(corr.type.value)(corr)

    def reset(self) -> None:
        self.items.clear()
        self.agg = _AGGREGATES.get(self.corr.type.value)(self.corr)

    def emit(self, last: _Item) -> Detection:
        corr = self.corr
        items = list(self.items)
        lower = items[0].ts
        rules = list(dict.fromkeys(it.detection.rule for it in items))  # distinct, first seen first
        rules_seen = list(dict.fromkeys(r.id for r in rules))
        techniques = list(dict.fromkeys(t for r in rules for t in _techniques(r)))
        for it in items:  # a chained correlation passes on the techniques of its own window
            if it.detection.kind is DetectionKind.CORRELATION:
                techniques.extend(
                    t for t in it.detection.matched.get("techniques", ()) if t not in techniques
                )
        matched: dict[str, Any] = {
            "type": corr.type.value,
            "timespan": corr.timespan_spec,
            "condition": str(corr.condition) if corr.expression is None else "expression",
            "value": self.agg.value(lower),
            "event_count": len(items),
            "first_seen": utc_text(items[0].ts),
            "last_seen": utc_text(last.ts),
            "rules": rules_seen,
            "techniques": techniques,
            "events": [
                {
                    "rule_id": it.detection.rule.id,
                    "timestamp": utc_text(it.ts),
                    "computer": it.detection.computer,
                    "file": it.detection.file,
                    "record_id": it.detection.record_id,
                }
                for it in items[:MAX_LISTED_EVENTS]
            ],
            "events_truncated": len(items) > MAX_LISTED_EVENTS,
        }
        if corr.condition.fields:
            matched["field"] = ",".join(corr.condition.fields)
        if corr.condition.percentile is not None:
            matched["percentile"] = corr.condition.percentile
        matched.update(self.agg.summary())
        d = last.detection
        return Detection(
            rule=corr.info,
            kind=DetectionKind.CORRELATION,
            timestamp=last.ts,
            computer=d.computer,
            channel=d.channel,
            event_id=d.event_id,
            record_id=d.record_id,
            file=d.file,
            matched=matched,
            fields=dict(d.fields),
            group=dict(self.group),
        )


_Hit: TypeAlias = tuple[_Item, Detection]  # (the event that completed it, the detection)


#: The earliest instant `datetime` holds: the window's lower bound for events of the first hours of year 1.
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _run_sliding(group: _Group, item: _Item) -> _Hit | None:
    try:
        lower = item.ts - group.corr.timespan
    except OverflowError:  # an event within the timespan of year 1's start: the window holds everything
        lower = _EARLIEST
    while group.items and group.items[0].ts < lower:
        group.agg.remove(group.items.popleft())
    group.items.append(item)
    group.agg.add(item)
    if group.agg.satisfied(lower):
        hit = group.emit(item)
        group.reset()  # these events are consumed: the next window starts after them
        return item, hit
    return None


def _close_tumbling(group: _Group) -> _Hit | None:
    if not group.items:
        return None
    last = group.items[-1]
    hit = group.emit(last) if group.agg.satisfied(group.items[0].ts) else None
    group.reset()
    return (last, hit) if hit is not None else None


def _run_tumbling(group: _Group, item: _Item) -> _Hit | None:
    hit = None
    if group.items and item.ts - group.items[0].ts > group.corr.timespan:
        hit = _close_tumbling(group)
    group.items.append(item)
    group.agg.add(item)
    return hit


def _evaluate(
    corr: CompiledCorrelation,
    items: Iterable[tuple[_Item, tuple[Any, ...], dict[str, Any]]],
) -> list[_Hit]:
    groups: dict[tuple[Any, ...], _Group] = {}
    step = _run_sliding if corr.sliding else _run_tumbling
    out: list[_Hit] = []
    for item, key, group_values in items:
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(corr, key, group_values)
        hit = step(group, item)
        if hit is not None:
            out.append(hit)
    if not corr.sliding:
        for group in groups.values():
            hit = _close_tumbling(group)
            if hit is not None:
                out.append(hit)
    out.sort(key=lambda pair: (pair[0].ts, pair[0].order))
    return out


def _order_correlations(correlations: Sequence[CompiledCorrelation]) -> list[CompiledCorrelation]:
    """Correlations referenced by others first; a reference cycle is a rule error."""
    by_key: dict[str, CompiledCorrelation] = {}
    for c in correlations:
        for k in c.keys:
            by_key[k] = c
    ordered: list[CompiledCorrelation] = []
    state: dict[int, str] = {}

    def visit(c: CompiledCorrelation, path: tuple[str, ...]) -> None:
        mark = state.get(id(c))
        if mark == "done":
            return
        if mark == "active":
            raise RuleError(
                c.info.path or c.info.title,
                f"correlation reference cycle: {' -> '.join((*path, c.id))}",
                c.id,
            )
        state[id(c)] = "active"
        for r in c.rules:
            dep = next((by_key[k] for k in r.keys if k in by_key), None)
            if dep is not None:
                visit(dep, (*path, c.id))
        state[id(c)] = "done"
        ordered.append(c)

    for c in correlations:
        visit(c, ())
    return ordered


def _utc(ts: datetime) -> datetime:
    # Events carry aware UTC timestamps; a naive one (hand-made JSON) is taken as UTC.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def correlate(
    correlations: Sequence[CompiledCorrelation],
    detections: Iterable[Detection],
    *,
    on_warning: Callable[[IngestWarning], None] | None = None,
) -> list[Detection]:
    """Run correlations over base-rule detections; return correlation detections in time order.

    `detections` must include the hits of every rule in `input_rule_ids(correlations)`, including
    rules in `suppressed_rule_ids` (their hits feed correlations but are not reported alone).
    Correlations referenced by another correlation run first and feed it; their own hits are
    returned only when no referencing correlation has generate: false. Detections without a
    timestamp, or without a group-by field, cannot be placed in a window: they are left out and
    reported through `on_warning` (one warning per correlation and cause).
    """
    ordered = _order_correlations(correlations)
    wanted = input_rule_ids(ordered)
    base: list[_Item] = []
    untimed: list[Detection] = []
    for position, d in enumerate(detections):
        if d.rule.id not in wanted:
            continue
        if d.timestamp is None:
            untimed.append(d)
            continue
        base.append(_Item(_utc(d.timestamp), (position, 0), (), None, d))
    if untimed and on_warning is not None:
        first = untimed[0]
        on_warning(
            IngestWarning(
                file=first.file or "<unknown file>",
                record=first.record_id,
                reason=(
                    f"{len(untimed)} detection(s) of rule(s) "
                    f"{', '.join(sorted({d.rule.id for d in untimed}))} have no timestamp; "
                    "correlation rules cannot place them in a time window"
                ),
            )
        )
    base.sort(key=lambda it: (it.ts, it.order))

    produced: dict[str, list[_Item]] = {}
    suppressed = suppressed_rule_ids(ordered)
    result: list[Detection] = []
    for corr in ordered:
        steps_of: dict[str, list[int]] = {}
        for index, r in enumerate(corr.rules):
            for k in r.keys:
                steps_of.setdefault(k, []).append(index)
        inputs = [it for it in base if it.detection.rule.id in steps_of]
        chained = [it for k in _ref_keys(corr) for it in produced.get(k, ())]
        if chained:
            inputs = sorted((*inputs, *chained), key=lambda it: (it.ts, it.order))
        prepared, missing = _prepare(corr, inputs, steps_of)
        if missing and on_warning is not None:
            first = missing[0]
            on_warning(
                IngestWarning(
                    file=first.file or "<unknown file>",
                    record=first.record_id,
                    reason=(
                        f"correlation {corr.info.title!r} [{corr.id}]: {len(missing)} detection(s) "
                        f"lack group-by field(s) {', '.join(corr.group_by)}; not counted"
                    ),
                )
            )
        hits = _evaluate(corr, prepared)
        out_items = [_Item(item.ts, (item.order[0], item.order[1] + 1), (), None, hit) for item, hit in hits]
        for k in corr.keys:
            produced[k] = out_items
        if not (corr.keys & suppressed):
            result.extend(hit for _, hit in hits)
    result.sort(key=lambda d: (d.timestamp or datetime.min.replace(tzinfo=UTC), d.rule.id))
    return result


def _ref_keys(corr: CompiledCorrelation) -> frozenset[str]:
    return frozenset(k for r in corr.rules if r.is_correlation for k in r.keys)


def _prepare(
    corr: CompiledCorrelation,
    inputs: Sequence[_Item],
    steps_of: Mapping[str, list[int]],
) -> tuple[list[tuple[_Item, tuple[Any, ...], dict[str, Any]]], list[Detection]]:
    prepared: list[tuple[_Item, tuple[Any, ...], dict[str, Any]]] = []
    missing: list[Detection] = []
    for it in inputs:
        d = it.detection
        steps = tuple(steps_of.get(d.rule.id, ()))
        if not steps:
            continue
        first_step = steps[0]
        group_values: dict[str, Any] = {}
        for name in corr.group_by:
            value = _lookup(d, corr.field_for(name, first_step))
            if value is _MISSING or value is None:
                break
            group_values[name] = value
        if len(group_values) != len(corr.group_by):
            missing.append(d)
            continue
        if len(corr.condition.fields) == 1:
            value = _lookup(d, corr.field_for(corr.condition.fields[0], first_step))
        elif corr.condition.fields:
            parts = [_lookup(d, corr.field_for(f, first_step)) for f in corr.condition.fields]
            value = _MISSING if any(p is _MISSING for p in parts) else tuple(parts)
        else:
            value = _MISSING
        key = tuple(_freeze(group_values[name]) for name in corr.group_by)
        number = _number(value) if corr.type in _NUMERIC_TYPES else None
        prepared.append((_Item(it.ts, it.order, steps, value, d, number), key, group_values))
    return prepared, missing
