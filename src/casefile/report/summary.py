"""summary.json: the case in counts, plus the top attribution, for scripts."""

from __future__ import annotations

from collections import Counter
from typing import Any

from casefile.case.store import Case
from casefile.models import utc_text


def case_summary(case: Case) -> dict[str, Any]:
    """Counts per level/kind/host/tactic, warnings, clusters and the most likely group (if attributed)."""
    detections = case.detections()
    evidence = case.evidence_files()
    levels = Counter(str(sd.detection.rule.level) for sd in detections)
    kinds = Counter(sd.detection.kind.value for sd in detections)
    hosts = Counter(sd.detection.computer or "unknown" for sd in detections)
    techniques = Counter(t for sd in detections for t in sd.detection.rule.techniques)
    warnings = case.warnings()
    attributions = case.attributions()
    stamps = sorted(sd.detection.timestamp for sd in detections if sd.detection.timestamp)

    def top(scope: str) -> dict[str, Any] | None:
        a = attributions.get(scope)
        if a is None:
            return None
        best = a.groups[0] if a.groups else None
        return {
            "group_id": best.group_id if best else None,
            "name": best.name if best else None,
            "probability": round(best.probability, 4) if best else None,
            "sponsor": best.sponsor if best else None,
            "unknown_probability": round(a.unknown_probability, 4),
            "top_sponsor": a.sponsors[0].country if a.sponsors else None,
        }

    clusters = case.clusters()
    return {
        "case": case.name,
        "case_id": case.case_id,
        "created": utc_text(case.created_at),
        "attack_version": case.attack_version,
        "counts": {
            "evidence_files": len(evidence),
            "evidence_bytes": sum(e.size for e in evidence),
            "events": case.event_count(),
            "detections": len(detections),
            "warnings": len(warnings),
            "clusters": len(clusters),
            "hosts": len({sd.detection.computer for sd in detections if sd.detection.computer}),
            "techniques": len(techniques),
        },
        "detections_by_level": dict(sorted(levels.items())),
        "detections_by_kind": dict(sorted(kinds.items())),
        "detections_by_host": dict(sorted(hosts.items())),
        "top_techniques": [
            {"id": t, "detections": n}
            for t, n in sorted(techniques.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        ],
        "first_seen": utc_text(stamps[0]) if stamps else None,
        "last_seen": utc_text(stamps[-1]) if stamps else None,
        "attribution": top("case"),
        "clusters": [
            {"id": c.id, "detections": len(c.detection_ids), "hosts": list(c.hosts), "attribution": top(c.id)}
            for c in clusters
        ],
    }
