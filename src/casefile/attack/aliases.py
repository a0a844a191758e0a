"""Vendor names and sponsors: MISP threat-actor galaxy and Microsoft's naming map, joined to ATT&CK groups.

Links are leads, not truth (see the data READMEs): names are matched exactly (case-folded), an alias shared by
several groups keeps every candidate, and a cluster that links to several groups gives none of them its
country. Sponsors are decided by a vote of the sources that link to exactly one group.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycountry

from casefile.attack.stix import items_of
from casefile.errors import KnowledgeBaseError

#: Country names used by CFR and Microsoft -> ISO 3166-1 alpha-2. "Unknown" maps to nothing on purpose.
COUNTRY_CODES: Mapping[str, str] = {
    "china": "CN",
    "people's republic of china": "CN",
    "russia": "RU",
    "russian federation": "RU",
    "iran": "IR",
    "iran (islamic republic of)": "IR",
    "north korea": "KP",
    "korea (democratic people's republic of)": "KP",
    "south korea": "KR",
    "korea (republic of)": "KR",
    "korea": "KR",
    "united states": "US",
    "us": "US",
    "palestine": "PS",
    "pakistan": "PK",
    "india": "IN",
    "belarus": "BY",
    "france": "FR",
    "united arab emirates": "AE",
    "vietnam": "VN",
    "spain": "ES",
    "israel": "IL",
    "lebanon": "LB",
    "türkiye": "TR",
    "turkey": "TR",
    "austria": "AT",
    "singapore": "SG",
    "ukraine": "UA",
}
#: Victim names CFR spells in ways ISO's tables do not know.
_VICTIM_NAMES: Mapping[str, str] = {
    "ivory coast": "CI", "the philippines": "PH", "brunei": "BN", "laos": "LA", "kosovo": "XK",
}
#: Sector spellings folded onto one label (CFR's `cfr-target-category` is free text).
_SECTOR_SYNONYMS: Mapping[str, str] = {
    "financial": "finance", "banking": "finance", "ngo": "ngos", "governments": "government",
    "information technology": "high-tech", "it": "high-tech", "technology": "high-tech",
    "defence": "defense", "telecommunication": "telecommunications", "telecom": "telecommunications",
    "health": "healthcare", "pharmaceutical": "pharmaceuticals",
}
#: Weight of a sponsor vote from a cluster that links to the group explicitly (id, URL, STIX relation).
EXPLICIT_VOTE = 3
_GID = re.compile(r"^G\d{4}$")
_GROUP_URL = re.compile(r"attack\.mitre\.org/groups/(G\d{4})")
_DEV = re.compile(r"^(?:dev|storm)-(\d+)$")


def country_code(name: str | None) -> str | None:
    """ISO code for a country code or name (CFR/Microsoft spelling), None for unknown or unmapped."""
    if not name:
        return None
    text = name.strip()
    if len(text) == 2 and text.isalpha() and text.upper() == text:
        return text
    return COUNTRY_CODES.get(text.casefold())


def victim_country_code(name: str | None) -> str | None:
    """ISO code of a victim country named by code or by any ISO or common English name; None for regions
    ("Middle East"), organisations and anything else that is not one country."""
    code = country_code(name)
    if code:
        # any two capitals pass country_code (the galaxies' own codes); a stated victim must be a country
        known = pycountry.countries.get(alpha_2=code) is not None or code in _VICTIM_NAMES.values()
        return code if known else None
    if not name:
        return None
    text = name.strip()
    if text.casefold() in _VICTIM_NAMES:
        return _VICTIM_NAMES[text.casefold()]
    try:
        found = pycountry.countries.lookup(text)
    except LookupError:
        return None
    return str(found.alpha_2)


def sector_key(name: str) -> str:
    """One label per victim sector: case-folded, spaces collapsed, common spellings folded together."""
    key = " ".join(name.casefold().replace("_", " ").split())
    return _SECTOR_SYNONYMS.get(key, key)


def norm(name: str) -> str:
    """Name key: case-folded, DEV-#### folded into Storm-#### (Microsoft renamed them keeping the number)."""
    key = name.strip().casefold()
    m = _DEV.match(key)
    return f"storm-{int(m.group(1)):04d}" if m else key


@dataclass(frozen=True, slots=True)
class ActorNames:
    """What the naming sources add to each ATT&CK group: aliases, a sponsor country, and victimology
    (countries and sectors the galaxy's CFR fields say the group targeted; absent for most groups)."""

    aliases: Mapping[str, tuple[str, ...]]
    sponsors: Mapping[str, str]
    victims: Mapping[str, frozenset[str]] = field(default_factory=dict)
    sectors: Mapping[str, frozenset[str]] = field(default_factory=dict)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KnowledgeBaseError(f"{path}: cannot read naming data: {exc}") from exc


