"""CLI commands of the share stage: intel import, export stix|misp, serve, users add, collections add."""

from __future__ import annotations

from pathlib import Path

import typer

from casefile.cli._common import console, handle_errors
from casefile.config import Settings

intel_app = typer.Typer(
    help="Partners' indicators: import STIX, MISP feeds and CSV lists.", no_args_is_help=True
)
export_app = typer.Typer(
    help="Export a case for partners (STIX 2.1 bundle, MISP feed).", no_args_is_help=True
)
users_app = typer.Typer(help="Accounts of the TAXII server.", no_args_is_help=True)
collections_app = typer.Typer(help="Collections of the TAXII server.", no_args_is_help=True)

STORE_HELP = "intel store file (default: <CASEFILE_HOME>/intel.duckdb)"
_FLATTEN = str.maketrans({"\t": " ", "\n": " ", "\r": " "})
DATA_HELP = "server state folder (default: <CASEFILE_HOME>/taxii)"


def _store_path(store: Path | None) -> Path:
    from casefile.share import default_store_path

    return store or default_store_path(Settings.from_env())


def _data_dir(data: Path | None) -> Path:
    from casefile.web import default_data_dir

    return data or default_data_dir(Settings.from_env())


@intel_app.command("import")
@handle_errors
def intel_import(
    targets: list[str] = typer.Argument(
        ..., help="STIX bundle, MISP feed folder or event, CSV, folder or URL"
    ),
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
    source: str | None = typer.Option(None, "--source", help="name to record as the source"),
    tlp: str | None = typer.Option(None, "--tlp", help="TLP for indicators that carry none (e.g. amber)"),
    user: str | None = typer.Option(None, "--user", help="URLs/TAXII: HTTP Basic user (token as password)"),
    token: str | None = typer.Option(
        None, "--token", envvar="CASEFILE_INTEL_TOKEN", help="URLs/TAXII: Bearer token (or Basic password)"
    ),
    added_after: str | None = typer.Option(
        None, "--added-after", help="TAXII: only objects added after this"
    ),
) -> None:
    """Import indicators and STIX objects; a bad object is reported and the rest imported.

    A URL of a TAXII 2.1 collection (.../collections/<id>/) is read page by page."""
    from casefile.errors import IntelError
    from casefile.share import ImportOptions, ImportResult, IntelStore, import_intel
    from casefile.share.store import tlp_name

    marking = tlp_name(tlp) if tlp else None
    if tlp and marking is None:
        raise IntelError(f"unknown TLP {tlp!r}: use clear, green, amber, amber+strict or red")
    total = ImportResult(source=", ".join(targets))
    with IntelStore.open(_store_path(store)) as intel:
        for target in targets:
            total.add(
                import_intel(
                    intel,
                    target,
                    ImportOptions(
                        source=source, tlp=marking, user=user, token=token, added_after=added_after
                    ),
                )
            )
        n_ind, n_obj = intel.count()
    # One line per problem whatever the terminal width (soft wrap): users grep them for object ids.
    for issue in total.issues:
        console.print(f"warning: {issue}", style="yellow", highlight=False, markup=False, soft_wrap=True)
    for reason, count in sorted(total.skipped.items()):
        console.print(f"skipped {count}: {reason}", highlight=False, markup=False, soft_wrap=True)
    typer.echo(
        f"{total.indicators_new} new indicators, {total.indicators_merged} merged, "
        f"{total.objects} other objects, "
        f"{len(total.issues)} problems; store holds {n_ind} indicators and {n_obj} objects"
    )


