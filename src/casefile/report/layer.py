"""ATT&CK Navigator layer (format 4.5) of the techniques detected in a case."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from casefile.case.store import Case
from casefile.case.timeline import technique_tactics

LAYER_FORMAT = "4.5"
NAVIGATOR_VERSION = "5.1.0"


def _major(version: str | None) -> str | None:
    """Navigator wants the ATT&CK major version ("18"); the knowledge base may say "18.1" or "v18"."""
    m = re.match(r"^\s*v?(\d+)(?:\.\d+)*\s*$", version or "")
    return m.group(1) if m else None


def navigator_layer(
    case: Case, *, name: str | None = None, attack_version_source: str | None = None
) -> dict[str, Any]:
    """A Navigator layer scoring each detected technique by its number of detections, per tactic.

    `attack_version_source` (KnowledgeBase.attack_version_source: "x-mitre-collection" or "inferred from
    content dates") is recorded in the layer's metadata next to the version label when given."""
    catalog = case.techniques()
    counts: Counter[tuple[str, str | None]] = Counter()
    rules: dict[tuple[str, str | None], set[str]] = {}
    hosts: dict[tuple[str, str | None], set[str]] = {}
    for sd in case.detections():
        d = sd.detection
        for tid in d.rule.techniques:
            # A tactic tag the technique does not belong to would place it in the wrong column.
            tactics: tuple[str | None, ...] = technique_tactics(tid, d.rule.tactics, catalog) or (None,)
            for tactic in tactics:
                key = (tid, tactic)
                counts[key] += 1
                rules.setdefault(key, set()).add(d.rule.title)
                if d.computer:
                    hosts.setdefault(key, set()).add(d.computer)
    techniques = []
    for (tid, tactic), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        entry: dict[str, Any] = {
            "techniqueID": tid,
            "score": n,
            "enabled": True,
            "comment": "; ".join(sorted(rules[(tid, tactic)])),
            "metadata": [
                {"name": "detections", "value": str(n)},
                {"name": "hosts", "value": ", ".join(sorted(hosts.get((tid, tactic), ())))},
            ],
            "showSubtechniques": "." in tid,
        }
        if tactic:
            entry["tactic"] = tactic
        techniques.append(entry)
    top = max(counts.values(), default=1)
    versions: dict[str, str] = {"navigator": NAVIGATOR_VERSION, "layer": LAYER_FORMAT}
    attack = _major(case.attack_version)
    if attack:
        versions["attack"] = attack
    return {
        "name": name or f"casefile: {case.name}",
        "versions": versions,
        "domain": "enterprise-attack",
        "description": f"Techniques detected in case {case.name} (score = number of detections).",
        "filters": {"platforms": ["Windows"]},
        "sorting": 3,
        "layout": {
            "layout": "side",
            "aggregateFunction": "max",
            "showID": True,
            "showName": True,
            "showAggregateScores": True,
            "countUnscored": False,
            "expandedSubtechniques": "annotated",
        },
        "hideDisabled": False,
        "techniques": techniques,
        "gradient": {"colors": ["#fff3c4", "#f08c2e", "#c0122c"], "minValue": 0, "maxValue": top},
        "legendItems": [],
        # The loaded knowledge base's own version label, even when it is not a Navigator version number.
        "metadata": [{"name": "generator", "value": "casefile"}]
        + ([{"name": "attack_version", "value": case.attack_version}] if case.attack_version else [])
        + (
            [{"name": "attack_version_source", "value": attack_version_source}]
            if case.attack_version and attack_version_source
            else []
        ),
        "links": [],
        "showTacticRowBackground": False,
        "tacticRowBackground": "#dddddd",
        "selectTechniquesAcrossTactics": True,
        "selectSubtechniquesWithParent": False,
        "selectVisibleTechniques": False,
    }
