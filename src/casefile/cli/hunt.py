"""CLI commands of the hunt stage: `hunt`, `rules check`, `rules update`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table

from casefile.cli._common import console, fail, handle_errors, progress, text_output
from casefile.config import Settings
from casefile.hunt import HuntStats, RuleSet, iter_hunt, iter_hunt_jsonl, load_rules
from casefile.hunt.output import WRITERS, write_detections, write_utf8
from casefile.hunt.update import installed_rule_dirs, update_offline, update_online
from casefile.models import Detection, IngestWarning, Level

rules_app = typer.Typer(help="Check and install Sigma rules.", no_args_is_help=True)
FORMATS = ("table", *WRITERS.names())

RulesOpt = Annotated[
    list[Path] | None,
    typer.Option("--rules", "-r", help="Sigma rule folders/files (default: the installed rules)."),
]
PlaceholderOpt = Annotated[
    list[str],
    typer.Option("--placeholder", "-p", help="Value for an |expand placeholder, NAME=VALUE (repeatable)."),
]


class _Bar:
    """Adapts run_hunt's progress protocol to a rich progress bar (files done of files found; without a
    total, until it is counted, the bar pulses)."""

    def __init__(self, bar: Progress) -> None:
        self._bar = bar
        self._task: TaskID | None = None

    def start(self, total_files: int | None) -> None:
        self._task = self._bar.add_task("Hunting", total=total_files)

    def set_total(self, total_files: int) -> None:
        if self._task is not None:
            self._bar.update(self._task, total=total_files)

    def file_done(self, path: str) -> None:
        if self._task is not None:
            self._bar.advance(self._task)


@contextmanager
def _bar() -> Iterator[_Bar | None]:
    """The hunt's progress bar, or None where none is shown (stderr is not a terminal): the hunt then
    neither counts the files for its total (a second walk of the evidence) nor tells it each file."""
    with progress() as bar:
        yield None if bar.disable else _Bar(bar)


def _placeholders(values: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name:
            raise fail(f"--placeholder {v!r}: use NAME=VALUE (repeat for several values)")
        out.setdefault(name.strip("%"), []).append(value)
    return out


def _load(rules: list[Path] | None, placeholder: list[str]) -> RuleSet:
    settings = Settings.from_env()
    dirs = rules or installed_rule_dirs(settings)
    with console.status("Loading Sigma rules", spinner="dots"):
        return load_rules(dirs, placeholders=_placeholders(placeholder), cache_dir=settings.cache_dir)


def _render_table(detections: Iterable[Detection], out: TextIO) -> None:
    table = Table(show_lines=False)
    for col in ("time", "level", "rule", "computer", "event", "record", "matched"):
        table.add_column(col)
    for d in detections:
        matched = ", ".join(f"{k}={v}" for k, v in d.matched.items())
        table.add_row(
            d.timestamp.isoformat() if d.timestamp else "",
            str(d.rule.level),
            escape(d.rule.title),
            escape(d.computer or ""),
            f"{d.channel or ''}/{d.event_id if d.event_id is not None else ''}",
            str(d.record_id or ""),
            escape(matched[:200]),
        )
    from rich.console import Console

    Console(file=out, width=200 if not out.isatty() else None).print(table)


def _summary(s: HuntStats) -> None:
    console.print(
        f"files {s.files}, events {s.events}, warnings {s.warnings}, "
        f"rules loaded {s.rules_loaded}, skipped {s.rules_skipped}, detections {s.detections}",
        highlight=False,
        soft_wrap=True,
    )


def _warn(w: IngestWarning) -> None:
    # one line per warning, never wrapped: users grep and parse these
    console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False, soft_wrap=True)


@handle_errors
def hunt_cmd(
    paths: Annotated[
        list[Path], typer.Argument(help="Evidence files or folders (EVTX, JSON, zip, gz).")
    ],
    rules: RulesOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    min_level: Annotated[
        str, typer.Option("--min-level", help="Lowest rule level reported.")
    ] = "informational",
    placeholder: PlaceholderOpt = [],  # noqa: B006  (typer needs a literal default)
    jobs: Annotated[
        int, typer.Option(
            "--jobs", "-j", min=0,
            help="Worker processes (0: one per CPU, or none for evidence of a few MB).",
        ),
    ] = 0,
) -> None:
    """Hunt evidence with Sigma rules; detections to stdout (or --output), summary to stderr."""
    if fmt not in FORMATS:
        raise fail(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    level = Level.parse(min_level)
    ruleset = _load(rules, placeholder)
    stats = HuntStats()
    out: TextIO
    # detections are written as they are found (only counters stay in memory); the table
    # format keeps its rendered rows until the end because rich lays a table out whole
    with _bar() as bar, text_output(output) as out:
        plan_cache = Settings.from_env().cache_dir
        exclude = [output] if output is not None else []  # written into the evidence folder, say
        if fmt == "jsonl":  # the workers write the lines (iter_hunt_jsonl)
            write_utf8(iter_hunt_jsonl(
                paths, ruleset, stats=stats, min_level=level, on_warning=_warn, progress=bar, workers=jobs,
                plan_cache=plan_cache, exclude=exclude,
            ), out)
        else:
            # no output format writes the events' fields (`to_record`), so workers need not send them
            detections = iter_hunt(
                paths, ruleset, stats=stats, min_level=level, on_warning=_warn, progress=bar, workers=jobs,
                event_fields=False, plan_cache=plan_cache, exclude=exclude,
            )
            if fmt == "table":
                _render_table(detections, out)
            else:
                write_detections(detections, fmt, out)
    _summary(stats)


@handle_errors
def rules_check_cmd(
    rules: RulesOpt = None,
    placeholder: PlaceholderOpt = [],  # noqa: B006
) -> None:
    """Load the rules: print how many loaded, and every skipped rule with path, id and reason."""
    ruleset = _load(rules, placeholder)
    for s in ruleset.skipped:
        typer.echo(f"skipped\t{s.path}\t{s.rule_id or '-'}\t{s.reason}")
    console.print(
        f"{len(ruleset.rules)} rules and {len(ruleset.correlations)} correlations loaded, "
        f"{len(ruleset.skipped)} skipped, from {ruleset.files} files",
        highlight=False,
        soft_wrap=True,
    )


@handle_errors
def rules_update_cmd(
    from_: Annotated[
        Path | None,
        typer.Option("--from", help="Import a local copy (sigma/, attack/, ...) instead (offline)."),
    ] = None,
    sigma_url: Annotated[
        str | None, typer.Option("--sigma-url", help="SigmaHQ rules zip URL (env CASEFILE_SIGMA_URL).")
    ] = None,
    attack_url: Annotated[
        str | None,
        typer.Option("--attack-url", help="ATT&CK enterprise bundle URL (env CASEFILE_ATTACK_URL)."),
    ] = None,
) -> None:
    """Install the current SigmaHQ rules and ATT&CK bundle into casefile's data directory."""
    settings = Settings.from_env()
    with console.status("Installing rules", spinner="dots"):
        if from_ is not None:
            result = update_offline(settings, from_)
        else:
            result = update_online(settings, sigma_url=sigma_url, attack_url=attack_url)
    console.print(
        escape(
            f"installed {result.rule_files} rule files in {result.rules_dir}"
            + (f"; ATT&CK bundle {result.attack_file}" if result.attack_file else "; no ATT&CK bundle")
        ),
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""
    app.command("hunt")(hunt_cmd)
    rules_app.command("check")(rules_check_cmd)
    rules_app.command("update")(rules_update_cmd)
    app.add_typer(rules_app, name="rules")
