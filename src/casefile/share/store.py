"""The local intel store: one DuckDB file of indicators (deduplicated), their atoms and other STIX objects."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from casefile.errors import IntelError
from casefile.ingest.columnar import arrow_array, storable
from casefile.share.models import Atom, AtomKind, Indicator, IndicatorInput, IntelIssue
from casefile.share.patterns import parse_pattern

#: TLP names from least to most restrictive: a merge keeps the most restrictive marking seen.
TLP_ORDER = ("TLP:CLEAR", "TLP:GREEN", "TLP:AMBER", "TLP:AMBER+STRICT", "TLP:RED")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS indicators (
        key VARCHAR PRIMARY KEY, id VARCHAR NOT NULL, pattern VARCHAR NOT NULL, name VARCHAR,
        description VARCHAR, sources VARCHAR[] NOT NULL, tlp VARCHAR, first_seen TIMESTAMPTZ,
        last_seen TIMESTAMPTZ, labels VARCHAR[] NOT NULL, note VARCHAR, raw VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS atoms (
        key VARCHAR NOT NULL, kind VARCHAR NOT NULL, value VARCHAR NOT NULL,
        PRIMARY KEY (key, kind, value))""",
    """CREATE TABLE IF NOT EXISTS objects (
        id VARCHAR PRIMARY KEY, type VARCHAR NOT NULL, modified VARCHAR, source VARCHAR,
        json VARCHAR NOT NULL)""",
)

#: Arrow schema of `IntelStore.atom_table()`: what indicator matching joins against.
ATOM_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("value", pa.string()),
        pa.field("ip_version", pa.int8()),
        pa.field("ip_lo", pa.string()),  # 32 hex digits: fixed width, so text order is numeric order
        pa.field("ip_hi", pa.string()),
    ]
)


def stricter_tlp(a: str | None, b: str | None) -> str | None:
    """The more restrictive of two TLP markings (unknown names rank as most restrictive)."""
    if a is None or b is None:
        return a or b

    def rank(t: str) -> int:
        return TLP_ORDER.index(t) if t in TLP_ORDER else len(TLP_ORDER)

    return a if rank(a) >= rank(b) else b


def ip_range(value: str) -> tuple[int, str, str]:
    """(version, low, high) of an address or network as fixed-width hex (IPv4-mapped IPv6 as IPv4)."""
    net = ipaddress.ip_network(value, strict=False)
    lo, hi = int(net.network_address), int(net.broadcast_address)
    return net.version, f"{lo:032x}", f"{hi:032x}"


def atom_key(atoms: Sequence[Atom], pattern: str) -> str:
    """Indicator identity: its sorted atoms, or the whitespace-normalised pattern when it has none."""
    if atoms:
        return " | ".join(f"{a.kind.value}:{a.value}" for a in sorted(set(atoms)))
    return "pattern:" + " ".join(pattern.split())


