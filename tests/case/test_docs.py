"""docs/case.md documents every command and option of the case stage."""

from __future__ import annotations

from pathlib import Path

import typer

from casefile.cli import case as case_cli

DOC = (Path(__file__).resolve().parents[2] / "docs" / "case.md").read_text()


def test_every_case_command_and_investigate_option_is_documented() -> None:
    app = typer.Typer()
    case_cli.register(app)
    names = {c.name for c in case_cli.case_app.registered_commands}
    assert names == {"show", "timeline", "export", "note"}
    for name in names:
        assert f"casefile case {name}" in DOC, name
    assert "casefile investigate" in DOC
    for option in (
        "--case",
        "--rules",
        "--placeholder",
        "--kb",
        "--galaxy",
        "--vendor-map",
        "--victim-country",
        "--victim-sector",
        "--intel",
        "--min-level",
        "--window",
    ):
        assert option in DOC, option
