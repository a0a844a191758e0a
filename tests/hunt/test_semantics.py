r"""Sigma value semantics, one table row per modifier or condition form: event, detection, expected.

Each detection snippet becomes a rule with `logsource: {product: windows}` (any channel), so only
the detection logic decides. Backslashes below are YAML single-quoted strings: '\*' is the two
characters backslash and star, which Sigma reads as an escaped (literal) star.
"""

from __future__ import annotations

import base64
import random
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from casefile.hunt import hunt
from casefile.hunt.evaluate import _contains_any
from casefile.hunt.rules import RuleSet
from casefile.models import Event

RULE = """\
title: semantics case
id: 11111111-2222-4333-8444-555555555555
status: test
logsource:
    product: windows
detection:
{detection}
level: medium
"""


def sel(line: str) -> str:
    """A detection with one selection holding one `field: value` line."""
    return f"    sel:\n        {line}\n    condition: sel"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ANY_OF = """
    sel:
        F|contains:
            - 'alpha'
            - 'beta'
            - 'gamma'
            - 'delta'
    condition: sel"""

# (id, event fields, detection YAML, expected)
CASES: list[tuple[str, dict[str, Any], str, bool]] = [
    # plain equality is case-insensitive and whole-value
    ("eq-case", {"Image": r"C:\WINDOWS\cmd.exe"}, r"""
    sel:
        Image: 'c:\windows\CMD.exe'
    condition: sel""", True),
    ("eq-whole-value", {"Image": r"C:\Windows\cmd.exe.bak"}, r"""
    sel:
        Image: 'c:\windows\cmd.exe'
    condition: sel""", False),
    # SQL LIKE metacharacters are plain characters in Sigma
    ("underscore-literal-no", {"F": "aXb"}, sel("F: 'a_b'"), False),
    ("underscore-literal-yes", {"F": "a_b"}, sel("F: 'a_b'"), True),
    ("percent-literal-no", {"F": "aXYb"}, sel("F: 'a%b'"), False),
    ("percent-literal-yes", {"F": "a%b"}, sel("F: 'a%b'"), True),
    # wildcards and escapes
    ("star-wildcard", {"F": "abXYZc"}, sel("F: 'ab*c'"), True),
    ("question-wildcard", {"F": "abc"}, sel("F: 'a?c'"), True),
    ("question-needs-one-char", {"F": "ac"}, sel("F: 'a?c'"), False),
    ("escaped-star-literal", {"F": "a*b"}, r"""
    sel:
        F: 'a\*b'
    condition: sel""", True),
    ("escaped-star-not-wildcard", {"F": "axxb"}, r"""
    sel:
        F: 'a\*b'
    condition: sel""", False),
    ("escaped-question-literal", {"F": "what?"}, r"""
    sel:
        F: 'what\?'
    condition: sel""", True),
    ("escaped-question-not-wildcard", {"F": "whatX"}, r"""
    sel:
        F: 'what\?'
    condition: sel""", False),
    ("backslash-then-wildcard", {"F": r"C:\anything"}, r"""
    sel:
        F: 'C:\\*'
    condition: sel""", True),
    ("trailing-backslash", {"F": "C:\\dir\\"}, r"""
    sel:
        F|endswith: '\dir\'
    condition: sel""", True),
    ("trailing-backslash-needed", {"F": "C:\\dir"}, r"""
    sel:
        F|endswith: '\dir\'
    condition: sel""", False),
    ("plain-backslash", {"F": r"C:\Temp\x.exe"}, r"""
    sel:
        F: 'C:\Temp\x.exe'
    condition: sel""", True),
    # contains / startswith / endswith
    ("contains", {"CommandLine": "cmd /c WHOAMI /all"}, """
    sel:
        CommandLine|contains: 'whoami'
    condition: sel""", True),
    ("startswith", {"F": "Hello world"}, sel("F|startswith: 'hello'"), True),
    ("startswith-no", {"F": "say hello"}, sel("F|startswith: 'hello'"), False),
    ("endswith", {"F": "say HELLO"}, sel("F|endswith: 'hello'"), True),
    ("list-is-or", {"F": "b"}, sel("F:\n            - a\n            - b"), True),
    # a list of contains values: any of them (searched with one automaton once there are three or more)
    ("contains-any-yes", {"F": "xx GAMMA yy"}, ANY_OF, True),
    ("contains-any-no", {"F": "alph bet gamm"}, ANY_OF, False),
    # a lone surrogate in the value (as `json` reads "\ud800") or in a literal (YAML's "\ud800" escape)
    ("contains-any-surrogate-value", {"F": "\ud800 Beta \udfff"}, ANY_OF, True),
    ("contains-any-surrogate-value-no", {"F": "\ud800 bet \udfff"}, ANY_OF, False),
    ("contains-any-surrogate-literal", {"F": "a\ud800b"}, """
    sel:
        F|contains:
            - 'alpha'
            - 'beta'
            - "\\ud800b"
    condition: sel""", True),
    ("contains-all-yes", {"F": "alpha beta gamma"}, """
    sel:
        F|contains|all:
            - alpha
            - gamma
    condition: sel""", True),
    ("contains-all-no", {"F": "alpha beta"}, """
    sel:
        F|contains|all:
            - alpha
            - gamma
    condition: sel""", False),
    ("map-is-and", {"A": "1", "B": "x"}, sel("A: '1'\n        B: 'y'"), False),
    # case-sensitive matching
    ("cased-yes", {"F": "AbC"}, sel("F|cased: 'AbC'"), True),
    ("cased-no", {"F": "abc"}, sel("F|cased: 'AbC'"), False),
    # missing and null fields
    ("missing-field-fails", {"Other": "x"}, sel("F: 'x'"), False),
    ("negation-on-missing-field", {"Other": "x"}, """
    sel:
        Other: 'x'
    filter:
        F: 'x'
    condition: sel and not filter""", True),
    ("null-missing", {"Other": "x"}, sel("F: null"), True),
    ("null-empty", {"F": ""}, sel("F: null"), True),
    ("null-none", {"F": None}, sel("F: null"), True),
    ("null-has-value", {"F": "v"}, sel("F: null"), False),
    ("not-null-has-value", {"F": "v"}, "    filter:\n        F: null\n    condition: not filter", True),
    ("empty-string", {"F": ""}, sel("F: ''"), True),
    ("empty-string-not-missing", {"G": "x"}, sel("F: ''"), False),
    ("exists-true", {"F": ""}, sel("F|exists: true"), True),
    ("exists-true-missing", {"G": ""}, sel("F|exists: true"), False),
    ("exists-false", {"G": ""}, sel("F|exists: false"), True),
    # types: ints match their string form and numeric strings match numbers
    ("int-event-vs-string-rule", {"EventID": 4688}, sel("EventID: '4688'"), True),
    ("string-event-vs-int-rule", {"EventID": "4688"}, sel("EventID: 4688"), True),
    ("int-rule-no", {"EventID": 4689}, sel("EventID: 4688"), False),
    ("list-value-any-element", {"F": ["a", "b"]}, sel("F: 'B'"), True),
    ("bool-value", {"F": True}, sel("F: true"), True),
    # windash: -, /, en dash, em dash, horizontal bar
    ("windash-slash", {"CommandLine": "ping /n 1"}, """
    sel:
        CommandLine|windash|contains: ' -n '
    condition: sel""", True),
    ("windash-en-dash", {"CommandLine": "ping \u2013n 1"}, """
    sel:
        CommandLine|windash|contains: ' -n '
    condition: sel""", True),
    ("windash-no", {"CommandLine": "ping +n 1"}, """
    sel:
        CommandLine|windash|contains: ' -n '
    condition: sel""", False),
    # base64 / base64offset / utf16
    ("base64", {"F": b64(b"secret")}, sel("F|base64: 'secret'"), True),
    ("base64-is-cased-value", {"F": b64(b"Secret")}, sel("F|base64: 'secret'"),
     False),
    *[
        (f"base64offset-{k}", {"F": "echo " + b64(b"x" * k + b"http://evil")}, """
    sel:
        F|base64offset|contains: 'http://'
    condition: sel""", True)
        for k in range(3)
    ],
    ("base64offset-no", {"F": b64(b"ftp://evil")}, """
    sel:
        F|base64offset|contains: 'http://'
    condition: sel""", False),
    *[
        (f"utf16le-base64offset-{k}",
         {"CommandLine": "powershell -enc " + b64(("ab"[:k] + "Invoke-Mimikatz").encode("utf-16-le"))}, """
    sel:
        CommandLine|utf16le|base64offset|contains: 'Invoke-Mimikatz'
    condition: sel""", True)
        for k in range(3)
    ],
    ("wide-base64offset", {"F": b64("IEX(New-Object".encode("utf-16-le"))}, """
    sel:
        F|wide|base64offset|contains: 'New-Object'
    condition: sel""", True),
    ("utf16be-base64", {"F": b64("hi".encode("utf-16-be"))}, """
    sel:
        F|utf16be|base64: 'hi'
    condition: sel""", True),
    # cidr
    ("cidr-v4", {"IP": "10.1.2.3"}, sel("IP|cidr: '10.0.0.0/8'"), True),
    ("cidr-v4-no", {"IP": "11.0.0.1"}, sel("IP|cidr: '10.0.0.0/8'"), False),
    ("cidr-v4-prefix-not-string", {"IP": "10.1.2.30"}, sel("IP|cidr: '10.1.2.0/28'"),
     False),
    ("cidr-v6", {"IP": "fe80::1:2"}, sel("IP|cidr: 'fe80::/10'"), True),
    ("cidr-v6-no", {"IP": "2001:db8::1"}, sel("IP|cidr: 'fe80::/10'"), False),
    ("cidr-not-an-ip", {"IP": "-"}, sel("IP|cidr: '10.0.0.0/8'"), False),
    # regular expressions: case-sensitive unless |i, unanchored
    ("re-cased", {"F": "xABxCx"}, sel("F|re: 'ab.c'"), False),
    ("re-i", {"F": "xABxCx"}, sel("F|re|i: 'ab.c'"), True),
    ("re-m", {"F": "a\nbc"}, sel("F|re|m: '^bc$'"), True),
    ("re-no-m", {"F": "a\nbc"}, sel("F|re: '^bc$'"), False),
    ("re-s", {"F": "a\nb"}, sel("F|re|s: 'a.b'"), True),
    ("re-no-s", {"F": "a\nb"}, sel("F|re: 'a.b'"), False),
    # field references
    ("fieldref-yes", {"A": "Admin", "B": "admin"}, sel("A|fieldref: B"), True),
    ("fieldref-no", {"A": "Admin", "B": "guest"}, sel("A|fieldref: B"), False),
    ("fieldref-missing", {"A": "Admin"}, sel("A|fieldref: B"), False),
    # numeric comparisons, strings holding numbers included
    ("gt-string-number", {"N": "15"}, sel("N|gt: 10"), True),
    ("gt-equal-no", {"N": 10}, sel("N|gt: 10"), False),
    ("gte-equal", {"N": "10"}, sel("N|gte: 10"), True),
    ("lt", {"N": 3}, sel("N|lt: 4"), True),
    ("lte-string", {"N": "15"}, sel("N|lte: 15"), True),
    ("lte-no", {"N": "16"}, sel("N|lte: 15"), False),
    ("gt-not-a-number", {"N": "abc"}, sel("N|gt: 10"), False),
    ("gt-missing", {"M": 99}, sel("N|gt: 10"), False),
    # keywords (no field): substring of any field value, case-insensitive
    ("keyword", {"A": "x", "B": "very EVIL thing"}, "    keywords:\n        - evil\n    condition: keywords",
     True),
    ("keyword-no", {"A": "x", "B": "good"}, "    keywords:\n        - evil\n    condition: keywords", False),
    ("keyword-all-yes", {"A": "alpha", "B": "beta"}, """
    keywords:
        '|all':
            - alpha
            - beta
    condition: keywords""", True),
    ("keyword-all-no", {"A": "alpha"}, """
    keywords:
        '|all':
            - alpha
            - beta
    condition: keywords""", False),
    # conditions
    ("one-of-pattern", {"B": "2"}, """
    sel_a:
        A: '1'
    sel_b:
        B: '2'
    other:
        C: '3'
    condition: 1 of sel_*""", True),
    ("all-of-pattern-no", {"B": "2"}, """
    sel_a:
        A: '1'
    sel_b:
        B: '2'
    condition: all of sel_*""", False),
    ("all-of-them", {"A": "1", "B": "2"}, """
    sel_a:
        A: '1'
    sel_b:
        B: '2'
    condition: all of them""", True),
    ("all-of-them-no", {"A": "1"}, """
    sel_a:
        A: '1'
    sel_b:
        B: '2'
    condition: all of them""", False),
    ("one-of-them", {"B": "2"}, """
    sel_a:
        A: '1'
    sel_b:
        B: '2'
    condition: 1 of them""", True),
    ("not-one-of-filters", {"A": "1", "F": "x"}, """
    sel:
        A: '1'
    filter_1:
        F: 'x'
    filter_2:
        G: 'y'
    condition: sel and not 1 of filter_*""", False),
    ("precedence-and-over-or", {"C": "3"}, """
    a:
        A: '1'
    b:
        B: '2'
    c:
        C: '3'
    condition: a and b or c""", True),
    ("brackets", {"C": "3"}, """
    a:
        A: '1'
    b:
        B: '2'
    c:
        C: '3'
    condition: a and (b or c)""", False),
    ("list-of-maps-is-or", {"D": "x"}, """
    sel:
        - A: '1'
        - D: 'x'
    condition: sel""", True),
    # neq modifier (pySigma extension)
    ("neq", {"F": "b"}, sel("F|neq: 'a'"), True),
    ("neq-same", {"F": "a"}, sel("F|neq: 'a'"), False),
    # field names: spaces stripped, case-insensitive fallback
    ("field-name-spaces", {"Source Name": "Real-Time Protection"}, """
    sel:
        SourceName: 'real-time protection'
    condition: sel""", True),
]