class IntelStore:
    """Indicators and STIX objects imported from partners, in one DuckDB file.

    The same indicator imported twice (same atoms, from any source) is one row: its sources are
    merged, first/last seen widened and the most restrictive TLP kept.
    """

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection) -> None:
        self.path = path
        self._con = con

    @classmethod
    def open(cls, path: str | Path) -> IntelStore:
        """Open (creating if missing) the store at `path` (a .duckdb file)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(p))
        except duckdb.Error as exc:
            raise IntelError(f"cannot open intel store {p}: {exc}") from exc
        for ddl in _SCHEMA:
            con.execute(ddl)
        return cls(p, con)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> IntelStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------
    def add_indicator(self, item: IndicatorInput) -> bool:
        """Store or merge one indicator; True when it is new. Raises IntelError for a bad pattern."""
        new, _, issues = self.add_indicators([item])
        if issues:
            raise IntelError(issues[0].reason)
        return new == 1

    def add_indicators(self, items: Sequence[IndicatorInput]) -> tuple[int, int, list[IntelIssue]]:
        """Store or merge many indicators in a few set-based statements.

        Returns (new, merged, issues): an item whose pattern does not parse is an issue, the rest
        are stored. Items with the same atoms (in the batch or already stored) merge into one row.
        """
        issues: list[IntelIssue] = []
        rows: dict[str, _Row] = {}
        accepted = 0
        for item in items:
            try:
                atoms, note = (
                    (list(item.atoms), None) if item.atoms is not None else parse_pattern(item.pattern)
                )
            except IntelError as exc:
                issues.append(IntelIssue(item.source, item.id, str(exc)))
                continue
            accepted += 1
            key = storable(atom_key(atoms, item.pattern))  # as stored: a lone surrogate escaped
            row = _Row.of(key, item, tuple(atoms), note)
            rows[key] = rows[key].merge(row) if key in rows else row
        if not rows:
            return 0, 0, issues
        self._con.register("_cf_keys", pa.table({"key": arrow_array(list(rows), pa.string())}))
        try:
            stored = self._con.execute(
                """SELECT i.key, i.id, i.pattern, i.name, i.description, i.sources, i.tlp, i.first_seen,
                          i.last_seen, i.labels, i.note, i.raw
                   FROM indicators i SEMI JOIN _cf_keys k ON k.key = i.key"""
            ).fetchall()
            for r in stored:
                old = _Row(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    list(r[5]),
                    r[6],
                    _utc(r[7]),
                    _utc(r[8]),
                    set(r[9]),
                    r[10],
                    r[11],
                    (),
                )
                rows[r[0]] = old.merge(rows[r[0]])
            self._con.execute("DELETE FROM indicators WHERE key IN (SELECT key FROM _cf_keys)")
        finally:
            self._con.unregister("_cf_keys")
        existing = {r[0] for r in stored}
        table = pa.table(
            {
                "key": [r.key for r in rows.values()],
                "id": arrow_array([r.id for r in rows.values()], pa.string()),
                "pattern": arrow_array([r.pattern for r in rows.values()], pa.string()),
                "name": arrow_array([r.name for r in rows.values()], pa.string()),
                "description": arrow_array([r.description for r in rows.values()], pa.string()),
                "sources": arrow_array([r.sources for r in rows.values()], pa.list_(pa.string())),
                "tlp": arrow_array([r.tlp for r in rows.values()], pa.string()),
                "first_seen": pa.array([r.first_seen for r in rows.values()], pa.timestamp("us", tz="UTC")),
                "last_seen": pa.array([r.last_seen for r in rows.values()], pa.timestamp("us", tz="UTC")),
                "labels": arrow_array([sorted(r.labels) for r in rows.values()], pa.list_(pa.string())),
                "note": arrow_array([r.note for r in rows.values()], pa.string()),
                "raw": arrow_array([r.raw for r in rows.values()], pa.string()),
            }
        )
        fresh = [r for r in rows.values() if r.key not in existing]
        atoms_table = pa.table(
            {
                "key": arrow_array([r.key for r in fresh for _ in r.atoms], pa.string()),
                "kind": arrow_array([a.kind.value for r in fresh for a in r.atoms], pa.string()),
                "value": arrow_array([a.value for r in fresh for a in r.atoms], pa.string()),
            }
        )
        self._con.register("_cf_rows", table)
        self._con.register("_cf_atoms_new", atoms_table)
        try:
            self._con.execute("INSERT INTO indicators SELECT * FROM _cf_rows")
            self._con.execute("INSERT OR IGNORE INTO atoms SELECT DISTINCT * FROM _cf_atoms_new")
        finally:
            self._con.unregister("_cf_rows")
            self._con.unregister("_cf_atoms_new")
        return len(fresh), accepted - len(fresh), issues

    def add_object(self, obj: dict[str, Any], source: str) -> None:
        """Store a non-indicator STIX object; a newer `modified` replaces an older version."""
        self.add_objects([obj], source)

    def add_objects(self, objects: Sequence[dict[str, Any]], source: str) -> None:
        """Store non-indicator STIX objects; per id the newest `modified` (or `created`) is kept."""
        newest: dict[str, tuple[str, str | None, dict[str, Any]]] = {}
        for obj in objects:
            oid, otype = obj.get("id"), obj.get("type")
            if not isinstance(oid, str) or not isinstance(otype, str):
                raise IntelError("STIX object without a string id and type")
            modified = obj.get("modified") or obj.get("created")
            stamp = str(modified) if modified is not None else None
            if oid not in newest or _newer(stamp, newest[oid][1]):
                newest[oid] = (otype, stamp, obj)
        if not newest:
            return
        self._con.register("_cf_ids", pa.table({"id": arrow_array(list(newest), pa.string())}))
        try:
            for oid, modified in self._con.execute(
                "SELECT o.id, o.modified FROM objects o SEMI JOIN _cf_ids i ON i.id = o.id"
            ).fetchall():
                if not _newer(newest[oid][1], modified):
                    del newest[oid]
        finally:
            self._con.unregister("_cf_ids")
        table = pa.table(
            {
                "id": arrow_array(list(newest), pa.string()),
                "type": arrow_array([v[0] for v in newest.values()], pa.string()),
                "modified": arrow_array([v[1] for v in newest.values()], pa.string()),
                "source": arrow_array([source] * len(newest), pa.string()),
                "json": arrow_array([json.dumps(v[2], sort_keys=True) for v in newest.values()], pa.string()),
            }
        )
        self._con.register("_cf_objects", table)
        try:
            self._con.execute("INSERT OR REPLACE INTO objects SELECT * FROM _cf_objects")
        finally:
            self._con.unregister("_cf_objects")

    def transaction(self) -> _Transaction:
        """A context in which a whole import is committed at once (or rolled back on a crash)."""
        return _Transaction(self._con)

    # -- reading --------------------------------------------------------------------------------
    def indicators(self) -> list[Indicator]:
        """Every stored indicator, ordered by key."""
        atoms: dict[str, list[Atom]] = {}
        for key, kind, value in self._con.execute(
            "SELECT key, kind, value FROM atoms ORDER BY ALL"
        ).fetchall():
            atoms.setdefault(key, []).append(Atom(AtomKind(kind), value))
        rows = self._con.execute(
            """SELECT key, id, pattern, name, description, sources, tlp, first_seen, last_seen, labels, note
               FROM indicators ORDER BY key"""
        ).fetchall()
        return [
            Indicator(
                id=r[1],
                key=r[0],
                pattern=r[2],
                name=r[3],
                description=r[4],
                sources=tuple(r[5]),
                tlp=r[6],
                first_seen=_utc(r[7]),
                last_seen=_utc(r[8]),
                atoms=tuple(atoms.get(r[0], ())),
                labels=tuple(r[9]),
                note=r[10],
            )
            for r in rows
        ]

    def count(self) -> tuple[int, int]:
        """(indicators, other objects) stored."""
        n_ind = self._con.execute("SELECT count(*) FROM indicators").fetchone()
        n_obj = self._con.execute("SELECT count(*) FROM objects").fetchone()
        return (n_ind[0] if n_ind else 0, n_obj[0] if n_obj else 0)

    def atom_table(self) -> pa.Table:
        """Every matchable atom with IP ranges precomputed (schema ATOM_SCHEMA), for DuckDB joins."""
        rows = self._con.execute("SELECT key, kind, value FROM atoms ORDER BY ALL").fetchall()
        return atom_table([(k, Atom(AtomKind(kind), v)) for k, kind, v in rows])

    def stix_objects(self, types: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The stored STIX objects (indicators included), optionally only of some types.

        Indicators that did not come as STIX (CSV, MISP) are rebuilt as STIX indicators.
        """
        out: list[dict[str, Any]] = []
        if types is None or "indicator" in types:
            out.extend(self._indicator_objects())
        query = "SELECT json FROM objects"
        params: list[Any] = []
        if types is not None:
            query += " WHERE list_contains(?, type)"
            params.append(list(types))
        out.extend(json.loads(r[0]) for r in self._con.execute(query + " ORDER BY id", params).fetchall())
        return out

    def write_bundle(self, path: str | Path, types: Sequence[str] | None = None) -> Path:
        """Write the store (or some object types) as one STIX 2.1 bundle file, e.g. for
        `casefile.attack.load_knowledge_base(bundles=[...])`; returns the path."""
        p = Path(path)
        bundle = {
            "type": "bundle",
            "id": "bundle--" + _uuid5(str(self.path)),
            "objects": self.stix_objects(types),
        }
        p.write_text(json.dumps(bundle, indent=1, sort_keys=True), encoding="utf-8")
        return p

    def _indicator_objects(self) -> Iterator[dict[str, Any]]:
        rows = self._con.execute(
            """SELECT id, pattern, name, description, sources, tlp, first_seen, last_seen, labels, raw
               FROM indicators ORDER BY id"""
        ).fetchall()
        for oid, pattern, name, description, sources, tlp, first, last, labels, raw in rows:
            if raw is not None:
                yield json.loads(raw)
                continue
            stamp = stix_time(first or datetime(1970, 1, 1, tzinfo=UTC))
            obj: dict[str, Any] = {
                "type": "indicator",
                "spec_version": "2.1",
                "id": oid,
                "created": stamp,
                "modified": stix_time(last) if last else stamp,
                "pattern": pattern,
                "pattern_type": "stix",
                "valid_from": stamp,
            }
            if name:
                obj["name"] = name
            if description:
                obj["description"] = description
            if labels:
                obj["labels"] = list(labels)
            obj["external_references"] = [{"source_name": s} for s in sources]
            marking = TLP_MARKING_IDS.get(tlp or "")
            if marking:
                obj["object_marking_refs"] = [marking]
            yield obj


