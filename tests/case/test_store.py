"""The case database: inventory with SHA-256, dedup, all-or-nothing writes, reopen."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from casefile.case.store import Case, EvidenceBatch, sha256_file
from casefile.errors import CaseError
from casefile.models import Detection, DetectionKind, Event, IngestWarning, Level, RuleInfo

RULE = RuleInfo("r-1", "Rule one", Level.HIGH, "test", "me", ("attack.execution", "attack.t1059.001"))
TS = datetime(2022, 7, 15, 6, 0, tzinfo=UTC)


def batch(sha: str, n: int = 3) -> EvidenceBatch:
    b = EvidenceBatch(sha, f"{sha[:4]}.json", 100, "json")
    for i in range(n):
        ev = Event(TS, "H1", "Security", "p", 4688, i, b.path, {"EventID": 4688, "CommandLine": f"c{i}"})
        b.add_event(ev)
        b.detections.append(
            Detection(
                RULE,
                DetectionKind.SIGMA,
                TS,
                "H1",
                "Security",
                4688,
                i,
                b.path,
                {"CommandLine": f"c{i}"},
                dict(ev.fields),
            )
        )
    b.warnings.append(IngestWarning(b.path, "truncated record", 9))
    return b


def test_same_file_twice_is_stored_once(tmp_path: Path) -> None:
    with Case.create(tmp_path / "c") as case:
        assert case.add_evidence(batch("a" * 64)) is True
        assert case.add_evidence(batch("a" * 64)) is False
        assert case.add_evidence(batch("b" * 64, n=2)) is True
        assert [(e.sha256[0], e.events, e.detections, e.warnings) for e in case.evidence_files()] == [
            ("a", 3, 3, 1),
            ("b", 2, 2, 1),
        ]
        assert case.event_count() == 5
        assert case.detection_count() == 5
        assert len(case.warnings()) == 2


def test_round_trip_through_reopen(tmp_path: Path) -> None:
    with Case.create(tmp_path / "c") as case:
        case.add_evidence(batch("a" * 64))
        case.add_note("looked at H1 <b>", author="analyst")
    with Case.open(tmp_path / "c", read_only=True) as case:
        (first, *_) = case.detections()
        assert first.detection.rule == RULE
        assert first.detection.timestamp == TS
        assert first.detection.matched == {"CommandLine": "c0"}
        assert first.detection.fields == {"EventID": 4688, "CommandLine": "c0"}
        events = list(case.events())
        assert [e.fields["CommandLine"] for e in events] == ["c0", "c1", "c2"]
        assert events[0].timestamp == TS
        assert [n.text for n in case.notes()] == ["looked at H1 <b>"]


def test_create_and_open_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="no case here"):
        Case.open(tmp_path / "missing")
    Case.create(tmp_path / "c").close()
    with pytest.raises(CaseError, match="already holds a case"):
        Case.create(tmp_path / "c")


def test_failed_write_rolls_back(tmp_path: Path) -> None:
    with Case.create(tmp_path / "c") as case:
        bad = batch("a" * 64)
        bad.detections.append(object())  # type: ignore[arg-type]  # fails half way through the write
        with pytest.raises(AttributeError):
            case.add_evidence(bad)
        assert case.evidence_files() == [] and case.event_count() == 0 and case.detection_count() == 0
        assert case.add_evidence(batch("a" * 64)) is True


def test_killed_process_leaves_case_as_before(tmp_path: Path) -> None:
    with Case.create(tmp_path / "c") as case:
        case.add_evidence(batch("a" * 64))
    # A second process starts writing a file's rows and dies before committing.
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store import batch
        from casefile.case.store import Case
        case = Case.open({str(tmp_path / "c")!r})
        with case.transaction() as con:
            con.execute("INSERT INTO evidence (sha256, path) VALUES ('dead', 'half.json')")
            con.execute("INSERT INTO events (source_file, record_id) SELECT 'x', range FROM range(50000)")
            os._exit(9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    with Case.open(tmp_path / "c") as case:
        assert [e.sha256 for e in case.evidence_files()] == ["a" * 64]
        assert case.event_count() == 3
        assert case.add_evidence(batch("b" * 64)) is True


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_second_writer_gets_a_clear_error(tmp_path: Path) -> None:
    with Case.create(tmp_path / "c"):
        script = f"from casefile.case.store import Case\nCase.open({str(tmp_path / 'c')!r})"
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "CaseError" in proc.stderr and "is another casefile using it?" in proc.stderr


def test_streamed_file_is_flushed_in_chunks_and_still_all_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EvidenceBatch, "FLUSH_EVERY", 2)
    events = [Event(TS, "H1", "Security", "p", 4688, i, "f.json", {"n": i}) for i in range(5)]
    with Case.create(tmp_path / "c") as case:
        with pytest.raises(RuntimeError), case.evidence("c" * 64, "f.json", 10, "json") as batch:
            for ev in events:
                batch.add_event(ev)
            assert batch.event_count == 5 and case.event_count() == 4  # two chunks already written
            raise RuntimeError("reader died")
        assert case.event_count() == 0 and case.evidence_files() == []
        with case.evidence("c" * 64, "f.json", 10, "json") as batch:
            for ev in events:
                batch.add_event(ev)
        assert [e.fields["n"] for e in case.events()] == [0, 1, 2, 3, 4]
        assert case.evidence_files()[0].events == 5


def _contents(case: Case) -> tuple[Any, ...]:
    files = [(e.sha256, e.path, e.events, e.detections, e.warnings) for e in case.evidence_files()]
    events = sorted((e.source_file, e.record_id, e.fields["CommandLine"]) for e in case.events())
    warnings = sorted(
        (w.evidence_sha256, w.warning.file, w.warning.record, w.warning.reason) for w in case.warnings()
    )
    return files, events, case.detection_count(), warnings


def test_a_group_of_files_is_stored_as_each_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evidence_group`: one transaction for several files, the same rows as one transaction each
    (events written in chunks on the way)."""
    monkeypatch.setattr(EvidenceBatch, "FLUSH_EVERY", 2)
    shas = [c * 64 for c in "abc"]
    with Case.create(tmp_path / "one") as case:
        for sha in shas:
            case.add_evidence(batch(sha, n=3))
        alone = _contents(case)
    with Case.create(tmp_path / "group") as case:
        with case.evidence_group() as group:
            for sha in shas:
                filled = batch(sha, n=3)  # filled outside a case: its events wait in the batch
                with group.evidence(sha, f"{sha[:4]}.json", 100, "json") as b:
                    for ev in filled._events:
                        b.add_event(ev)
                    b.detections.extend(filled.detections)
                    b.warnings.extend(filled.warnings)
            assert group.files == 3 and case.event_count() == 8  # chunks already written, in the transaction
        assert _contents(case) == alone
        assert len(alone[0]) == 3 and alone[2] == 9


