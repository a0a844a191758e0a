"""Navigator layer, STIX bundle and summary.json of a real (DuckDB) case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import stix2

from casefile.case.store import Case
from casefile.report import write_reports
from casefile.report.layer import navigator_layer
from casefile.report.stix import case_bundle, indicator_pattern
from casefile.report.summary import case_summary

from .conftest import CREATED, PSEXEC_RULE, WEB_RULE, build_sample_case

SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "report" / "layer-4.5.schema.json").read_text())


def test_layer_validates_and_scores_techniques_per_tactic(sample_case: Case) -> None:
    layer = navigator_layer(sample_case)
    jsonschema.validate(layer, SCHEMA)
    assert layer["versions"] == {"navigator": "5.1.0", "layer": "4.5", "attack": "18"}
    scores = {(t["techniqueID"], t.get("tactic")): t["score"] for t in layer["techniques"]}
    # The web rule is tagged persistence+execution; each technique lands only in its own tactic.
    assert scores == {
        ("T1505.003", "persistence"): 3,
        ("T1059.003", "execution"): 3,
        ("T1021.002", "lateral-movement"): 1,
        ("T1561.002", "impact"): 1,
    }
    assert layer["gradient"]["maxValue"] == 3
    assert {"name": "attack_version", "value": "18.1"} in layer["metadata"]


def test_layer_without_knowledge_base_has_no_attack_version(tmp_path: Path) -> None:
    with build_sample_case(tmp_path / "c", attributed=False) as case:
        layer = navigator_layer(case)
    jsonschema.validate(layer, SCHEMA)
    assert "attack" not in layer["versions"]


def test_bundle_parses_with_stix2_and_carries_attribution(sample_case: Case) -> None:
    bundle = case_bundle(sample_case)
    parsed = stix2.parse(bundle, allow_custom=False)
    types = sorted({o.type for o in parsed.objects})
    assert types == [
        "attack-pattern",
        "campaign",
        "identity",
        "indicator",
        "intrusion-set",
        "relationship",
        "report",
        "sighting",
        "tool",
    ]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for o in bundle["objects"]:
        by_type.setdefault(o["type"], []).append(o)
    assert {o["name"] for o in by_type["intrusion-set"]} == {"OilRig <i>", "Magic Hound"}
    attributed = [r for r in by_type["relationship"] if r["relationship_type"] == "attributed-to"]
    clusters = sample_case.clusters()
    assert len(clusters) == 2  # the wiper ten hours later is its own cluster
    assert len(attributed) == 2 * len(clusters)
    assert sorted(r["confidence"] for r in attributed) == [20, 20, 55, 55]
    # Only the rule whose YAML is in the case becomes a Sigma indicator.
    (indicator,) = by_type["indicator"]
    assert indicator["pattern_type"] == "sigma" and WEB_RULE.id in indicator["pattern"]
    (sighting,) = by_type["sighting"]
    assert sighting["count"] == 3 and sighting["first_seen"] == "2022-07-15T06:00:00.000Z"
    assert by_type["tool"][0]["name"] == "PsExec"
    (report,) = by_type["report"]
    assert report["created"] == "2022-07-20T12:00:00.000Z"
    author = report["created_by_ref"]
    assert set(report["object_refs"]) == {o["id"] for o in bundle["objects"]} - {report["id"], author}


def test_bundle_is_deterministic_across_reopen(tmp_path: Path) -> None:
    with build_sample_case(tmp_path / "c") as case:
        first = json.dumps(case_bundle(case), sort_keys=True)
    with Case.open(tmp_path / "c", read_only=True) as case:
        again = json.dumps(case_bundle(case), sort_keys=True)
    assert first == again
    # Objects from ATT&CK get the same id in every case; case objects do not.
    with build_sample_case(tmp_path / "other") as other:
        second = case_bundle(other)
    ids_first = {o["id"] for o in json.loads(first)["objects"]}
    ids_second = {o["id"] for o in second["objects"]}
    shared = {i.split("--")[0] for i in ids_first & ids_second}
    assert shared == {"attack-pattern", "intrusion-set", "tool", "identity", "indicator", "relationship"}
    assert not any(i.startswith("report--") for i in ids_first & ids_second)


def test_indicator_patterns_by_shape() -> None:
    assert indicator_pattern("185.25.51.7") == "[ipv4-addr:value = '185.25.51.7']"
    assert indicator_pattern("A" * 64) == "[file:hashes.'SHA-256' = '" + "a" * 64 + "']"
    assert indicator_pattern("Evil.Example.COM") == "[domain-name:value = 'evil.example.com']"
    assert indicator_pattern("http://x/a'b") == "[url:value = 'http://x/a\\'b']"
    assert indicator_pattern("c:\\tmp\\x.exe") == "[file:name = 'c:\\\\tmp\\\\x.exe']"


def test_summary_counts_and_top_attribution(sample_case: Case) -> None:
    s = case_summary(sample_case)
    assert s["counts"] == {
        "evidence_files": 2,
        "evidence_bytes": 2233,
        "events": 6,
        "detections": 5,
        "warnings": 1,
        "clusters": 2,
        "hosts": 2,
        "techniques": 4,
    }
    assert s["detections_by_level"] == {"critical": 2, "high": 3}
    assert s["attribution"]["group_id"] == "G0049"
    assert s["attribution"]["probability"] == 0.55
    assert s["attribution"]["top_sponsor"] == "IR"
    assert s["first_seen"] == "2022-07-15T06:00:00Z" and s["last_seen"] == "2022-07-15T16:00:00Z"
    assert s["created"] == CREATED.isoformat().replace("+00:00", "Z")


def test_write_reports_is_byte_identical_on_rerun(sample_case: Case, tmp_path: Path) -> None:
    first = {p.name: p.read_bytes() for p in write_reports(sample_case, tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in write_reports(sample_case, tmp_path / "b")}
    assert sorted(first) == ["bundle.json", "navigator-layer.json", "report.html", "summary.json"]
    assert first == second
    assert PSEXEC_RULE.title.encode() in first["report.html"]