class _Transaction:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def __enter__(self) -> None:
        self._con.execute("BEGIN TRANSACTION")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._con.execute("COMMIT" if exc_type is None else "ROLLBACK")


#: TLP markings as STIX marking-definition ids: TLP 1.0 (stix2's TLP_* objects) and TLP 2.0.
TLP_MARKING_IDS = {
    "TLP:CLEAR": "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
    "TLP:GREEN": "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
    "TLP:AMBER": "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
    "TLP:RED": "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
}
TLP_BY_MARKING_ID = {
    **{v: k for k, v in TLP_MARKING_IDS.items()},
    # TLP 2.0 marking definitions (extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d)
    "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487": "TLP:CLEAR",
    "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb": "TLP:GREEN",
    "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421": "TLP:AMBER",
    "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003": "TLP:AMBER+STRICT",
    "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1": "TLP:RED",
}


def tlp_name(text: str) -> str | None:
    """`tlp:amber`, `TLP:WHITE`, `amber` -> the TLP 2.0 name (`TLP:AMBER`, `TLP:CLEAR`); None if not TLP."""
    t = text.strip().upper().removeprefix("TLP:").removeprefix("TLP ").strip()
    t = {"WHITE": "CLEAR"}.get(t, t)
    name = f"TLP:{t}"
    return name if name in TLP_ORDER else None


