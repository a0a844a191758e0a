"""Compile a parsed pySigma rule into IR programs, one per log source (see `ir.py` for semantics).

The compiler walks `rule.detection.parsed_condition` (pySigma has already applied every value
modifier: wildcards, windash/base64offset expansions, utf16, cidr, re flags, fieldref, ...) and maps
each pySigma value type to an IR leaf through a type table, the way a pySigma backend does.
Field renames and extra conditions come from the log source (`routing.Source`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaType,
    SpecialChars,
)

from casefile.hunt import ir
from casefile.hunt.routing import Source


class UnsupportedRule(Exception):
    """The rule uses something casefile cannot evaluate; the message is the skip reason."""


_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: "i",
    SigmaRegularExpressionFlag.MULTILINE: "m",
    SigmaRegularExpressionFlag.DOTALL: "s",
}
_COMPARE: dict[CompareOperators, ir.CompareOp] = {
    CompareOperators.GT: "gt",
    CompareOperators.GTE: "gte",
    CompareOperators.LT: "lt",
    CompareOperators.LTE: "lte",
}
_WILDCARDS = {
    SpecialChars.WILDCARD_MULTI: ir.Wildcard.MULTI,
    SpecialChars.WILDCARD_SINGLE: ir.Wildcard.SINGLE,
}

Placeholders = Mapping[str, list[str]]
_Handler = Callable[["Compiler", str | None, SigmaType, Mapping[str, str]], ir.Node]


def string_leaf(field: str | None, value: SigmaString, *, cased: bool = False) -> ir.Node:
    """A SigmaString (parts and wildcards) as the cheapest equivalent string test."""
    parts: list[ir.GlobPart] = []
    for p in value.s:
        if isinstance(p, Placeholder):
            raise UnsupportedRule(f"unresolved placeholder %{p.name}% (pass placeholders to load_rules)")
        if isinstance(p, SpecialChars):
            parts.append(_WILDCARDS[p])
        else:
            text = p if cased else p.lower()
            if parts and isinstance(parts[-1], str):
                parts[-1] = parts[-1] + text
            else:
                parts.append(text)
    multi = ir.Wildcard.MULTI
    literal = [p for p in parts if isinstance(p, str)]
    n = len(parts)
    if n == 0:
        return ir.StrMatch(field, "eq", "", cased)
    if n == 1 and literal:
        return ir.StrMatch(field, "eq", literal[0], cased)
    if n == 2 and parts[0] is multi and literal and parts[1] == literal[0]:
        return ir.StrMatch(field, "endswith", literal[0], cased)
    if n == 2 and parts[1] is multi and literal and parts[0] == literal[0]:
        return ir.StrMatch(field, "startswith", literal[0], cased)
    if n == 3 and parts[0] is multi and parts[2] is multi and isinstance(parts[1], str):
        return ir.StrMatch(field, "contains", parts[1], cased)
    text = "".join(p if isinstance(p, str) else p.value for p in parts)
    return ir.StrMatch(field, "glob", text, cased, tuple(parts))


def _contains(value: SigmaString) -> SigmaString:
    """A keyword value as a substring search (keywords match anywhere in any field)."""
    out = value
    if not value.startswith(SpecialChars.WILDCARD_MULTI):
        out = SpecialChars.WILDCARD_MULTI + out
    if not value.endswith(SpecialChars.WILDCARD_MULTI):
        out = out + SpecialChars.WILDCARD_MULTI
    return out


class Compiler:
    """Turns one rule into IR for one source. `placeholders` resolves `|expand` values."""

    def __init__(self, placeholders: Placeholders | None = None) -> None:
        self.placeholders = dict(placeholders or {})

    # -- values -----------------------------------------------------------------------------

    def _expand_placeholders(self, value: SigmaString) -> list[SigmaString]:
        if not value.contains_placeholder():
            return [value]

        def lookup(p: Placeholder) -> Iterator[str | SpecialChars | Placeholder | SigmaString]:
            if p.name not in self.placeholders:
                raise UnsupportedRule(
                    f"unresolved placeholder %{p.name}% (pass placeholders to load_rules / --placeholder)"
                )
            for v in self.placeholders[p.name]:
                yield SigmaString(v)

        return list(value.replace_placeholders(lookup))

    def value(self, field: str | None, value: SigmaType, fields: Mapping[str, str]) -> ir.Node:
        handler = self._handlers.get(type(value))
        if handler is None:
            for cls, h in self._handlers.items():
                if isinstance(value, cls):
                    handler = h
                    break
        if handler is None:
            raise UnsupportedRule(f"value type {type(value).__name__} is not supported")
        return handler(self, field, value, fields)

    def _string(self, field: str | None, value: SigmaType, fields: Mapping[str, str]) -> ir.Node:
        assert isinstance(value, SigmaString)
        cased = isinstance(value, SigmaCasedString)
        nodes = []
        for v in self._expand_placeholders(value):
            if field is None:
                v = _contains(v)
            nodes.append(string_leaf(field, v, cased=cased))
        return nodes[0] if len(nodes) == 1 else ir.Or(tuple(nodes))

    def _number(self, field: str | None, value: SigmaType, fields: Mapping[str, str]) -> ir.Node:
        assert isinstance(value, SigmaNumber)
        if field is None:
            return ir.StrMatch(None, "contains", str(value.number))
        return ir.NumEq(field, value.number)

    def _bool(self, field: str | None, value: SigmaType, fields: Mapping[str, str]) -> ir.Node:
        assert isinstance(value, SigmaBool)
        if field is None:
            raise UnsupportedRule("boolean keyword without a field")
        return ir.BoolEq(field, bool(value.boolean))

    def _null(self, field: str | None, value: SigmaType, fields: Mapping[str, str]) -> ir.Node:
        if field is None:
            raise UnsupportedRule("null keyword without a field")
        return ir.IsNull(field)

    def _exists(self, field: str | None, value: SigmaType, fields: Mapping[str, str]) -> ir.Node:
        assert isinstance(value, SigmaExists)
        if field is None:
            raise UnsupportedRule("exists without a field")
        return ir.Exists(field, bool(value.exists))

    def _regex(self, field: str | None, value: SigmaType, fields: Mapping[str, str]) -> ir.Node:
        assert isinstance(value, SigmaRegularExpression)
        if value.regexp.contains_placeholder():
            raise UnsupportedRule("placeholder inside a regular expression")
        flags = frozenset(_FLAGS[f] for f in value.flags)
        return ir.RegexMatch(field, str(value.regexp), flags)

    def _cidr(self, field: str | None, value: SigmaType, fields: Mapping[str, str]) -> ir.Node:
        assert isinstance(value, SigmaCIDRExpression)
        if field is None:
            raise UnsupportedRule("cidr keyword without a field")
        return ir.CidrMatch(field, str(value.network))

    def _compare(self, field: str | None, value: SigmaType, fields: Mapping[str, str]) -> ir.Node:
        assert isinstance(value, SigmaCompareExpression)
        if field is None:
            raise UnsupportedRule("comparison keyword without a field")
        if value.op is CompareOperators.NEQ:
            return ir.And((ir.Exists(field, True), ir.Not(ir.NumEq(field, value.number.number))))
        return ir.Compare(field, _COMPARE[value.op], value.number.number)

    def _fieldref(self, field: str | None, value: SigmaType, fields: Mapping[str, str]) -> ir.Node:
        assert isinstance(value, SigmaFieldReference)
        if field is None:
            raise UnsupportedRule("fieldref keyword without a field")
        op: ir.FieldRefOp = "eq"
        if value.starts_with and value.ends_with:
            op = "contains"
        elif value.starts_with:
            op = "startswith"
        elif value.ends_with:
            op = "endswith"
        return ir.FieldRef(field, fields.get(value.field, value.field), op)

    def _expansion(self, field: str | None, value: SigmaType, fields: Mapping[str, str]) -> ir.Node:
        assert isinstance(value, SigmaExpansion)
        nodes = tuple(self.value(field, v, fields) for v in value.values)
        return nodes[0] if len(nodes) == 1 else ir.Or(nodes)

    _handlers: ClassVar[dict[type[SigmaType], _Handler]] = {
        SigmaCasedString: _string,
        SigmaString: _string,
        SigmaNumber: _number,
        SigmaBool: _bool,
        SigmaNull: _null,
        SigmaExists: _exists,
        SigmaRegularExpression: _regex,
        SigmaCIDRExpression: _cidr,
        SigmaCompareExpression: _compare,
        SigmaFieldReference: _fieldref,
        SigmaExpansion: _expansion,
    }

    # -- conditions -------------------------------------------------------------------------

    def condition(self, node: Any, fields: Mapping[str, str]) -> ir.Node:
        if isinstance(node, ConditionAND):
            return ir.And(tuple(self.condition(a, fields) for a in node.args))
        if isinstance(node, ConditionOR):
            return ir.Or(tuple(self.condition(a, fields) for a in node.args))
        if isinstance(node, ConditionNOT):
            return ir.Not(self.condition(node.args[0], fields))
        if isinstance(node, ConditionFieldEqualsValueExpression):
            return self.value(fields.get(node.field, node.field), node.value, fields)
        if isinstance(node, ConditionValueExpression):
            return self.value(None, node.value, fields)
        raise UnsupportedRule(f"condition element {type(node).__name__} is not supported")

    def compile(self, rule: SigmaRule, sources: tuple[Source, ...]) -> list[ir.Program]:
        """One program per source; raises UnsupportedRule (or SigmaError) with the reason."""
        try:
            parsed = [c.parse() for c in rule.detection.parsed_condition]
        except SigmaError as exc:
            raise UnsupportedRule(f"condition: {exc}") from exc
        rule_id = str(rule.id) if rule.id else rule.title
        programs = []
        for source in sources:
            conds = [self.condition(p, source.fields) for p in parsed]
            cond: ir.Node = conds[0] if len(conds) == 1 else ir.Or(tuple(conds))
            extra: list[ir.Node] = []
            for fname, values in source.conditions:
                leaves = tuple(ir.StrMatch(fname, "eq", v.lower()) for v in values)
                extra.append(leaves[0] if len(leaves) == 1 else ir.Or(leaves))
            if extra:
                cond = ir.And((*extra, cond))
            programs.append(
                ir.Program(
                    rule_id=rule_id,
                    source=source.name,
                    route=ir.Route(channels=source.channels, event_ids=source.event_ids),
                    condition=simplify(cond),
                )
            )
        return programs


def simplify(node: ir.Node) -> ir.Node:
    """Flatten nested And/Or of the same kind and unwrap single-child groups (semantics unchanged)."""
    if isinstance(node, (ir.And, ir.Or)):
        kind = type(node)
        flat: list[ir.Node] = []
        for c in node.children:
            s = simplify(c)
            if isinstance(s, kind):
                flat.extend(s.children)
            else:
                flat.append(s)
        if len(flat) == 1:
            return flat[0]
        return kind(tuple(flat))
    if isinstance(node, ir.Not):
        return ir.Not(simplify(node.child))
    return node
