"""Read STIX 2.0/2.1 bundles (plain or gzip) into compact ATT&CK records; raw dicts stop here."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from casefile.attack.models import Campaign, Group, Software, Tactic, Technique, Use
from casefile.errors import KnowledgeBaseError
from casefile.heap import load_pickle

#: Bump when ParsedBundle changes shape, so stale caches are ignored.
CACHE_FORMAT = 5  # 4: Group gained victims and sectors; 5: report_years
_MODELLED = ("attack-pattern--", "malware--", "tool--", "intrusion-set--", "campaign--")
_ATTACK_SOURCES = frozenset({"mitre-attack", "mitre-mobile-attack", "mitre-ics-attack"})

#: ATT&CK releases (version -> release day), from MITRE's published release history
#: (attack.mitre.org/resources/versions/ and the mitre/cti CHANGELOG). Used only when a bundle has no
#: x-mitre-collection object (the STIX 2.0 bundles of mitre/cti): content is modified before it is released,
#: so the bundle is the first release on or after its newest `modified` day. Add a row for each new release.
ATTACK_RELEASES: tuple[tuple[str, date], ...] = (
    ("10.0", date(2021, 10, 21)),
    ("11.0", date(2022, 4, 25)),
    ("12.0", date(2022, 10, 25)),
    ("13.0", date(2023, 4, 25)),
    ("13.1", date(2023, 5, 9)),
    ("14.0", date(2023, 10, 31)),
    ("15.0", date(2024, 4, 23)),
    ("15.1", date(2024, 4, 23)),
    ("16.0", date(2024, 10, 31)),
    ("16.1", date(2024, 11, 12)),
    ("17.0", date(2025, 4, 22)),
    ("17.1", date(2025, 4, 22)),
    ("18.0", date(2025, 10, 28)),
    ("18.1", date(2025, 11, 13)),
)
VERSION_FROM_COLLECTION = "x-mitre-collection"
VERSION_FROM_DATES = "inferred from content dates"


def infer_attack_version(newest_modified: date) -> str | None:
    """The ATT&CK release a bundle whose newest object was modified on `newest_modified` belongs to: the
    latest release of the first release day on or after it (15.0 and 15.1 shipped the same day: 15.1).
    None when the content is newer than every release in the table, or older than the table."""
    if newest_modified < ATTACK_RELEASES[0][1] - timedelta(days=183):
        return None  # older than the table: no release in it can be meant
    days = [d for _, d in ATTACK_RELEASES if d >= newest_modified]
    if not days:
        return None
    first = min(days)
    return [v for v, d in ATTACK_RELEASES if d == first][-1]


@dataclass(frozen=True, slots=True)
class ParsedBundle:
    """Active (not revoked, not deprecated) objects of one bundle, keyed by ATT&CK id."""

    path: str
    version: str | None
    #: where `version` came from: VERSION_FROM_COLLECTION, VERSION_FROM_DATES, or None when unknown
    version_source: str | None = None
    techniques: tuple[Technique, ...] = ()
    software: tuple[Software, ...] = ()
    groups: tuple[Group, ...] = ()
    campaigns: tuple[Campaign, ...] = ()
    tactics: tuple[Tactic, ...] = ()
    uses: tuple[Use, ...] = ()
    #: (campaign id, group id, created)
    attributed: tuple[tuple[str, str, date], ...] = ()
    #: (citation key, publication year) of every cited report whose year is known
    report_years: tuple[tuple[str, int], ...] = ()


def items_of(value: object) -> list[Any]:
    """A list property's items; nothing when a bundle gives something else there (a number, a string)."""
    return value if isinstance(value, list) else []


def _day(value: object) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _attack_id(obj: dict[str, Any]) -> str | None:
    for ref in items_of(obj.get("external_references")):
        if isinstance(ref, dict) and ref.get("source_name") in _ATTACK_SOURCES and ref.get("external_id"):
            return str(ref["external_id"])
    return None