def resolve_names(
    groups: Mapping[str, tuple[str, ...]],
    stix_ids: Mapping[str, str],
    *,
    galaxy_dir: Path | None = None,
    vendor_map: Path | None = None,
) -> ActorNames:
    """Join galaxy clusters and vendor names to `groups` (group id -> ATT&CK name and aliases).

    `stix_ids` maps an intrusion-set STIX id (without prefix) to its group id, for galaxy `related` links.
    """
    index: dict[str, set[str]] = defaultdict(set)
    for gid, group_names in groups.items():
        for n in group_names:
            index[norm(n)].add(gid)
    extra: dict[str, set[str]] = defaultdict(set)
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    # victimology from clusters that link to a group by name only, and from those that link explicitly
    victims: dict[str, set[str]] = defaultdict(set)
    sectors: dict[str, set[str]] = defaultdict(set)
    victims_sure: dict[str, set[str]] = defaultdict(set)
    sectors_sure: dict[str, set[str]] = defaultdict(set)

    def link(names: Iterable[str], explicit: set[str]) -> set[str]:
        found = set(explicit)
        for n in names:
            found |= index.get(norm(n), set())
        return {g for g in found if g in groups}

    def record(found: set[str], names: Iterable[str], country: str | None, weight: int = 1) -> None:
        if len(found) != 1:
            return  # a cluster linking to several groups tells us nothing certain about any of them
        (gid,) = found
        extra[gid].update(n.strip() for n in names if n.strip())
        if country:
            votes[gid][country] += weight

    if galaxy_dir is not None:
        ta_path = galaxy_dir / "threat-actor.json"
        if ta_path.is_file():
            doc = _load_json(ta_path)
            for c in items_of(doc.get("values")) if isinstance(doc, dict) else []:
                if not isinstance(c, dict):
                    continue
                meta = c.get("meta") if isinstance(c.get("meta"), dict) else {}
                assert isinstance(meta, dict)
                synonyms = [s for s in items_of(meta.get("synonyms")) if isinstance(s, str)]
                names = [str(c.get("value", "")), *synonyms]
                explicit = {s for s in synonyms if _GID.match(s)}
                for ref in items_of(meta.get("refs")):
                    explicit.update(_GROUP_URL.findall(str(ref)))
                for attr in items_of(meta.get("name-attribution")):
                    head = str(attr).split(":", 1)[0]
                    if _GID.match(head):
                        explicit.add(head)
                for rel in items_of(c.get("related")):
                    dest = str(rel.get("dest-uuid", "")) if isinstance(rel, dict) else ""
                    if dest in stix_ids:
                        explicit.add(stix_ids[dest])
                country = country_code(meta.get("country") if isinstance(meta.get("country"), str) else None)
                sponsor = meta.get("cfr-suspected-state-sponsor")
                country = country or country_code(sponsor if isinstance(sponsor, str) else None)
                found = link(names, explicit)
                # A cluster that names the group by id, URL or STIX link outvotes clusters that only share
                # a name with it: names are reused (Microsoft's IRIDIUM was Sandworm; the galaxy's IRIDIUM
                # cluster is an unrelated Iranian actor).
                sure = bool({g for g in explicit if g in groups} & found)
                record(found, [n for n in names if not _GID.match(n)], country, EXPLICIT_VOTE if sure else 1)
                if len(found) == 1:  # same rule as sponsors: a cluster naming several groups says nothing
                    (gid,) = found
                    target = (victims_sure, sectors_sure) if sure else (victims, sectors)
                    for v in _strings(meta.get("cfr-suspected-victims")):
                        code = victim_country_code(v)
                        if code:
                            target[0][gid].add(code)
                    target[1][gid].update(sector_key(v) for v in _strings(meta.get("cfr-target-category")))
    if vendor_map is not None and vendor_map.is_file():
        for gid, learned in extra.items():  # the galaxy bridges vendor names ATT&CK does not list
            for n in learned:
                index[norm(n)].add(gid)
        doc = _load_json(vendor_map)
        for entry in doc if isinstance(doc, list) else []:
            if not isinstance(entry, dict):
                continue
            ms_name = str(entry.get("Threat actor name", ""))
            others = [t.strip() for t in str(entry.get("Other names", "")).split(",") if t.strip()]
            origin = [t.strip() for t in str(entry.get("Origin/Threat", "")).split(",")]
            country = next((c for c in (country_code(t) for t in origin) if c), None)
            ms_names = [ms_name, *others]
            record(link(ms_names, set()), ms_names, country)
    aliases: dict[str, tuple[str, ...]] = {}
    for gid, found_names in extra.items():
        known = {norm(n) for n in groups[gid]}
        seen: dict[str, str] = {}
        for n in sorted(found_names):
            if norm(n) not in known:
                seen.setdefault(norm(n), n)
        aliases[gid] = tuple(seen.values())
    sponsors = {gid: min(c, key=lambda k: (-c[k], k)) for gid, c in votes.items() if c}
    return ActorNames(aliases, sponsors, _prefer(victims_sure, victims), _prefer(sectors_sure, sectors))


def _prefer(sure: Mapping[str, set[str]], loose: Mapping[str, set[str]]) -> dict[str, frozenset[str]]:
    """Per group, what explicitly linked clusters say, else what name-linked ones say."""
    out = {g: frozenset(sure.get(g) or loose.get(g) or ()) for g in set(sure) | set(loose)}
    return {g: v for g, v in out.items() if v}


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str) and v.strip()] if isinstance(value, list) else []
