"""CLI commands of the case stage: `investigate`, `case show|timeline|export|note`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table
from rich.text import Text

from casefile.cli._common import console, handle_errors, progress, text_output
from casefile.cli.hunt import PlaceholderOpt, RulesOpt, _placeholders
from casefile.config import Settings
from casefile.errors import ConfigError, KnowledgeBaseError
from casefile.hunt.update import installed_rule_dirs
from casefile.models import Level

if TYPE_CHECKING:  # the case store (DuckDB, Arrow) is imported by the commands that open a case
    from casefile.case.investigate import Attributor, IndicatorMatcher, StageProgress

case_app = typer.Typer(
    help="Look into a case folder: summary, timeline, exports, notes.", no_args_is_help=True
)


class _Bars:
    """Adapts investigate's stages to rich progress bars (one bar per stage)."""

    def __init__(self, bar: Progress) -> None:
        self._bar = bar
        self._task: TaskID | None = None

    def stage(self, name: str, total: int | None) -> None:
        if self._task is not None:  # the previous stage is over: show its bar full
            done = self._bar.tasks[-1].total or 1
            self._bar.update(self._task, total=done, completed=done)
        self._task = self._bar.add_task(name, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, amount)

    def finish(self) -> None:
        self.stage("Done", 1)
        self.advance()


@contextmanager
def _stage_bars() -> Iterator[StageProgress]:
    with progress() as bar:
        bars = _Bars(bar)
        yield bars
        bars.finish()


def _attributor(
    kb: list[Path],
    *,
    before: str | None,
    top: int,
    galaxy: Path | None,
    vendor_map: Path | None,
    country: str | None,
    sector: str | None,
) -> Attributor | None:
    """The knowledge-base attributor, or None (attribution skipped, with a warning) without a KB.

    Like `casefile attribute`: the installed bundle and naming data (MISP galaxy, vendor map) by default.
    """
    from casefile.attack import installed_bundles
    from casefile.attribute.service import stated_victim
    from casefile.case.attribution import kb_attributor

    country, sector = stated_victim(country, sector)  # a typo fails now, not after the hunt
    settings = Settings.from_env()
    if not kb:
        try:
            kb = installed_bundles(settings.attack_dir)
        except KnowledgeBaseError:
            return None
    try:
        cut = date.fromisoformat(before) if before else None
    except ValueError as exc:
        raise ConfigError(f"--before {before!r}: expected a date YYYY-MM-DD") from exc
    installed_galaxy = settings.data_dir / "misp-galaxy"
    installed_vendor = settings.data_dir / "vendor-naming" / "MicrosoftMapping.json"
    return kb_attributor(
        kb,
        top=top,
        before=cut,
        galaxy_dir=galaxy or (installed_galaxy if installed_galaxy.is_dir() else None),
        vendor_map=vendor_map or (installed_vendor if installed_vendor.is_file() else None),
        cache_dir=settings.cache_dir,
        victim_country=country,
        victim_sector=sector,
    )


def _indicator_matcher(intel: Path | None) -> IndicatorMatcher | None:
    """Matching against the intel store (`casefile intel import`), when there is one."""
    from casefile.share import IntelStore, default_store_path, match_indicators

    path = intel or default_store_path(Settings.from_env())
    if not path.is_file():
        if intel is not None:
            raise ConfigError(f"{intel}: no intel store here (create one with `casefile intel import`)")
        return None
    with IntelStore.open(path) as store:
        known = store.indicators()
    if not known:
        return None
    return lambda con: match_indicators(con, known)


