"""End to end over the reference data: EVTX-ATTACK-SAMPLES hunted with SigmaHQ's Windows rules,
attributed with ATT&CK; and the demo evidence attributed with the same knowledge base."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import stix2

from casefile.case.attribution import kb_attributor
from casefile.case.investigate import evidence_sha256, investigate
from casefile.case.store import Case
from casefile.hunt import load_rules, run_hunt
from casefile.ingest import discover
from casefile.models import Detection

pytestmark = pytest.mark.shared
REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "tests" / "data" / "report" / "layer-4.5.schema.json").read_text())


@pytest.fixture(scope="module")
def rule_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rule-cache")


@pytest.fixture(scope="module")
def samples_case(shared_data: Path, tmp_path_factory: pytest.TempPathFactory, rule_cache: Path) -> Path:
    root = tmp_path_factory.mktemp("samples") / "case"
    kb = kb_attributor([shared_data / "attack" / "enterprise-attack.json.gz"])
    investigate(
        [shared_data / "evtx" / "EVTX-ATTACK-SAMPLES"],
        root,
        rules=[shared_data / "sigma" / "rules" / "windows"],
        rule_cache=rule_cache,
        attributor=kb,
    )
    return root


def _key(d: Detection) -> tuple[str, str, int, str]:
    return (d.rule.id, Path(d.file or "").name, d.record_id or 0, json.dumps(d.matched, sort_keys=True))


def test_detections_are_the_reference_engines(
    samples_case: Path, shared_data: Path, rule_cache: Path
) -> None:
    """The case hunts through the fast path's pre-filter (and keeps its plans with the rule cache): it
    stores what the serial reference engine finds in the same files."""
    with Case.open(samples_case, read_only=True) as case:
        stored = sorted(_key(sd.detection) for sd in case.detections() if sd.detection.kind == "sigma")
        files = [Path(e.path) for e in case.evidence_files()]
    rules = load_rules([shared_data / "sigma" / "rules" / "windows"], cache_dir=rule_cache)
    reference = run_hunt(files, rules, vectorised=False)
    assert len(stored) > 800
    assert stored == sorted(_key(d) for d in reference.detections if d.kind == "sigma")
    assert len(list(rule_cache.glob("plans-*/*.pickle"))) > 50


def test_inventory_holds_every_distinct_evtx_once_with_its_hash(
    samples_case: Path, shared_data: Path
) -> None:
    files = discover([shared_data / "evtx" / "EVTX-ATTACK-SAMPLES"])
    distinct = {evidence_sha256(f) for f in files}
    with Case.open(samples_case, read_only=True) as case:
        evidence = case.evidence_files()
        assert {e.sha256 for e in evidence} == distinct
        assert len(evidence) == len(distinct) > 250
        sample = next(e for e in evidence if e.path.endswith("LM_renamed_psexecsvc_5145.evtx"))
        assert sample.sha256 == hashlib.sha256(Path(sample.path).read_bytes()).hexdigest()
        assert case.event_count() == sum(e.events for e in evidence) > 5000
        warnings = case.warnings()
        # README/licence files are reported, not silently skipped.
        assert any(w.stage == "discover" and w.warning.file.endswith("README.md") for w in warnings)


def test_detections_timeline_and_clusters(samples_case: Path) -> None:
    with Case.open(samples_case, read_only=True) as case:
        dets = case.detections()
        assert len(dets) > 800
        titles = Counter((Path(sd.detection.file or "").name, sd.detection.rule.title) for sd in dets)
        assert titles[("LM_renamed_psexecsvc_5145.evtx", "Suspicious PsExec Execution")] >= 1
        assert any(name.startswith("CA_Mimikatz") for name, _ in titles)
        clusters = case.clusters()
        members = Counter(i for c in clusters for i in c.detection_ids)
        assert set(members) == {sd.id for sd in dets} and set(members.values()) == {1}
        assert len(clusters) > 20
        catalog = case.techniques()
        assert catalog["T1021"].name == "Remote Services"
        assert [short for short, _ in case.tactics()][:3] == [
            "reconnaissance",
            "resource-development",
            "initial-access",
        ]


def test_attribution_stored_for_every_cluster_and_the_case(samples_case: Path) -> None:
    with Case.open(samples_case, read_only=True) as case:
        results = case.attributions()
        assert set(results) == {"case"} | {c.id for c in case.clusters()}
        for a in results.values():
            total = sum(g.probability for g in a.groups) + a.unknown_probability
            assert 0.0 <= a.unknown_probability <= 1.0 and total <= 1.0 + 1e-6
            assert all(g.group_id.startswith("G") for g in a.groups)
        assert results["case"].groups, "the whole case must rank at least one group"


def test_outputs_validate(samples_case: Path) -> None:
    bundle = json.loads((samples_case / "bundle.json").read_text())
    stix2.parse(bundle, allow_custom=False)
    types = Counter(o["type"] for o in bundle["objects"])
    assert types["attack-pattern"] > 50 and types["campaign"] > 20 and types["intrusion-set"] >= 1
    assert types["sighting"] == types["indicator"] > 100
    layer = json.loads((samples_case / "navigator-layer.json").read_text())
    jsonschema.validate(layer, SCHEMA)
    assert any(t["techniqueID"] == "T1021.002" for t in layer["techniques"])
    with Case.open(samples_case, read_only=True) as case:
        loaded = case.attack_version
    assert loaded and {"name": "attack_version", "value": loaded} in layer["metadata"]
    summary = json.loads((samples_case / "summary.json").read_text())
    with Case.open(samples_case, read_only=True) as case:
        assert summary["counts"]["detections"] == case.detection_count()
        assert summary["attribution"]["group_id"] == case.attributions()["case"].groups[0].group_id


def test_demo_evidence_with_knowledge_base(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = investigate(
        [REPO / "demo" / "evidence"],
        root,
        rules=[REPO / "demo" / "rules"],
        attributor=kb_attributor([shared_data / "attack" / "enterprise-attack.json.gz"]),
    )
    assert result.attributed and result.clusters == 2
    assert not any("attribution skipped" in w.reason for w in result.warnings)
    with Case.open(root, read_only=True) as case:
        assert case.software()["S0029"] == ("PsExec", "tool")
        assert case.techniques()["T1505.003"].name == "Web Shell"
    bundle = json.loads((root / "bundle.json").read_text())
    stix2.parse(bundle, allow_custom=False)
    rels = [
        o
        for o in bundle["objects"]
        if o["type"] == "relationship" and o["relationship_type"] == "attributed-to"
    ]
    assert rels and all(0 <= r["confidence"] <= 100 for r in rels)
    html = (root / "report.html").read_text()
    assert "Evidence for" in html and "Whole case" in html
    # Without a knowledge base, a re-run keeps the attribution while the clusters stay the same...
    investigate([REPO / "demo" / "evidence"], root, rules=[REPO / "demo" / "rules"], write_outputs=False)
    with Case.open(root, read_only=True) as case:
        assert set(case.attributions()) == {"case"} | {c.id for c in case.clusters()}
    # ...and drops it, saying so, once new evidence changes them.
    extra = tmp_path / "extra.ndjson"
    extra.write_text(
        json.dumps(
            {
                "TimeCreated": "2022-07-15T10:30:00Z",
                "Computer": "DC01.mofa.gov.example",
                "EventID": 7045,
                "Channel": "System",
                "ServiceName": "PSEXESVC",
            }
        )
        + "\n"
    )
    again = investigate([extra], root, rules=[REPO / "demo" / "rules"], write_outputs=False)
    assert any("earlier attribution dropped" in w.reason for w in again.warnings)
    with Case.open(root, read_only=True) as case:
        assert case.attributions() == {}
        assert case.techniques()["T1505.003"].name == "Web Shell"  # the ATT&CK names stay


def test_bad_knowledge_base_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    result = investigate(
        [REPO / "demo" / "evidence"],
        tmp_path / "c",
        rules=[REPO / "demo" / "rules"],
        attributor=kb_attributor([bad]),
        write_outputs=False,
    )
    assert not result.attributed and result.detections_added == 17
    assert any(w.file == str(bad) and "attribution skipped" in w.reason for w in result.warnings)
