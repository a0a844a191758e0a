"""Engine properties on the hand-written bundle, and one real-data sanity check."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from casefile.attack import KnowledgeBase, load_knowledge_base
from casefile.attribute import Evidence, TechniqueSighting, attribute
from casefile.attribute.engine import ModelParams, build_profiles


@pytest.fixture(scope="module")
def kb(tiny_bundle: Path) -> KnowledgeBase:
    return load_knowledge_base([tiny_bundle])


def ev(*techniques: str, software: tuple[str, ...] = (), indicators: tuple[str, ...] = ()) -> Evidence:
    return Evidence(
        techniques=tuple(TechniqueSighting(t) for t in techniques),
        software=software,
        indicator_groups=indicators,
    )


def total(result: object) -> float:
    from casefile.attribute import Attribution

    assert isinstance(result, Attribution)
    return sum(g.probability for g in result.groups) + result.unknown_probability


def test_rare_tool_outweighs_common_technique(kb: KnowledgeBase) -> None:
    result = attribute(ev("T1001", software=("RareTool",)), kb)
    assert result.groups[0].group_id == "G0001"  # the only RareTool user, though it never shows T1001
    weights = {i.id: i.weight for i in result.groups[0].evidence_for}
    profiles = build_profiles(kb.group_uses)
    assert profiles.background["T1001"] > profiles.background["S0001"]
    assert weights["S0001"] > 0
    common = next(g for g in result.groups if g.group_id == "G0002")
    common_w = {i.id: i.weight for i in common.evidence_for}
    assert weights["S0001"] > common_w["T1001"]


def test_unknown_grows_on_noise(kb: KnowledgeBase) -> None:
    fits = attribute(ev("T1001", "T1002"), kb)
    noise = attribute(ev("T1005"), kb)  # T1005: a known technique nobody uses
    assert noise.unknown_probability > fits.unknown_probability
    assert max(g.probability for g in noise.groups) < 2 * min(g.probability for g in noise.groups)
    assert math.isclose(total(fits), 1.0) and math.isclose(total(noise), 1.0)


@pytest.mark.shared
def test_unknown_wins_on_noise_real(real_kb: KnowledgeBase) -> None:
    used = {u.target for u in real_kb.group_uses}
    unused = sorted(t for t in real_kb.techniques if t not in used)[:4]
    assert len(unused) == 4
    result = attribute(ev(*unused), real_kb)
    assert result.unknown_probability > 10 * max(g.probability for g in result.groups)
    assert result.sponsors[0].country == "unknown"


def test_no_evidence_means_unknown(kb: KnowledgeBase) -> None:
    result = attribute(Evidence(), kb)
    assert result.groups == () and result.unknown_probability == 1.0
    assert result.sponsors[0].country == "unknown"


def test_probabilities_sum_to_one_and_are_explained(kb: KnowledgeBase) -> None:
    result = attribute(ev("T1001", "T1002"), kb, top=10)
    assert math.isclose(total(result), 1.0)
    assert math.isclose(sum(s.probability for s in result.sponsors), 1.0)
    best = result.groups[0]
    assert best.group_id == "G0002"  # the only group showing both
    assert {i.id for i in best.evidence_for} == {"T1001", "T1002"}
    assert all(i.weight > 0 for i in best.evidence_for)
    alpha = next(g for g in result.groups if g.group_id == "G0001")
    against = {i.id: i for i in alpha.evidence_against}
    assert "S0001" in against and against["S0001"].weight < 0 and "not seen" in against["S0001"].detail
    assert "T1001" in against  # seen, but the group never showed it


def test_newer_techniques_are_known_unknowns(kb: KnowledgeBase) -> None:
    result = attribute(ev("T1002", "T1685", "T1686.001"), kb)
    assert result.unprofiled_techniques == ("T1685", "T1686.001")
    base = attribute(ev("T1002"), kb)
    assert [g.probability for g in result.groups] == pytest.approx([g.probability for g in base.groups])


def test_indicator_match_raises_its_group(kb: KnowledgeBase) -> None:
    plain = attribute(ev("T1001"), kb)
    hinted = attribute(ev("T1001", indicators=("Delta",)), kb)
    p = {g.group_id: g.probability for g in plain.groups}
    q = {g.group_id: g.probability for g in hinted.groups}
    assert q["G0004"] > p["G0004"] and hinted.groups[0].group_id == "G0004"
    assert any(i.kind == "indicator" for i in hinted.groups[0].evidence_for)


@pytest.mark.shared
def test_real_kb_rare_software_points_to_its_group(real_kb: KnowledgeBase) -> None:
    # OilRig's own tools (Helminth, QUADAGENT) plus common techniques
    result = attribute(ev("T1059.001", "T1105", software=("S0170", "S0269")), real_kb, top=5)
    assert result.groups[0].group_id == "G0049"
    assert result.groups[0].sponsor == "IR"
    countries = [s.country for s in result.sponsors if s.country != "unknown"]
    assert countries[0] == "IR"
    assert math.isclose(total(attribute(ev("T1059.001"), real_kb, top=500)), 1.0)


def test_ally_software_is_evidence(tmp_path: Path) -> None:
    import json

    from kbfixture import write_bundle

    ally = {
        "type": "bundle",
        "id": "bundle--00000000-0000-0000-0000-0000000000ab",
        "objects": [
            {
                "type": "malware",
                "id": "malware--bbbbbbbb-0000-4000-8000-000000000002",
                "spec_version": "2.1",
                "name": "EchoRAT",
                "is_family": True,
            },
            {
                "type": "relationship",
                "id": "relationship--bbbbbbbb-0000-4000-8000-000000000003",
                "spec_version": "2.1",
                "relationship_type": "uses",
                "created": "2022-02-02T00:00:00Z",
                "source_ref": "intrusion-set--00000003-1111-1111-1111-111111111111",  # Charlie, G0003
                "target_ref": "malware--bbbbbbbb-0000-4000-8000-000000000002",
                "external_references": [{"source_name": "Ally report"}],
            },
        ],
    }
    (tmp_path / "ally.json").write_text(json.dumps(ally))
    kb = load_knowledge_base([write_bundle(tmp_path / "attack.json"), tmp_path / "ally.json"])
    result = attribute(ev("T1001", software=("EchoRAT",)), kb)
    assert result.groups[0].group_id == "G0003"
    assert any(i.kind == "software" and i.name == "EchoRAT" for i in result.groups[0].evidence_for)


def test_unknown_slope_raises_unknown_with_more_features(kb: KnowledgeBase) -> None:
    flat = ModelParams(unknown_slope=0.0)
    steep = ModelParams(unknown_slope=1.0)
    one = (attribute(ev("T1001"), kb, params=flat), attribute(ev("T1001"), kb, params=steep))
    # log(1) = 0: a single feature is unaffected by the slope
    assert one[0].unknown_probability == pytest.approx(one[1].unknown_probability)
    two = (
        attribute(ev("T1001", "T1002"), kb, params=flat),
        attribute(ev("T1001", "T1002"), kb, params=steep),
    )
    assert two[1].unknown_probability > two[0].unknown_probability
    assert math.isclose(total(two[1]), 1.0)


@pytest.mark.shared
def test_country_model_mixes_into_sponsor_ranking(real_kb: KnowledgeBase) -> None:
    evidence = ev("T1059.001", "T1105", software=("S0170", "S0269"))
    old = attribute(evidence, real_kb, params=ModelParams(sponsor_weight=0.0))
    new = attribute(evidence, real_kb, params=ModelParams(sponsor_weight=0.5, sponsor_temperature=2.0))
    # only the split between known countries changes: groups, "unknown" and the total stay the same
    assert [g.probability for g in new.groups] == pytest.approx([g.probability for g in old.groups])
    assert math.isclose(sum(s.probability for s in new.sponsors), 1.0)
    unk = {s.country: s.probability for s in old.sponsors}["unknown"]
    assert {s.country: s.probability for s in new.sponsors}["unknown"] == pytest.approx(unk)
    assert {s.country: s.probability for s in new.sponsors} != pytest.approx(
        {s.country: s.probability for s in old.sponsors}
    )
    assert next(s.country for s in old.sponsors if s.country != "unknown") == "IR"
    # the country model alone (weight 1) keeps the known countries' mass and splits it by pooled profiles
    alone = attribute(evidence, real_kb, params=ModelParams(sponsor_weight=1.0))
    known = sum(s.probability for s in old.sponsors if s.country != "unknown")
    assert sum(s.probability for s in alone.sponsors if s.country != "unknown") == pytest.approx(known)
