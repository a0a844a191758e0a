"""STIX 2.1 patterns to matchable atoms (parsed with stix2-patterns), and atoms back to patterns."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from stix2patterns.exceptions import ParseException  # type: ignore[import-untyped]
from stix2patterns.v21.inspector import INDEX_STAR, InspectionListener  # type: ignore[import-untyped]
from stix2patterns.v21.pattern import Pattern  # type: ignore[import-untyped]

from casefile.errors import IntelError
from casefile.share.models import Atom, AtomKind

#: STIX hash names -> the normalised algorithm names (only the hex is matched; the name is kept for patterns).
HASH_ALGORITHMS = {
    "md5": "MD5",
    "sha-1": "SHA-1",
    "sha1": "SHA-1",
    "sha-256": "SHA-256",
    "sha256": "SHA-256",
    "sha-512": "SHA-512",
    "sha512": "SHA-512",
    "sha3-256": "SHA3-256",
    "imphash": "IMPHASH",
}
#: Hex digits of each algorithm's digest: a value of another length (a truncated or mistyped hash) can
#: never match, so it is refused at import rather than stored as a dead indicator.
HASH_LENGTHS = {"MD5": 32, "SHA-1": 40, "SHA-256": 64, "SHA-512": 128, "SHA3-256": 64, "IMPHASH": 32}
_HEX = re.compile(r"^[0-9a-f]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z][a-z0-9-]{0,62}$")
_HASH_BY_LENGTH = {32: "MD5", 40: "SHA-1", 64: "SHA-256", 128: "SHA-512"}


def shown(text: str, limit: int = 100) -> str:
    """`text` as an issue quotes it: repr, cut to `limit` characters with its length, so that a 1 MB
    pattern or value in a partner's feed does not become a 1 MB warning line."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


class _Inspector(InspectionListener):  # type: ignore[misc]
    """stix2-patterns' inspector, also noting AND between comparisons (it only notes observation ops)."""

    def __init__(self) -> None:
        super().__init__()
        self.comparison_and = False

    def exitComparisonExpressionAnd(self, ctx: Any) -> None:
        if ctx.AND():
            self.comparison_and = True


def _literal(text: str) -> str:
    """A STIX string literal's value ('a\\'b' -> a'b)."""
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _literals(op: str, text: str) -> list[str]:
    """The values a comparison names: one, or each item of an IN set (`('a','b',5)` as the inspector
    gives it). Unquoted items (numbers, `h'..'`, `true`) are kept as text so normalise refuses them,
    as it does after `=`, rather than being skipped unseen."""
    if op == "IN":
        return [_literal(t) for t in re.findall(r"[a-z]?'(?:[^'\\]|\\.)*'|[^,()]+", text)]
    return [_literal(text)]


def normalise(kind: AtomKind, value: str, algorithm: str | None = None) -> str:
    """The canonical form an atom is stored and matched in; raises IntelError when it is not valid.

    `algorithm` (a HASH_LENGTHS name) is the hash's, when the source names it: its length is then checked.
    """
    v = value.strip()
    if kind is AtomKind.HASH:
        v = v.lower()
        if algorithm in HASH_LENGTHS:
            n = HASH_LENGTHS[algorithm]
            lengths, what = {n}, f"{algorithm} hash ({n} hex digits)"
        else:
            lengths, what = set(HASH_LENGTHS.values()), "file hash (32, 40, 64 or 128 hex digits)"
        if not _HEX.match(v) or len(v) not in lengths:
            raise IntelError(f"not a hex {what}: {shown(value)}")
        return v
    if kind is AtomKind.IP:
        address, percent, zone = v.partition("%")
        if percent and ":" in address:
            # An IPv6 zone (fe80::1%eth0) names an interface of the host that logged it; matching drops
            # it from event addresses, so an atom keeping it would never match.
            v = address + zone[zone.find("/") :] if "/" in zone else address
        try:
            net = ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise IntelError(f"not an IP address or CIDR network: {shown(value)}") from None
        mapped = net.network_address.ipv4_mapped if isinstance(net, ipaddress.IPv6Network) else None
        if mapped is not None and net.prefixlen >= 96:
            # Matching reads ::ffff:a.b.c.d in events as IPv4 a.b.c.d; kept as IPv6, it would never match.
            net = ipaddress.IPv4Network((mapped, net.prefixlen - 96))
        return str(net.network_address) if net.num_addresses == 1 else str(net)
    if kind is AtomKind.DOMAIN:
        v = v.lower().rstrip(".")
        if not _DOMAIN.match(v):
            raise IntelError(f"not a domain name: {shown(value)}")
        return v
    if "://" not in v:
        raise IntelError(f"not a URL (no scheme): {shown(value)}")
    return v


