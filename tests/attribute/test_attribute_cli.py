"""`casefile attribute`: JSON shape, table output, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from casefile.cli import app

runner = CliRunner()


def test_json_shape(tiny_bundle: Path) -> None:
    res = runner.invoke(
        app,
        [
            "attribute",
            "--techniques",
            "T1001,T1002,T1685",
            "--software",
            "RareTool",
            "--kb",
            str(tiny_bundle),
            "--top",
            "3",
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["groups"]) == 3
    first = doc["groups"][0]
    assert set(first) == {"group_id", "name", "sponsor", "probability", "evidence_for", "evidence_against"}
    assert first["group_id"].startswith("G") and 0 < first["probability"] < 1
    assert {"kind", "id", "name", "weight", "detail"} <= set(first["evidence_for"][0])
    assert doc["unprofiled_techniques"] == ["T1685"]
    assert 0 < doc["unknown_probability"] < 1
    assert abs(sum(s["probability"] for s in doc["sponsors"]) - 1) < 1e-5


def test_table_and_before(tiny_bundle: Path) -> None:
    res = runner.invoke(
        app, ["attribute", "--techniques", "T1003", "--kb", str(tiny_bundle), "--before", "2024-01-01"]
    )
    assert res.exit_code == 0, res.output
    assert "no known group" in res.stdout


def test_errors_are_one_clear_line(tiny_bundle: Path) -> None:
    res = runner.invoke(app, ["attribute", "--techniques", "T1001"])  # nothing installed in the test home
    assert res.exit_code == 2 and "rules update" in res.output
    res = runner.invoke(
        app, ["attribute", "--techniques", "T1001", "--kb", str(tiny_bundle), "--before", "soon"]
    )
    assert res.exit_code == 2 and "--before" in res.output
    res = runner.invoke(app, ["attribute", "--kb", str(tiny_bundle), "--format", "xml"])
    assert res.exit_code == 2 and "--format" in res.output


def test_real_naming_data_gives_sponsors(shared_data: Path) -> None:
    res = runner.invoke(
        app,
        [
            "attribute",
            "--techniques",
            "T1059.001,T1105",
            "--software",
            "S0170,S0269",
            "--kb",
            str(shared_data / "attack" / "enterprise-attack.json.gz"),
            "--galaxy",
            str(shared_data / "misp-galaxy"),
            "--vendor-map",
            str(shared_data / "vendor-naming" / "MicrosoftMapping.json"),
            "--top",
            "2",
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["groups"][0]["group_id"] == "G0049" and doc["groups"][0]["sponsor"] == "IR"
    assert "IR" in [s["country"] for s in doc["sponsors"][:2]]
