"""CLI commands of the attribute stage: `casefile attribute --techniques ...`."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from casefile.cli._common import handle_errors
from casefile.errors import ConfigError


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def attribution_json(result: object) -> dict[str, object]:
    """The JSON shape of `casefile attribute --format json`."""
    from casefile.attribute.models import Attribution

    assert isinstance(result, Attribution)

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
        top: Annotated[int, typer.Option("--top", min=1, help="How many groups to list.")] = 10,
        fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    ) -> None:
        """Rank known threat groups (and "no known group") for observed techniques and software."""
        from casefile.attribute.service import attribute_observed

        if fmt not in ("table", "json"):
            raise ConfigError(f"--format {fmt!r}: expected 'table' or 'json'")
        try:
            cut = date.fromisoformat(before) if before else None
        except ValueError as exc:
            raise ConfigError(f"--before {before!r}: expected a date YYYY-MM-DD") from exc
        result = attribute_observed(
            _split(techniques),
            _split(software),
            bundles=kb or None,
            before=cut,
            top=top,
            galaxy_dir=galaxy,
            vendor_map=vendor_map,
        )
        if fmt == "json":
            typer.echo(json.dumps(attribution_json(result), indent=2))
            return
        out = Console()
        table = Table(title=f"Attribution (ATT&CK {result.kb_version})")
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
