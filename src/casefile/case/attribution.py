"""Attribute a case: each activity cluster, and the case as a whole, against an ATT&CK knowledge base.

The ATT&CK names the report needs (techniques, tactics in matrix order, software) are copied into the
case at the same time, so reports and exports never need the knowledge base again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

from casefile.attack import KnowledgeBase, load_knowledge_base
from casefile.attribute import Attribution, Evidence, TechniqueSighting, attribute
from casefile.attribute.service import stated_victim
from casefile.case.investigate import Attributor, StageProgress
from casefile.case.store import Case, StoredDetection, TechniqueInfo
from casefile.errors import KnowledgeBaseError
from casefile.models import Detection, DetectionKind, IngestWarning, Level

#: Chance that one detection by a rule of this level is a true sighting of the techniques it tags. SigmaHQ
#: describes informational and low rules as notable but usually benign activity, high and critical ones as
#: rarely benign. Set by hand from that guidance: ATT&CK holds no detections to fit it on.
LEVEL_TRUST: dict[Level, float] = {
    Level.INFORMATIONAL: 0.1,
    Level.LOW: 0.25,
    Level.MEDIUM: 0.5,
    Level.HIGH: 0.75,
    Level.CRITICAL: 0.9,
}


def sighting_confidence(trust_per_host: Iterable[float]) -> float:
    """Probability that a technique occurred, given the most trusted detection of it on each host.

    Hosts count as independent chances, 1 - prod(1 - trust); repeats on one host do not add, because a
    benign program that trips a rule once trips it again.
    """
    miss = 1.0
    for trust in trust_per_host:
        miss *= 1.0 - trust
    return 1.0 - miss


def evidence_from(
    detections: Iterable[Detection], *, victim_country: str | None = None, victim_sector: str | None = None
) -> Evidence:
    """What the attribution engine weighs, from a set of detections.

    Techniques are counted per detection and per distinct host, with a confidence from the rules' levels
    and the host spread (`sighting_confidence`); software comes from `attack.sNNNN` tags; groups named by
    actor-specific rules (`attack.gNNNN`) or by matched indicators' sources count as indicator evidence.
    """
    counts: dict[str, int] = defaultdict(int)
    hosts: dict[str, set[str]] = defaultdict(set)
    trust: dict[str, dict[str, float]] = defaultdict(dict)  # technique -> host -> most trusted detection
    software: list[str] = []
    groups: list[str] = []
    stamps = []
    for d in detections:
        for tid in d.rule.techniques:
            counts[tid] += 1
            host = (d.computer or "").lower()
            if host:
                hosts[tid].add(host)
            level_trust = LEVEL_TRUST.get(d.rule.level, 0.5)
            trust[tid][host] = max(trust[tid].get(host, 0.0), level_trust)
        software.extend(s for s in d.rule.software if s not in software)
        groups.extend(g for g in d.rule.groups if g not in groups)
        if d.kind is DetectionKind.IOC and d.source and d.source not in groups:
            groups.append(d.source)
        if d.timestamp is not None:
            stamps.append(d.timestamp)
    return Evidence(
        techniques=tuple(
            TechniqueSighting(
                tid,
                count=n,
                hosts=max(len(hosts[tid]), 1),
                confidence=sighting_confidence(trust[tid].values()),
            )
            for tid, n in sorted(counts.items())
        ),
        software=tuple(software),
        indicator_groups=tuple(groups),
        first_seen=min(stamps) if stamps else None,
        last_seen=max(stamps) if stamps else None,
        victim_country=victim_country,
        victim_sector=victim_sector,
    )


def _catalog(kb: KnowledgeBase, seen: Iterable[str]) -> list[TechniqueInfo]:
    """Every parent technique (the matrix) plus the sub-techniques the case saw."""
    wanted = set(seen)
    out = []
    for t in kb.techniques.values():
        if not t.is_subtechnique or t.id in wanted:
            out.append(TechniqueInfo(t.id, t.name, t.tactics, t.is_subtechnique))
    return sorted(out, key=lambda t: t.id)


def attribute_case(
    case: Case,
    kb: KnowledgeBase,
    *,
    top: int = 10,
    victim_country: str | None = None,
    victim_sector: str | None = None,
    progress: StageProgress | None = None,
) -> list[IngestWarning]:
    """Attribute every cluster and the whole case; store results and ATT&CK names in the case.

    A stated victim country or sector is stored in the case; when neither is given, the stored ones are used.
    """
    if victim_country is None and victim_sector is None:
        victim_country, victim_sector = case.victim()
    else:
        victim_country, victim_sector = stated_victim(victim_country, victim_sector)
        case.set_victim(victim_country, victim_sector)
    victim = {"victim_country": victim_country, "victim_sector": victim_sector}
    stored = case.detections()
    by_id: dict[str, StoredDetection] = {sd.id: sd for sd in stored}
    clusters = case.clusters()
    if progress is not None:
        progress.stage("Attributing clusters", len(clusters) + 1)
    results: dict[str, Attribution] = {}
    for cl in clusters:
        results[cl.id] = attribute(
            evidence_from((by_id[i].detection for i in cl.detection_ids if i in by_id), **victim), kb, top=top
        )
        if progress is not None:
            progress.advance()
    results["case"] = attribute(evidence_from((sd.detection for sd in stored), **victim), kb, top=top)
    if progress is not None:
        progress.advance()
    seen = {t for sd in stored for t in sd.detection.rule.techniques}
    software = {s for sd in stored for s in sd.detection.rule.software}
    case.set_attributions(
        results,
        attack_version=kb.attack_version,
        techniques=_catalog(kb, seen),
        tactics=[(t.shortname, t.name) for t in kb.tactics()],
    )
    case.set_software(
        [(s.id, s.name, s.kind) for sid in sorted(software) if (s := kb.software(sid)) is not None]
    )
    unknown = sorted(t for t in seen if kb.technique(t) is None)
    if not unknown:
        return []
    return [
        IngestWarning(
            case.name,
            f"{len(unknown)} technique ids from rule tags are not in ATT&CK {kb.attack_version}: "
            f"{', '.join(unknown[:20])}; kept in the case, not weighed by attribution",
        )
    ]


def kb_attributor(
    bundles: Sequence[Path],
    *,
    top: int = 10,
    before: date | None = None,
    galaxy_dir: Path | None = None,
    vendor_map: Path | None = None,
    cache_dir: Path | None = None,
    victim_country: str | None = None,
    victim_sector: str | None = None,
) -> Attributor:
    """An `investigate` attributor that loads the bundles (plus the MISP galaxy and a vendor naming map
    for aliases and sponsors, when given; `before` replays what ATT&CK knew then) once it is needed.

    A knowledge base that cannot be loaded becomes a warning: the rest of the case is kept.
    """

    def run(case: Case, progress: StageProgress) -> list[IngestWarning]:
        progress.stage("Loading ATT&CK knowledge base", None)
        try:
            kb = load_knowledge_base(
                list(bundles),
                before=before,
                galaxy_dir=galaxy_dir,
                vendor_map=vendor_map,
                cache_dir=cache_dir,
            )
        except KnowledgeBaseError as exc:
            where = ", ".join(map(str, bundles))
            return [IngestWarning(where, f"knowledge base not loaded ({exc}); attribution skipped")]
        return attribute_case(
            case, kb, top=top, victim_country=victim_country, victim_sector=victim_sector, progress=progress
        )

    return run
