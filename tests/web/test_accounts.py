"""Accounts and collections kept under --data DIR: CLI commands, hashed tokens, rights."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from casefile.cli import app
from casefile.web import Role, TaxiiState
from casefile.web.state import DB_NAME


def test_users_and_collections_from_the_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "srv"
    made = runner.invoke(app, ["users", "add", "nato-cert", "--role", "partner", "--data", str(data)])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert len(token) >= 40
    runner.invoke(app, ["users", "add", "ana", "--data", str(data)])
    col = runner.invoke(
        app,
        [
            "collections",
            "add",
            "Wiper IOCs",
            "--read",
            "nato-cert",
            "--read",
            "ana",
            "--write",
            "ana",
            "--data",
            str(data),
        ],
    )
    assert col.exit_code == 0, col.output
    cid = col.stdout.strip()

    state = TaxiiState(data)
    partner = state.authenticate(token)
    assert partner is not None and partner.role is Role.PARTNER
    assert state.authenticate(token, name="nato-cert") == partner
    assert state.authenticate(token, name="ana") is None
    assert state.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    (seen,) = state.collections(partner)
    assert (seen.id, seen.title, seen.can_read, seen.can_write) == (cid, "Wiper IOCs", True, False)
    # roles: analysts read every collection but write only where granted; partners see only grants
    closed = state.add_collection("Internal only")
    ana = state.users()[0]
    assert ana.name == "ana" and ana.role is Role.ANALYST
    assert [(c.title, c.can_read, c.can_write) for c in state.collections(ana)] == [
        ("Wiper IOCs", True, True),
        ("Internal only", True, False),
    ]
    assert state.collection(closed, partner) is not None
    assert [c.id for c in state.collections(partner)] == [cid]

    raw = b"".join(p.read_bytes() for p in data.iterdir())  # the database and its WAL
    assert token.encode() not in raw  # only the hash is stored
    with sqlite3.connect(data / DB_NAME) as con:
        (stored,) = con.execute("SELECT token_sha256 FROM accounts WHERE name = 'nato-cert'").fetchone()
    assert len(stored) == 64 and stored != token

    renewed = runner.invoke(app, ["users", "add", "nato-cert", "--role", "partner", "--data", str(data)])
    assert TaxiiState(data).authenticate(token) is None  # a new token replaces the old one
    assert TaxiiState(data).authenticate(renewed.stdout.strip()) is not None


def test_cli_refuses_unknown_role_and_unknown_users(tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "20"})  # narrow: each error stays one line whatever the width
    bad_role = runner.invoke(app, ["users", "add", "x", "--role", "root", "--data", str(tmp_path)])
    (error,) = bad_role.output.splitlines()
    assert bad_role.exit_code == 2 and error.startswith("error: unknown role 'root'")
    bad_user = runner.invoke(app, ["collections", "add", "T", "--read", "ghost", "--data", str(tmp_path)])
    (error,) = bad_user.output.splitlines()
    assert bad_user.exit_code == 2 and error.startswith("error: ") and "unknown user(s) ghost" in error
    state = TaxiiState(tmp_path)
    state.add_user("boss", Role.ADMIN)
    assert state.collections(state.users()[0]) == []  # the refused collection was not half-made


def test_serve_refuses_a_port_outside_tcp_before_starting(tmp_path: Path) -> None:
    # bind() raised OverflowError (a traceback) once the server was already starting
    for port in ("0", "65536", "99999"):
        res = CliRunner().invoke(app, ["serve", "--port", port, "--data", str(tmp_path)])
        assert res.exit_code == 2 and "Invalid value for '--port'" in res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)
    assert list(tmp_path.iterdir()) == []  # no server state made
