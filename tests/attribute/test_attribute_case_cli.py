"""`casefile attribute CASE`: attribute every cluster of an existing case with a knowledge base."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from casefile.case import Case
from casefile.cli import app

DEMO = Path(__file__).resolve().parents[2] / "demo"


def test_attribute_case_stores_results_per_cluster_and_rewrites_report(
    tmp_path: Path, shared_data: Path
) -> None:
    case_dir = tmp_path / "case"
    runner = CliRunner()
    made = runner.invoke(
        app, ["investigate", str(DEMO / "evidence"), "--rules", str(DEMO / "rules"), "--case", str(case_dir)]
    )
    assert made.exit_code == 0, made.output
    with Case.open(case_dir, read_only=True) as case:
        assert case.attributions() == {}  # no knowledge base installed: attribution was skipped
        clusters = [c.id for c in case.clusters()]
    assert clusters

    bundle = shared_data / "attack" / "enterprise-attack.json.gz"
    args = ["attribute", str(case_dir), "--kb", str(bundle), "--top", "500", "--format", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert next(iter(out)) == "case" and set(out) == {"case", *clusters}
    for scope in out.values():
        total = sum(g["probability"] for g in scope["groups"]) + scope["unknown_probability"]
        assert abs(total - 1.0) < 1e-3  # every group (--top 500) plus "no known group"
        assert all(g["group_id"].startswith("G") for g in scope["groups"])
    with Case.open(case_dir, read_only=True) as case:
        stored = case.attributions()
    assert set(stored) == {"case", *clusters}
    best = stored["case"].groups[0]
    assert best.group_id == out["case"]["groups"][0]["group_id"]
    assert best.name in (case_dir / "report.html").read_text(encoding="utf-8")


def test_attribute_case_refuses_case_and_techniques_together(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["attribute", str(tmp_path), "--techniques", "T1190"])
    assert result.exit_code == 2
    assert "either a CASE or --techniques" in result.stderr


def test_attribute_case_remembers_the_stated_victim(tmp_path: Path, shared_data: Path) -> None:
    case_dir = tmp_path / "case"
    runner = CliRunner()
    made = runner.invoke(
        app, ["investigate", str(DEMO / "evidence"), "--rules", str(DEMO / "rules"), "--case", str(case_dir)]
    )
    assert made.exit_code == 0, made.output
    kb = ["--kb", str(shared_data / "attack" / "enterprise-attack.json.gz"),
          "--galaxy", str(shared_data / "misp-galaxy"), "--top", "300", "--format", "json"]

    def victim_items(out: dict[str, dict[str, list[dict[str, list[dict[str, str]]]]]]) -> set[str]:
        return {
            i["id"] for g in out["case"]["groups"] for i in g["evidence_for"] + g["evidence_against"]
            if i["kind"] == "victim"
        }

    stated = runner.invoke(app, ["attribute", str(case_dir), *kb, "--victim-country", "Israel",
                                 "--victim-sector", "Government"])
    assert stated.exit_code == 0, stated.output
    assert victim_items(json.loads(stated.stdout)) == {"country:IL", "sector:government"}
    with Case.open(case_dir, read_only=True) as case:
        assert case.victim() == ("IL", "government")
    again = runner.invoke(app, ["attribute", str(case_dir), *kb])  # not restated: the stored one is weighed
    assert again.exit_code == 0, again.output
    assert victim_items(json.loads(again.stdout)) == {"country:IL", "sector:government"}
