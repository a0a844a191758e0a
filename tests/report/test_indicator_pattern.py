"""STIX patterns for indicator hits: bare values by shape; existing patterns (CIDR, multi-value) unchanged."""

from __future__ import annotations

import pytest
from stix2patterns.validator import validate

from casefile.report.stix import indicator_pattern


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("D41D8CD98F00B204E9800998ECF8427E", "[file:hashes.'MD5' = 'd41d8cd98f00b204e9800998ecf8427e']"),
        ("203.0.113.5", "[ipv4-addr:value = '203.0.113.5']"),
        ("2001:db8::1", "[ipv6-addr:value = '2001:db8::1']"),
        ("203.0.113.0/24", "[ipv4-addr:value = '203.0.113.0/24']"),
        ("2001:db8::/32", "[ipv6-addr:value = '2001:db8::/32']"),
        ("https://evil.example/a?b=1", "[url:value = 'https://evil.example/a?b=1']"),
        ("Evil.Example", "[domain-name:value = 'evil.example']"),
        ("evil.exe'x", "[file:name = 'evil.exe\\'x']"),
        (
            "[ipv4-addr:value = '198.51.100.0/24'] OR [domain-name:value = 'c2.example']",
            "[ipv4-addr:value = '198.51.100.0/24'] OR [domain-name:value = 'c2.example']",
        ),
    ],
)
def test_indicator_pattern(value: str, expected: str) -> None:
    got = indicator_pattern(value)
    assert got == expected
    assert validate(got, ret_errs=False, print_errs=False)


def test_broken_pattern_text_is_quoted_as_a_value_not_passed_through() -> None:
    got = indicator_pattern("[file:name = ")
    assert got == "[file:name = '[file:name =']"
    assert validate(got, ret_errs=False, print_errs=False)
