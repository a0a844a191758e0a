"""Victimology: the stated victim country and sector against the groups' known victims (MISP galaxy)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casefile.attack import KnowledgeBase, load_knowledge_base
from casefile.attack.aliases import resolve_names, sector_key, victim_country_code
from casefile.attribute import Evidence, TechniqueSighting, attribute
from casefile.attribute.service import stated_victim
from casefile.cli import app
from casefile.errors import ConfigError


def _galaxy(root: Path, clusters: list[dict[str, object]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "threat-actor.json").write_text(json.dumps({"values": clusters}), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def victim_kb(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> KnowledgeBase:
    galaxy = _galaxy(
        tmp_path_factory.mktemp("galaxy"),
        [
            {
                "value": "Alpha",
                "meta": {
                    "refs": ["https://attack.mitre.org/groups/G0001/"],
                    "cfr-suspected-victims": ["Albania", "Israel"],
                    "cfr-target-category": ["Government"],
                },
            },
            {
                "value": "Bravo",
                "meta": {
                    "synonyms": ["G0002"],
                    "cfr-suspected-victims": ["Ukraine", "Poland", "Middle East"],
                    "cfr-target-category": ["Energy", "Financial"],
                },
            },
        ],
    )
    return load_knowledge_base([tiny_bundle], galaxy_dir=galaxy)


def ev(*techniques: str, country: str | None = None, sector: str | None = None) -> Evidence:
    seen = tuple(TechniqueSighting(t) for t in techniques)
    return Evidence(techniques=seen, victim_country=country, victim_sector=sector)


def probs(kb: KnowledgeBase, evidence: Evidence) -> dict[str, float]:
    result = attribute(evidence, kb, top=10)
    return {g.group_id: g.probability for g in result.groups} | {"unknown": result.unknown_probability}


def test_galaxy_victims_and_sectors_reach_the_groups(victim_kb: KnowledgeBase) -> None:
    alpha, bravo = victim_kb.groups["G0001"], victim_kb.groups["G0002"]
    assert alpha.victims == {"AL", "IL"} and alpha.sectors == {"government"}
    assert bravo.victims == {"UA", "PL"}  # a region is not a country: left out
    assert bravo.sectors == {"energy", "finance"}  # "Financial" folded onto one label
    assert not victim_kb.groups["G0003"].victims  # no list: no victimology, not "targets nobody"


def test_stated_victim_country_moves_probability_to_groups_that_target_it(victim_kb: KnowledgeBase) -> None:
    # G0001 and G0002 both show T1002 once: the country is what separates them.
    plain = probs(victim_kb, ev("T1002"))
    albania = probs(victim_kb, ev("T1002", country="AL"))
    assert albania["G0001"] > plain["G0001"] and albania["G0002"] < plain["G0002"]
    assert math.isclose(sum(albania.values()), 1.0)
    # Groups without a list and "no known group" are the background: their odds against each other stay.
    assert albania["G0003"] / albania["unknown"] == pytest.approx(plain["G0003"] / plain["unknown"])
    result = attribute(ev("T1002", country="Albania", sector="government"), victim_kb)
    alpha = next(g for g in result.groups if g.group_id == "G0001")
    bravo = next(g for g in result.groups if g.group_id == "G0002")
    assert {i.id for i in alpha.evidence_for if i.kind == "victim"} == {"country:AL", "sector:government"}
    assert {i.id for i in bravo.evidence_against if i.kind == "victim"} == {"country:AL", "sector:government"}
    assert all("known to target" in i.detail for i in alpha.evidence_for if i.kind == "victim")


def test_victimology_alone_names_no_group(victim_kb: KnowledgeBase) -> None:
    result = attribute(ev(country="AL", sector="government"), victim_kb)
    assert result.groups == () and result.unknown_probability == 1.0


def test_stated_victim_accepts_codes_and_names_and_refuses_regions() -> None:
    assert stated_victim("Albania", " Financial ") == ("AL", "finance")
    assert stated_victim("al", None) == ("AL", None)
    assert stated_victim("Russia", None) == ("RU", None) and victim_country_code("The Philippines") == "PH"
    assert sector_key("Civil  Society") == "civil society"
    with pytest.raises(ConfigError, match="'Europe'"):
        stated_victim("Europe", None)
    # two capitals that name no country were taken as a code, and the victim then matched no group
    assert stated_victim("ALB", None) == ("AL", None) and stated_victim("XK", None) == ("XK", None)
    for typo in ("XX", "AB"):
        with pytest.raises(ConfigError, match=f"'{typo}': not an ISO 3166"):
            stated_victim(typo, None)


def test_naming_data_of_the_wrong_kind_is_refused_not_passed_over(tmp_path: Path) -> None:
    from casefile.attribute.service import default_knowledge_base
    from casefile.config import Settings

    a_file = tmp_path / "threat-actor.json"
    a_file.write_text("{}", encoding="utf-8")
    settings = Settings.from_env()
    with pytest.raises(ConfigError, match="not a folder"):
        default_knowledge_base(settings, galaxy_dir=a_file)
    with pytest.raises(ConfigError, match="not a file"):
        default_knowledge_base(settings, vendor_map=tmp_path)


def test_explicit_links_outvote_clusters_that_only_share_a_name(tmp_path: Path) -> None:
    # As in the real galaxy: Microsoft's old name IRIDIUM was Sandworm's, and an unrelated Iranian cluster
    # is also called IRIDIUM. The tie used to go to the alphabetically first country.
    galaxy = _galaxy(
        tmp_path / "g",
        [
            {
                "value": "Sandworm",
                "meta": {
                    "country": "RU",
                    "synonyms": ["G0034", "IRIDIUM"],
                    "cfr-suspected-victims": ["Ukraine"],
                },
            },
            {"value": "IRIDIUM", "meta": {"country": "IR", "cfr-suspected-victims": ["United States"]}},
        ],
    )
    out = resolve_names({"G0034": ("Sandworm Team", "IRIDIUM")}, {}, galaxy_dir=galaxy)
    assert out.sponsors["G0034"] == "RU"
    assert out.victims["G0034"] == {"UA"}  # the explicitly linked cluster's victims only


@pytest.mark.shared
def test_real_kb_victim_country_shifts_the_sponsor(real_kb: KnowledgeBase) -> None:
    assert real_kb.groups["G0034"].sponsor == "RU"
    assert sum(1 for g in real_kb.groups.values() if g.victims) > 40
    seen = ("T1190", "T1505.003", "T1003.001", "T1021.001", "T1486", "T1561.002", "T1114")
    plain = attribute(ev(*seen), real_kb)
    israel = attribute(ev(*seen, country="IL", sector="Government"), real_kb)
    share = {s.country: s.probability for s in plain.sponsors}
    shifted = {s.country: s.probability for s in israel.sponsors}
    assert shifted["IR"] > share["IR"]  # Iranian groups are the ones CFR lists with Israeli victims


@pytest.mark.shared
def test_cli_weighs_and_validates_the_victim(shared_data: Path) -> None:
    kb = [
        "--kb",
        str(shared_data / "attack" / "enterprise-attack.json.gz"),
        "--galaxy",
        str(shared_data / "misp-galaxy"),
    ]
    runner = CliRunner()
    bad = runner.invoke(app, ["attribute", "--techniques", "T1190", *kb, "--victim-country", "Narnia"])
    assert bad.exit_code == 2 and "Narnia" in bad.stderr and "Traceback" not in bad.output
    good = runner.invoke(
        app,
        [
            "attribute",
            "--techniques",
            "T1190,T1505.003",
            *kb,
            "--victim-country",
            "Israel",
            "--top",
            "300",
            "--format",
            "json",
        ],
    )
    assert good.exit_code == 0, good.output
    groups = json.loads(good.stdout)["groups"]
    items = [i for g in groups for i in g["evidence_for"] + g["evidence_against"]]
    victim_items = [i for i in items if i["kind"] == "victim"]
    assert victim_items and {i["id"] for i in victim_items} == {"country:IL"}
