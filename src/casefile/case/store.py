"""The case: a folder holding one embedded DuckDB database (`case.duckdb`) and the reports.

Everything one evidence file contributes (its inventory row, events, detections, warnings) is written in
one transaction, so a run killed half way leaves the case as it was and the next run redoes that file.
Files are keyed by SHA-256: the same file added twice (under any name) is stored once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from casefile.attribute.models import Attribution
from casefile.case.clusters import Cluster
from casefile.case.codec import (
    DETECTION_COLUMNS,
    attribution_from_json,
    attribution_to_json,
    detection_from_row,
    detection_row,
    dumps,
    from_naive_utc,
    to_naive_utc,
)
from casefile.errors import CaseError
from casefile.ingest.columnar import (
    arrow_array,
    column_int,
    create_events_table,
    read_table,
    storable,
    write_events,
)
from casefile.models import Detection, Event, IngestWarning, Level

DB_NAME = "case.duckdb"
#: The events table, in casefile.ingest.columnar's layout (so indicator joins run on it directly).
EVENTS_TABLE = "events"
SCHEMA_VERSION = "2"
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@functools.cache
def _expected_columns() -> frozenset[tuple[str, str]]:
    """(table, column) of every column a case database of this SCHEMA_VERSION has."""
    con = duckdb.connect(":memory:")
    try:
        con.execute(_SCHEMA)
        create_events_table(con, EVENTS_TABLE)
        rows = con.execute("SELECT table_name, column_name FROM information_schema.columns").fetchall()
    finally:
        con.close()
    return frozenset((str(t), str(c)) for t, c in rows)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS evidence (
    sha256 VARCHAR PRIMARY KEY, path VARCHAR NOT NULL, size BIGINT, format VARCHAR,
    added_at TIMESTAMP, events BIGINT, warnings BIGINT, detections BIGINT);
CREATE TABLE IF NOT EXISTS detections ({detection_columns});
CREATE TABLE IF NOT EXISTS correlation_inputs ({detection_columns});
CREATE TABLE IF NOT EXISTS warnings (
    evidence_sha256 VARCHAR, file VARCHAR, record BIGINT, reason VARCHAR, stage VARCHAR, added_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS clusters (id VARCHAR PRIMARY KEY, seq INTEGER, body VARCHAR);
CREATE TABLE IF NOT EXISTS attributions (scope VARCHAR PRIMARY KEY, body VARCHAR);
CREATE TABLE IF NOT EXISTS techniques (
    id VARCHAR PRIMARY KEY, name VARCHAR, tactics VARCHAR[], is_subtechnique BOOLEAN);
CREATE TABLE IF NOT EXISTS tactics (seq INTEGER, shortname VARCHAR PRIMARY KEY, name VARCHAR);
CREATE TABLE IF NOT EXISTS software (id VARCHAR PRIMARY KEY, name VARCHAR, type VARCHAR);
CREATE TABLE IF NOT EXISTS rules (id VARCHAR PRIMARY KEY, title VARCHAR, path VARCHAR, text VARCHAR);
CREATE TABLE IF NOT EXISTS notes (id INTEGER, created_at TIMESTAMP, author VARCHAR, text VARCHAR);
"""

_DETECTION_COLUMNS_SQL = """
    id VARCHAR PRIMARY KEY, evidence_sha256 VARCHAR, kind VARCHAR, rule_id VARCHAR, rule_title VARCHAR,
    level INTEGER, rule_status VARCHAR, rule_author VARCHAR, rule_tags VARCHAR[], rule_description VARCHAR,
    rule_references VARCHAR[], rule_path VARCHAR, ts TIMESTAMP, computer VARCHAR, channel VARCHAR,
    event_id INTEGER, record_id BIGINT, file VARCHAR, matched VARCHAR, fields VARCHAR, grp VARCHAR,
    indicator VARCHAR, source VARCHAR"""
_SCHEMA = _SCHEMA.replace("{detection_columns}", _DETECTION_COLUMNS_SQL)

