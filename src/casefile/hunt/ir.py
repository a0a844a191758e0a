"""The intermediate representation a Sigma rule compiles to: a small boolean tree over field tests.

One `Program` per (rule, log source): the route says which events it can see (channel and event ids),
the condition is a tree of `Node`s. Evaluators (the reference one in `evaluate.py`, a vectorised one
elsewhere) interpret the same tree, so its semantics are fixed here:

- `field is None` on a leaf means a keyword search: the test holds if it holds for any field value.
- A field holding a list matches a leaf if any element matches.
- A missing field fails every leaf except `Exists(present=False)` and `IsNull`; `Not` is plain boolean
  negation, so `not Field: x` holds on an event without `Field`.
- String tests compare `str(value)` (an int 4688 is "4688"); case-insensitive tests compare
  `str.lower()` of both sides, and the `value`/`parts` stored here are already lower-cased unless
  `cased` is set.

Every class is a frozen, slotted dataclass of plain values (no compiled regexes), so programs pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, TypeAlias

from casefile.pickling import by_fields


class Wildcard(Enum):
    """An unescaped Sigma wildcard inside a glob pattern (a literal `*` stays inside a str part).

    Deliberately not a str subclass, so `isinstance(part, str)` tells literals from wildcards."""

    MULTI = "*"
    SINGLE = "?"


GlobPart: TypeAlias = "str | Wildcard"
StrOp = Literal["eq", "startswith", "endswith", "contains", "glob"]
CompareOp = Literal["gt", "gte", "lt", "lte"]
FieldRefOp = Literal["eq", "startswith", "endswith", "contains"]


@by_fields
@dataclass(frozen=True, slots=True)
class Const:
    """A constant truth value (e.g. an empty `1 of` selection, or a pruned branch)."""

    value: bool


@by_fields
@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@by_fields
@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


@by_fields
@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@by_fields
@dataclass(frozen=True, slots=True)
class StrMatch:
    """String test. For op `glob`, `parts` holds literal strings and `Wildcard`s; `value` is the
    pattern text (informational). For the other ops, `value` is the literal and `parts` is empty."""

    field: str | None
    op: StrOp
    value: str
    cased: bool = False
    parts: tuple[GlobPart, ...] = ()


@dataclass(frozen=True, slots=True)
class RegexMatch:
    """Python `re.search` of `pattern` on `str(value)`; `flags` is a subset of {"i", "m", "s"}."""

    field: str | None
    pattern: str
    flags: frozenset[str] = frozenset()

    def __reduce__(self) -> tuple[Any, ...]:
        # By value, as `by_fields` does, with the flags in a fixed order: a set of strings pickles in an
        # order that changes with each process's hash seed, and a rule list's pickled bytes name its
        # partition plans on disk (`cache.PlanStore`).
        return (_regex_match, (self.field, self.pattern, tuple(sorted(self.flags))))


def _regex_match(field: str | None, pattern: str, flags: tuple[str, ...]) -> RegexMatch:
    return RegexMatch(field, pattern, frozenset(flags))


@by_fields
@dataclass(frozen=True, slots=True)
class CidrMatch:
    """The value parses as an IP address inside `network` (a string such as "10.0.0.0/8" or "fe80::/10")."""

    field: str
    network: str


@by_fields
@dataclass(frozen=True, slots=True)
class NumEq:
    """Numeric equality: the value is a number, or a string that parses as one, equal to `value`."""

    field: str | None
    value: int | float


@by_fields
@dataclass(frozen=True, slots=True)
class BoolEq:
    """Boolean equality: the value is a bool, or the string "true"/"false" (any case)."""

    field: str
    value: bool


@by_fields
@dataclass(frozen=True, slots=True)
class Compare:
    """Numeric comparison `value <op> self.value`; values that are not numbers (or numeric strings) fail."""

    field: str
    op: CompareOp
    value: int | float


@by_fields
@dataclass(frozen=True, slots=True)
class Exists:
    """`present=True`: the field is in the event (any value, even empty); False: it is absent."""

    field: str
    present: bool


@by_fields
@dataclass(frozen=True, slots=True)
class IsNull:
    """Sigma `null`: the field is absent, or present with no value (None or the empty string)."""

    field: str


@by_fields
@dataclass(frozen=True, slots=True)
class FieldRef:
    """Compare `field` with the value of another field `other` of the same event (`fieldref`)."""

    field: str
    other: str
    op: FieldRefOp = "eq"
    cased: bool = False


Leaf: TypeAlias = (
    "StrMatch | RegexMatch | CidrMatch | NumEq | BoolEq | Compare | Exists | IsNull | FieldRef"
)
Node: TypeAlias = (
    "Const | And | Or | Not | StrMatch | RegexMatch | CidrMatch | NumEq | BoolEq | Compare | Exists"
    " | IsNull | FieldRef"
)


@by_fields
@dataclass(frozen=True, slots=True)
class Route:
    """Which events a program can match: any of `channels` (compared case-insensitively; empty = any
    channel) and any of `event_ids` (empty = any event id)."""

    channels: tuple[str, ...] = ()
    event_ids: tuple[int, ...] = ()


@by_fields
@dataclass(frozen=True, slots=True)
class Program:
    """A rule compiled for one log source: route the event, then evaluate `condition` on its fields.

    `source` names the logsources.yaml entry (e.g. "process_creation/sysmon") for diagnostics.
    """

    rule_id: str
    source: str
    route: Route
    condition: Node


def leaves(node: Node) -> list[Node]:
    """All leaf tests under `node`, depth first (for field statistics and vectoriser planning)."""
    if isinstance(node, (And, Or)):
        return [leaf for child in node.children for leaf in leaves(child)]
    if isinstance(node, Not):
        return leaves(node.child)
    if isinstance(node, Const):
        return []
    return [node]
