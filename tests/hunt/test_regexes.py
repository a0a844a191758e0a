"""`search_test` answers exactly as `re.search` does, on strings built to match and near misses (which also
hold what the pre-filter requires of a match)."""

from __future__ import annotations

import random
import re
import re._constants as C  # type: ignore[import-not-found]
import re._parser as P  # type: ignore[import-not-found]
from pathlib import Path
from typing import Any

import pytest

from casefile.hunt import ir, load_rules
from casefile.hunt.regexes import (
    _FIND_AT_MOST,
    _holds,
    _required,
    _rewritten,
    _runs,
    _subsequence,
    search_test,
)
from casefile.hunt.vector import regex_literals

_ALPHABET = "aAbz09_ -+`&\"{}^\\.\n\tßſKé"
_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


def _char_in(items: list[tuple[Any, Any]], rng: random.Random) -> str:
    """A character from a class (often one the class holds, sometimes any)."""
    for _ in range(20):
        c = rng.choice(_ALPHABET) if rng.random() < 0.5 else chr(rng.randint(32, 126))
        if re.fullmatch(_class_regex(items), c):
            return c
    return rng.choice(_ALPHABET)


def _class_regex(items: list[tuple[Any, Any]]) -> str:
    """A parsed character class written back as a pattern."""
    parts = []
    negate = ""
    for op, av in items:
        if op is C.NEGATE:
            negate = "^"
        elif op is C.LITERAL:
            parts.append(re.escape(chr(av)))
        elif op is C.RANGE:
            parts.append(f"{re.escape(chr(av[0]))}-{re.escape(chr(av[1]))}")
        elif op is C.CATEGORY:
            parts.append({
                C.CATEGORY_DIGIT: r"\d", C.CATEGORY_NOT_DIGIT: r"\D", C.CATEGORY_WORD: r"\w",
                C.CATEGORY_NOT_WORD: r"\W", C.CATEGORY_SPACE: r"\s", C.CATEGORY_NOT_SPACE: r"\S",
            }[av])
    return f"[{negate}{''.join(parts)}]" if parts else "[^\\s\\S]"


def _sample(items: Any, rng: random.Random, groups: dict[int, str], fold: bool) -> str:
    """A string the parsed pattern is likely to match (random choices where the pattern has them)."""
    out = []
    for op, av in items:
        if op is C.LITERAL:
            c = chr(av)
            out.append(c.swapcase() if fold and rng.random() < 0.2 else c)
        elif op is C.NOT_LITERAL or op is C.ANY:
            out.append(rng.choice(_ALPHABET))
        elif op is C.IN:
            out.append(_char_in(av, rng))
        elif op is C.BRANCH:
            out.append(_sample(rng.choice(av[1]), rng, groups, fold))
        elif op is C.SUBPATTERN:
            text = _sample(av[3], rng, groups, fold)
            if av[0] is not None:
                groups[av[0]] = text
            out.append(text)
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            n = rng.randint(lo, min(hi, lo + 3))
            out.extend(_sample(sub, rng, groups, fold) for _ in range(n))
        elif op is C.GROUPREF:
            out.append(groups.get(av, ""))
    return "".join(out)


def _strings(pattern: str, flags: int, rng: random.Random, n: int) -> list[str]:
    parsed = P.parse(pattern, flags)
    found = []
    for _ in range(n):
        core = _sample(parsed, rng, {}, bool(parsed.state.flags & re.IGNORECASE))
        if rng.random() < 0.3 and core:  # a near miss: one character dropped or changed
            i = rng.randrange(len(core))
            core = core[:i] + (rng.choice(_ALPHABET) if rng.random() < 0.5 else "") + core[i + 1:]
        noise = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 12)))
        cut = rng.randint(0, len(noise))
        found.append(noise[:cut] + core + noise[cut:] + (core if rng.random() < 0.2 else ""))
    return found


def _check(pattern: str, flags: int, rng: random.Random, n: int = 300) -> tuple[int, int]:
    """Compare with `re.search`; returns (matching strings, non-matching strings) seen. Every match also
    holds one of the strings the hunt's pre-filter requires of it (`vector.regex_literals`), lower-cased,
    but for a non-ASCII value under IGNORECASE, which the pre-filter lets through whatever it holds."""
    rx = re.compile(pattern, flags)
    test = search_test(pattern, flags)
    required = regex_literals(pattern, frozenset("i") if flags & re.IGNORECASE else frozenset())
    folds = bool(rx.flags & re.IGNORECASE)
    hits = misses = 0
    for s in _strings(pattern, flags, rng, n):
        want = rx.search(s) is not None
        assert test(s) == want, (pattern, s)
        if want and required and not (folds and not s.isascii()):
            assert any(r in s.lower() for r in required), (pattern, s, required)
        hits += want
        misses += not want
    return hits, misses


