"""Knowledge base loading: STIX 2.0/2.1, gzip/plain, revoked/deprecated, --before, campaign switch, names."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pytest
from kbfixture import write_bundle

from casefile.attack import KnowledgeBase, load_knowledge_base
from casefile.attack.aliases import country_code, resolve_names
from casefile.attack.stix import ATTACK_RELEASES, infer_attack_version
from casefile.errors import KnowledgeBaseError


@pytest.mark.parametrize(("spec", "gz"), [("2.0", False), ("2.0", True), ("2.1", False), ("2.1", True)])
def test_loads_every_format(tmp_path: Path, spec: str, gz: bool) -> None:
    kb = load_knowledge_base([write_bundle(tmp_path / "b.json", spec=spec, gz=gz)])
    assert sorted(kb.groups) == ["G0001", "G0002", "G0003", "G0004"]
    assert kb.technique("t1003") is not None and kb.technique("T1003").name == "Rare"  # type: ignore[union-attr]
    assert kb.software("S0001") is not None and kb.find_software("rt.exe") == "S0001"
    assert [t.shortname for t in kb.tactics()] == ["initial-access", "execution"]
    # 2.1: the x-mitre-collection object; 2.0 has none, so the release is inferred from the newest
    # `modified` day (2024-05-01: the next release in the table is 16.0, 2024-10-31)
    assert (kb.attack_version, kb.attack_version_source) == (
        ("99.1", "x-mitre-collection") if spec == "2.1" else ("16.0", "inferred from content dates")
    )


def test_release_table_inference() -> None:
    assert infer_attack_version(date(2025, 11, 12)) == "18.1"  # the reference bundle's newest day
    assert infer_attack_version(date(2025, 11, 13)) == "18.1"
    assert infer_attack_version(date(2025, 10, 1)) == "18.0"
    assert infer_attack_version(date(2025, 4, 1)) == "17.1"  # 17.0 and 17.1 share a day: the later
    assert infer_attack_version(date(2023, 5, 1)) == "13.1"
    assert infer_attack_version(date(2026, 6, 1)) is None  # newer than the table: not guessed
    assert infer_attack_version(date(2015, 1, 1)) is None  # older than the table
    days = [d for _, d in ATTACK_RELEASES]
    assert days == sorted(days)


def test_revoked_and_deprecated_are_ignored(tiny_bundle: Path) -> None:
    kb = load_knowledge_base([tiny_bundle])
    assert kb.technique("T1004") is None and kb.technique("T1006") is None
    # the relationship to the revoked technique is gone too
    assert not [u for u in kb.group_uses if u.target == "T1004"]


def test_before_cuts_relationships(tiny_bundle: Path) -> None:
    full = load_knowledge_base([tiny_bundle])
    cut = load_knowledge_base([tiny_bundle], before=date(2024, 1, 1))
    assert ("G0004", "T1003") in {(u.source, u.target) for u in full.group_uses}
    assert ("G0004", "T1003") not in {(u.source, u.target) for u in cut.group_uses}
    assert full.campaign_groups == {"C0001": ("G0002",)}
    assert load_knowledge_base([tiny_bundle], before=date(2023, 1, 1)).campaign_groups == {}


def test_campaign_techniques_are_a_separate_switch(tiny_bundle: Path) -> None:
    own = load_knowledge_base([tiny_bundle])
    merged = load_knowledge_base([tiny_bundle], include_campaigns=True)
    assert ("G0002", "T1003") not in {(u.source, u.target) for u in own.group_uses}
    inherited = [u for u in merged.group_uses if (u.source, u.target) == ("G0002", "T1003")]
    assert len(inherited) == 1 and inherited[0].via == "C0001"


def test_uses_keep_their_reports(tiny_bundle: Path) -> None:
    kb = load_knowledge_base([tiny_bundle])
    use = next(u for u in kb.group_uses if (u.source, u.target) == ("G0001", "S0001"))
    assert use.reports == frozenset({"R-a1", "R-a2"}) and use.created == date(2019, 1, 1)


def test_bad_bundles_raise_clear_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(gzip.compress(b"{not json")[:-4])
    with pytest.raises(KnowledgeBaseError, match=r"broken\.json\.gz"):
        load_knowledge_base([broken])
    notbundle = tmp_path / "list.json"
    notbundle.write_text("[1, 2]")
    with pytest.raises(KnowledgeBaseError, match="not a STIX bundle"):
        load_knowledge_base([notbundle])
    with pytest.raises(KnowledgeBaseError, match="rules update"):
        load_knowledge_base([])


def test_cache_round_trip(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "c.json")
    first = load_knowledge_base([bundle], cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("attack-*.pickle"))) == 1
    from casefile.attack import stix

    stix._MEMO.clear()  # force the on-disk cache path
    second = load_knowledge_base([bundle], cache_dir=tmp_path / "cache")
    assert second.groups == first.groups and second.group_uses == first.group_uses


def test_inline_naming_sources(tmp_path: Path) -> None:
    galaxy = tmp_path / "galaxy"
    galaxy.mkdir()
    (galaxy / "threat-actor.json").write_text(
        """{"values": [
        {"value": "Alpha Kitten", "meta": {"country": "IR", "synonyms": ["ALPHA-X"]}},
        {"value": "Shared", "meta": {"country": "CN"}},
        {"value": "Bravo team", "meta": {"cfr-suspected-state-sponsor": "Russian Federation",
                                         "refs": ["https://attack.mitre.org/groups/G0002/"]}}]}""",
        encoding="utf-8",
    )
    ms = tmp_path / "ms.json"
    ms.write_text(
        '[{"Threat actor name": "Storm-0042", "Origin/Threat": "Iran, Influence operations",'
        ' "Other names": "ALPHA-X, DEV-0099"}]',
        encoding="utf-8",
    )
    names = {
        "G0001": ("Alpha", "Alpha Kitten"),
        "G0002": ("Bravo",),
        "G0003": ("Charlie", "Shared"),
        "G0004": ("Delta", "Shared"),
    }
    out = resolve_names(names, {}, galaxy_dir=galaxy, vendor_map=ms)
    assert out.sponsors["G0001"] == "IR"  # galaxy and Microsoft agree
    assert out.sponsors["G0002"] == "RU"  # CFR name normalised, linked by the ATT&CK URL
    assert "G0003" not in out.sponsors and "G0004" not in out.sponsors  # a shared alias decides nothing
    assert {"ALPHA-X", "Storm-0042", "DEV-0099"} <= set(out.aliases["G0001"])
    assert country_code("Korea (Democratic People's Republic of)") == "KP" and country_code("Unknown") is None


def test_properties_of_the_wrong_shape_are_left_out(tmp_path: Path) -> None:
    """An ally's bundle or a galaxy with a number or text where STIX and MISP give lists: that property says
    nothing, the rest of the object and of the file is read (it was a TypeError that stopped attribution)."""
    import json

    from kbfixture import objects

    objs = objects()
    by_type = {o["type"]: o for o in objs}
    by_type["x-mitre-matrix"]["tactic_refs"] = 3
    by_type["intrusion-set"]["aliases"] = "not a list"
    by_type["tool"]["external_references"] = 5
    odd_technique = next(o for o in objs if o["type"] == "attack-pattern")
    odd_technique["kill_chain_phases"] = True
    bundle = tmp_path / "odd.json"
    bundle.write_text(json.dumps({"type": "bundle", "id": "bundle--1", "objects": objs}), encoding="utf-8")
    kb = load_knowledge_base([bundle], cache_dir=None)
    plain = load_knowledge_base([write_bundle(tmp_path / "plain.json")], cache_dir=None)
    assert {t.id for t in kb.techniques.values()} == {t.id for t in plain.techniques.values()}
    assert kb.techniques[_attack_id_of(odd_technique)].tactics == ()
    assert len(kb.groups) == len(plain.groups)

    galaxy = tmp_path / "galaxy"
    galaxy.mkdir()
    (galaxy / "threat-actor.json").write_text(
        """{"values": [5, {"value": "Alpha Kitten", "related": 3, "meta": {"country": 7, "synonyms": 9,
            "refs": "https://attack.mitre.org/groups/G0001/", "name-attribution": true,
            "cfr-suspected-state-sponsor": ["Iran"]}},
          {"value": "Bravo team", "meta": {"cfr-suspected-state-sponsor": "Russian Federation",
            "refs": ["https://attack.mitre.org/groups/G0002/"]}}]}""",
        encoding="utf-8",
    )
    out = resolve_names({"G0001": ("Alpha", "Alpha Kitten"), "G0002": ("Bravo",)}, {}, galaxy_dir=galaxy)
    assert out.sponsors == {"G0002": "RU"}  # the odd cluster says nothing; the next one is read


def _attack_id_of(obj: dict[str, object]) -> str:
    refs = obj["external_references"]
    assert isinstance(refs, list)
    return str(refs[0]["external_id"])


@pytest.mark.shared
def test_real_attack_counts_and_lookups(real_kb: KnowledgeBase) -> None:
    assert len(real_kb.groups) == 172
    assert len(real_kb.techniques) == 691
    assert len(real_kb.tactics()) == 14 and real_kb.tactics()[0].shortname == "reconnaissance"
    t = real_kb.technique("T1505.003")
    assert t is not None and t.name == "Web Shell" and t.is_subtechnique and t.tactics == ("persistence",)
    assert real_kb.software("S0002") is not None and real_kb.software("S0002").name == "Mimikatz"  # type: ignore[union-attr]
    assert real_kb.technique("T1685") is None  # newer than v18.1
    # the STIX 2.0 reference bundle has no x-mitre-collection: inferred from its newest day, 2025-11-12
    assert (real_kb.attack_version, real_kb.attack_version_source) == ("18.1", "inferred from content dates")


@pytest.mark.shared
def test_real_aliases_and_sponsors(real_kb: KnowledgeBase) -> None:
    assert real_kb.find_groups("APT34") == ("G0049",)
    assert real_kb.find_groups("Hazel Sandstorm") == ("G0049",)  # Microsoft's name
    assert real_kb.find_groups("Mint Sandstorm") == ("G0059",)
    sponsors = {gid: real_kb.groups[gid].sponsor for gid in ("G0049", "G0007", "G0032", "G0006")}
    assert sponsors == {"G0049": "IR", "G0007": "RU", "G0032": "KP", "G0006": "CN"}


@pytest.mark.shared
def test_real_campaign_switch_and_cut(shared_data: Path, real_kb: KnowledgeBase) -> None:
    bundle = shared_data / "attack" / "enterprise-attack.json.gz"
    merged = load_knowledge_base([bundle], include_campaigns=True)
    assert len(merged.group_uses) > len(real_kb.group_uses)
    cut = load_knowledge_base([bundle], before=date(2020, 1, 1))
    assert all(u.created < date(2020, 1, 1) for u in cut.group_uses)
    assert 0 < len(cut.group_uses) < len(real_kb.group_uses)


def test_ally_bundle_merges_across_bundles(tmp_path: Path) -> None:
    import json

    from kbfixture import _sid

    ally = {
        "type": "bundle",
        "id": "bundle--00000000-0000-0000-0000-0000000000aa",
        "objects": [
            {
                "type": "intrusion-set",
                "id": "intrusion-set--aaaaaaaa-0000-4000-8000-000000000001",
                "spec_version": "2.1",
                "name": "Echo",
                "aliases": ["Echo", "Ally-7"],
            },
            {
                "type": "malware",
                "id": "malware--aaaaaaaa-0000-4000-8000-000000000002",
                "spec_version": "2.1",
                "name": "EchoRAT",
                "is_family": True,
            },
            {
                "type": "relationship",
                "id": "relationship--aaaaaaaa-0000-4000-8000-000000000003",
                "spec_version": "2.1",
                "relationship_type": "uses",
                "created": "2022-02-02T00:00:00Z",
                "source_ref": "intrusion-set--aaaaaaaa-0000-4000-8000-000000000001",
                "target_ref": "malware--aaaaaaaa-0000-4000-8000-000000000002",
                "external_references": [{"source_name": "Ally report 1"}],
            },
            # points at the ATT&CK bundle's RareTool by its STIX id
            {
                "type": "relationship",
                "id": "relationship--aaaaaaaa-0000-4000-8000-000000000004",
                "spec_version": "2.1",
                "relationship_type": "uses",
                "created": "2022-02-02T00:00:00Z",
                "source_ref": "intrusion-set--aaaaaaaa-0000-4000-8000-000000000001",
                "target_ref": _sid("tool", 1),
                "external_references": [{"source_name": "Ally report 1"}],
            },
            {
                "type": "relationship",
                "id": "relationship--aaaaaaaa-0000-4000-8000-000000000005",
                "spec_version": "2.1",
                "relationship_type": "uses",
                "created": "2022-02-02T00:00:00Z",
                "source_ref": "intrusion-set--aaaaaaaa-0000-4000-8000-000000000001",
                "target_ref": "malware--ffffffff-0000-4000-8000-000000000009",
            },  # defined nowhere: dropped
        ],
    }
    path = tmp_path / "ally.json"
    path.write_text(json.dumps(ally))
    kb = load_knowledge_base([write_bundle(tmp_path / "attack.json"), path])
    gid = kb.find_groups("Ally-7")
    assert gid == ("intrusion-set--aaaaaaaa-0000-4000-8000-000000000001",)
    targets = {u.target for u in kb.group_uses if u.source == gid[0]}
    assert targets == {"S0001", "malware--aaaaaaaa-0000-4000-8000-000000000002"}
    assert kb.find_software("EchoRAT") == "malware--aaaaaaaa-0000-4000-8000-000000000002"
