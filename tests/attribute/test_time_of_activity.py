"""Time of activity: the incident's years weighed against the publication years of each group's reports."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "attack"))

from kbfixture import objects

from casefile.attack import KnowledgeBase, load_knowledge_base
from casefile.attack.stix import report_year
from casefile.attribute import Evidence, TechniqueSighting, attribute
from casefile.attribute.engine import ModelParams, build_profiles, incident_years, time_densities
from casefile.attribute.evaluation import Unit, campaign_units, report_units, score_units
from casefile.cli import app

#: citation key -> the reference's description, as ATT&CK writes them ("(n.d.)": undated)
DATED = {
    "R-a1": "Vendor. (2012, March 3). Alpha at work. Retrieved May 1, 2013.",
    "R-a2": "Vendor. (2013). Alpha again. Retrieved May 1, 2014.",
    "R-b1": "Vendor. (2023, June 1). Bravo now. Retrieved July 1, 2023.",
    "R-b2": "Vendor. (2023, August 9). Bravo still. Retrieved July 1, 2024.",
    "R-c1": "Vendor. (2022, May 2). Charlie. Retrieved July 1, 2023.",
    "R-d1": "Vendor. (n.d.). Delta's tool page. Retrieved July 1, 2019.",
}


def write_dated(path: Path) -> Path:
    """The hand-written bundle with ATT&CK-style descriptions (publication years) on its references."""
    objs: list[dict[str, Any]] = objects()
    for o in objs:
        for ref in o.get("external_references", ()):
            if ref["source_name"] in DATED:
                ref["description"] = DATED[ref["source_name"]]
    path.write_text(json.dumps({"type": "bundle", "id": "bundle--1", "spec_version": "2.0", "objects": objs}))
    return path


@pytest.fixture(scope="module")
def dated_kb(tmp_path_factory: pytest.TempPathFactory) -> KnowledgeBase:
    return load_knowledge_base([write_dated(tmp_path_factory.mktemp("dated") / "dated.json")])


def ev(*techniques: str, software: tuple[str, ...] = (), year: int | None = None) -> Evidence:
    when = datetime(year, 6, 1, tzinfo=UTC) if year else None
    return Evidence(
        techniques=tuple(TechniqueSighting(t) for t in techniques),
        software=software,
        first_seen=when,
        last_seen=when,
    )


def probs(kb: KnowledgeBase, evidence: Evidence, params: ModelParams) -> dict[str, float]:
    return {g.group_id: g.probability for g in attribute(evidence, kb, top=50, params=params).groups}


def test_report_year_from_description_then_key_never_from_retrieval() -> None:
    assert report_year("Smith APT", "Smith, J. (2017, May 3). Title. Retrieved June 1, 2019.") == 2017
    assert report_year("Anyone", "Org. (2016). Title.") == 2016
    assert report_year("FireEye APT28 2015", "FireEye. (n.d.). APT28. Retrieved March 1, 2019.") == 2015
    assert report_year("GitHub Pupy", "Nicolas Verdier. (n.d.). Retrieved January 29, 2018.") is None
    assert report_year("Report 1234", "no date at all") is None  # not a plausible year


def test_knowledge_base_keeps_report_years_and_profiles_their_groups(dated_kb: KnowledgeBase) -> None:
    assert dated_kb.report_years["R-a1"] == 2012 and dated_kb.report_years["R-b2"] == 2023
    assert "R-d1" not in dated_kb.report_years  # undated
    prof = build_profiles(dated_kb.group_uses, dated_kb.report_years)
    assert prof.years["G0001"] == {2012: 1, 2013: 1}
    assert prof.years["G0002"] == {2023: 2}
    assert "G0004" not in prof.years  # Delta: no dated report behind what survives the cut... nor before
    assert build_profiles(dated_kb.group_uses).years == {}


def test_incident_years_span_inclusive() -> None:
    assert incident_years(date(2021, 11, 30), date(2023, 1, 2)) == (2021, 2022, 2023)
    assert incident_years(None, date(2020, 1, 1)) == (2020,)
    assert incident_years(None, None) == ()


def test_time_moves_probability_to_groups_active_then(dated_kb: KnowledgeBase) -> None:
    params = ModelParams(time_mixture=0.3, time_scale=1.0)
    seen = ("T1001", "T1002")  # Bravo has both; Alpha has T1002 (and its tool)
    timeless = probs(dated_kb, ev(*seen), params)
    recent = probs(dated_kb, ev(*seen, year=2023), params)
    old = probs(dated_kb, ev(*seen, year=2012), params)
    assert recent["G0002"] > timeless["G0002"] > old["G0002"]
    assert old["G0001"] > timeless["G0001"] > recent["G0001"]
    # the weight is the log-likelihood ratio of the kernel density against the background
    profiles = build_profiles(dated_kb.group_uses, dated_kb.report_years)
    dens, background = time_densities(profiles, (2023,), 1.0)
    result = attribute(ev(*seen, year=2023), dated_kb, top=50, params=params)
    bravo = next(g for g in result.groups if g.group_id == "G0002")
    item = next(i for i in bravo.evidence_for if i.kind == "time")
    expected = math.log((0.7 * dens["G0002"] + 0.3 * background) / background)
    assert item.weight == pytest.approx(expected, abs=1e-4)
    assert "2 dated reports were published 2023-2023, 2 of them within a year" in item.detail
    alpha = next(g for g in result.groups if g.group_id == "G0001")
    assert any(i.kind == "time" and i.weight < 0 for i in alpha.evidence_against)
    delta = next(g for g in result.groups if g.group_id == "G0004")
    assert not any(i.kind == "time" for i in delta.evidence_for + delta.evidence_against)  # undated: neutral


def test_time_is_ignored_at_mixture_one_and_alone_names_no_group(dated_kb: KnowledgeBase) -> None:
    off = ModelParams(time_mixture=1.0)
    assert probs(dated_kb, ev("T1001", year=2023), off) == probs(dated_kb, ev("T1001"), off)
    alone = attribute(ev(year=2023), dated_kb, params=ModelParams(time_mixture=0.3))
    assert alone.groups == () and alone.unknown_probability == 1.0


def test_evaluation_units_carry_years_and_hold_out_the_same_year(dated_kb: KnowledgeBase) -> None:
    (camp,) = campaign_units(dated_kb)
    assert camp.years == (2022,)  # first_seen only
    years = dated_kb.report_years
    plain = {u.name: u for u in report_units(dated_kb.group_uses, min_features=1, report_years=years)}
    assert plain["G0002 / R-b1"].years == (2023,) and plain["G0002 / R-b1"].held_reports == {"R-b1"}
    out = {
        u.name: u
        for u in report_units(dated_kb.group_uses, min_features=1, report_years=years, year_out=True)
    }
    assert out["G0002 / R-b1"].held_reports == {"R-b1", "R-b2"}  # Bravo's other 2023 report goes too
    assert out["G0001 / R-a1"].held_reports == {"R-a1"}  # Alpha's 2013 report stays


def test_scoring_a_unit_never_sees_its_own_report_year(dated_kb: KnowledgeBase) -> None:
    # Alpha's only 2012 report held out: its profile keeps 2013 alone, so 2012 is not an exact hit.
    unit = Unit(
        "G0001 / R-a1",
        frozenset({"S0001"}),
        frozenset({"G0001"}),
        frozenset({"R-a1"}),
        drop_relationships=False,
        years=(2012,),
    )
    years = dated_kb.report_years
    scored = score_units([unit], list(dated_kb.group_uses), (0.8,), report_years=years)[0.8][0]
    # what the profile should be: the R-a1 citation gone, and a relationship only R-a1 supported with it
    left = [replace(u, reports=u.reports - {"R-a1"}) for u in dated_kb.group_uses]
    kept = build_profiles([u for u in left if u.reports], dated_kb.report_years)
    assert kept.years["G0001"] == {2013: 1}
    dens, _ = scored.time[1.0]
    assert dens["G0001"] == pytest.approx(time_densities(kept, (2012,), 1.0)[0]["G0001"])


def test_cli_takes_and_checks_the_dates(tmp_path: Path) -> None:
    bundle = write_dated(tmp_path / "dated.json")
    runner = CliRunner()
    base = ["attribute", "--techniques", "T1001,T1002", "--kb", str(bundle), "--format", "json"]
    good = runner.invoke(app, [*base, "--first-seen", "2023-02", "--last-seen", "2023"])
    assert good.exit_code == 0, good.output
    items = [i for g in json.loads(good.stdout)["groups"] for i in g["evidence_for"] + g["evidence_against"]]
    assert {i["id"] for i in items if i["kind"] == "time"} == {"years:2023"}
    for args, says in (
        (["--first-seen", "last spring"], "--first-seen 'last spring': expected YYYY"),
        (["--first-seen", "2023", "--last-seen", "2021"], "--last-seen 2021 is before --first-seen 2023"),
    ):
        bad = runner.invoke(app, [*base, *args])
        assert bad.exit_code == 2 and says in bad.stderr and "Traceback" not in bad.output
    case = runner.invoke(app, ["attribute", str(tmp_path), "--first-seen", "2023"])
    assert case.exit_code == 2 and "a CASE dates its activity from its detections" in case.stderr


@pytest.mark.shared
def test_real_kb_dates_nearly_every_profiled_group(real_kb: KnowledgeBase) -> None:
    prof = build_profiles(real_kb.group_uses, real_kb.report_years)
    assert len(prof.years) >= 0.95 * len(prof.counts)
    sandworm = prof.years["G0034"]
    assert min(sandworm) <= 2016 and max(sandworm) >= 2022  # BlackEnergy/Industroyer to the 2022 attacks