def _reports(obj: dict[str, Any]) -> frozenset[str]:
    """Citation keys of a relationship (ATT&CK's own id references are not reports)."""
    keys = set()
    for ref in items_of(obj.get("external_references")):
        if isinstance(ref, dict) and ref.get("source_name") and ref.get("source_name") not in _ATTACK_SOURCES:
            keys.add(str(ref["source_name"]))
    return frozenset(keys)


# ATT&CK cites as "Author. (2017, May 3). Title. Retrieved ...": the year in parentheses is the publication's.
_PUBLISHED = re.compile(r"\((\d{4})[,)]")
_YEAR_IN_KEY = re.compile(r"(?<!\d)((?:19[89]|20\d)\d)(?!\d)")


def report_year(source_name: str, description: str) -> int | None:
    """Publication year of a cited report: from its description, else from its citation key ("FireEye
    APT28 2015"); None when undated ("(n.d.)" tool pages: their retrieval day says nothing of activity)."""
    for pattern, text in ((_PUBLISHED, description), (_YEAR_IN_KEY, source_name)):
        m = pattern.search(text)
        if m and 1980 <= int(m.group(1)) <= 2100:
            return int(m.group(1))
    return None


def _report_years(objects: list[dict[str, Any]]) -> tuple[tuple[str, int], ...]:
    years: dict[str, int] = {}
    for o in objects:
        for ref in items_of(o.get("external_references")):
            if not isinstance(ref, dict) or ref.get("source_name") in _ATTACK_SOURCES:
                continue
            key = str(ref.get("source_name") or "")
            if key and key not in years:
                year = report_year(key, str(ref.get("description") or ""))
                if year is not None:
                    years[key] = year
    return tuple(sorted(years.items()))


