"""The TAXII server's state under `--data DIR`: accounts, collections with per-account rights,
STIX objects in insertion order, and POST status resources, in one SQLite file.

SQLite (not DuckDB) because the server does many small transactions from several threads while
`casefile users add` may write from another process; WAL mode lets readers and one writer work
together.

Every stored object version gets `seq`, a strictly increasing insertion number, and `date_added`,
a timestamp forced to be strictly increasing with `seq`. Paging cursors are a `seq`, so objects
added while a client pages land after its cursor: nothing is lost or repeated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from casefile.errors import CasefileError
from casefile.models import STIX_TYPE

DB_NAME = "taxii.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, token_sha256 TEXT NOT NULL UNIQUE, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, description TEXT, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rights (
    collection_id TEXT NOT NULL REFERENCES collections(id), account TEXT NOT NULL REFERENCES accounts(name),
    can_read INTEGER NOT NULL, can_write INTEGER NOT NULL, PRIMARY KEY (collection_id, account));
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, collection_id TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL,
    spec_version TEXT NOT NULL, version TEXT NOT NULL, version_key TEXT NOT NULL, date_added TEXT NOT NULL,
    json TEXT NOT NULL, UNIQUE (collection_id, id, version_key));
CREATE INDEX IF NOT EXISTS objects_by_id ON objects (collection_id, id, version_key);
CREATE INDEX IF NOT EXISTS objects_by_seq ON objects (collection_id, seq);
CREATE TABLE IF NOT EXISTS statuses (
    id TEXT PRIMARY KEY, collection_id TEXT NOT NULL, account TEXT NOT NULL, request_timestamp TEXT NOT NULL,
    body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clock (id INTEGER PRIMARY KEY CHECK (id = 1), last TEXT NOT NULL);
"""


class Role(StrEnum):
    """Admins read and write every collection; the CERT's analysts read every collection and write
    where granted; partners read and write only what they are granted."""

    ADMIN = "admin"
    ANALYST = "analyst"
    PARTNER = "partner"


