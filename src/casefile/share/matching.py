"""Indicator matching as DuckDB joins over the columnar events table.

The evidence is one DuckDB table in the ingest layout (`casefile.ingest.columnar`: timestamp,
computer, channel, provider, event_id, record_id, source_file and a `fields` MAP of text). Each
atom kind reads a declared set of fields; their values are normalised in SQL (hash lists split,
names lower-cased), and one join per kind pairs them with the intel store's atoms:

- hashes: equality on the lower-case hex (`Hashes=SHA1=..,MD5=..` lists are split first),
- addresses: range join on fixed-width hex of the address against CIDR low/high bounds,
- domains: equality on the lower-case name without trailing dot,
- URLs: equality on URL fields, containment in command lines and script text.

Addresses are parsed once per distinct value (Python `ipaddress`, which knows every IPv6 form),
so the work is bounded by distinct addresses, never by indicators x events.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import duckdb
import pyarrow as pa

from casefile.errors import IntelError
from casefile.models import Detection, DetectionKind, Level, RuleInfo
from casefile.share.models import AtomKind, Indicator

if TYPE_CHECKING:
    from casefile.share.store import IntelStore

#: URLs inside free text (command lines, scripts): scheme://, then up to a space, quote or shell
#: metacharacter; trailing punctuation is trimmed in SQL.
URL_TOKEN = r"[a-z][a-z0-9+.-]*://[^\s\"'<>|^`]+"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class FieldMap:
    """Which event fields each atom kind is looked for in (Sigma/Sysmon names and common JSON names)."""

    HASH: ClassVar[tuple[str, ...]] = ("Hashes", "Hash", "md5", "sha1", "sha256", "FileHash", "hashes")
    IP: ClassVar[tuple[str, ...]] = (
        "DestinationIp",
        "SourceIp",
        "IpAddress",
        "ClientAddress",
        "SourceAddress",
        "DestAddress",
        "RemoteAddress",
        "dst_ip",
        "src_ip",
        "c-ip",
        "s-ip",
        "destination.ip",
        "source.ip",
    )
    DOMAIN: ClassVar[tuple[str, ...]] = (
        "QueryName",
        "DestinationHostname",
        "query",
        "dns.question.name",
        "cs-host",
        "r-dns",
        "destination.domain",
        "url.domain",
    )
    URL_EXACT: ClassVar[tuple[str, ...]] = (
        "url",
        "Url",
        "URL",
        "c-uri",
        "cs-uri",
        "url.full",
        "url.original",
    )
    URL_IN_TEXT: ClassVar[tuple[str, ...]] = (
        "CommandLine",
        "ParentCommandLine",
        "ScriptBlockText",
        "Payload",
        "ContextInfo",
    )

    @classmethod
    def table(cls) -> pa.Table:
        rows = [("hash", f, "list") for f in cls.HASH]
        rows += [("ip", f, "exact") for f in cls.IP]
        rows += [("domain", f, "exact") for f in cls.DOMAIN]
        rows += [("url", f, "exact") for f in cls.URL_EXACT]
        rows += [("url", f, "tokens") for f in cls.URL_IN_TEXT]
        kinds, fields, modes = zip(*rows, strict=True)
        return pa.table({"kind": list(kinds), "field": list(fields), "mode": list(modes)})


def _quoted(table: str) -> str:
    if not _IDENTIFIER.match(table):
        raise IntelError(f"invalid events table name {table!r}: use letters, digits and _")
    return f'"{table}"'


def match_indicators(
    con: duckdb.DuckDBPyConnection,
    indicators: Sequence[Indicator],
    *,
    table: str = "events",
    fields: type[FieldMap] = FieldMap,
) -> list[Detection]:
    """Detections (kind IOC) for every event in `table` that contains an indicator's atom.

    One detection per (event, indicator); `matched` holds the fields that matched, `indicator` the
    pattern and `source` the feeds it came from. Ordered by time, then file and record.
    """
    from casefile.share.store import atom_table

    events = _quoted(table)
    by_key = {i.key: i for i in indicators}
    atoms = atom_table([(i.key, a) for i in indicators for a in i.atoms])
    if atoms.num_rows == 0:
        return []
    names = ("_cf_atoms", "_cf_fields", "_cf_ips")
    cur = con.cursor()  # own cursor: registered views stay private to this call
    try:
        cur.register("_cf_atoms", atoms)
        cur.register("_cf_fields", fields.table())
        cur.execute(
            f"""CREATE TEMP TABLE _cf_obs AS
                SELECT e.rowid AS rid, f.kind, f.mode, f.field, e.fields[f.field] AS raw
                FROM {events} e JOIN _cf_fields f ON map_contains(e.fields, f.field)
                WHERE e.fields[f.field] IS NOT NULL AND e.fields[f.field] <> ''"""
        )
        cur.register("_cf_ips", _ip_table(cur, _prefixes(indicators)))
        hits = cur.execute(
            """WITH hashes AS (
                   SELECT rid, field, raw, lower(trim(CASE WHEN contains(part, '=')
                          THEN split_part(part, '=', 2) ELSE part END)) AS v
                   FROM (SELECT rid, field, raw, unnest(string_split(raw, ',')) AS part
                         FROM _cf_obs WHERE kind = 'hash')
               )
               SELECT h.rid, a.key, h.field, h.raw, a.value FROM hashes h
                 JOIN _cf_atoms a ON a.kind = 'hash' AND a.value = h.v
               UNION
               SELECT o.rid, a.key, o.field, o.raw, a.value FROM _cf_obs o
                 JOIN _cf_ips i ON i.raw = o.raw
                 JOIN _cf_atoms a ON a.kind = 'ip' AND a.value = i.net
               WHERE o.kind = 'ip'
               UNION
               SELECT o.rid, a.key, o.field, o.raw, a.value FROM _cf_obs o
                 JOIN _cf_atoms a ON a.kind = 'domain' AND a.value = lower(rtrim(trim(o.raw), '.'))
               WHERE o.kind = 'domain'
               UNION
               SELECT o.rid, a.key, o.field, o.raw, a.value FROM _cf_obs o
                 JOIN _cf_atoms a ON a.kind = 'url' AND lower(a.value) = lower(trim(o.raw))
               WHERE o.kind = 'url' AND o.mode = 'exact'
               UNION
               SELECT t.rid, a.key, t.field, t.raw, a.value FROM (
                   SELECT rid, field, raw,
                          rtrim(unnest(regexp_extract_all(lower(raw), ?)), '.,;:)]}') AS token
                   FROM _cf_obs WHERE kind = 'url' AND mode = 'tokens') t
                 JOIN _cf_atoms a ON a.kind = 'url' AND lower(a.value) = t.token""",
            [URL_TOKEN],
        ).fetchall()
        if not hits:
            return []
        matched: dict[tuple[int, str], dict[str, Any]] = {}
        atoms_hit: dict[tuple[int, str], set[str]] = {}
        for rid, key, field, raw, atom_value in hits:
            matched.setdefault((rid, key), {})[field] = raw
            atoms_hit.setdefault((rid, key), set()).add(atom_value)
        rows = _event_rows(cur, events, sorted({rid for rid, _ in matched}))
    finally:
        cur.execute("DROP TABLE IF EXISTS _cf_obs")
        for name in names:
            cur.unregister(name)
        cur.close()
    out = [
        _detection(rows[rid], by_key[key], fields_hit, atoms_hit[rid, key])
        for (rid, key), fields_hit in matched.items()
        if rid in rows and key in by_key
    ]
    out.sort(
        key=lambda d: (
            d.timestamp or datetime.min.replace(tzinfo=UTC),
            d.file or "",
            d.record_id or 0,
            d.rule.id,
        )
    )
    return out


def _prefixes(indicators: Sequence[Indicator]) -> set[tuple[int, int]]:
    """(IP version, prefix length) of every address/network atom: what event addresses are cut to."""
    out: set[tuple[int, int]] = set()
    for i in indicators:
        for a in i.atoms:
            if a.kind is AtomKind.IP:
                net = ipaddress.ip_network(a.value, strict=False)
                out.add((net.version, net.prefixlen))
    return out


def _ip_table(cur: duckdb.DuckDBPyConnection, prefixes: set[tuple[int, int]]) -> pa.Table:
    """Each distinct address text in the events with each network it falls in, at every prefix
    length some indicator uses, in the atoms' canonical text: the address join is then an equality
    (a range join would compare every address with every network)."""
    raws: list[str] = []
    nets: list[str] = []
    for (raw,) in cur.execute("SELECT DISTINCT raw FROM _cf_obs WHERE kind = 'ip'").fetchall():
        text = str(raw).strip().strip("[]")
        try:
            addr = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue  # "-", "LOCAL", host names: not an address, nothing to match
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # Windows logs IPv4 peers as ::ffff:a.b.c.d
        for version, length in prefixes:
            if version != addr.version:
                continue
            net = ipaddress.ip_network((addr, length), strict=False)
            raws.append(raw)
            nets.append(str(net.network_address) if net.num_addresses == 1 else str(net))
    return pa.table({"raw": pa.array(raws, pa.string()), "net": pa.array(nets, pa.string())})


def _event_rows(cur: duckdb.DuckDBPyConnection, events: str, rids: list[int]) -> dict[int, tuple[Any, ...]]:
    cur.register("_cf_rids", pa.table({"rid": pa.array(rids, pa.int64())}))
    try:
        result = cur.execute(
            f"""SELECT e.rowid, e.timestamp, e.computer, e.channel, e.event_id, e.record_id, e.source_file,
                       e.fields
                FROM {events} e SEMI JOIN _cf_rids r ON r.rid = e.rowid"""
        ).fetchall()
    finally:
        cur.unregister("_cf_rids")
    return {r[0]: r for r in result}


def indicator_rule(indicator: Indicator) -> RuleInfo:
    """The RuleInfo an indicator hit reports: the indicator's id, name and sources."""
    title = indicator.name or indicator.pattern
    return RuleInfo(
        id=indicator.id,
        title=f"Indicator match: {title}",
        level=Level.HIGH,
        status=None,
        author=indicator.source or None,
        tags=tuple(f"tlp:{indicator.tlp.removeprefix('TLP:').lower()}" for _ in (0,) if indicator.tlp),
        description=indicator.description,
    )


