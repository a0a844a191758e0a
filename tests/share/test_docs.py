"""docs/sharing.md documents every command and option of the share stage."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.main import get_command

from casefile.cli import share as share_cli

DOC = (Path(__file__).resolve().parents[2] / "docs" / "sharing.md").read_text()


def test_every_share_command_and_option_is_documented() -> None:
    app = typer.Typer()
    share_cli.register(app)
    root = get_command(app)
    commands: list[tuple[str, object]] = []
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        sub = getattr(cmd, "commands", None)
        if sub:
            commands.extend((f"casefile {name} {s}", c) for s, c in sub.items())
        else:
            commands.append((f"casefile {name}", cmd))
    assert {c for c, _ in commands} == {
        "casefile intel import",
        "casefile intel match",
        "casefile intel list",
        "casefile intel bundle",
        "casefile export stix",
        "casefile export misp",
        "casefile serve",
        "casefile users add",
        "casefile collections add",
    }
    for command, cmd in commands:
        assert command in DOC, command
        for param in cmd.params:  # type: ignore[attr-defined]
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in DOC, f"{command} {opt}"
