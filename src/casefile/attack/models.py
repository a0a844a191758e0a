"""ATT&CK catalog records: what the knowledge base knows about techniques, software, groups and campaigns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class Tactic:
    """A tactic column of the matrix ("initial-access" is the kill-chain phase name)."""

    id: str  # "TA0001"
    name: str
    shortname: str


@dataclass(frozen=True, slots=True)
class Technique:
    """A technique or sub-technique; `tactics` are kill-chain phase names in matrix order."""

    id: str  # "T1059.001"
    name: str
    tactics: tuple[str, ...]
    is_subtechnique: bool
    stix_id: str = ""


@dataclass(frozen=True, slots=True)
class Software:
    """A malware or tool entry."""

    id: str  # "S0002" (or the STIX id for software from a non-ATT&CK bundle)
    name: str
    kind: str  # "malware" | "tool"
    aliases: tuple[str, ...] = ()
    stix_id: str = ""


@dataclass(frozen=True, slots=True)
class Group:
    """An intrusion set, with aliases merged from ATT&CK, the MISP galaxy and vendor naming maps."""

    id: str  # "G0049"
    name: str
    aliases: tuple[str, ...] = ()
    sponsor: str | None = None  # ISO 3166-1 alpha-2, None when no source names one
    stix_id: str = ""
    victims: frozenset[str] = frozenset()  # ISO codes of countries it is known to target (MISP galaxy, CFR)
    sectors: frozenset[str] = frozenset()  # sector labels it is known to target (`aliases.sector_key`)


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str  # "C0022"
    name: str
    created: date
    first_seen: date | None = None
    last_seen: date | None = None
    stix_id: str = ""


@dataclass(frozen=True, slots=True)
class Use:
    """One `uses` relationship: `source` (group/campaign id) uses `target` (technique/software id).

    `reports` are the citation keys (external reference source names) that support it; `via` names the
    campaign a group inherited it from (empty for the group's own relationship).
    """

    source: str
    target: str
    reports: frozenset[str]
    created: date
    via: str = ""
