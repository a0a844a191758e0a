"""casefile.case: the case folder (DuckDB), its timeline and activity clusters, and `investigate`.

Case.create(path) / Case.open(path) / Case.open_or_create(path)
investigate(evidence, case_dir, rules=..., attributor=...) -> InvestigateResult
build_timeline(case) -> list[TimelineEntry];  TIMELINE_FORMATS: csv, jsonl, timesketch
cluster_detections(pairs, window=...) -> list[Cluster]
"""

from casefile.case.clusters import Cluster, cluster_detections
from casefile.case.store import (
    Case,
    EvidenceBatch,
    EvidenceGroup,
    EvidenceRecord,
    Note,
    StoredDetection,
    StoredWarning,
    TechniqueInfo,
)
from casefile.case.timeline import TIMELINE_FORMATS, TimelineEntry, build_timeline

__all__ = [
    "TIMELINE_FORMATS",
    "Case",
    "Cluster",
    "EvidenceBatch",
    "EvidenceGroup",
    "EvidenceRecord",
    "Note",
    "StoredDetection",
    "StoredWarning",
    "TechniqueInfo",
    "TimelineEntry",
    "build_timeline",
    "cluster_detections",
]