@pytest.mark.parametrize(
    ("event", "detection", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_semantics(
    rules_from: Callable[..., RuleSet],
    make_event: Callable[..., Event],
    event: dict[str, Any],
    detection: str,
    expected: bool,
) -> None:
    body = textwrap.indent(textwrap.dedent(detection).strip("\n"), "    ")
    ruleset = rules_from(RULE.format(detection=body))
    assert not ruleset.skipped, ruleset.skipped
    hits = list(hunt([make_event(event)], ruleset))
    assert (len(hits) == 1) is expected


def test_case_ids_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_contains_any_agrees_with_in() -> None:
    """The automaton's answer is `any(w in s)`: overlapping and repeated literals, values with lone
    surrogates (which the automaton cannot take), and the lists it leaves to other tests (empty or
    surrogate literals)."""
    rng = random.Random(7)
    plain, odd = "ab\\.\u00e9\u03c3", "\ud800"

    def text(chars: str, low: int, high: int) -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(low, high)))

    for case in range(600):
        words = [text(plain, 1, 4) for _ in range(rng.randint(3, 9))]
        if case % 10 == 0:
            words.append("")
        elif case % 10 == 1:
            words.append(text(plain + odd, 1, 3) + odd)
        test = _contains_any(words)
        for _ in range(20):
            s = text(plain + odd if case % 3 == 0 else plain, 0, 12)
            assert bool(test(s)) == any(w in s for w in words), (words, s)