def indicator_value(indicator: Indicator, atoms_hit: set[str]) -> str:
    """What a hit reports as its indicator: the one value that matched (a hash, address, domain or
    URL, which the case's STIX export turns back into a pattern), else the indicator's pattern."""
    if len(atoms_hit) == 1:
        value = next(iter(atoms_hit))
        if "/" not in value or "://" in value:  # a CIDR network only exists as a pattern
            return value
    return indicator.pattern


def _detection(
    row: tuple[Any, ...], indicator: Indicator, matched: Mapping[str, Any], atoms_hit: set[str]
) -> Detection:
    _, ts, computer, channel, event_id, record_id, source_file, event_fields = row
    if isinstance(ts, datetime):
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return Detection(
        rule=indicator_rule(indicator),
        kind=DetectionKind.IOC,
        timestamp=ts,
        computer=computer,
        channel=channel,
        event_id=event_id,
        record_id=record_id,
        file=source_file,
        matched=dict(sorted(matched.items())),
        fields=dict(event_fields or {}),
        indicator=indicator_value(indicator, atoms_hit),
        source=indicator.source,
    )


def match_case(case_path: str | Path, store: IntelStore) -> list[Detection]:
    """Match the store's indicators against a case's events and record the hits in the case
    (replacing earlier indicator hits, so re-running after a new import is idempotent)."""
    from casefile.case import Case
    from casefile.case.investigate import match_case_indicators

    indicators = store.indicators()
    hits: list[Detection] = []

    def matcher(con: duckdb.DuckDBPyConnection) -> list[Detection]:
        hits.extend(match_indicators(con, indicators))
        return hits

    with Case.open(case_path) as case:
        match_case_indicators(case, matcher)
    return hits
