"""Every file of the reference EVTX corpus hunted with every SigmaHQ rule: no crash, the warnings it
must give, and the per-rule detection counts recorded in docs/detections-per-rule.md."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from casefile.hunt import load_rules, run_hunt
from casefile.models import IngestWarning

RULE_FOLDERS = ("rules", "rules-emerging-threats", "rules-threat-hunting")
DOC = Path(__file__).resolve().parents[2] / "docs" / "detections-per-rule.md"
ROW = re.compile(r"^\| (\d+) \| \w+ \| .* \| `([^`]+)` \| `[^`]+` \|$")


@pytest.mark.shared
def test_corpus_hunt(shared_data: Path) -> None:
    ruleset = load_rules([shared_data / "sigma" / f for f in RULE_FOLDERS])
    assert len(ruleset.rules) > 2500
    # every skipped rule says why, and only for reasons casefile documents
    assert all(s.reason for s in ruleset.skipped)
    corpus = shared_data / "evtx"
    warnings: list[IngestWarning] = []
    result = run_hunt([corpus], ruleset, on_warning=warnings.append)

    files = [p for p in corpus.rglob("*") if p.is_file()]
    evtx = {str(p) for p in files if p.suffix.lower() == ".evtx"}
    others = {str(p) for p in files if p.suffix.lower() != ".evtx"}
    # the READMEs/licences are named and skipped; no EVTX file is damaged beyond reading
    assert {w.file for w in warnings} == others
    assert all(w.reason == "not a recognised log format; skipped" for w in warnings)
    assert result.stats.files == len(evtx)
    assert result.stats.warnings == len(others)
    assert {d.file for d in result.detections} <= evtx

    counts = Counter(d.rule.id for d in result.detections)
    recorded = {m.group(2): int(m.group(1)) for m in map(ROW.match, DOC.read_text().splitlines()) if m}
    assert counts == recorded, "detections changed: rerun benchmarks/corpus_detections.py and review the diff"
