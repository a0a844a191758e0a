"""Regex tests as the evaluator runs them: `re.search` answers, found sooner.

Sigma's `|re` tests only ask whether a value holds a match, never where, which allows a prefilter, two
rewrites and an anchored search that keep every answer and spare `re`'s backtracking on long values
(PowerShell script blocks):

- the characters every match must hold, counted (`\\+.*\\+.*\\+` needs three `+`): a value with fewer
  cannot match, which `in` (for one) or `str.find` tells without running the regex; and the longest
  run of literals every match holds (`-Path` in `(gci|Get-Item).{1,64}-Path`), which `in` finds or
  not at the speed of a substring search, where `re` would try every position of a script block;
- a leading repeat of one character class (`\\w+`(...)`): some match starts with `\\w+` exactly when
  one starts with a single `\\w` (the last of the run), and `\\w*` can be left out, so the search no
  longer grows every run of word characters before giving up on it;
- a pattern of literals and `.*` only (`\\+.*\\+.*\\+`, obfuscation rules counting characters on one
  line): `.*x` followed by `.*` or the end finds a match exactly when `[^x\\n]*x` does (the first `x`
  leaves the rest the most room), and the latter never backtracks, where the former tries every
  combination of `x`s before failing;
- a match that starts with k single characters and then a literal (`\\w`(...)`, `\\s-H\\s`) holds that
  literal k characters after its start: `re.match` is tried only there, at each occurrence `str.find`
  gives, where `re.search` would try every position of the value.

The leading-repeat rewrite is checked by parsing (the rewritten pattern must parse to exactly the
intended tree, or the pattern is used as written); the others are read from the parse tree itself.
"""

from __future__ import annotations

import re
import re._constants as re_constants  # type: ignore[import-not-found]  # the parser `re` uses
import re._parser as re_parser  # type: ignore[import-not-found]
from collections import Counter
from collections.abc import Callable
from typing import Any

#: Characters no other character matches under IGNORECASE (Unicode folding maps none onto them).
_FOLD_SAFE = frozenset("0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ \t")

#: A pattern's global inline flags, then one single-character item and its repeat.
_LEAD = re.compile(
    r"(?P<flags>(?:\(\?[aiLmsux]+\))*)"
    r"(?P<item>\\[wWdDsS]|\.|\[\^?\]?(?:\\.|[^\]\\])*\]|[^\\()\[\]{}|^$.*+?])"
    r"(?P<rep>[*+])\??"
)

_SINGLE = {re_constants.IN, re_constants.LITERAL, re_constants.NOT_LITERAL, re_constants.ANY}
_REPEATS = {re_constants.MAX_REPEAT, re_constants.MIN_REPEAT}


def search_test(pattern: str, flags: int = 0) -> Callable[[str], bool]:
    """`lambda s: re.search(pattern, s, flags) is not None`, with the prefilter and rewrites above."""
    rx = re.compile(pattern, flags)
    try:
        parsed = re_parser.parse(pattern, flags)
    except (re.error, RecursionError, OverflowError):  # parsed by re.compile, but maybe from its cache
        return _plain(rx)
    try:
        search = _rewritten(pattern, flags, parsed) or _subsequence(parsed) or rx.search
        search = _anchored(search.__self__) or search  # type: ignore[attr-defined]
        ignorecase = bool(parsed.state.flags & re.IGNORECASE)
        need = [(c, n) for c, n in _required(parsed, ignorecase).items() if n]
        runs = _runs(parsed, ignorecase)
    except RecursionError:  # nesting deep enough for `re` but not for these walks: as written
        return _plain(rx)
    if not need and not runs:
        return lambda s: search(s) is not None
    literal = max(runs, key=len, default="")  # ("" is in every value)
    once = [c for c, n in need if n == 1]
    counted = [(c, n) for c, n in need if n > 1]

    def test(s: str) -> bool:
        if literal not in s:
            return False
        for c in once:
            if c not in s:
                return False
        for c, n in counted:
            if not _holds(s, c, n):
                return False
        return search(s) is not None

    return test


#: Up to this many occurrences are looked for one by one (`str.find` stops at each); more are counted.
_FIND_AT_MOST = 16


def _holds(s: str, c: str, n: int) -> bool:
    """Whether `s` holds `c` at least `n` times: `str.count` reads all of a long value, where the
    occurrences wanted are often found in its first lines."""
    if n > _FIND_AT_MOST:
        return s.count(c) >= n
    i = s.find(c)
    while i >= 0:
        n -= 1
        if n == 0:
            return True
        i = s.find(c, i + 1)
    return False


