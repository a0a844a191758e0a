"""STIX patterns to matchable atoms: what is matched, what is noted, what is rejected."""

from __future__ import annotations

import re

import pytest

from casefile.errors import IntelError
from casefile.share.models import Atom, AtomKind
from casefile.share.patterns import atom_pattern, guess_atom, parse_pattern

SHA256 = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"


def test_or_combined_comparisons_become_normalised_atoms() -> None:
    atoms, note = parse_pattern(
        f"[file:hashes.'SHA-256' = '{SHA256}'] OR [ipv4-addr:value ISSUBSET '198.51.100.9/24'] "
        "OR [domain-name:value IN ('Evil.Example.', 'b.example')] OR [url:value = 'http://x.example/a']"
        " OR [ipv6-addr:value = '2001:DB8::1']"
    )
    assert atoms == [
        Atom(AtomKind.DOMAIN, "b.example"),
        Atom(AtomKind.DOMAIN, "evil.example"),
        Atom(AtomKind.HASH, SHA256.lower()),
        Atom(AtomKind.IP, "198.51.100.0/24"),
        Atom(AtomKind.IP, "2001:db8::1"),
        Atom(AtomKind.URL, "http://x.example/a"),
    ]
    assert note is None


def test_unmatchable_comparisons_are_noted_not_dropped_silently() -> None:
    atoms, note = parse_pattern("[file:name = 'a.exe'] OR [domain-name:value = 'c2.example']")
    assert atoms == [Atom(AtomKind.DOMAIN, "c2.example")]
    assert note == "not matchable: file:name ="


@pytest.mark.parametrize(
    "pattern",
    [
        "[file:name = 'a.exe' AND file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']",
        "[domain-name:value = 'a.example'] FOLLOWEDBY [domain-name:value = 'b.example']",
        "[domain-name:value = 'a.example'] REPEATS 2 TIMES",
    ],
)
def test_and_followedby_and_qualifiers_store_no_atoms(pattern: str) -> None:
    atoms, note = parse_pattern(pattern)
    assert atoms == []
    assert note is not None and "AND/FOLLOWEDBY" in note


def test_broken_pattern_and_bad_value_raise_intel_error_naming_the_pattern() -> None:
    with pytest.raises(IntelError, match="invalid STIX pattern"):
        parse_pattern("[file:hashes.'SHA-256' = ")
    with pytest.raises(IntelError, match="not an IP address"):
        parse_pattern("[ipv4-addr:value = '300.1.1.1']")


def test_atom_patterns_parse_back_to_the_same_atom() -> None:
    for atom in (
        Atom(AtomKind.HASH, "d41d8cd98f00b204e9800998ecf8427e"),
        Atom(AtomKind.IP, "10.0.0.0/8"),
        Atom(AtomKind.IP, "2001:db8::1"),
        Atom(AtomKind.DOMAIN, "evil.example"),
        Atom(AtomKind.URL, "http://evil.example/it's"),
    ):
        assert parse_pattern(atom_pattern(atom)) == ([atom], None)


def test_guess_atom_by_type_column_or_shape() -> None:
    assert guess_atom("1.2.3.4") == Atom(AtomKind.IP, "1.2.3.4")
    assert guess_atom("EVIL.example") == Atom(AtomKind.DOMAIN, "evil.example")
    assert guess_atom("https://evil.example/x") == Atom(AtomKind.URL, "https://evil.example/x")
    assert guess_atom("10.1.2.0/23", "cidr") == Atom(AtomKind.IP, "10.1.2.0/23")
    with pytest.raises(IntelError, match="unknown indicator type"):
        guess_atom("x", "mutex")
    with pytest.raises(IntelError, match="cannot tell"):
        guess_atom("not an indicator")


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("[file:hashes.MD5 = '" + "a" * 33 + "']", "not a hex MD5 hash (32 hex digits)"),
        ("[file:hashes.'SHA-256' = '" + "a" * 63 + "']", "not a hex SHA-256 hash (64 hex digits)"),
        ("[file:hashes.'SHA-1' = '" + "a" * 64 + "']", "not a hex SHA-1 hash (40 hex digits)"),
        ("[file:hashes.'sha-512' = '" + "a" * 100 + "']", "not a hex SHA-512 hash (128 hex digits)"),
    ],
)
def test_hash_of_the_wrong_length_for_its_algorithm_is_refused(pattern: str, reason: str) -> None:
    """A truncated or mislabelled hash used to be stored and could never match (`_HEX` took 32-128 digits)."""
    with pytest.raises(IntelError, match=re.escape(reason)):
        parse_pattern(pattern)


def test_hash_algorithm_names_in_any_spelling_and_bare_hashes_by_length() -> None:
    for name in ("'SHA-256'", "SHA256", "'sha-256'", "'Sha-256'", "'SHA3-256'"):
        atoms, _ = parse_pattern(f"[file:hashes.{name} = '{SHA256}']")
        assert atoms == [Atom(AtomKind.HASH, SHA256.lower())]
    assert guess_atom("d41d8cd98f00b204e9800998ecf8427e", "md5").value == "d41d8cd98f00b204e9800998ecf8427e"
    with pytest.raises(IntelError, match="not a hex SHA-256 hash"):
        guess_atom("d41d8cd98f00b204e9800998ecf8427e", "sha256")
    with pytest.raises(IntelError, match="cannot tell"):
        guess_atom("a" * 50)  # no algorithm has 50 hex digits


def test_note_names_list_paths_as_written_not_the_inspectors_sentinel() -> None:
    """`[*]` used to print as `<object object at 0x...>`: a note that differed on every run."""
    atoms, note = parse_pattern(
        "[file:hashes[*] = 'ab'] OR [windows-registry-key:values[0].name = 'Run']"
        " OR [network-traffic:dst_ref.resolves_to_refs[*].value = '192.0.2.1']"
    )
    assert atoms == []
    assert note == (
        "not matchable: file:hashes[*] =, windows-registry-key:values[0].name =, "
        "network-traffic:dst_ref.resolves_to_refs[*].value ="
    )


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("[ipv4-addr:value IN ('192.0.2.1', 5)]", "not an IP address or CIDR network: '5'"),
        ("[ipv4-addr:value IN (1, 2)]", "not an IP address or CIDR network: '1'"),
        ("[domain-name:value IN ('a.example', true)]", "not a domain name: 'true'"),
        ("[ipv4-addr:value IN ()]", "ipv4-addr:value IN () names no value"),
    ],
)
def test_in_sets_with_unquoted_items_or_no_items_are_refused(pattern: str, reason: str) -> None:
    """Only quoted items were read from an IN set: `(1, 2)` and `()` gave an indicator with no atoms
    and no note, stored as matchable and matching nothing; `('192.0.2.1', 5)` lost the 5 unseen."""
    with pytest.raises(IntelError, match=re.escape(reason)):
        parse_pattern(pattern)


def test_in_set_items_keep_commas_parentheses_and_escaped_quotes() -> None:
    atoms, _ = parse_pattern("[url:value IN ('http://a/?x=1,2', 'http://b/(c)', 'http://d/\\'e')]")
    assert [a.value for a in atoms] == ["http://a/?x=1,2", "http://b/(c)", "http://d/'e"]