def test_a_group_stores_all_its_files_or_none(tmp_path: Path) -> None:
    with Case.create(tmp_path / "c") as case:
        case.add_evidence(batch("a" * 64))
        before = _contents(case)
        # a file that fails mid-way: the files before it in the group go too
        with pytest.raises(RuntimeError), case.evidence_group() as group:
            group.add(batch("b" * 64))
            with group.evidence("c" * 64, "c.json", 10, "json") as b:
                b.add_event(Event(TS, "H1", "Security", "p", 4688, 1, "c.json", {"CommandLine": "x"}))
                raise RuntimeError("reader died")
        assert _contents(case) == before
        # ...even when the caller goes on after the failure
        with pytest.raises(CaseError, match="none of the group"), case.evidence_group() as group:
            group.add(batch("b" * 64))
            with pytest.raises(RuntimeError), group.evidence("c" * 64, "c.json", 10, "json"):
                raise RuntimeError("reader died")
        assert _contents(case) == before
        # a file already in the case, or twice in the group
        with pytest.raises(CaseError, match="already in the case"), case.evidence_group() as group:
            group.add(batch("b" * 64))
            group.add(batch("a" * 64))
        with pytest.raises(CaseError, match="the same file as"), case.evidence_group() as group:
            group.add(batch("b" * 64))
            group.add(batch("b" * 64))
        assert _contents(case) == before
        with case.evidence_group() as group:
            group.add(batch("b" * 64))
        assert len(_contents(case)[0]) == 2


def test_a_damaged_or_foreign_database_is_named_for_what_it_is(tmp_path: Path) -> None:
    """Not "is another casefile using it?" for a file that is damaged, not a case, or lacks tables or
    columns (which would fail later, mid-command, with DuckDB's own error); the file is left as it was."""
    import duckdb

    with Case.create(tmp_path / "good") as case:
        case.add_evidence(batch("a" * 64))
    good = (tmp_path / "good" / "case.duckdb").read_bytes()

    def case_with(name: str, data: bytes | None = None, sql: str = "") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        db = folder / "case.duckdb"
        db.write_bytes(good if data is None else data)
        if sql:
            con = duckdb.connect(str(db))
            con.execute(sql)
            con.close()
        return folder

    cut = case_with("cut", good[: len(good) // 3])
    with pytest.raises(CaseError, match="damaged") as err:
        Case.open(cut)
    assert "another casefile" not in str(err.value)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    con = duckdb.connect(str(foreign / "case.duckdb"))
    con.execute("CREATE TABLE x (a INTEGER)")
    con.close()
    with pytest.raises(CaseError, match="no casefile case"):
        Case.open(foreign)
    dropped = case_with("dropped", sql="DROP TABLE detections; ALTER TABLE events DROP COLUMN computer")
    before = (dropped / "case.duckdb").read_bytes()
    with pytest.raises(CaseError, match=r"lacks events\.computer, table detections: it was damaged"):
        Case.open(dropped, read_only=True)
    with pytest.raises(CaseError, match="lacks"):
        Case.open_or_create(dropped)  # as `casefile investigate` opens it: nothing written over
    assert (dropped / "case.duckdb").read_bytes() == before
    with Case.open(tmp_path / "good", read_only=True) as case:
        assert len(case.evidence_files()) == 1


def test_a_note_or_meta_value_with_a_lone_surrogate_is_stored_escaped(tmp_path: Path) -> None:
    """A shell argument of bytes that are not UTF-8 (`casefile case note CASE $'\\xff'`) and a version read
    from a hostile bundle arrive with lone surrogates, which DuckDB refused with an exception."""
    with Case.create(tmp_path / "c") as case:
        note = case.add_note("bad \udcff byte", author="a\udcfe")
        case.set_attributions({}, attack_version="18.1\ud800")
    with Case.open(tmp_path / "c", read_only=True) as case:
        (stored,) = case.notes()
        assert stored.text == note.text == "bad \\udcff byte" and stored.author == "a\\udcfe"
        assert case.attack_version == "18.1\\ud800"