def _plain(rx: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda s: rx.search(s) is not None


def _required(items: Any, ignorecase: bool) -> Counter[str]:
    """Characters every match holds, with how many times: top-level literals, non-optional groups and
    the minimum of repeats. Alternatives, classes and anything else add nothing (so never too many)."""
    out: Counter[str] = Counter()
    for op, av in items:
        if op is re_constants.LITERAL:
            c = chr(av)
            if not ignorecase or c in _FOLD_SAFE:
                out[c] += 1
        elif op is re_constants.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            if not add_flags and not del_flags:  # a scoped (?i:...) would change what folds
                out.update(_required(sub, ignorecase))
        elif op in _REPEATS:
            lo, _hi, sub = av
            if lo:
                inner = _required(sub, ignorecase)
                for c in inner:
                    inner[c] *= min(lo, 1000)
                out.update(inner)
    return out


def _runs(items: Any, ignorecase: bool) -> list[str]:
    """Strings every match holds: runs of two or more literals in a sequence every match goes through
    (the pattern, plain groups, the body of a repeat of at least one), of characters nothing else folds
    onto under IGNORECASE. Alternatives, classes and anything else end a run."""
    out: list[str] = []
    run: list[str] = []
    for op, av in [*items, (None, None)]:  # (a last item that ends the last run)
        if op is re_constants.LITERAL and (not ignorecase or chr(av) in _FOLD_SAFE):
            run.append(chr(av))
            continue
        if len(run) > 1:
            out.append("".join(run))
        run = []
        if op is re_constants.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            if not add_flags and not del_flags:
                out.extend(_runs(sub, ignorecase))
        elif op in _REPEATS and av[0]:
            out.extend(_runs(av[2], ignorecase))
    return out


def _rewritten(pattern: str, flags: int, parsed: Any) -> Callable[[str], re.Match[str] | None] | None:
    """The search of `pattern` with its leading single-character repeat cut to one (`+`) or none (`*`),
    when the pattern has one and the rewrite provably parses to that; None otherwise."""
    items = list(parsed)
    if not items or items[0][0] not in _REPEATS or _has_backrefs(parsed):
        return None
    lo, _hi, sub = items[0][1]
    if lo not in (0, 1) or len(sub) != 1 or sub[0][0] not in _SINGLE:
        return None
    lead = _LEAD.match(pattern)
    if lead is None:
        return None
    keep = lead["item"] if lo == 1 else ""
    candidate = lead["flags"] + keep + pattern[lead.end():]
    try:
        new = re_parser.parse(candidate, flags)
    except (re.error, RecursionError, OverflowError):
        return None
    want = ([sub[0]] if lo == 1 else []) + items[1:]
    if new.state.flags != parsed.state.flags or _dump(list(new)) != _dump(want):
        return None
    return re.compile(candidate, flags).search


def _is_dot_star(item: tuple[Any, Any]) -> bool:
    op, av = item
    return op in _REPEATS and av[0] == 0 and av[1] == re_constants.MAXREPEAT and list(av[2]) == [
        (re_constants.ANY, None)
    ]


def _subsequence(parsed: Any) -> Callable[[str], re.Match[str] | None] | None:
    """The search of a pattern made of literals and `.*` only, each `.*x` followed by `.*` or the end
    searched as `[^x\\n]*x` (`[^x]*x` under DOTALL); None for any other pattern, or nothing to cut."""
    items = list(parsed)
    flags = parsed.state.flags
    ignorecase = bool(flags & re.IGNORECASE)
    if not items or not all(op is re_constants.LITERAL or _is_dot_star((op, av)) for op, av in items):
        return None
    newline = "" if flags & re.DOTALL else "\\n"
    parts: list[str] = []
    cut = False
    for i, (op, av) in enumerate(items):
        if op is re_constants.LITERAL:
            parts.append(re.escape(chr(av)))
            continue
        nxt = items[i + 1] if i + 1 < len(items) else None
        after = items[i + 2] if i + 2 < len(items) else None
        if (
            nxt is not None and nxt[0] is re_constants.LITERAL
            and (not ignorecase or chr(nxt[1]) in _FOLD_SAFE)
            and (after is None or _is_dot_star(after))
        ):
            parts.append(f"[^{re.escape(chr(nxt[1]))}{newline}]*")
            cut = True
        else:
            parts.append(".*")
    if not cut:
        return None
    return re.compile("".join(parts), flags).search


#: Matches tried at the occurrences of the anchoring literal before `re` searches the rest itself.
_ANCHOR_TRIES = 64


def _anchored(rx: re.Pattern[str]) -> Callable[[str], re.Match[str] | None] | None:
    """The search of `rx` by the first literal of its matches, when it lies at a fixed distance from their
    start: after k single-character items (`\\w`(...)`: k = 1, the backtick). A match starting at p then
    holds that literal at p + k, so `rx.match` tried k characters before each occurrence (`str.find`)
    answers as `rx.search`, without `re` trying every position of a long value; after _ANCHOR_TRIES
    occurrences `rx.search` goes on from the next one. None when the pattern does not start so (or starts
    with its literal, which `re` itself looks for first)."""
    try:
        parsed = re_parser.parse(rx.pattern, rx.flags)
    except (re.error, RecursionError, OverflowError):
        return None
    ignorecase = bool(parsed.state.flags & re.IGNORECASE)
    k = 0
    for op, av in parsed:
        if op is re_constants.LITERAL:
            anchor = chr(av)
            if ignorecase and anchor not in _FOLD_SAFE:
                return None
            break
        if op not in _SINGLE:
            return None
        k += 1
    else:
        return None
    if k == 0:
        return None
    find, match, search = str.find, rx.match, rx.search

    def anchored(s: str) -> re.Match[str] | None:
        i = find(s, anchor, k)
        tries = 0
        while i >= 0:
            if tries == _ANCHOR_TRIES:
                return search(s, i - k)
            m = match(s, i - k)
            if m is not None:
                return m
            tries += 1
            i = find(s, anchor, i + 1)
        return None

    return anchored


def _has_backrefs(items: Any) -> bool:
    for op, av in items:
        if op in (re_constants.GROUPREF, re_constants.GROUPREF_EXISTS):
            return True
        for part in av if isinstance(av, (tuple, list)) else (av,):
            if isinstance(part, re_parser.SubPattern) and _has_backrefs(part):
                return True
            if isinstance(part, list) and any(
                isinstance(p, re_parser.SubPattern) and _has_backrefs(p) for p in part
            ):
                return True
    return False


def _dump(x: Any) -> Any:
    """A parse tree as plain nested tuples, comparable with `==`."""
    if isinstance(x, re_parser.SubPattern):
        return ("sub", tuple(_dump(i) for i in x.data))
    if isinstance(x, (list, tuple)):
        return tuple(_dump(i) for i in x)
    return x


__all__ = ["search_test"]
