"""Attribution inputs and outputs: what was seen, and which known groups it points to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TechniqueSighting:
    """An ATT&CK technique seen in the evidence, with how often and on how many hosts.

    `confidence` is the probability that the technique really occurred: 1 for what an analyst states,
    lower for detections that may be false positives (`casefile.case.attribution.sighting_confidence`).
    """

    technique_id: str  # "T1059.001"
    count: int = 1
    hosts: int = 1
    confidence: float = 1.0


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything the engine may weigh; every part may be empty."""

    techniques: tuple[TechniqueSighting, ...] = ()
    software: tuple[str, ...] = ()  # ATT&CK software ids (S0002) or names
    indicator_groups: tuple[str, ...] = ()  # group ids/names that matched indicators point to
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    victim_country: str | None = None  # ISO 3166-1 alpha-2
    victim_sector: str | None = None


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """One reason for (or against) a hypothesis, with its weight in log-odds units."""

    kind: str  # "technique" | "software" | "indicator" | "victim" | "time"
    id: str
    name: str
    weight: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class GroupHypothesis:
    group_id: str  # "G0049"
    name: str
    sponsor: str | None  # ISO country code or None when unknown
    probability: float
    evidence_for: tuple[EvidenceItem, ...] = ()
    evidence_against: tuple[EvidenceItem, ...] = ()
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SponsorHypothesis:
    country: str  # ISO code, or "unknown"
    probability: float


@dataclass(frozen=True, slots=True)
class Attribution:
    """Ranked groups and sponsors; `unknown_probability` is the "no known group fits" hypothesis.

    Group probabilities plus `unknown_probability` sum to 1.
    """

    groups: tuple[GroupHypothesis, ...]
    sponsors: tuple[SponsorHypothesis, ...]
    unknown_probability: float
    kb_version: str | None = None
    unprofiled_techniques: tuple[str, ...] = ()  # ids the KB does not know (newer ATT&CK): kept, reported