def parse_pattern(pattern: str) -> tuple[list[Atom], str | None]:
    """The atoms of a STIX 2.1 pattern and a note on what of it cannot be matched.

    Only comparisons combined with OR are matched atom by atom: an AND, FOLLOWEDBY or qualifier
    would make a single atom hit a false claim, so such patterns are stored with a note and no atoms.
    Raises IntelError for a pattern that does not parse.
    """
    try:
        parsed = Pattern(pattern)
        inspector = _Inspector()
        parsed.walk(inspector)
    except ParseException as exc:
        reason = str(exc) if len(str(exc)) <= 200 else f"{str(exc)[:200]}..."  # it quotes the bad token
        raise IntelError(f"invalid STIX pattern {shown(pattern)}: {reason}") from exc
    except RecursionError:
        # stix2-patterns' ANTLR parser and walker recurse once per nesting level: a few hundred
        # parentheses or about a thousand comparisons in one pattern exhaust Python's stack.
        raise IntelError(
            f"STIX pattern too deeply nested or too long to parse ({len(pattern)} characters, "
            f"starting {pattern[:80]!r}): split it into several indicators"
        ) from None
    data = inspector.pattern_data()
    if inspector.comparison_and or data.observation_ops - {"OR"} or data.qualifiers:
        return [], "pattern combines comparisons with AND/FOLLOWEDBY or qualifiers; stored, not matched"
    atoms: list[Atom] = []
    skipped: list[str] = []
    for obj_type, comparisons in data.comparisons.items():
        for path, op, value in comparisons:
            kind = _kind(obj_type, [str(p) for p in path])
            if kind is None or op not in ("=", "IN", "ISSUBSET"):
                skipped.append(f"{obj_type}:{_path_text(path)} {op}")
                continue
            literals = _literals(op, value)
            if not literals:
                where = f"{obj_type}:{_path_text(path)}"
                raise IntelError(f"pattern {shown(pattern)}: {where} IN () names no value")
            for literal in literals:
                try:
                    algorithm = HASH_ALGORITHMS.get(str(path[-1]).lower()) if kind is AtomKind.HASH else None
                    atoms.append(Atom(kind, normalise(kind, literal, algorithm)))
                except IntelError as exc:
                    raise IntelError(f"pattern {shown(pattern)}: {exc}") from None
    note = f"not matchable: {', '.join(skipped)}" if skipped else None
    return sorted(set(atoms)), note


def _path_text(path: list[Any]) -> str:
    """An object path as the pattern wrote it (`hashes[*]`, `values[0].name`), not the inspector's
    list (whose `[*]` is a sentinel object that would print as its memory address)."""
    text = ""
    for part in path:
        if part is INDEX_STAR:
            text += "[*]"
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _kind(obj_type: str, path: list[str]) -> AtomKind | None:
    if obj_type in ("file", "artifact") and len(path) == 2 and path[0] == "hashes":
        return AtomKind.HASH if path[1].lower() in HASH_ALGORITHMS else None
    if path == ["value"]:
        return {
            "ipv4-addr": AtomKind.IP,
            "ipv6-addr": AtomKind.IP,
            "domain-name": AtomKind.DOMAIN,
            "url": AtomKind.URL,
        }.get(obj_type)
    if obj_type == "network-traffic" and path in (["dst_ref", "value"], ["src_ref", "value"]):
        return AtomKind.IP
    return None


def quote(value: str) -> str:
    """A STIX pattern string literal (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def atom_pattern(atom: Atom, algorithm: str | None = None) -> str:
    """The STIX pattern of one atom (`[domain-name:value = 'evil.example']`)."""
    if atom.kind is AtomKind.HASH:
        algo = algorithm or _HASH_BY_LENGTH.get(len(atom.value), "SHA-256")
        return f"[file:hashes.{quote(algo)} = {quote(atom.value)}]"
    if atom.kind is AtomKind.IP:
        net = ipaddress.ip_network(atom.value, strict=False)
        kind = "ipv4-addr" if net.version == 4 else "ipv6-addr"
        op = "=" if net.num_addresses == 1 else "ISSUBSET"
        return f"[{kind}:value {op} {quote(atom.value)}]"
    kind = "domain-name" if atom.kind is AtomKind.DOMAIN else "url"
    return f"[{kind}:value = {quote(atom.value)}]"


def guess_atom(value: str, kind: str | None = None) -> Atom:
    """An atom from a bare value (CSV lists): by the given type name, else by the value's shape."""
    names = {
        "md5": AtomKind.HASH,
        "sha1": AtomKind.HASH,
        "sha-1": AtomKind.HASH,
        "sha256": AtomKind.HASH,
        "sha-256": AtomKind.HASH,
        "sha512": AtomKind.HASH,
        "hash": AtomKind.HASH,
        "imphash": AtomKind.HASH,
        "ip": AtomKind.IP,
        "ipv4": AtomKind.IP,
        "ipv6": AtomKind.IP,
        "cidr": AtomKind.IP,
        "ip-dst": AtomKind.IP,
        "ip-src": AtomKind.IP,
        "domain": AtomKind.DOMAIN,
        "hostname": AtomKind.DOMAIN,
        "fqdn": AtomKind.DOMAIN,
        "url": AtomKind.URL,
        "uri": AtomKind.URL,
    }
    if kind:
        try:
            chosen = names[kind.strip().lower()]
        except KeyError:
            raise IntelError(
                f"unknown indicator type {shown(kind)} (use one of {', '.join(sorted(names))})"
            ) from None
        return Atom(chosen, normalise(chosen, value, HASH_ALGORITHMS.get(kind.strip().lower())))
    for candidate in (AtomKind.HASH, AtomKind.IP, AtomKind.URL, AtomKind.DOMAIN):
        try:
            return Atom(candidate, normalise(candidate, value))
        except IntelError:
            continue
    raise IntelError(f"cannot tell what kind of indicator {shown(value)} is (give a type column)")
