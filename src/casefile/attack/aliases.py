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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def norm(name: str) -> str:
    """Name key: case-folded, DEV-#### folded into Storm-#### (Microsoft renamed them keeping the number)."""
    key = name.strip().casefold()
    m = _DEV.match(key)
    return f"storm-{int(m.group(1)):04d}" if m else key


@dataclass(frozen=True, slots=True)
class ActorNames:
    """What the naming sources add to each ATT&CK group: aliases and a sponsor country."""

    aliases: Mapping[str, tuple[str, ...]]
    sponsors: Mapping[str, str]


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

    def link(names: Iterable[str], explicit: set[str]) -> set[str]:
        found = set(explicit)
        for n in names:
            found |= index.get(norm(n), set())
        return {g for g in found if g in groups}

    def record(found: set[str], names: Iterable[str], country: str | None) -> None:
        if len(found) != 1:
            return  # a cluster linking to several groups tells us nothing certain about any of them
        (gid,) = found
        extra[gid].update(n.strip() for n in names if n.strip())
        if country:
            votes[gid][country] += 1

    if galaxy_dir is not None:
        ta_path = galaxy_dir / "threat-actor.json"
        if ta_path.is_file():
            doc = _load_json(ta_path)
            for c in doc.get("values", []) if isinstance(doc, dict) else []:
                if not isinstance(c, dict):
                    continue
                meta = c.get("meta") if isinstance(c.get("meta"), dict) else {}
                assert isinstance(meta, dict)
                synonyms = [s for s in meta.get("synonyms") or () if isinstance(s, str)]
                names = [str(c.get("value", "")), *synonyms]
                explicit = {s for s in synonyms if _GID.match(s)}
                for ref in meta.get("refs") or ():
                    explicit.update(_GROUP_URL.findall(str(ref)))
                for attr in meta.get("name-attribution") or ():
                    head = str(attr).split(":", 1)[0]
                    if _GID.match(head):
                        explicit.add(head)
                for rel in c.get("related") or ():
                    dest = str(rel.get("dest-uuid", "")) if isinstance(rel, dict) else ""
                    if dest in stix_ids:
                        explicit.add(stix_ids[dest])
                country = country_code(meta.get("country") if isinstance(meta.get("country"), str) else None)
                country = country or country_code(meta.get("cfr-suspected-state-sponsor"))
                record(link(names, explicit), [n for n in names if not _GID.match(n)], country)
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
    return ActorNames(aliases, sponsors)