# Arrow schemas for bulk inserts: DuckDB's executemany costs milliseconds per row.
_DETECTION_ARROW = pa.schema(
    [
        ("id", pa.string()),
        ("evidence_sha256", pa.string()),
        ("kind", pa.string()),
        ("rule_id", pa.string()),
        ("rule_title", pa.string()),
        ("level", pa.int32()),
        ("rule_status", pa.string()),
        ("rule_author", pa.string()),
        ("rule_tags", pa.list_(pa.string())),
        ("rule_description", pa.string()),
        ("rule_references", pa.list_(pa.string())),
        ("rule_path", pa.string()),
        ("ts", pa.timestamp("us")),
        ("computer", pa.string()),
        ("channel", pa.string()),
        ("event_id", pa.int32()),
        ("record_id", pa.int64()),
        ("file", pa.string()),
        ("matched", pa.string()),
        ("fields", pa.string()),
        ("grp", pa.string()),
        ("indicator", pa.string()),
        ("source", pa.string()),
    ]
)
assert tuple(_DETECTION_ARROW.names) == DETECTION_COLUMNS
_EVIDENCE_ARROW = pa.schema(
    [
        ("sha256", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("format", pa.string()),
        ("added_at", pa.timestamp("us")),
        ("events", pa.int64()),
        ("warnings", pa.int64()),
        ("detections", pa.int64()),
    ]
)
_WARNING_ARROW = pa.schema(
    [
        ("evidence_sha256", pa.string()),
        ("file", pa.string()),
        ("record", pa.int64()),
        ("reason", pa.string()),
        ("stage", pa.string()),
        ("added_at", pa.timestamp("us")),
    ]
)
_TECHNIQUE_ARROW = pa.schema(
    [
        ("id", pa.string()),
        ("name", pa.string()),
        ("tactics", pa.list_(pa.string())),
        ("is_subtechnique", pa.bool_()),
    ]
)


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(fields))


def _insert_arrow(
    con: duckdb.DuckDBPyConnection,
    table: str,
    schema: pa.Schema,
    rows: Sequence[Sequence[Any]],
    *,
    ignore_duplicates: bool = False,
) -> None:
    """Insert rows (tuples in `schema` order) through one Arrow table; `table` is ours, never data."""
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [() for _ in schema.names]
    arrays = [arrow_array(c, f.type) for c, f in zip(columns, schema, strict=True)]
    data = pa.Table.from_arrays(arrays, schema=schema)
    view = "_casefile_rows"
    con.register(view, data)
    try:
        cols = ", ".join(schema.names)
        verb = "INSERT OR IGNORE INTO" if ignore_duplicates else "INSERT INTO"
        con.execute(f"{verb} {table} ({cols}) SELECT {cols} FROM {view}")
    finally:
        con.unregister(view)


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """One evidence file in the case inventory."""

    sha256: str
    path: str
    size: int
    format: str | None
    added_at: datetime | None
    events: int
    warnings: int
    detections: int


@dataclass(frozen=True, slots=True)
class StoredDetection:
    """A detection as kept in the case, with its stable id."""

    id: str
    detection: Detection
    evidence_sha256: str | None


@dataclass(frozen=True, slots=True)
class StoredWarning:
    warning: IngestWarning
    stage: str
    evidence_sha256: str | None


@dataclass(frozen=True, slots=True)
class TechniqueInfo:
    """An ATT&CK technique as the case remembers it from the knowledge base it was attributed with."""

    id: str
    name: str
    tactics: tuple[str, ...]
    is_subtechnique: bool


@dataclass(frozen=True, slots=True)
class Note:
    id: int
    created_at: datetime
    author: str | None
    text: str


