"""Every CLI command and option is documented, and the README starts with the two commands CI relies on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from casefile.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in sorted(subcommands.items()):
            yield from _walk(sub, (*path, name))
    else:
        options = [o for p in command.params for o in p.opts if o.startswith("--") and o != "--help"]
        yield path, options


COMMANDS = list(_walk(typer.main.get_command(app)))


def _docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in DOCS)


def test_the_cli_has_the_commands_the_issues_name() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    expected = {
        "hunt", "rules check", "rules update", "attribute", "investigate", "case show", "case timeline",
        "case export", "intel import", "export stix", "export misp", "serve", "users add", "collections add",
    }
    assert expected <= names, f"missing commands: {sorted(expected - names)}"


@pytest.mark.parametrize(("path", "options"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_command_and_options_are_documented(path: tuple[str, ...], options: list[str]) -> None:
    text = _docs_text()
    usage = re.compile(r"casefile\s+" + r"\s+".join(map(re.escape, path)) + r"\b")
    assert usage.search(text), f"`casefile {' '.join(path)}` appears in no docs/*.md"
    missing = [o for o in options if not re.search(re.escape(o) + r"(?![\w-])", text)]
    assert not missing, f"`casefile {' '.join(path)}` options not documented in docs/: {missing}"


def test_readme_starts_with_setup_and_test_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block, "README.md has no bash block"
    commands = [ln for ln in block.group(1).splitlines() if ln and not ln.startswith("#")]
    assert commands[0].startswith("bash scripts/setup.sh")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci, ".ci/run must run exactly README.md's test command"
