"""CLI commands of the attribute stage: `casefile attribute --techniques ...`."""

from __future__ import annotations

import calendar
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from casefile.cli._common import console, handle_errors
from casefile.errors import ConfigError

if TYPE_CHECKING:  # the attribution engine is imported by the commands that run it
    from casefile.attribute.models import Attribution


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def attribution_json(result: Attribution) -> dict[str, object]:
    """The JSON shape of `casefile attribute --format json`."""

    def items(xs: tuple[object, ...]) -> list[dict[str, object]]:
        from dataclasses import asdict

        return [asdict(x) for x in xs]  # type: ignore[call-overload]

    return {
        "groups": [
            {
                "group_id": g.group_id,
                "name": g.name,
                "sponsor": g.sponsor,
                "probability": round(g.probability, 6),
                "evidence_for": items(g.evidence_for),
                "evidence_against": items(g.evidence_against),
            }
            for g in result.groups
        ],
        "sponsors": [{"country": s.country, "probability": round(s.probability, 6)} for s in result.sponsors],
        "unknown_probability": round(result.unknown_probability, 6),
        "kb_version": result.kb_version,
        "unprofiled_techniques": list(result.unprofiled_techniques),
    }


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""

    @app.command("attribute")
    @handle_errors
    def attribute_cmd(
        case: Annotated[
            Path | None,
            typer.Argument(
                help="A case folder: attribute each activity cluster and the whole case, store the results "
                "and rewrite the case's reports (instead of --techniques/--software)."
            ),
        ] = None,
        techniques: Annotated[str, typer.Option("--techniques", help="Comma-separated ATT&CK ids.")] = "",
        software: Annotated[
            str, typer.Option("--software", help="Comma-separated software ids or names.")
        ] = "",
        kb: Annotated[
            list[Path] | None, typer.Option("--kb", help="STIX bundle(s); default: the installed one.")
        ] = None,
        before: Annotated[
            str | None, typer.Option("--before", help="Use only relationships created before YYYY-MM-DD.")
        ] = None,
        galaxy: Annotated[
            Path | None, typer.Option("--galaxy", help="MISP galaxy folder (default: the installed one).")
        ] = None,
        vendor_map: Annotated[
            Path | None, typer.Option("--vendor-map", help="Microsoft naming map JSON (default: installed).")
        ] = None,
        victim_country: Annotated[
            str | None,
            typer.Option(
                "--victim-country",
                help="Victim's country (ISO 3166-1 code or English name), weighed against the groups' known "
                "victims; with a CASE, stored in it.",
            ),
        ] = None,
        victim_sector: Annotated[
            str | None,
            typer.Option(
                "--victim-sector", help="Victim's sector (government, energy, ...), weighed likewise."
            ),
        ] = None,
        first_seen: Annotated[
            str | None,
            typer.Option(
                "--first-seen",
                help="When the activity began (YYYY, YYYY-MM or YYYY-MM-DD), weighed against the years of "
                "the groups' reports; a CASE takes it from its detections.",
            ),
        ] = None,
        last_seen: Annotated[
            str | None, typer.Option("--last-seen", help="When the activity was last seen (same forms).")
        ] = None,
        top: Annotated[int, typer.Option("--top", min=1, help="How many groups to list.")] = 10,
        fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    ) -> None:
        """Rank known threat groups (and "no known group") for observed techniques and software, or for
        every activity cluster of a case."""
        from casefile.attribute.service import attribute_observed, stated_victim

        if fmt not in ("table", "json"):
            raise ConfigError(f"--format {fmt!r}: expected 'table' or 'json'")
        try:
            cut = date.fromisoformat(before) if before else None
        except ValueError as exc:
            raise ConfigError(f"--before {before!r}: expected a date YYYY-MM-DD") from exc
        # normalised once here, so a typo fails before the knowledge base loads
        victim_country, victim_sector = stated_victim(victim_country, victim_sector)
        began, ended = _day(first_seen, "--first-seen"), _day(last_seen, "--last-seen", end=True)
        if began and ended and ended < began:
            raise ConfigError(f"--last-seen {last_seen} is before --first-seen {first_seen}")
        if case is not None:
            if techniques or software:
                raise ConfigError("give either a CASE or --techniques/--software, not both")
            if began or ended:
                raise ConfigError(
                    "--first-seen/--last-seen apply to --techniques; a CASE dates its activity from its "
                    "detections"
                )
            results = _attribute_case(
                case, kb or None, cut, top, galaxy, vendor_map, victim_country, victim_sector
            )
            if fmt == "json":
                typer.echo(json.dumps({scope: attribution_json(r) for scope, r in results.items()}, indent=2))
            else:
                for scope, r in results.items():
                    _print_table(r, f"Attribution of {scope} (ATT&CK {r.kb_version})")
            return
        result = attribute_observed(
            _split(techniques),
            _split(software),
            bundles=kb or None,
            before=cut,
            top=top,
            galaxy_dir=galaxy,
            vendor_map=vendor_map,
            victim_country=victim_country,
            victim_sector=victim_sector,
            first_seen=began,
            last_seen=ended,
        )
        if fmt == "json":
            typer.echo(json.dumps(attribution_json(result), indent=2))
            return
        _print_table(result, f"Attribution (ATT&CK {result.kb_version})")