CASES = [
    (r"\w+`(\w+|-|.)`[\w+|\s]", 0),
    (r"\+.*\+.*\+.*\+", 0),
    (r"(?i)(set).*&&\s?set.*(environment|invoke|\$\{?input).*&&.*\"", 0),
    (r"\w*foo", 0),
    (r"[a-z]+?x\b", re.IGNORECASE),
    (r"(\w)+x\1", 0),  # a back reference: no rewrite
    (r"\s+(?<=\s\s)x", 0),  # a look-behind after the lead reads the text, not the match
    (r"\d+$", re.MULTILINE),
    (r".+\n.", re.DOTALL),
    (r"(?:ab){2,}c", 0),
    (r"K\+", re.IGNORECASE),  # the Kelvin sign folds onto K: K is never counted under IGNORECASE
    (r"s{2}", re.IGNORECASE),  # and ſ onto s
    (r"x*", 0),  # matches the empty string anywhere
    (r"[^a]+a", 0),
    (r"(?i:a)+b\+", 0),
    (r"\w++`", 0),  # possessive: left as written
    (r"(?s)a.*b.*c", 0),  # literals and .* only: [^b]*b
    (r"\{.*?\{.*\{.*", 0),
    (r"`.*`.*`", re.IGNORECASE),
    (r"a.*b.*c", re.IGNORECASE),  # letters under IGNORECASE: left as written
    (r"\+.*\+x", 0),  # the last .*\+ is followed by x: only the first is cut
    (r"x.*.*y", 0),
    (r"(Get-Item|gci).{1,8}-Path", 0),  # a literal run after an alternative
    (r"(?i)a&&(b|c)\x00\+", 0),  # under IGNORECASE, only characters nothing folds onto
    (r"(\+-){3}.*(-\+)+", 0),  # runs in the bodies of repeats
]


@pytest.mark.parametrize(("pattern", "flags"), CASES)
def test_search_test_agrees_with_re_search(pattern: str, flags: int) -> None:
    hits, misses = _check(pattern, flags, random.Random(pattern))
    assert hits > 20  # the generator builds matches, so both answers are exercised
    assert misses > 0 or pattern == "x*"


def test_rewrites_and_counts_are_the_intended_ones() -> None:
    def rewritten(pattern: str, flags: int = 0) -> str | None:
        search = _rewritten(pattern, flags, P.parse(pattern, flags))
        return None if search is None else search.__self__.pattern  # type: ignore[attr-defined]

    assert rewritten(r"\w+`(\w+|-|.)`") == r"\w`(\w+|-|.)`"
    assert rewritten(r"(?i)\w*foo") == "(?i)foo"
    assert rewritten(r"[a-z\]]+x") == r"[a-z\]]x"
    assert rewritten(r"(\w)+x\1") is None  # group in the lead
    assert rewritten(r"\w+(x)\1") is None  # back reference
    assert rewritten(r"\w{2,}x") is None  # only + and * are cut
    assert rewritten(r"\+.*\+") is None  # the lead is a literal, not a repeat
    def subsequence(pattern: str) -> str | None:
        search = _subsequence(P.parse(pattern, 0))
        return None if search is None else search.__self__.pattern  # type: ignore[attr-defined]

    assert subsequence(r"\+.*\+.*?\+") == r"\+[^\+\n]*\+[^\+\n]*\+"
    assert subsequence(r"(?s)a.*b") == "a[^b]*b"
    assert subsequence(r"\+.*\+x") is None
    assert subsequence(r"\+.*\+x.*\+") == r"\+.*\+x[^\+\n]*\+"
    assert subsequence(r"(?i)a.*b") is None
    assert dict(_required(P.parse(r"\+.*\+(ab){3}", 0), False)) == {"+": 2, "a": 3, "b": 3}
    assert dict(_required(P.parse(r"(?i)&S&(x|y)", 0), True)) == {"&": 2}
    assert _runs(P.parse(r"(gci|Get-Item).{1,64}-Path\.x(ab)+c", 0), False) == ["-Path.x", "ab"]
    assert _runs(P.parse(r"(?i)&&S&&(x|y)", 0), True) == ["&&", "&&"]
    assert _runs(P.parse(r"(?i:ab)cd(?:ef|gh)(ij)?kl", 0), False) == ["cd", "kl"]
    assert [_holds("a+b+c+", "+", n) for n in (1, 3, 4)] == [True, True, False]
    assert _FIND_AT_MOST < 40 and _holds("+" * 40, "+", 40) and not _holds("+" * 39, "+", 40)  # counted


