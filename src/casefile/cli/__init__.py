"""The `casefile` command: a thin shell; each stage's commands live in their own module here."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="casefile",
    help="Ingest evidence, hunt with Sigma, attribute, report and share.",
    no_args_is_help=True,
    add_completion=False,
)

#: Command modules; each exposes `register(app)`. A new command group is one new module and one line here.
COMMAND_MODULES: tuple[str, ...] = (
    "casefile.cli.hunt",
    "casefile.cli.attribute",
    "casefile.cli.case",
    "casefile.cli.share",
)

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()