@handle_errors
def investigate_cmd(
    evidence: Annotated[list[Path], typer.Argument(help="Evidence files or folders (EVTX, JSON, zip, gz).")],
    case: Annotated[Path, typer.Option("--case", help="Case folder (created if missing, extended if not).")],
    rules: RulesOpt = None,
    placeholder: PlaceholderOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    kb: Annotated[
        list[Path] | None, typer.Option("--kb", help="ATT&CK STIX bundle(s) (default: installed bundle).")
    ] = None,
    before: Annotated[
        str | None, typer.Option("--before", help="Attribute with ATT&CK as known before YYYY-MM-DD.")
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Groups kept per attribution.")] = 10,
    galaxy: Annotated[
        Path | None, typer.Option("--galaxy", help="MISP galaxy folder (default: the installed one).")
    ] = None,
    vendor_map: Annotated[
        Path | None,
        typer.Option("--vendor-map", help="Vendor naming map (default: the installed one)."),
    ] = None,
    victim_country: Annotated[
        str | None,
        typer.Option("--victim-country", help="Victim's country: ISO 3166-1 code or English name."),
    ] = None,
    victim_sector: Annotated[
        str | None, typer.Option("--victim-sector", help="Victim's sector (government, energy, ...).")
    ] = None,
    intel: Annotated[
        Path | None,
        typer.Option("--intel", help="Intel store to match (default: <CASEFILE_HOME>/intel.duckdb)."),
    ] = None,
    min_level: Annotated[
        str, typer.Option("--min-level", help="Lowest rule level to report.")
    ] = "informational",
    window: Annotated[int, typer.Option("--window", help="Clustering time window in minutes.")] = 120,
) -> None:
    """Hunt, correlate, cluster, attribute and report: the whole case from collected evidence."""
    from casefile.case.investigate import investigate

    settings = Settings.from_env()
    with _stage_bars() as bars:
        result = investigate(
            evidence,
            case,
            rules=rules or installed_rule_dirs(settings),
            placeholders=_placeholders(placeholder),
            rule_cache=settings.cache_dir,
            attributor=_attributor(
                kb or [],
                before=before,
                top=top,
                galaxy=galaxy,
                vendor_map=vendor_map,
                country=victim_country,
                sector=victim_sector,
            ),
            indicators=_indicator_matcher(intel),
            min_level=Level.parse(min_level),
            window=timedelta(minutes=window),
            progress=bars,
        )
    for w in result.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), str(w)), highlight=False, soft_wrap=True)
    console.print(
        f"case {result.case_dir}: {result.files_added} new evidence files "
        f"({result.files_already_in_case} already in the case), {result.events_added} events, "
        f"{result.detections_added} detections, {result.correlation_detections} correlation hits, "
        f"{result.indicator_hits} indicator hits, "
        f"{result.clusters} clusters; {result.rules_loaded} rules loaded, {result.rules_skipped} skipped",
        highlight=False,
        soft_wrap=True,
    )
    for path in result.reports:
        typer.echo(str(path))


@case_app.command("show")
@handle_errors
def show_cmd(case_dir: Annotated[Path, typer.Argument(help="Case folder.")]) -> None:
    """Counts, hosts, clusters and their most likely group."""
    from casefile.case import Case
    from casefile.report.summary import case_summary

    with Case.open(case_dir, read_only=True) as case:
        s = case_summary(case)
    counts = s["counts"]
    out = Table(title=f"case {s['case']}", show_header=False)
    for key, value in counts.items():
        out.add_row(key.replace("_", " "), str(value))
    out.add_row("levels", ", ".join(f"{k} {v}" for k, v in s["detections_by_level"].items()))
    out.add_row("first / last seen", f"{s['first_seen']} / {s['last_seen']}")
    out.add_row("ATT&CK", str(s["attack_version"] or "not loaded"))
    top = s["attribution"]
    out.add_row(
        "attribution",
        f"{top['name']} ({top['group_id']}) p={top['probability']}" if top and top["name"] else "not run",
    )
    # Piped or captured, the tables keep their rows whole instead of folding to a guessed width.
    stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    stdout.print(out)
    clusters = Table("cluster", "detections", "hosts", "most likely group")
    for c in s["clusters"]:
        a = c["attribution"]
        clusters.add_row(
            c["id"],
            str(c["detections"]),
            ", ".join(c["hosts"]),
            f"{a['name']} p={a['probability']}" if a and a["name"] else "-",
        )
    stdout.print(clusters)


@case_app.command("timeline")
@handle_errors
def timeline_cmd(
    case_dir: Annotated[Path, typer.Argument(help="Case folder.")],
    fmt: Annotated[
        str, typer.Option("--format", help="Timeline format: csv, jsonl, timesketch (a wrong one lists all).")
    ] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Every detection in time order with host, account, process and ATT&CK tactic."""
    from casefile.case import TIMELINE_FORMATS, Case, build_timeline

    writer = TIMELINE_FORMATS.get(fmt)
    with Case.open(case_dir, read_only=True) as case:
        entries = build_timeline(case)
    with text_output(output) as fh:
        writer(entries, fh)
    if output is not None:
        typer.echo(str(output))


@case_app.command("export")
@handle_errors
def export_cmd(
    case_dir: Annotated[Path, typer.Argument(help="Case folder.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder (default: the case folder).")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Output name(s), e.g. report.html.")
    ] = None,
) -> None:
    """(Re)write report.html, navigator-layer.json, bundle.json and summary.json."""
    from casefile.case import Case
    from casefile.report import write_reports

    with Case.open(case_dir, read_only=True) as case:
        for path in write_reports(case, output, names=only):
            typer.echo(str(path))


@case_app.command("note")
@handle_errors
def note_cmd(
    case_dir: Annotated[Path, typer.Argument(help="Case folder.")],
    text: Annotated[str, typer.Argument(help="The note.")],
    author: Annotated[str | None, typer.Option("--author")] = None,
) -> None:
    """Add an analyst note to the case (shown in the report)."""
    from casefile.case import Case

    with Case.open(case_dir) as case:
        note = case.add_note(text, author=author)
    typer.echo(f"note {note.id} added")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""
    app.command("investigate")(investigate_cmd)
    app.add_typer(case_app, name="case")
