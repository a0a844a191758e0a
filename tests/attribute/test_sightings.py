"""How often and on how many hosts a technique was seen: detections as soft evidence."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from casefile.attack import KnowledgeBase, load_knowledge_base
from casefile.attribute import Evidence, TechniqueSighting, attribute
from casefile.attribute.engine import ModelParams, build_profiles, score_groups
from casefile.case.attribution import LEVEL_TRUST, evidence_from, sighting_confidence
from casefile.models import Detection, DetectionKind, Level, RuleInfo


@pytest.fixture(scope="module")
def kb(tiny_bundle: Path) -> KnowledgeBase:
    return load_knowledge_base([tiny_bundle])


def hit(technique: str, level: Level, host: str | None) -> Detection:
    rule = RuleInfo(
        f"rule-{technique}-{level.name}", "a rule", level, "test", "casefile", (f"attack.{technique}",)
    )
    return Detection(
        rule, DetectionKind.SIGMA, datetime(2022, 7, 1, tzinfo=UTC), host, None, None, None, None
    )


def test_confidence_counts_hosts_not_repeats() -> None:
    assert sighting_confidence([0.5]) == 0.5
    assert sighting_confidence([0.5, 0.5]) == pytest.approx(0.75)
    assert sighting_confidence([]) == 0.0
    detections = [hit("t1003", Level.HIGH, "DC01")] * 20 + [hit("t1003", Level.LOW, "dc01")]
    detections += [
        hit("t1021", Level.MEDIUM, "WS1"),
        hit("t1021", Level.MEDIUM, "WS2"),
        hit("t1021", Level.LOW, None),
    ]
    sightings = {s.technique_id: s for s in evidence_from(detections).techniques}
    dc = sightings["T1003"]
    assert (dc.count, dc.hosts) == (21, 1)  # host names compared case-insensitively
    assert dc.confidence == LEVEL_TRUST[Level.HIGH]  # twenty repeats on one host are one fact
    lateral = sightings["T1021"]
    assert (lateral.count, lateral.hosts) == (3, 2)
    # WS1, WS2 at medium and one detection without a host at low: three chances
    assert lateral.confidence == pytest.approx(1 - 0.5 * 0.5 * (1 - LEVEL_TRUST[Level.LOW]))


def test_soft_evidence_is_a_mixture_of_the_ratio_and_one(kb: KnowledgeBase) -> None:
    profiles = build_profiles(kb.group_uses)
    sure = {s.group_id: s.present for s in score_groups(profiles, ["S0001"], mixture=0.8)}
    half = {
        s.group_id: s.present
        for s in score_groups(profiles, ["S0001"], mixture=0.8, confidence={"S0001": 0.5})
    }
    none = {
        s.group_id: s.present
        for s in score_groups(profiles, ["S0001"], mixture=0.8, confidence={"S0001": 0.0})
    }
    for g, w in sure.items():
        assert half[g] == pytest.approx(math.log(0.5 * math.exp(w) + 0.5))
        assert none[g] == 0.0
    assert 0 < half["G0001"] < sure["G0001"]  # the RareTool user gains less from a doubtful sighting
    assert sure["G0002"] < half["G0002"] < 0  # and a group without it loses less


def test_doubtful_sightings_discriminate_less(kb: KnowledgeBase) -> None:
    def run(confidence: float) -> tuple[float, dict[str, float]]:
        evidence = Evidence(
            techniques=(TechniqueSighting("T1003", 5, 2, confidence), TechniqueSighting("T1002"))
        )
        result = attribute(evidence, kb, top=10, params=ModelParams(time_mixture=1.0))
        return result.unknown_probability, {g.group_id: g.probability for g in result.groups}

    unknown_sure, sure = run(1.0)
    unknown_doubt, doubt = run(0.1)
    assert doubt["G0004"] < sure["G0004"]  # Delta is the one group with the rare T1003
    result = attribute(
        Evidence(techniques=(TechniqueSighting("T1003", 5, 2, 0.1),)),
        kb,
        params=ModelParams(time_mixture=1.0),
    )
    item = next(i for g in result.groups for i in g.evidence_for if i.id == "T1003")
    assert "5 detections on 2 hosts, confidence 0.10" in item.detail
    # the groups without T1003 are no longer held down by it: the spread between groups shrinks
    assert max(doubt.values()) / min(doubt.values()) < max(sure.values()) / min(sure.values())
    assert all(doubt[g] > sure[g] for g in sure if g != "G0004")
    assert unknown_doubt != unknown_sure