class EvidenceBatch:
    """What one evidence file contributes: filled while the file is read, written by the case.

    Events go to the case's columnar `events` table (casefile.ingest.columnar layout) in chunks,
    inside the file's transaction, so a large file never has to fit in memory; detections and
    warnings are written when the file is done.
    """

    FLUSH_EVERY = 50_000

    def __init__(self, sha256: str, path: str, size: int, fmt: str | None) -> None:
        self.sha256 = sha256
        self.path = path
        self.size = size
        self.format = fmt
        self._events: list[Event] = []
        self._flushed = 0
        self._sink: Callable[[list[Event]], None] | None = None
        self.detections: list[Detection] = []
        self.correlation_inputs: list[Detection] = []
        self.warnings: list[IngestWarning] = []

    @property
    def event_count(self) -> int:
        return self._flushed + len(self._events)

    def add_event(self, ev: Event) -> None:
        # The case names every event by its evidence path as stored in the inventory.
        self._events.append(ev if ev.source_file == self.path else replace(ev, source_file=self.path))
        if self._sink is not None and len(self._events) >= self.FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Hand buffered events to the open transaction (no-op outside `Case.evidence`)."""
        if self._sink is None or not self._events:
            return
        self._sink(self._events)
        self._flushed += len(self._events)
        self._events = []


def _detection_rows(detections: Iterable[Detection], sha: str | None) -> dict[str, tuple[Any, ...]]:
    """Rows of a detections table by detection id (a detection found twice is stored once)."""
    return {row[0]: row for row in (detection_row(d, sha) for d in detections)}


def _warning_rows(
    warnings: Iterable[IngestWarning], stage: str, sha: str | None, now: datetime | None
) -> list[tuple[Any, ...]]:
    """Rows of the warnings table."""
    return [(sha, w.file, column_int(w.record, 64), w.reason, stage, now) for w in warnings]


class EvidenceGroup:
    """Evidence files stored in one transaction (`Case.evidence_group`).

    Their rows are written together when the group ends (events in chunks of `EvidenceBatch.FLUSH_EVERY`
    on the way): a small file's own statements and commit cost far more than its rows (about 12 ms a
    file, most of a case's hunting stage over a folder of small files).
    """

    def __init__(self, case: Case, con: duckdb.DuckDBPyConnection) -> None:
        self._case = case
        self._con = con
        self._events: list[Event] = []
        self._detections: dict[str, tuple[Any, ...]] = {}  # `_detection_rows` of the group's files
        self._inputs: dict[str, tuple[Any, ...]] = {}
        self._evidence: list[tuple[Any, ...]] = []
        self._warnings: list[tuple[Any, ...]] = []  # rows of the warnings table
        self._shas: dict[str, str] = {}  # sha256 -> path, of the files added so far
        #: Set when a file's block raised: the group then stores nothing, even if the caller goes on.
        self._broken = False

    @property
    def files(self) -> int:
        return len(self._shas)

    @contextmanager
    def evidence(self, sha256: str, path: str, size: int, fmt: str | None) -> Iterator[EvidenceBatch]:
        """Stream one file into the group: fill the yielded batch; it joins the group when the block ends."""
        batch = EvidenceBatch(sha256, path, size, fmt)
        batch._sink = self._add_events
        try:
            yield batch
            batch.flush()
        except BaseException:
            self._broken = True
            raise
        finally:
            batch._sink = None
        self._finish_file(batch)

    def add(self, batch: EvidenceBatch) -> None:
        """Add a batch filled outside `evidence`."""
        batch._sink = self._add_events
        try:
            batch.flush()
        finally:
            batch._sink = None
        self._finish_file(batch)

    def _add_events(self, events: list[Event]) -> None:
        self._events.extend(events)
        if len(self._events) >= EvidenceBatch.FLUSH_EVERY:
            write_events(self._con, self._events, EVENTS_TABLE)
            self._events = []

    def _finish_file(self, batch: EvidenceBatch) -> None:
        sha = batch.sha256
        if sha in self._shas:
            self._broken = True
            raise CaseError(f"{batch.path}: the same file as {self._shas[sha]} (sha256 {sha})")
        self._shas[sha] = batch.path
        rows = _detection_rows(batch.detections, sha)
        self._detections.update(rows)
        self._inputs.update(_detection_rows(batch.correlation_inputs, sha))
        now = to_naive_utc(self._case._clock())
        self._evidence.append((
            sha, batch.path, batch.size, batch.format, now, batch.event_count, len(batch.warnings), len(rows)
        ))
        self._warnings.extend(_warning_rows(batch.warnings, "ingest", sha, now))

    def _finish(self) -> None:
        """Write what the group holds (inside its transaction)."""
        if self._broken:
            raise CaseError("a file of this group failed while it was read: none of the group was stored")
        con = self._con
        if self._events:
            write_events(con, self._events, EVENTS_TABLE)
            self._events = []
        if self._shas:
            there = con.execute(
                "SELECT sha256 FROM evidence WHERE sha256 IN (SELECT unnest(?))", [list(self._shas)]
            ).fetchall()
            if there:
                sha = there[0][0]
                raise CaseError(f"{self._shas[sha]}: already in the case (sha256 {sha})")
        for table, rows in (("detections", self._detections), ("correlation_inputs", self._inputs)):
            if rows:
                _insert_arrow(con, table, _DETECTION_ARROW, list(rows.values()), ignore_duplicates=True)
        if self._evidence:
            _insert_arrow(con, "evidence", _EVIDENCE_ARROW, self._evidence)
        if self._warnings:
            _insert_arrow(con, "warnings", _WARNING_ARROW, self._warnings)


class Case:
    """An open case folder. Use `Case.create`, `Case.open` or `Case.open_or_create`; close when done."""

    def __init__(self, root: Path, con: duckdb.DuckDBPyConnection, *, clock: Clock = utc_now) -> None:
        self.root = root
        self._con = con
        self._clock = clock

    # --- lifecycle --------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, *, clock: Clock = utc_now, case_id: str | None = None) -> Case:
        """Make a new case folder (it may exist but must not hold a case yet).

        `clock` and `case_id` (default: a random UUID) are injected so that tests and reproducible
        runs get the same case id, creation time and therefore the same STIX ids and reports.
        """
        root = Path(path)
        if (root / DB_NAME).exists():
            raise CaseError(f"{root}: already holds a case; open it instead (or pick another --case)")
        if root.exists() and not root.is_dir():
            raise CaseError(f"{root}: exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        case = cls(root, cls._connect(root / DB_NAME, read_only=False), clock=clock)
        case._init_schema(created=clock(), case_id=case_id or str(uuid.uuid4()))
        return case

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, clock: Clock = utc_now) -> Case:
        """Open an existing case folder."""
        root = Path(path)
        db = root / DB_NAME
        if not db.is_file():
            raise CaseError(
                f"{root}: no case here (missing {DB_NAME}); run `casefile investigate ... --case {root}`"
            )
        case = cls(root, cls._connect(db, read_only=read_only), clock=clock)
        try:
            case._check(db)
        except BaseException:
            case.close()
            raise
        return case

    def _check(self, db: Path) -> None:
        """CaseError unless the database is a readable case of this SCHEMA_VERSION with all its columns."""
        try:
            version = self._meta("schema_version")
            have = self._columns()
        except duckdb.Error as exc:  # the header was readable, what it points to is not
            raise CaseError(
                f"{db}: cannot read the case database ({exc}); the file is damaged: restore it from a copy, "
                "or start a new case folder"
            ) from exc
        if version is None:
            raise CaseError(
                f"{db}: a DuckDB database, but no casefile case (no schema version recorded); "
                "pick another --case folder"
            )
        if version != SCHEMA_VERSION:
            raise CaseError(f"{db}: case schema version {version!r}, this casefile reads {SCHEMA_VERSION!r}")
        missing = sorted(_expected_columns() - have)
        if missing:
            tables = {t for t, _ in have}
            # a table gone is named once, not column by column
            names = sorted({f"table {t}" if t not in tables else f"{t}.{c}" for t, c in missing})
            named = ", ".join(names[:8])
            more = f" and {len(names) - 8} more" if len(names) > 8 else ""
            raise CaseError(
                f"{db}: the case database lacks {named}{more}: it was damaged or changed outside casefile; "
                "restore it from a copy, or start a new case folder"
            )

    @classmethod
    def open_or_create(cls, path: str | Path, *, clock: Clock = utc_now, case_id: str | None = None) -> Case:
        root = Path(path)
        if (root / DB_NAME).is_file():
            return cls.open(root, clock=clock)
        return cls.create(root, clock=clock, case_id=case_id)

    @staticmethod
    def _connect(db: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(db), read_only=read_only)
        except duckdb.Error as exc:
            # DuckDB names a lock held by another process "Conflicting lock"; anything else is the file
            hint = (
                "is another casefile using it?" if "lock" in str(exc).lower()
                else "the file is damaged or not a case database: restore it from a copy, or start a new "
                "case folder"
            )
            raise CaseError(f"{db}: cannot open the case database ({exc}); {hint}") from exc

    def _columns(self) -> set[tuple[str, str]]:
        rows = self._con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
        ).fetchall()
        return {(str(t), str(c)) for t, c in rows}

    def _init_schema(self, *, created: datetime, case_id: str) -> None:
        with self.transaction():
            self._con.execute(_SCHEMA)
            create_events_table(self._con, EVENTS_TABLE)
            self._con.execute(
                "INSERT INTO meta VALUES ('schema_version', ?), ('created_at', ?), ('case_id', ?)",
                [SCHEMA_VERSION, created.astimezone(UTC).isoformat(), case_id],
            )

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Case:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing: roll back on any error (or on the process dying before commit)."""
        self._con.begin()
        try:
            yield self._con
        except BaseException:
            self._con.rollback()
            raise
        self._con.commit()

    # --- meta -------------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        try:
            row = self._con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        except duckdb.CatalogException:
            return None
        return None if row is None else str(row[0])

    def _set_meta(self, con: duckdb.DuckDBPyConnection, key: str, value: str | None) -> None:
        con.execute("DELETE FROM meta WHERE key = ?", [key])
        if value is not None:  # storable: an ATT&CK version or stated victim read from a hostile bundle
            con.execute("INSERT INTO meta VALUES (?, ?)", [key, storable(value)])

    @property
    def created_at(self) -> datetime:
        raw = self._meta("created_at")
        assert raw is not None
        return datetime.fromisoformat(raw).astimezone(UTC)

    @property
    def case_id(self) -> str:
        """A UUID made once when the case is created; the root of the case's STIX ids."""
        raw = self._meta("case_id")
        assert raw is not None
        return raw

    @property
    def name(self) -> str:
        return self._meta("name") or self.root.resolve().name

    @property
    def attack_version(self) -> str | None:
        """The ATT&CK version of the knowledge base the case was last attributed with."""
        return self._meta("attack_version")

    def victim(self) -> tuple[str | None, str | None]:
        """The victim's country (ISO code) and sector as the analyst last stated them (None: never)."""
        return self._meta("victim_country"), self._meta("victim_sector")

    def set_victim(self, country: str | None, sector: str | None) -> None:
        """Remember what the analyst states about the victim; re-attribution weighs it again."""
        with self.transaction() as con:
            self._set_meta(con, "victim_country", country)
            self._set_meta(con, "victim_sector", sector)

    # --- evidence ---------------------------------------------------------------------------------

    def has_evidence(self, sha256: str) -> bool:
        return self._con.execute("SELECT 1 FROM evidence WHERE sha256 = ?", [sha256]).fetchone() is not None

    def add_evidence(self, batch: EvidenceBatch) -> bool:
        """Store a filled batch atomically; False (nothing written) if the file is already in the case."""
        if self.has_evidence(batch.sha256):
            return False
        with self.evidence_group() as group:
            group.add(batch)
        return True

    @contextmanager
    def evidence(self, sha256: str, path: str, size: int, fmt: str | None) -> Iterator[EvidenceBatch]:
        """Stream one file into the case: fill the yielded batch; it is committed when the block ends.

        An exception (or the process dying) inside the block leaves the case without any of the file.
        """
        with self.evidence_group() as group, group.evidence(sha256, path, size, fmt) as batch:
            yield batch

    @contextmanager
    def evidence_group(self) -> Iterator[EvidenceGroup]:
        """Stream several files into the case in one transaction (`EvidenceGroup.evidence` for each),
        committed when the block ends: each file whole or absent, and the group's files all or none."""
        with self.transaction() as con:
            group = EvidenceGroup(self, con)
            yield group
            group._finish()

    def _insert_detections(
        self, con: duckdb.DuckDBPyConnection, detections: Iterable[Detection], sha: str | None
    ) -> int:
        rows = _detection_rows(detections, sha)
        if rows:
            _insert_arrow(con, "detections", _DETECTION_ARROW, list(rows.values()), ignore_duplicates=True)
        return len(rows)

    def _insert_warnings(
        self, con: duckdb.DuckDBPyConnection, warnings: Sequence[IngestWarning], stage: str, sha: str | None
    ) -> None:
        if warnings:
            rows = _warning_rows(warnings, stage, sha, to_naive_utc(self._clock()))
            _insert_arrow(con, "warnings", _WARNING_ARROW, rows)

    def replace_case_detections(self, kind: str, detections: Sequence[Detection]) -> int:
        """Replace the case-wide detections of one kind (correlations, indicator hits) atomically."""
        with self.transaction() as con:
            con.execute("DELETE FROM detections WHERE kind = ? AND evidence_sha256 IS NULL", [kind])
            return self._insert_detections(con, detections, None)

    def add_warnings(self, warnings: Sequence[IngestWarning], *, stage: str, replace: bool = False) -> None:
        """Record warnings that belong to no single evidence file (discovery, rules, knowledge base).

        A warning already recorded for the same stage, file, record and reason is not repeated;
        `replace` first drops the stage's earlier warnings (for steps recomputed on every run).
        """
        now = to_naive_utc(self._clock())
        with self.transaction() as con:
            if replace:
                con.execute("DELETE FROM warnings WHERE stage = ? AND evidence_sha256 IS NULL", [stage])
            for w in dict.fromkeys(warnings):
                con.execute(
                    "INSERT INTO warnings SELECT NULL, ?, ?, ?, ?, ? WHERE NOT EXISTS "
                    "(SELECT 1 FROM warnings WHERE stage = ? AND file = ? "
                    "AND record IS NOT DISTINCT FROM ? AND reason = ?)",
                    [w.file, w.record, w.reason, stage, now, stage, w.file, w.record, w.reason],
                )

    def correlation_inputs(self) -> list[Detection]:
        """Hits of rules that feed correlations (suppressed ones included), in time order."""
        cur = self._con.execute(
            f"SELECT {', '.join(DETECTION_COLUMNS)} FROM correlation_inputs "
            "ORDER BY ts NULLS LAST, file, record_id, id"
        )
        return [detection_from_row(dict(zip(DETECTION_COLUMNS, r, strict=True))) for r in cur.fetchall()]

    def evidence_files(self) -> list[EvidenceRecord]:
        rows = self._con.execute(
            "SELECT sha256, path, size, format, added_at, events, warnings, detections FROM evidence "
            "ORDER BY path, sha256"
        ).fetchall()
        return [
            EvidenceRecord(
                sha256=r[0],
                path=r[1],
                size=int(r[2] or 0),
                format=r[3],
                added_at=from_naive_utc(r[4]),
                events=int(r[5] or 0),
                warnings=int(r[6] or 0),
                detections=int(r[7] or 0),
            )
            for r in rows
        ]

    def event_count(self) -> int:
        row = self._con.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0

    def events(self) -> Iterator[Event]:
        """Stored events, file by file (columnar layout: see casefile.ingest.columnar)."""
        return read_table(self._con, EVENTS_TABLE)

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The case database, for read-only queries of its `events` table (indicator matching)."""
        return self._con

    # --- detections -------------------------------------------------------------------------------

    def detections(self, *, min_level: Level = Level.INFORMATIONAL) -> list[StoredDetection]:
        """Every detection in time order (untimed last), ties broken by id."""
        cur = self._con.execute(
            f"SELECT {', '.join(DETECTION_COLUMNS)} FROM detections WHERE level >= ? "
            "ORDER BY ts NULLS LAST, file, record_id, id",
            [int(min_level)],
        )
        out = []
        for r in cur.fetchall():
            row = dict(zip(DETECTION_COLUMNS, r, strict=True))
            out.append(StoredDetection(row["id"], detection_from_row(row), row["evidence_sha256"]))
        return out

    def detection_count(self) -> int:
        row = self._con.execute("SELECT count(*) FROM detections").fetchone()
        return int(row[0]) if row else 0

    # --- warnings ---------------------------------------------------------------------------------

    def warnings(self) -> list[StoredWarning]:
        rows = self._con.execute(
            "SELECT evidence_sha256, file, record, reason, stage FROM warnings "
            "ORDER BY file, record NULLS FIRST, reason"
        ).fetchall()
        return [StoredWarning(IngestWarning(file=r[1], reason=r[3], record=r[2]), r[4], r[0]) for r in rows]

    # --- clusters and attribution -----------------------------------------------------------------

    def set_clusters(self, clusters: Sequence[Cluster]) -> None:
        with self.transaction() as con:
            con.execute("DELETE FROM clusters")
            if clusters:
                _insert_arrow(
                    con,
                    "clusters",
                    _schema(("id", pa.string()), ("seq", pa.int32()), ("body", pa.string())),
                    [(c.id, i, dumps(_cluster_json(c))) for i, c in enumerate(clusters)],
                )

    def clusters(self) -> list[Cluster]:
        rows = self._con.execute("SELECT body FROM clusters ORDER BY seq").fetchall()
        return [_cluster_from_json(json.loads(r[0])) for r in rows]

    def set_attributions(
        self,
        results: dict[str, Attribution],
        *,
        attack_version: str | None,
        techniques: Sequence[TechniqueInfo] = (),
        tactics: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Replace all attribution results (scope "case" or a cluster id) and the ATT&CK names used."""
        with self.transaction() as con:
            con.execute("DELETE FROM attributions")
            if results:
                _insert_arrow(
                    con,
                    "attributions",
                    _schema(("scope", pa.string()), ("body", pa.string())),
                    [(k, dumps(attribution_to_json(v))) for k, v in sorted(results.items())],
                )
            self._set_meta(con, "attack_version", attack_version)
            if techniques or tactics:
                con.execute("DELETE FROM techniques")
                con.execute("DELETE FROM tactics")
            if techniques:
                _insert_arrow(
                    con,
                    "techniques",
                    _TECHNIQUE_ARROW,
                    [(t.id, t.name, list(t.tactics), t.is_subtechnique) for t in techniques],
                )
            if tactics:
                _insert_arrow(
                    con,
                    "tactics",
                    _schema(("seq", pa.int32()), ("shortname", pa.string()), ("name", pa.string())),
                    [(i, short, name) for i, (short, name) in enumerate(tactics)],
                )

    def attributions(self) -> dict[str, Attribution]:
        rows = self._con.execute("SELECT scope, body FROM attributions ORDER BY scope").fetchall()
        return {r[0]: attribution_from_json(json.loads(r[1])) for r in rows}

    def attribution(self, scope: str = "case") -> Attribution | None:
        return self.attributions().get(scope)

    def techniques(self) -> dict[str, TechniqueInfo]:
        rows = self._con.execute(
            "SELECT id, name, tactics, is_subtechnique FROM techniques ORDER BY id"
        ).fetchall()
        return {r[0]: TechniqueInfo(r[0], r[1], tuple(r[2] or ()), bool(r[3])) for r in rows}

    def tactics(self) -> list[tuple[str, str]]:
        """(shortname, name) in matrix order, as the knowledge base gave them."""
        return [
            (r[0], r[1])
            for r in self._con.execute("SELECT shortname, name FROM tactics ORDER BY seq").fetchall()
        ]

    def set_software(self, software: Sequence[tuple[str, str, str]]) -> None:
        """Remember (id, name, "tool"|"malware") for ATT&CK software the case mentions."""
        with self.transaction() as con:
            con.execute("DELETE FROM software")
            if software:
                _insert_arrow(
                    con,
                    "software",
                    _schema(("id", pa.string()), ("name", pa.string()), ("type", pa.string())),
                    list(dict((row[0], row) for row in software).values()),
                )

    def software(self) -> dict[str, tuple[str, str]]:
        """id -> (name, "tool"|"malware")."""
        rows = self._con.execute("SELECT id, name, type FROM software ORDER BY id").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def add_rule_texts(self, rules: Sequence[tuple[str, str, str | None, str]]) -> None:
        """Keep (id, title, path, YAML text) of rules that fired, so the case is self-contained."""
        if rules:
            with self.transaction() as con:
                ids = [r[0] for r in rules]
                con.execute("DELETE FROM rules WHERE list_contains(?, id)", [ids])
                _insert_arrow(
                    con,
                    "rules",
                    _schema(
                        ("id", pa.string()),
                        ("title", pa.string()),
                        ("path", pa.string()),
                        ("text", pa.string()),
                    ),
                    list(dict((row[0], row) for row in rules).values()),
                )

    def rule_texts(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self._con.execute("SELECT id, text FROM rules ORDER BY id").fetchall()}

    # --- notes ------------------------------------------------------------------------------------

    def add_note(self, text: str, *, author: str | None = None) -> Note:
        with self.transaction() as con:
            row = con.execute("SELECT coalesce(max(id), 0) + 1 FROM notes").fetchone()
            nid = int(row[0]) if row else 1
            now = self._clock()
            # an argument the shell passed as bytes that are not UTF-8 arrives with lone surrogates
            text, author = storable(text), None if author is None else storable(author)
            con.execute("INSERT INTO notes VALUES (?, ?, ?, ?)", [nid, to_naive_utc(now), author, text])
        return Note(nid, now, author, text)

    def notes(self) -> list[Note]:
        rows = self._con.execute("SELECT id, created_at, author, text FROM notes ORDER BY id").fetchall()
        return [Note(int(r[0]), from_naive_utc(r[1]) or self.created_at, r[2], r[3]) for r in rows]


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


def _cluster_json(c: Cluster) -> dict[str, Any]:
    return {
        "id": c.id,
        "detection_ids": list(c.detection_ids),
        "hosts": list(c.hosts),
        "accounts": list(c.accounts),
        "processes": list(c.processes),
        "techniques": list(c.techniques),
        "tactics": list(c.tactics),
        "software": list(c.software),
        "first_seen": _iso(c.first_seen),
        "last_seen": _iso(c.last_seen),
        "max_level": int(c.max_level),
    }


def _cluster_from_json(d: dict[str, Any]) -> Cluster:
    def ts(v: str | None) -> datetime | None:
        return datetime.fromisoformat(v) if v else None

    return Cluster(
        id=d["id"],
        detection_ids=tuple(d["detection_ids"]),
        hosts=tuple(d["hosts"]),
        accounts=tuple(d["accounts"]),
        processes=tuple(d["processes"]),
        techniques=tuple(d["techniques"]),
        tactics=tuple(d["tactics"]),
        software=tuple(d["software"]),
        first_seen=ts(d["first_seen"]),
        last_seen=ts(d["last_seen"]),
        max_level=Level(d["max_level"]),
    )