def atom_table(items: Sequence[tuple[str, Atom]]) -> pa.Table:
    """(indicator key, atom) pairs as an Arrow table of ATOM_SCHEMA."""
    cols: dict[str, list[Any]] = {name: [] for name in ATOM_SCHEMA.names}
    for key, atom in items:
        version: int | None = None
        lo = hi = None
        if atom.kind is AtomKind.IP:
            version, lo, hi = ip_range(atom.value)
        for name, value in zip(
            ATOM_SCHEMA.names, (key, atom.kind.value, atom.value, version, lo, hi), strict=True
        ):
            cols[name].append(value)
    return pa.table(cols, schema=ATOM_SCHEMA)


def _newer(a: str | None, b: str | None) -> bool:
    """Whether version stamp `a` is newer than `b` (an object without a stamp never replaces one)."""
    if a is None:
        return b is None
    if b is None:
        return True
    try:
        return datetime.fromisoformat(a.replace("Z", "+00:00")) > datetime.fromisoformat(
            b.replace("Z", "+00:00")
        )
    except ValueError:
        return a > b


@dataclass(slots=True)
class _Row:
    """An indicator row being merged before it is written."""

    key: str
    id: str
    pattern: str
    name: str | None
    description: str | None
    sources: list[str]
    tlp: str | None
    first_seen: datetime | None
    last_seen: datetime | None
    labels: set[str]
    note: str | None
    raw: str | None
    atoms: tuple[Atom, ...]

    @classmethod
    def of(cls, key: str, item: IndicatorInput, atoms: tuple[Atom, ...], note: str | None) -> _Row:
        raw = json.dumps(item.raw, sort_keys=True) if item.raw is not None else None
        return cls(
            key,
            item.id,
            item.pattern,
            item.name,
            item.description,
            [item.source],
            item.tlp,
            _utc(item.first_seen),
            _utc(item.last_seen),
            set(item.labels),
            note,
            raw,
            atoms,
        )

    def merge(self, later: _Row) -> _Row:
        """This row with a later sighting of the same indicator folded in (this row's id is kept)."""
        return _Row(
            self.key,
            self.id,
            self.pattern,
            self.name or later.name,
            self.description or later.description,
            self.sources + [s for s in later.sources if s not in self.sources],
            stricter_tlp(self.tlp, later.tlp),
            _earliest(self.first_seen, later.first_seen),
            _latest(self.last_seen, later.last_seen),
            self.labels | later.labels,
            self.note,
            self.raw or later.raw,
            self.atoms or later.atoms,
        )


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    a, b = _utc(a), _utc(b)
    return min(a, b) if a and b else a or b


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    a, b = _utc(a), _utc(b)
    return max(a, b) if a and b else a or b


def stix_time(ts: datetime) -> str:
    """A STIX timestamp (UTC, milliseconds, `Z`); a naive `ts` is taken as UTC."""
    t = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    # isoformat, not strftime: %Y writes year 1 as "1", which no reader takes for a timestamp
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _uuid5(text: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, "https://casefile/intel/" + text))