@intel_app.command("bundle")
@handle_errors
def intel_bundle(
    out: Path = typer.Argument(..., help="STIX bundle file to write"),
    types: list[str] = typer.Option(
        [], "--type", help="only these object types (repeatable), e.g. intrusion-set, malware, relationship"
    ),
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Write the store as one STIX 2.1 bundle (e.g. partners' groups and malware for `attribute --kb`)."""
    from casefile.share import IntelStore

    with IntelStore.open(_store_path(store)) as intel:
        typer.echo(str(intel.write_bundle(out, types or None)))


@intel_app.command("list")
@handle_errors
def intel_list(store: Path | None = typer.Option(None, "--store", help=STORE_HELP)) -> None:
    """Show the stored indicators, one per line, tab-separated: pattern, TLP, first seen, last seen,
    sources, note."""
    from casefile.share import IntelStore

    with IntelStore.open(_store_path(store)) as intel:
        indicators = intel.indicators()
    for i in indicators:
        cells = (
            i.pattern,
            i.tlp or "-",
            i.first_seen.isoformat() if i.first_seen else "-",
            i.last_seen.isoformat() if i.last_seen else "-",
            i.source,
            i.note or "",
        )
        # tabs and newlines inside partners' text would break the columns
        typer.echo("\t".join(c.translate(_FLATTEN) for c in cells))
    console.print(f"{len(indicators)} indicators", highlight=False, soft_wrap=True)


@intel_app.command("match")
@handle_errors
def intel_match(
    case: Path = typer.Argument(..., help="case folder"),
    store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Match the store's indicators against a case's events; hits become the case's IOC detections."""
    from casefile.share import IntelStore, match_case

    with IntelStore.open(_store_path(store)) as intel:
        hits = match_case(case, intel)
    indicators = len({d.rule.id for d in hits})
    typer.echo(f"{len(hits)} indicator hits ({indicators} indicators) recorded in {case}")


def _export(fmt: str, case: Path, out: Path | None) -> None:
    from casefile.share import export_case

    typer.echo(str(export_case(case, fmt, out)))


@export_app.command("stix")
@handle_errors
def export_stix(
    case: Path = typer.Argument(..., help="case folder"),
    out: Path | None = typer.Option(
        None, "--out", help="file to write (default <case>/export/case.stix.json)"
    ),
) -> None:
    """Write the case's STIX 2.1 bundle (with sightings of matched indicators)."""
    _export("stix", case, out)


@export_app.command("misp")
@handle_errors
def export_misp(
    case: Path = typer.Argument(..., help="case folder"),
    out: Path | None = typer.Option(None, "--out", help="feed folder to write (default <case>/export/misp)"),
) -> None:
    """Write the case as a MISP feed folder (manifest.json + event file + hashes.csv)."""
    _export("misp", case, out)


@users_app.command("add")
@handle_errors
def users_add(
    name: str = typer.Argument(..., help="account name (the HTTP Basic user name)"),
    role: str = typer.Option("analyst", "--role", help="admin | analyst | partner"),
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
) -> None:
    """Create an account (or renew its token) and print its token."""
    from casefile.errors import ConfigError
    from casefile.web import Role, TaxiiState

    try:
        chosen = Role(role.lower())
    except ValueError:
        raise ConfigError(f"unknown role {role!r}: use admin, analyst or partner") from None
    typer.echo(TaxiiState(_data_dir(data)).add_user(name, chosen))


@collections_app.command("add")
@handle_errors
def collections_add(
    title: str = typer.Argument(..., help="collection title"),
    read: list[str] = typer.Option([], "--read", help="account that may read (repeatable)"),
    write: list[str] = typer.Option([], "--write", help="account that may write (repeatable)"),
    description: str | None = typer.Option(None, "--description"),
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
) -> None:
    """Create a collection with per-account rights and print its id."""
    from casefile.web import TaxiiState

    typer.echo(
        TaxiiState(_data_dir(data)).add_collection(title, description=description, read=read, write=write)
    )


@handle_errors
def serve(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="address to bind (loopback unless you mean otherwise)"
    ),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
) -> None:
    """Run the TAXII 2.1 server (discovery at /taxii2/)."""
    from casefile.web import serve as run_server

    if host not in ("127.0.0.1", "::1", "localhost"):
        console.print(
            f"warning: serving on {host}, reachable beyond this machine; tokens travel in clear over "
            "plain HTTP, so put a TLS-terminating proxy in front",
            style="yellow",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    run_server(_data_dir(data), host=host, port=port)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""
    app.add_typer(intel_app, name="intel")
    app.add_typer(export_app, name="export")
    app.add_typer(users_app, name="users")
    app.add_typer(collections_app, name="collections")
    app.command("serve")(serve)