def _regex_leaves(node: ir.Node) -> list[ir.RegexMatch]:
    if isinstance(node, ir.RegexMatch):
        return [node]
    if isinstance(node, ir.And | ir.Or):
        return [leaf for child in node.children for leaf in _regex_leaves(child)]
    if isinstance(node, ir.Not):
        return _regex_leaves(node.child)
    return []


def test_every_sigmahq_regex(shared_data: Path, tmp_path: Path) -> None:
    sigma = shared_data / "sigma"
    folders = [sigma / "rules", sigma / "rules-emerging-threats", sigma / "rules-threat-hunting"]
    rules = load_rules(folders, cache_dir=tmp_path)
    patterns = {
        (leaf.pattern, sum(_FLAGS[f] for f in leaf.flags))
        for rule in rules.rules for program in rule.programs for leaf in _regex_leaves(program.condition)
    }
    assert len(patterns) > 100
    rng = random.Random(3)
    matched = 0
    for pattern, flags in sorted(patterns):
        hits, _ = _check(pattern, flags, rng, n=60)
        matched += hits > 0
    assert matched > 0.9 * len(patterns)  # the generator reached matches of nearly every one


def test_deeply_nested_pattern_is_searched_as_written() -> None:
    """A pattern nested deeper than the analysis can walk (here: than the recursion limit lets the parser
    go again) is searched as written."""
    import sys

    depth = 300
    pattern = "(?:" * depth + "a+b" + ")" * depth
    limit = sys.getrecursionlimit()
    try:
        re.compile(pattern)
        sys.setrecursionlimit(len(__import__("inspect").stack()) + 350)  # room for re, not for the walks
        test = search_test(pattern)
    finally:
        sys.setrecursionlimit(limit)
    assert test("xaab") and not test("ba")


def test_patterns_led_by_single_characters_search_from_their_literal() -> None:
    """`\\w`(...)`: a match holds its first literal a fixed number of characters after its start, so only the
    positions before that literal are tried (more than _ANCHOR_TRIES of them: `re` goes on from the next)."""
    from casefile.hunt.regexes import _ANCHOR_TRIES, _anchored

    def anchor_of(pattern: str, flags: int = 0) -> bool:
        return _anchored(re.compile(pattern, flags)) is not None

    assert anchor_of(r"\w`(\w+|-|.)`") and anchor_of(r"[ab].\d-x") and anchor_of(r"(?i)\w\+")
    assert not anchor_of(r"`\w")  # the literal first: re looks for it itself
    assert not anchor_of(r"\w+`") and not anchor_of(r"(\w)`") and not anchor_of(r"\b\w`")  # no fixed offset
    assert not anchor_of(r"(?i)\wk")  # a letter under IGNORECASE: K also matches the Kelvin sign
    assert not anchor_of(r"\w\d")  # no literal at all
    rng = random.Random(11)
    patterns = [r"\w`(\w+|-|.)`[\w+|\s]", r"[^`]`(?<=a`)b", r".-\d{2}(?!x)", r"(?s).\n\w", r"(?i)[a-z]\+\w\b"]
    tested = 0
    for pattern in patterns:
        rx = re.compile(pattern)
        test = search_test(pattern)
        for _ in range(300):
            n = rng.choice([0, 1, 5, _ANCHOR_TRIES - 1, _ANCHOR_TRIES, _ANCHOR_TRIES + 3, 200])
            pieces = ["`", "-", "+", "\n", "a`", "`b", "9-", "-12", "x", "é+", "a+b"]
            parts = [rng.choice(pieces) for _ in range(n)]
            tail = rng.choice(["", "a`b`c", "a`b` ", "q-12", "Z+k!", "\n\nw", "a`b"])
            s = "".join(parts) + tail
            assert test(s) == (rx.search(s) is not None), (pattern, s)
            tested += rx.search(s) is not None
    assert tested > 300  # matches and misses both exercised