class StateError(CasefileError):
    """A user or collection that cannot be created or found."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class Collection:
    id: str
    title: str
    description: str | None
    can_read: bool
    can_write: bool

    def resource(self) -> dict[str, Any]:
        """The TAXII collection resource."""
        out: dict[str, Any] = {"id": self.id, "title": self.title}
        if self.description:
            out["description"] = self.description
        out.update(
            can_read=self.can_read,
            can_write=self.can_write,
            media_types=["application/stix+json;version=2.1"],
        )
        return out


@dataclass(frozen=True, slots=True)
class StoredObject:
    seq: int
    id: str
    version: str
    date_added: str
    spec_version: str
    json: str


@dataclass(frozen=True, slots=True)
class ObjectFilter:
    """The TAXII query filters of a GET (objects, manifest, versions)."""

    added_after: str | None = None  # normalised timestamp; exclusive
    ids: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    versions: tuple[str, ...] = ("last",)  # "first", "last", "all" or normalised timestamps
    spec_versions: tuple[str, ...] = ()


def timestamp_key(value: str) -> str:
    """A STIX/TAXII timestamp in one fixed-width form (microseconds, Z), so text order is time order.
    Raises ValueError when it is not a timestamp."""
    ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    try:
        utc = ts.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00: before the first instant datetime holds
        raise ValueError(f"{value!r} is outside the years 1-9999 in UTC") from None
    # isoformat, not strftime: %Y writes years before 1000 without their zeros, out of text order
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so one SHA-256 suffices: there is nothing to brute-force.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TaxiiState:
    """Accounts, collections and objects of one TAXII server, stored in DIR/taxii.sqlite."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the server data folder {self.data_dir}: {exc}") from exc
        self.path = self.data_dir / DB_NAME
        self._local = threading.local()
        self._write_lock = threading.Lock()
        with self._write_lock:
            self._con().executescript(_SCHEMA)  # executescript commits on its own

    # -- connections -----------------------------------------------------------------------------
    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            except sqlite3.Error as exc:
                raise StateError(f"cannot open {self.path}: {exc}") from exc
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
        return con

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        con = self._con()
        with self._write_lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # -- accounts --------------------------------------------------------------------------------
    def add_user(self, name: str, role: Role = Role.ANALYST) -> str:
        """Create an account (or give an existing one a new token and role); returns its token."""
        if not name or ":" in name or len(name) > 100 or not name.isprintable():
            raise StateError(f"invalid user name {name!r}: 1-100 printable characters, no ':'")
        token = secrets.token_urlsafe(32)
        with self._tx() as con:
            con.execute(
                """INSERT INTO accounts VALUES (?, ?, ?, ?)
                   ON CONFLICT(name) DO UPDATE
                   SET role = excluded.role, token_sha256 = excluded.token_sha256""",
                (name, role.value, hash_token(token), _now()),
            )
        return token

    def authenticate(self, token: str, name: str | None = None) -> Account | None:
        """The account a token belongs to (and, for HTTP Basic, that it is `name`'s); None if none."""
        digest = hash_token(token)
        con = self._con()
        if name is not None:
            row = con.execute(
                "SELECT name, role, token_sha256 FROM accounts WHERE name = ?", (name,)
            ).fetchone()
        else:
            row = con.execute(
                "SELECT name, role, token_sha256 FROM accounts WHERE token_sha256 = ?", (digest,)
            ).fetchone()
        # Compare even when no row was found, so timing does not tell whether the user exists.
        stored = row[2] if row else "0" * 64
        if not hmac.compare_digest(stored.encode(), digest.encode()) or row is None:
            return None
        return Account(row[0], Role(row[1]))

    def users(self) -> list[Account]:
        return [
            Account(n, Role(r))
            for n, r in self._con().execute("SELECT name, role FROM accounts ORDER BY name")
        ]

    # -- collections -----------------------------------------------------------------------------
    def add_collection(
        self,
        title: str,
        *,
        description: str | None = None,
        read: Sequence[str] = (),
        write: Sequence[str] = (),
    ) -> str:
        """Create a collection readable by `read` and writable by `write` accounts; returns its id."""
        if not title.strip():
            raise StateError("a collection needs a non-empty title")
        cid = str(uuid.uuid4())
        with self._tx() as con:
            known = {r[0] for r in con.execute("SELECT name FROM accounts")}
            missing = sorted((set(read) | set(write)) - known)
            if missing:
                raise StateError(
                    f"unknown user(s) {', '.join(missing)}: create them with `casefile users add`"
                )
            con.execute("INSERT INTO collections VALUES (?, ?, ?, ?)", (cid, title, description, _now()))
            for user in sorted(set(read) | set(write)):
                con.execute(
                    "INSERT INTO rights VALUES (?, ?, ?, ?)",
                    (cid, user, int(user in read), int(user in write)),
                )
        return cid

    def collections(self, account: Account) -> list[Collection]:
        """Collections the account can read or write."""
        rows = (
            self._con()
            .execute(
                """SELECT c.id, c.title, c.description, coalesce(r.can_read, 0), coalesce(r.can_write, 0)
               FROM collections c LEFT JOIN rights r ON r.collection_id = c.id AND r.account = ?
               ORDER BY c.created, c.id""",
                (account.name,),
            )
            .fetchall()
        )
        out = [self._collection(row, account) for row in rows]
        return [c for c in out if c.can_read or c.can_write]

    def collection(self, cid: str, account: Account) -> Collection | None:
        """The collection with the account's rights on it; None when it does not exist."""
        row = (
            self._con()
            .execute(
                """SELECT c.id, c.title, c.description, coalesce(r.can_read, 0), coalesce(r.can_write, 0)
               FROM collections c LEFT JOIN rights r ON r.collection_id = c.id AND r.account = ?
               WHERE c.id = ?""",
                (account.name, cid),
            )
            .fetchone()
        )
        return self._collection(row, account) if row else None

    @staticmethod
    def _collection(row: tuple[Any, ...], account: Account) -> Collection:
        admin = account.role is Role.ADMIN
        reads_all = admin or account.role is Role.ANALYST
        return Collection(row[0], row[1], row[2], reads_all or bool(row[3]), admin or bool(row[4]))

    # -- objects ---------------------------------------------------------------------------------
    def add_objects(self, cid: str, account: Account, objects: Sequence[Any]) -> dict[str, Any]:
        """Store objects (each validated on its own); returns the completed TAXII status resource."""
        status_id = str(uuid.uuid4())
        request_ts = _now()
        successes: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        with self._tx() as con:
            last = con.execute("SELECT last FROM clock WHERE id = 1").fetchone()
            clock = _Clock(last[0] if last else None)
            for n, obj in enumerate(objects):
                problem = _invalid(obj)
                if problem:
                    oid = (
                        obj.get("id")
                        if isinstance(obj, dict) and isinstance(obj.get("id"), str)
                        else f"objects[{n}]"
                    )
                    failures.append({"id": oid, "message": problem})
                    continue
                version = str(obj.get("modified") or obj.get("created") or "")
                date_added = clock.next()
                version_key = timestamp_key(version) if version else date_added
                cur = con.execute(
                    "INSERT OR IGNORE INTO objects (collection_id, id, type, spec_version, version,"
                    " version_key, date_added, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cid,
                        obj["id"],
                        obj["type"],
                        obj.get("spec_version", "2.1"),
                        version or date_added,
                        version_key,
                        date_added,
                        utf8_json(obj, sort_keys=True).decode("utf-8"),  # as stored and served
                    ),
                )
                entry = {"id": obj["id"], "version": version or date_added}
                if cur.rowcount == 0:
                    entry["message"] = "this version was already in the collection"
                successes.append(entry)
            con.execute("INSERT OR REPLACE INTO clock VALUES (1, ?)", (clock.last or request_ts,))
            status = {
                "id": status_id,
                "status": "complete",
                "request_timestamp": request_ts,
                "total_count": len(objects),
                "success_count": len(successes),
                "successes": successes,
                "failure_count": len(failures),
                "failures": failures,
                "pending_count": 0,
                "pendings": [],
            }
            con.execute(
                "INSERT INTO statuses VALUES (?, ?, ?, ?, ?)",
                (status_id, cid, account.name, request_ts, json.dumps(status)),
            )
        return status

    def status(self, status_id: str, account: Account) -> dict[str, Any] | None:
        """A POST's status resource; only its poster and admins may read it."""
        row = self._con().execute("SELECT account, body FROM statuses WHERE id = ?", (status_id,)).fetchone()
        if row is None or (row[0] != account.name and account.role is not Role.ADMIN):
            return None
        result: dict[str, Any] = json.loads(row[1])
        return result

    def query(
        self,
        cid: str,
        flt: ObjectFilter,
        *,
        after_seq: int = 0,
        limit: int = 100,
        object_id: str | None = None,
        all_versions: bool = False,
    ) -> tuple[list[StoredObject], bool]:
        """Objects of a collection in insertion order after `after_seq`, filtered; (page, more)."""
        where = ["o.collection_id = ?", "o.seq > ?"]
        params: list[Any] = [cid, after_seq]
        if object_id is not None:
            where.append("o.id = ?")
            params.append(object_id)
        if flt.added_after:
            where.append("o.date_added > ?")
            params.append(flt.added_after)
        for column, values in (
            ("o.id", flt.ids),
            ("o.type", flt.types),
            ("o.spec_version", flt.spec_versions),
        ):
            if values:
                where.append(f"{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        if not all_versions and "all" not in flt.versions:
            alternatives = []
            for v in flt.versions:
                if v in ("first", "last"):
                    agg = "min" if v == "first" else "max"
                    alternatives.append(
                        f"o.version_key = (SELECT {agg}(x.version_key) FROM objects x"
                        " WHERE x.collection_id = o.collection_id AND x.id = o.id)"
                    )
                else:
                    alternatives.append("o.version_key = ?")
                    params.append(v)
            where.append("(" + " OR ".join(alternatives) + ")")
        params.append(limit + 1)
        rows = (
            self._con()
            .execute(
                "SELECT o.seq, o.id, o.version, o.date_added, o.spec_version, o.json FROM objects o WHERE "
                + " AND ".join(where)
                + " ORDER BY o.seq LIMIT ?",
                params,
            )
            .fetchall()
        )
        page = [StoredObject(*r) for r in rows[:limit]]
        return page, len(rows) > limit

    def delete_object(self, cid: str, object_id: str, flt: ObjectFilter) -> int:
        """Delete the matching versions of one object; returns how many were deleted."""
        with self._tx() as con:
            page, _ = self.query(cid, flt, object_id=object_id, limit=1_000_000)
            con.executemany("DELETE FROM objects WHERE seq = ?", [(o.seq,) for o in page])
        return len(page)


class _Clock:
    """date_added values strictly increasing across the store, even when the wall clock stalls."""

    def __init__(self, last: str | None) -> None:
        self.last = last

    def next(self) -> str:
        now = datetime.now(UTC)
        if self.last is not None:
            floor = datetime.fromisoformat(self.last.replace("Z", "+00:00")) + timedelta(microseconds=1)
            now = max(now, floor)
        self.last = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return self.last


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utf8_json(value: Any, **dumps: Any) -> bytes:
    """`value`'s JSON (`json.dumps` options in `dumps`) as UTF-8, non-ASCII text as it is, unless a string
    holds a lone surrogate (a client's `\\ud800` escape), which only the escaped, ASCII form can carry."""
    try:
        return json.dumps(value, ensure_ascii=False, **dumps).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, **dumps).encode("ascii")


def _invalid(obj: Any) -> str | None:
    """Why an object cannot be stored, or None."""
    if not isinstance(obj, Mapping):
        return "not a JSON object"
    oid, otype = obj.get("id"), obj.get("type")
    if not isinstance(otype, str) or not isinstance(oid, str) or not oid.startswith(f"{otype}--"):
        return "needs a string 'type' and an 'id' of the form '<type>--<uuid>'"
    if STIX_TYPE.fullmatch(otype) is None:
        return f"type {otype!r} is not a STIX type (3-250 of a-z, 0-9 and '-')"
    try:
        uuid.UUID(oid.split("--", 1)[1])
    except ValueError:
        return f"id {oid!r} does not end in a UUID"
    if obj.get("spec_version", "2.1") != "2.1":
        return f"spec_version {obj.get('spec_version')!r} is not supported (only 2.1)"
    for key in ("created", "modified"):
        value = obj.get(key)
        if value is not None:
            try:
                timestamp_key(str(value))
            except ValueError:
                return f"'{key}' is not a timestamp: {value!r}"
    return None
