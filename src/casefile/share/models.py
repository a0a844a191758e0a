"""Typed records of the intel store: indicators, their matchable atoms, and import reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class AtomKind(StrEnum):
    """What an indicator comparison can be matched against in the evidence."""

    HASH = "hash"  # file hash (MD5, SHA-1, SHA-256, SHA-512, IMPHASH), lower-case hex
    IP = "ip"  # IPv4/IPv6 address or CIDR network
    DOMAIN = "domain"  # DNS name, lower-case, no trailing dot
    URL = "url"  # full URL


@dataclass(frozen=True, slots=True, order=True)
class Atom:
    """One matchable comparison of an indicator (`[ipv4-addr:value ISSUBSET '10.0.0.0/8']`)."""

    kind: AtomKind
    value: str


@dataclass(frozen=True, slots=True)
class Indicator:
    """One indicator as stored: its STIX pattern, where it came from and when it was seen.

    Identity is `key`: the sorted atoms of the pattern (so the same SHA-256 from a CSV list and a
    STIX bundle is one indicator), or the normalised pattern text when nothing in it is matchable.
    """

    id: str  # STIX id (the first one seen for this key)
    key: str
    pattern: str
    name: str | None
    description: str | None
    sources: tuple[str, ...]
    tlp: str | None  # "TLP:CLEAR", "TLP:GREEN", "TLP:AMBER", "TLP:AMBER+STRICT", "TLP:RED"
    first_seen: datetime | None
    last_seen: datetime | None
    atoms: tuple[Atom, ...]
    labels: tuple[str, ...] = ()
    note: str | None = None  # why the pattern is stored but not (fully) matchable

    @property
    def source(self) -> str:
        return ", ".join(self.sources)


@dataclass(frozen=True, slots=True)
class IntelIssue:
    """An object or row that could not be imported: which source, which object, why."""

    source: str
    object: str  # STIX id, MISP attribute uuid, CSV line number ...
    reason: str

    def __str__(self) -> str:
        return f"{self.source} [{self.object}]: {self.reason}"


@dataclass(slots=True)
class ImportResult:
    """What one `import_intel` call did."""

    source: str
    indicators_new: int = 0
    indicators_merged: int = 0
    objects: int = 0  # other STIX objects stored (intrusion sets, malware, relationships ...)
    issues: list[IntelIssue] = field(default_factory=list)
    #: entries read but deliberately not stored, by reason (MISP attributes of types casefile does
    #: not match, attributes not flagged for detection): counted so nothing vanishes unseen
    skipped: dict[str, int] = field(default_factory=dict)

    def add(self, other: ImportResult) -> None:
        self.indicators_new += other.indicators_new
        self.indicators_merged += other.indicators_merged
        self.objects += other.objects
        self.issues.extend(other.issues)
        for reason, n in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n


@dataclass(frozen=True, slots=True)
class Skipped:
    """An entry a reader read and deliberately did not import, with the reason."""

    reason: str


@dataclass(frozen=True, slots=True)
class IndicatorInput:
    """An indicator as an importer parsed it, before it is merged into the store."""

    id: str
    pattern: str
    name: str | None
    description: str | None
    source: str
    tlp: str | None
    first_seen: datetime | None
    last_seen: datetime | None
    labels: tuple[str, ...] = ()
    raw: dict[str, Any] | None = None  # the STIX object, when it came as one
    atoms: tuple[Atom, ...] | None = None  # when the importer built the pattern from these (no re-parse)