def read_objects(path: Path) -> list[dict[str, Any]]:
    """The objects of a STIX bundle file (gzip detected by magic bytes); KnowledgeBaseError names the file."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        doc = json.loads(raw)
    except (OSError, EOFError, gzip.BadGzipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KnowledgeBaseError(f"{path}: cannot read STIX bundle: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("type") != "bundle" or not isinstance(doc.get("objects"), list):
        raise KnowledgeBaseError(
            f"{path}: not a STIX bundle (expected an object with type 'bundle' and 'objects')"
        )
    return [o for o in doc["objects"] if isinstance(o, dict)]


def parse_bundle(path: Path) -> ParsedBundle:
    """Parse one bundle, dropping revoked and deprecated objects and relationships between them."""
    objects = read_objects(path)
    active = [o for o in objects if not o.get("revoked") and not o.get("x_mitre_deprecated")]
    ids: dict[str, str] = {}  # STIX id -> ATT&CK id (or STIX id for foreign objects)
    tactic_objs: dict[str, Tactic] = {}
    techniques: list[Technique] = []
    software: list[Software] = []
    groups: list[Group] = []
    campaigns: list[Campaign] = []
    version: str | None = None
    version_source: str | None = None
    matrix_order: list[str] = []
    pending_techniques: list[tuple[dict[str, Any], str]] = []
    for o in active:
        kind = o.get("type")
        sid = str(o.get("id", ""))
        aid = _attack_id(o) or sid
        if kind == "x-mitre-collection" and o.get("x_mitre_version"):
            version = str(o["x_mitre_version"])
            version_source = VERSION_FROM_COLLECTION
        elif kind == "x-mitre-matrix":
            matrix_order.extend(str(t) for t in items_of(o.get("tactic_refs")))
        elif kind == "x-mitre-tactic":
            tactic_objs[sid] = Tactic(aid, str(o.get("name", aid)), str(o.get("x_mitre_shortname", "")))
        elif kind == "attack-pattern":
            ids[sid] = aid
            pending_techniques.append((o, aid))
        elif kind in ("malware", "tool"):
            ids[sid] = aid
            aliases = tuple(str(a) for a in items_of(o.get("x_mitre_aliases") or o.get("aliases")))
            software.append(Software(aid, str(o.get("name", aid)), str(kind), aliases, sid))
        elif kind == "intrusion-set":
            ids[sid] = aid
            aliases = tuple(str(a) for a in items_of(o.get("aliases")))
            groups.append(Group(aid, str(o.get("name", aid)), aliases, None, sid))
        elif kind == "campaign":
            ids[sid] = aid
            created = _day(o.get("created")) or date.min
            campaigns.append(
                Campaign(
                    aid,
                    str(o.get("name", aid)),
                    created,
                    _day(o.get("first_seen")),
                    _day(o.get("last_seen")),
                    sid,
                )
            )
    tactics = [tactic_objs[t] for t in matrix_order if t in tactic_objs]
    tactics += [t for s, t in sorted(tactic_objs.items(), key=lambda kv: kv[1].id) if s not in matrix_order]
    order = {t.shortname: i for i, t in enumerate(tactics)}
    for o, aid in pending_techniques:
        phases = {
            str(p.get("phase_name"))
            for p in items_of(o.get("kill_chain_phases"))
            if isinstance(p, dict) and p.get("phase_name")
        }
        techniques.append(
            Technique(
                aid,
                str(o.get("name", aid)),
                tuple(sorted(phases, key=lambda p: (order.get(p, len(order)), p))),
                bool(o.get("x_mitre_is_subtechnique")) or "." in aid,
                str(o.get("id", "")),
            )
        )
    if version is None:
        stamps = [d for o in active if o.get("type") == "attack-pattern" and (d := _day(o.get("modified")))]
        if stamps:
            inferred = infer_attack_version(max(stamps))
            version = inferred or f"modified {max(stamps).isoformat()}"
            version_source = VERSION_FROM_DATES if inferred else None
    uses: list[Use] = []
    attributed: list[tuple[str, str, date]] = []
    inactive = {str(o.get("id")) for o in objects if o.get("revoked") or o.get("x_mitre_deprecated")}

    def end(ref: object) -> str | None:
        # A reference to an object of another bundle (an ally's bundle pointing at ATT&CK) stays a STIX id,
        # resolved when the bundles are merged.
        text = str(ref)
        if text in inactive:
            return None
        return ids.get(text) or (text if text.startswith(_MODELLED) else None)

    for o in active:
        if o.get("type") != "relationship":
            continue
        src, dst = end(o.get("source_ref")), end(o.get("target_ref"))
        if src is None or dst is None:
            continue  # an end is revoked, deprecated, or of a type we do not model
        created = _day(o.get("created")) or date.min
        rtype = o.get("relationship_type")
        if rtype == "uses":
            uses.append(Use(src, dst, _reports(o), created))
        elif rtype == "attributed-to":
            attributed.append((src, dst, created))
    return ParsedBundle(
        str(path),
        version,
        version_source,
        tuple(techniques),
        tuple(software),
        tuple(groups),
        tuple(campaigns),
        tuple(tactics),
        tuple(uses),
        tuple(attributed),
        _report_years(active),
    )


_MEMO: dict[tuple[str, int, int], ParsedBundle] = {}


def load_parsed(path: Path, cache_dir: Path | None = None) -> ParsedBundle:
    """`parse_bundle` with a per-process memo and an optional on-disk pickle keyed by the file's SHA-256."""
    try:
        st = path.stat()
    except OSError as exc:
        raise KnowledgeBaseError(f"{path}: cannot read STIX bundle: {exc}") from exc
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _MEMO:
        return _MEMO[key]
    cached: Path | None = None
    if cache_dir is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        cached = cache_dir / f"attack-{CACHE_FORMAT}-{digest}.pickle"
        if cached.is_file():
            try:
                # The cache is written by us into casefile's own data directory, never taken from evidence.
                parsed = load_pickle(cached.read_bytes())
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError) as exc:
                cached.unlink(missing_ok=True)
                raise KnowledgeBaseError(f"{cached}: corrupt cache removed, run again ({exc})") from exc
            if isinstance(parsed, ParsedBundle):
                _MEMO[key] = parsed
                return parsed
    parsed = parse_bundle(path)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".part")
        tmp.write_bytes(pickle.dumps(parsed, protocol=pickle.HIGHEST_PROTOCOL))
        tmp.replace(cached)
    _MEMO[key] = parsed
    return parsed