def _day(value: str | None, option: str, *, end: bool = False) -> datetime | None:
    """YYYY, YYYY-MM or YYYY-MM-DD as the first day it names, or with `end` the last (UTC midnight)."""
    if not value:
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            day = date(int(text), 12, 31) if end else date(int(text), 1, 1)
        elif len(text) == 7:
            first = date.fromisoformat(f"{text}-01")
            day = first.replace(day=calendar.monthrange(first.year, first.month)[1]) if end else first
        else:
            day = date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{option} {value!r}: expected YYYY, YYYY-MM or YYYY-MM-DD") from exc
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


def _attribute_case(
    path: Path,
    bundles: list[Path] | None,
    before: date | None,
    top: int,
    galaxy: Path | None,
    vendor_map: Path | None,
    victim_country: str | None = None,
    victim_sector: str | None = None,
) -> dict[str, Attribution]:
    """Re-attribute a case with the given knowledge base, store the results and rewrite its reports."""
    from casefile.attribute.service import default_knowledge_base
    from casefile.case import Case
    from casefile.case.attribution import attribute_case
    from casefile.config import Settings
    from casefile.report import write_reports

    kb = default_knowledge_base(
        Settings.from_env(), bundles=bundles, before=before, galaxy_dir=galaxy, vendor_map=vendor_map
    )
    with Case.open(path) as opened:
        for warning in attribute_case(
            opened, kb, top=top, victim_country=victim_country, victim_sector=victim_sector
        ):
            console.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False, soft_wrap=True)
        write_reports(opened)
        stored = opened.attributions()
    # The whole case first, then clusters in stored order.
    return {"case": stored["case"], **{k: v for k, v in stored.items() if k != "case"}}


def _print_table(result: Attribution, title: str) -> None:
    out = Console()
    table = Table(title=title)
    for col in ("group", "name", "sponsor", "probability", "strongest evidence for", "against"):
        table.add_column(col)
    for g in result.groups:
        table.add_row(
            g.group_id,
            g.name,
            g.sponsor or "-",
            f"{g.probability:.1%}",
            ", ".join(f"{i.id} {i.name}" for i in g.evidence_for[:3]),
            ", ".join(f"{i.id}" for i in g.evidence_against[:3]),
        )
    out.print(table)
    out.print(f"no known group: {result.unknown_probability:.1%}")
    out.print("sponsors: " + ", ".join(f"{s.country} {s.probability:.1%}" for s in result.sponsors[:5]))
    if result.unprofiled_techniques:
        out.print(
            "not in this ATT&CK version (kept, no profile): " + ", ".join(result.unprofiled_techniques)
        )
