"""The vectorised fast path gives exactly the serial reference engine's detections.

Compared: rule id, file, record id, matched fields, all event fields, order, event counts and
warnings, over (a) SigmaHQ's regression data, (b) a sample of the EVTX corpus with every rule,
(c) small inline events exercising every IR node through the pre-filter.
"""

from __future__ import annotations

import io
import itertools
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest

from casefile.hunt import RuleSet, ir, load_rules, run_hunt
from casefile.hunt.engine import RuleIndex, match_event
from casefile.hunt.parallel import EvtxRecords
from casefile.hunt.rules import CompiledRule
from casefile.hunt.vector import (
    MEMO_BYTES,
    NOT,
    BatchHunter,
    RawJson,
    VectorIndex,
    _FieldAnchors,
    fixed_nodes,
    guard,
    regex_literals,
    specialise,
)
from casefile.ingest import RawRecord, normalise
from casefile.models import Detection, Event, Level, RuleInfo


def _det(d: object) -> Detection:
    """A hit as a Detection: no lines are asked for here, so every hit is one."""
    assert isinstance(d, Detection), d
    return d


def _key(hit: object) -> tuple[Any, ...]:
    d = _det(hit)
    return (
        d.rule.id, d.file, d.record_id, d.event_id, d.timestamp, d.computer, d.channel,
        json.dumps(d.matched, sort_keys=True, default=str),
        json.dumps(d.fields, sort_keys=True, default=str),
    )


def _reference_event(raw: RawJson) -> Event:
    """The serial path's Event of a raw record (the reader's JSON decoding, then the evtx-json shape)."""
    record = RawRecord(raw.index, json.loads(raw.text), "evtx-json")
    event = normalise(record, raw.source, lambda w: pytest.fail(str(w)))
    assert event is not None
    return event


@pytest.fixture(scope="module")
def all_rules(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    sigma = shared_data / "sigma"
    dirs = [sigma / "rules", sigma / "rules-emerging-threats", sigma / "rules-threat-hunting"]
    return load_rules(dirs, cache_dir=tmp_path_factory.mktemp("rule-cache"))


def _compare(paths: list[Path], rules: RuleSet, workers: int) -> int:
    fast = run_hunt(paths, rules, vectorised=True, workers=workers)
    ref = run_hunt(paths, rules, vectorised=False)
    assert [_key(d) for d in fast.detections] == [_key(d) for d in ref.detections]
    assert fast.stats.events == ref.stats.events
    assert sorted(map(str, fast.warnings)) == sorted(map(str, ref.warnings))
    return len(ref.detections)


def test_regression_data_identical(shared_data: Path, all_rules: RuleSet) -> None:
    hits = _compare([shared_data / "sigma" / "regression_data"], all_rules, workers=1)
    assert hits > 150  # nearly every regression sample fires its rule


def test_evtx_sample_identical_with_two_workers(shared_data: Path, all_rules: RuleSet) -> None:
    files = sorted(
        f for f in (shared_data / "evtx").rglob("*.evtx")
        if "hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES" not in f.as_posix()
    )
    sample = files[::6]  # ~100 files, every log source family of the corpus
    assert _compare(sample, all_rules, workers=2) > 500


def _hunt_in_parts(
    files: list[Path], rules: RuleSet, workers: int, task_bytes: int
) -> tuple[list[Any], list[tuple[str, int, Any]], list[str]]:
    """`vector_hits` over `files` with tasks of `task_bytes`: detections, files told done (with their
    counts), and the warnings, sorted."""
    from casefile.hunt.parallel import vector_hits
    from casefile.ingest import discover

    warnings: list[str] = []
    done: list[tuple[str, int, Any]] = []
    found = list(vector_hits(
        discover(files), list(rules.rules), workers=workers, warn=lambda w: warnings.append(str(w)),
        done=lambda ev, n: done.append((ev.path, n, ev.part)), task_bytes=task_bytes,
    ))
    return [_key(d) for d in found], done, sorted(warnings)


def test_large_files_split_between_workers_give_identical_results(
    shared_data: Path, all_rules: RuleSet
) -> None:
    """An intact EVTX file larger than a task is read in parts by several workers (`evtx_parts`): same
    detections, order, event counts and warnings as one hunter reading each file whole (which the tests
    above hold to the serial path)."""
    from casefile.hunt.parallel import _groups
    from casefile.ingest import discover
    from casefile.ingest.readers.evtx import CHUNK_SIZE, evtx_parts

    files = sorted(
        f for f in (shared_data / "evtx").rglob("*.evtx")
        if "hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES" not in f.as_posix()
    )
    large = [f for f in files if f.stat().st_size > 20 * CHUNK_SIZE][:6]
    assert sum(evtx_parts(f, 2) is not None for f in large) >= 3  # most of them split, in parts of 2 chunks

    parts = [ev.part for group in _groups(discover(large), 2 * CHUNK_SIZE, split=True) for ev in group]
    assert sum(part is not None for part in parts) > 10

    split = _hunt_in_parts(large, all_rules, 2, 2 * CHUNK_SIZE)
    whole = _hunt_in_parts(large, all_rules, 1, 64 * 1024 * 1024)
    assert split == whole and len(whole[0]) > 100  # each file told done once, whole, with all its events
    assert [path for path, _n, _part in whole[1]] == [str(f) for f in large]


def test_large_ndjson_split_between_workers_gives_identical_results(
    shared_data: Path, all_rules: RuleSet, tmp_path: Path
) -> None:
    """A large NDJSON log (OTRF's records, one per line, a damaged line near the end) is read in parts by
    several workers (`ndjson_parts`): same detections, order, event count and warnings as one hunter
    reading it whole."""
    import zipfile

    from casefile.hunt.parallel import _groups
    from casefile.ingest import discover

    zips = sorted((shared_data / "json").rglob("*.zip"), key=lambda p: (p.stat().st_size, p.name))[:6]
    if not zips:
        pytest.skip(f"no JSON datasets under {shared_data / 'json'}")
    lines: list[bytes] = []
    for z in zips:
        with zipfile.ZipFile(z) as archive:
            for name in archive.namelist():
                if name.endswith(".json") and not name.startswith("__MACOSX"):
                    lines += [line.rstrip(b"\n") for line in archive.read(name).splitlines() if line.strip()]
    lines.insert(len(lines) - 50, b'{"damaged": ')
    log = tmp_path / "export.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    task_bytes = log.stat().st_size // 12
    parts = [ev.part for group in _groups(discover([log]), task_bytes, split=True) for ev in group]
    assert len(parts) >= 10 and all(part is not None for part in parts)

    split = _hunt_in_parts([log], all_rules, 2, task_bytes)
    whole = _hunt_in_parts([log], all_rules, 1, 64 * 1024 * 1024)
    assert split == whole and len(whole[0]) > 10
    # the damaged line takes the next one as its value, and the reader resumes after the line that follows
    assert whole[1] == [(str(log), len(lines) - 3, None)]
    assert len(whole[2]) == 1 and "record skipped" in whole[2][0]


def test_large_csv_split_between_workers_gives_identical_results(tmp_path: Path, all_rules: RuleSet) -> None:
    """A large EvtxECmd CSV export (the fixture's rows over and over, a quote left open near the end) is
    read in parts by several workers (`csv_parts`): same detections, order, event count and
    warnings as one hunter reading it whole."""
    from casefile.hunt.parallel import _groups
    from casefile.ingest import discover

    fixture = (Path(__file__).parent.parent / "data" / "ingest" / "evtxecmd.csv").read_bytes()
    header, *rows = fixture.splitlines(keepends=True)
    body = [row.replace(b"88412,88412,", f"{n},{n},".encode(), 1) for n in range(1, 601) for row in rows]
    body.insert(len(body) - 20, b'1,"never closed,\n')
    log = tmp_path / "export.csv"
    log.write_bytes(header + b"".join(body))
    task_bytes = log.stat().st_size // 10
    parts = [ev.part for group in _groups(discover([log]), task_bytes, split=True) for ev in group]
    assert len(parts) >= 8 and all(part is not None for part in parts)

    split = _hunt_in_parts([log], all_rules, 2, task_bytes)
    whole = _hunt_in_parts([log], all_rules, 1, 64 * 1024 * 1024)
    assert split == whole and len(whole[0]) >= 600
    # the open quote takes the next row into its cell: one record fewer, and a warning
    assert whole[1] == [(str(log), len(body) - 2, None)] and len(whole[2]) == 1, whole[2]


def test_large_compressed_files_are_unpacked_and_split_giving_identical_results(
    shared_data: Path, all_rules: RuleSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large EVTX files in a zip archive and gzip-compressed are unpacked by the parent into the hunt's
    folder and read in parts by several workers: same detections, order, event counts and warnings as one
    hunter reading each compressed file whole, under the names the files have in the evidence. A member
    whose bytes do not match its CRC, and a cut gzip stream, are not split: their worker reads them as
    before and reports the damage. Each copy is removed once its file is done."""
    import gzip
    import zipfile

    from casefile.hunt import parallel
    from casefile.ingest.readers.evtx import CHUNK_SIZE, evtx_parts

    files = sorted(
        f for f in (shared_data / "evtx").rglob("*.evtx")
        if "hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES" not in f.as_posix()
    )
    large = [f for f in files if f.stat().st_size > 20 * CHUNK_SIZE and evtx_parts(f, 2) is not None][:3]
    assert len(large) == 3
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    with zipfile.ZipFile(evidence / "collection.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for n, f in enumerate(large[:2]):
            archive.write(f, f"host{n}/{f.name}")
    (evidence / "security.evtx.gz").write_bytes(gzip.compress(large[2].read_bytes()))
    cut = gzip.compress(large[0].read_bytes())
    (evidence / "cut.evtx.gz").write_bytes(cut[: len(cut) * 2 // 3])
    altered = bytearray(large[1].read_bytes())
    altered[-100] ^= 0xFF  # unused space at the end of the last chunk: a valid EVTX, its CRC-32 not the zip's
    with zipfile.ZipFile(evidence / "altered.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("altered.evtx", bytes(altered))
    data = bytearray((evidence / "altered.zip").read_bytes())
    crc_at = data.index(b"PK\x01\x02") + 16  # the central directory's CRC-32 of the member
    data[crc_at:crc_at + 4] = b"\0\0\0\0"
    local_crc = data.index(b"PK\x03\x04") + 14
    data[local_crc:local_crc + 4] = b"\0\0\0\0"
    (evidence / "altered.zip").write_bytes(bytes(data))
    records = [
        {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": f"ws{n % 7}",
         "Image": "C:\\Windows\\System32\\whoami.exe", "CommandLine": f"whoami /all {n}",
         "ParentImage": "C:\\Windows\\System32\\cmd.exe", "UtcTime": f"2022-07-15 0{n % 10}:00:00.000"}
        for n in range(3000)
    ]
    lines = "\n".join(json.dumps(r) for r in records) + "\n"
    (evidence / "sysmon.ndjson.gz").write_bytes(gzip.compress(lines.encode()))
    (evidence / "sysmon-array.json.gz").write_bytes(gzip.compress(json.dumps(records, indent=1).encode()))

    made: list[str] = []
    removed: list[str] = []
    plain, original = parallel._Copies.plain, parallel._Copies.original

    def counting_plain(self: Any, ev: Any, task_bytes: int) -> Any:
        copy = plain(self, ev, task_bytes)
        if copy is not None:
            made.append(ev.path)
        return copy

    def counting_original(self: Any, ev: Any) -> Any:
        found = original(self, ev)
        if found is not ev:
            assert not Path(ev.on_disk).exists()
            removed.append(found.path)
        return found

    monkeypatch.setattr(parallel._Copies, "plain", counting_plain)
    monkeypatch.setattr(parallel._Copies, "original", counting_original)
    split = _hunt_in_parts([evidence], all_rules, 2, 2 * CHUNK_SIZE)
    names = [
        f"{evidence / 'altered.zip'}!altered.evtx", f"{evidence / 'collection.zip'}!host0/{large[0].name}",
        f"{evidence / 'collection.zip'}!host1/{large[1].name}", str(evidence / "cut.evtx.gz"),
        str(evidence / "security.evtx.gz"), str(evidence / "sysmon-array.json.gz"),
        str(evidence / "sysmon.ndjson.gz"),
    ]
    # (a JSON array is not unpacked: its reader would not split it)
    assert made == removed == [names[1], names[2], names[4], names[6]]
    made.clear()
    whole = _hunt_in_parts([evidence], all_rules, 1, 64 * 1024 * 1024)
    assert made == []
    assert split == whole and len(whole[0]) > 100
    assert [path for path, _n, _part in whole[1]] == names
    assert [n for path, n, _part in whole[1] if "sysmon" in path] == [3000, 3000]
    assert sum("whoami" in key[-1] for key in whole[0]) >= 6000  # both JSON files' records hit
    damage = [w for w in whole[2] if "damaged archive data" in w]  # the CRC-32 and the cut stream: reported
    assert len(damage) == 2 and "Bad CRC-32" in damage[0] and "EOFError" in damage[1]


def test_a_compressed_file_is_copied_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_Copies.plain` gives a plain copy of a compressed file, under its name, or None and no copy left: a
    cut stream, a file larger than the limit, or than half the room left. The copy goes once its file is
    told done."""
    import gzip
    import shutil

    from casefile.hunt.parallel import _Copies
    from casefile.ingest import discover

    data = b'{"a": 1}\n' * 50_000
    packed = gzip.compress(data)
    (tmp_path / "cut.json.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "whole.json.gz").write_bytes(packed)
    folder = tmp_path / "copies"
    folder.mkdir()
    cut, whole = discover([tmp_path / "cut.json.gz", tmp_path / "whole.json.gz"])
    copies = _Copies(str(folder))
    assert copies.plain(cut, 1024) is None and list(folder.iterdir()) == []
    assert copies.plain(whole, len(data)) is None  # no larger than a task (its size from the gzip trailer)
    copy = copies.plain(whole, 1024)
    assert copy is not None and copy.path == whole.path and not copy.gzip and copy.size == len(data)
    assert Path(copy.on_disk).read_bytes() == data
    assert copies.original(copy) == whole and list(folder.iterdir()) == []
    assert copies.original(whole) == whole  # not a copy: itself
    assert _Copies(str(folder), limit=1000).plain(whole, 100) is None and list(folder.iterdir()) == []
    usage = shutil.disk_usage(folder)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2 * len(data) - 1))
    assert copies.plain(whole, 1024) is None and list(folder.iterdir()) == []  # over half the room
    trailer = bytearray(packed)
    trailer[-4:] = (2000).to_bytes(4, "little")  # a stream that says it is smaller than it is
    (tmp_path / "whole.json.gz").write_bytes(bytes(trailer))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=5000))
    assert copies.plain(whole, 100) is None and list(folder.iterdir()) == []  # stopped at half the room
    monkeypatch.undo()
    assert _Copies(str(folder), limit=2000).plain(whole, 100) is None and list(folder.iterdir()) == []


def test_a_task_spills_its_detections_to_files_read_back_in_order(tmp_path: Path) -> None:
    """`Spill` moves a task's detections to a file once it holds enough (a block of lines counts each
    line); `TaskResult.hits` gives the spilled ones first, in order, and deletes their files."""
    from casefile.hunt.output import LineBlock
    from casefile.hunt.parallel import Spill, TaskResult, _add_and_spill

    def block(*ns: int) -> LineBlock:
        return LineBlock(b"".join(f"line {n}\n".encode() for n in ns), ("r",) * len(ns))

    result = TaskResult([], [], [])
    spill = Spill(str(tmp_path), at=3)
    for n in range(8):
        _add_and_spill(result.detections.extend, spill, result, [block(n)])
    assert len(result.spilled) == 2 and result.detections == [block(6), block(7)] and result.held == 2
    spill(result, force=True)
    assert len(result.spilled) == 3 and result.detections == [] and result.held == 0
    result.detections.append(block(8, 9, 10))
    result.held += 3
    spill(result)  # one block of three lines is three detections
    assert len(result.spilled) == 4 and result.detections == []
    assert list(result.hits()) == [block(n) for n in range(8)] + [block(8, 9, 10)]
    assert list(tmp_path.iterdir()) == []
    unspilled = TaskResult([block(0)], [], [], held=1)
    Spill(None, at=1)(unspilled, force=True)  # no folder: they stay
    assert unspilled.spilled == [] and list(unspilled.hits()) == [block(0)]


def test_lines_are_packed_in_blocks_between_detections() -> None:
    """`pack_lines` puts each run of lines into one `LineBlock` (the UTF-8 of the lines, each with its
    newline, and their rules' ids) and leaves Detections where they are; a block survives pickling."""
    from casefile.hunt.output import LineBlock, pack_lines
    from casefile.models import DetectionKind

    rule = RuleInfo(id="c", title="c", level=Level.MEDIUM, status=None, author=None)
    detection = Detection(rule, DetectionKind.SIGMA, None, None, None, None, None, "f")
    hits: list[Any] = [("a", b'{"x":1}'), ("b", '{"y":"\u00e9"}'.encode()), detection, ("a", b"{}")]
    packed = pack_lines(hits)
    assert packed == [
        LineBlock(b'{"x":1}\n{"y":"\xc3\xa9"}\n', ("a", "b")), detection, LineBlock(b"{}\n", ("a",))
    ]
    first = packed[0]
    assert isinstance(first, LineBlock) and first.lines() == ['{"x":1}', '{"y":"\u00e9"}']
    assert pickle.loads(pickle.dumps(packed[0], pickle.HIGHEST_PROTOCOL)) == packed[0]
    assert pack_lines([]) == [] and pack_lines([detection]) == [detection]


@pytest.mark.parametrize("workers", [1, 2])
def test_spilled_detections_come_back_as_they_were_found(
    shared_data: Path, all_rules: RuleSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Tasks that spill every few detections (checked after each batch of 50 records) give the detections,
    order, counts and warnings of tasks that keep them, and the hunt's spill folder is gone at its end."""
    import tempfile

    from casefile.hunt import parallel
    from casefile.ingest import discover

    files = sorted(f for f in (shared_data / "evtx").rglob("*.evtx") if "EVTX-ATTACK-SAMPLES" in f.as_posix())
    files = files[:40]
    spilled: list[int] = []
    original = parallel.Spill.__call__

    def counting(self: Any, result: Any, force: bool = False) -> None:
        before = len(result.spilled)
        original(self, result, force)
        spilled.append(len(result.spilled) - before)

    monkeypatch.setattr(parallel.Spill, "__call__", counting)  # seen in this process (workers=1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def hunt(spill_hits: int) -> tuple[list[Any], list[tuple[str, int]], list[str]]:
        warnings: list[str] = []
        done: list[tuple[str, int]] = []
        found = list(parallel.vector_hits(
            discover(files), list(all_rules.rules), workers=workers, warn=lambda w: warnings.append(str(w)),
            done=lambda ev, n: done.append((ev.path, n)), spill_hits=spill_hits, batch_records=50,
        ))
        return [_key(d) for d in found], done, warnings

    kept = hunt(10**9)
    assert sum(spilled) == 0
    assert hunt(3) == kept and len(kept[0]) > 30
    if workers == 1:
        assert sum(spilled) > 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("casefile-hits-")] == []


def test_json_datasets_identical(shared_data: Path, all_rules: RuleSet) -> None:
    """JSON logs (OTRF's flat shape, zipped) are hunted one event at a time, pre-filtered the same way."""
    zips = sorted((shared_data / "json").rglob("*.zip"), key=lambda p: (p.stat().st_size, p.name))[:4]
    if not zips:
        pytest.skip(f"no JSON datasets under {shared_data / 'json'}")
    assert _compare(zips, all_rules, workers=1) > 0


# --- inline events, one IR node each ----------------------------------------------------------

def _evtx_json(
    event_id: int, channel: str, data: dict[str, Any] | None, record: int = 1, *, ascii: bool = True
) -> str:
    system = {
        "Provider": {"#attributes": {"Name": "Test-Provider"}},
        "EventID": event_id,
        "TimeCreated": {"#attributes": {"SystemTime": "2024-01-02T03:04:05.000000Z"}},
        "EventRecordID": record,
        "Channel": channel,
        "Computer": "HOST1",
    }
    return json.dumps({"Event": {"System": system, "EventData": data}}, ensure_ascii=ascii)


EVENTS: list[dict[str, Any]] = [
    {"Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami /all", "User": "CORP\\Bob",
     "IpAddress": "8.8.8.8"},
    {"Image": "C:\\Tools\\MIMIKATZ.EXE", "CommandLine": "sekurlsa::logonpasswords", "ParentImage": None,
     "IpAddress": "FE80::1%Eth0"},
    {"Image": "C:\\x\\İstanbul.exe", "CommandLine": "ΑΣ run", "LogonType": "3", "Count": 12},
    {"Image": "c:\\a_b%c.exe", "CommandLine": "", "IpAddress": "10.1.2.3", "Flag": True},
    {"Image": "C:\\Windows\\explorer.exe", "Data": ["one", "two"], "CommandLine": "x\ny", "IpAddress": "-"},
    {"Image": "C:\\w\\cmd.exe", "ParentImage": "C:\\w\\cmd.exe", "CommandLine": "0042",
     "IpAddress": ["10.0.0.1", "8.8.4.4"]},
    {"Image": "notepad.exe", "CommandLine": "a`b"},
    # field references: prefixes and substrings of another field, a list, a cased capital sigma
    {"Image": "C:\\Tools\\Run.exe", "ParentImage": "c:\\tools\\run.exe.bak", "CommandLine": "ΑΣΒ",
     "User": "ΑΣ", "IpAddress": "10.0.0.5"},
    {"Image": "C:\\Tools\\x", "ParentImage": "TOOLS", "CommandLine": "ſet x", "User": ["bob", "ALICE"],
     "OriginalFileName": "alice", "IpAddress": "10.0.0.6"},
]

F = "Image"
CONDITIONS: list[ir.Node] = [
    ir.StrMatch(F, "endswith", "\\cmd.exe"),
    ir.StrMatch(F, "eq", "c:\\tools\\mimikatz.exe"),
    ir.StrMatch(F, "startswith", "c:\\windows"),
    ir.StrMatch("CommandLine", "contains", "whoami"),
    ir.StrMatch("CommandLine", "contains", "WHOAMI", cased=True),
    ir.StrMatch("CommandLine", "contains", "whoami", cased=True),
    ir.StrMatch(F, "glob", "c:\\a?b%c.*", parts=("c:\\a", ir.Wildcard.SINGLE, "b%c.", ir.Wildcard.MULTI)),
    ir.StrMatch(F, "contains", "i̇stanbul"),  # Python's lower() of İ is two code points
    ir.StrMatch("CommandLine", "contains", "ας"),  # final sigma
    ir.StrMatch(None, "contains", "logonpasswords"),  # keyword
    ir.StrMatch(None, "contains", "host1"),  # keyword on a System field
    ir.RegexMatch("CommandLine", r"who(ami)?\s+/all"),
    ir.RegexMatch("CommandLine", r"SEKURLSA::", frozenset({"i"})),
    ir.RegexMatch("CommandLine", r"^x$", frozenset({"m"})),
    ir.CidrMatch("IpAddress", "10.0.0.0/8"),
    ir.NumEq("LogonType", 3),
    ir.NumEq("CommandLine", 42),
    ir.NumEq("EventID", 1),
    ir.Compare("Count", "gte", 10),
    ir.BoolEq("Flag", True),
    ir.Exists("ParentImage", True),
    ir.Exists("ParentImage", False),
    ir.IsNull("ParentImage"),
    ir.StrMatch("CommandLine", "eq", ""),
    ir.StrMatch("Data", "eq", "two"),
    ir.FieldRef("Image", "ParentImage"),
    ir.Not(ir.StrMatch(F, "endswith", "\\cmd.exe")),
    ir.And((ir.StrMatch(F, "endswith", ".exe"), ir.Not(ir.StrMatch("CommandLine", "contains", "whoami")))),
    ir.Or((ir.StrMatch("image", "contains", "mimikatz"), ir.StrMatch("Command Line", "contains", "ας"))),
    ir.And((ir.NumEq("EventID", 2), ir.StrMatch(F, "contains", "cmd"))),  # EventID decided: never
    ir.Const(True),
    # negations pushed down to anchors (`vector._negated`): each outcome of a missing, null, list, cased and
    # non-ASCII value
    ir.Not(ir.Or((ir.StrMatch(F, "startswith", "c:\\windows"), ir.StrMatch(F, "endswith", "\\cmd.exe")))),
    ir.Not(ir.StrMatch("ParentImage", "eq", "")),
    ir.Not(ir.StrMatch("Data", "eq", "two")),
    ir.Not(ir.StrMatch("Missing", "contains", "x")),
    ir.Not(ir.And((ir.StrMatch(F, "contains", "windows"), ir.StrMatch("CommandLine", "contains", "whoami")))),
    ir.Not(ir.StrMatch(F, "contains", "i̇stanbul")),
    ir.Not(ir.StrMatch("CommandLine", "contains", "whoami", cased=True)),
    ir.And((ir.StrMatch(F, "endswith", ".exe"), ir.Not(ir.StrMatch(F, "contains", "\\")))),
    ir.Not(ir.Not(ir.StrMatch(F, "endswith", "mimikatz.exe"))),
    # an Or of Ands: every choice of one clause per branch is a guard
    ir.Or((
        ir.And((ir.StrMatch(F, "endswith", "\\cmd.exe"), ir.StrMatch("CommandLine", "contains", "whoami"))),
        ir.And((ir.StrMatch(F, "endswith", "katz.exe"), ir.StrMatch("CommandLine", "contains", "sekurlsa"))),
    )),
    ir.RegexMatch("CommandLine", r"\w`\w"),  # one rare character as the regex's anchor
    # a cased capital sigma: `ΑΣ run` holds `Σ`, but its lower case `ας run` holds no `σ`
    ir.StrMatch("CommandLine", "contains", "Σ", cased=True),
    ir.StrMatch(None, "contains", "Σ", cased=True),
    # a keyword of digits only is found in an integer value (Count 12): integers stay in the keyword scan
    ir.StrMatch(None, "contains", "12"),
    # cidr tests in a negation (Failed Logon From Public IP): the reference's test on the lower-cased value
    ir.Not(ir.Or((
        ir.StrMatch("IpAddress", "contains", "-"),
        ir.CidrMatch("IpAddress", "10.0.0.0/8"),
        ir.CidrMatch("IpAddress", "fe80::/10"),
    ))),
    # field references, pre-filtered by the reference's own test on the lower-cased values (rules 46-51)
    ir.FieldRef("ParentImage", "Image", "startswith"),
    ir.FieldRef("Image", "ParentImage", "contains"),
    ir.FieldRef("ParentImage", "Image", "endswith", cased=True),
    ir.FieldRef("CommandLine", "User", "startswith", cased=True),  # `ΑΣΒ` starts with `ΑΣ`; not once lowered
    ir.FieldRef("OriginalFileName", "User"),
    ir.FieldRef("Image", "ParentImage", cased=True),
    # `(?i)` inside the pattern: `s` matches `ſ` (long s), whose lower case is no `s` (rule 52)
    ir.RegexMatch("CommandLine", "(?i)set.*x"),
]


def _rules() -> list[CompiledRule]:
    out = []
    for i, cond in enumerate(CONDITIONS):
        info = RuleInfo(id=f"rule-{i}", title=f"rule {i}", level=Level.MEDIUM, status=None, author=None)
        route = ir.Route(channels=("Microsoft-Windows-Sysmon/Operational",), event_ids=(1,))
        out.append(CompiledRule(info, (ir.Program(info.id, "test", route, cond),)))
    return out


def test_only_records_a_rule_might_match_build_their_event() -> None:
    """The pre-filter reads a record's fields; its Event (timestamp parsed, coordinates) is made only when
    some rule is left to confirm, and detections carry the same coordinates as the serial path's."""
    info = RuleInfo(id="cmd", title="cmd", level=Level.MEDIUM, status=None, author=None)
    route = ir.Route(channels=("Microsoft-Windows-Sysmon/Operational",), event_ids=(1,))
    cond = ir.StrMatch(F, "endswith", "\\cmd.exe")
    rules = [CompiledRule(info, (ir.Program("cmd", "test", route, cond),))]
    images = ["C:\\w\\cmd.exe", "C:\\nothing\\here.exe", None, "D:\\CMD.EXE", "cmd.exe.txt"]
    sysmon = "Microsoft-Windows-Sysmon/Operational"
    records = [
        RawJson(_evtx_json(1, sysmon, {"Image": image}, record=i + 1), i + 1, "t.evtx")
        for i, image in enumerate(images)
    ]
    made: list[int] = []

    class Counting(EvtxRecords):
        @staticmethod
        def event(fields: dict[str, Any], source_file: str) -> Event:
            made.append(fields["EventRecordID"])
            return EvtxRecords.event(fields, source_file)

    result = BatchHunter(VectorIndex(rules), Counting()).run(records, lambda w: pytest.fail(str(w)))
    assert result.events == len(records)
    assert [_det(d).record_id for d in result.detections] == made == [1, 4]  # not for the records ruled out
    index = RuleIndex(rules)
    ref = [d for r in records for d in match_event(index, _reference_event(r))]
    assert [_key(d) for d in result.detections] == [_key(d) for d in ref]


def test_every_ir_node_matches_the_reference() -> None:
    rules = _rules()
    records = [
        RawJson(_evtx_json(1, "Microsoft-Windows-Sysmon/Operational", data, record=i + 1), i + 1, "t.evtx")
        for i, data in enumerate(EVENTS)
    ]
    hunter = BatchHunter(VectorIndex(rules), EvtxRecords())
    fast = hunter.run(records, lambda w: pytest.fail(str(w))).detections
    index = RuleIndex(rules)
    ref: list[Detection] = []
    for r in records:
        ref.extend(match_event(index, _reference_event(r)))
    assert [_key(d) for d in fast] == [_key(d) for d in ref]
    fired = {d.rule.id for d in ref}
    # the inline cases really exercise both outcomes
    assert {"rule-0", "rule-7", "rule-8", "rule-9", "rule-11", "rule-25"} <= fired
    assert "rule-29" not in fired
    negations = {f"rule-{i}" for i in range(31, 40)}
    assert negations <= fired  # each negation holds on some event...
    per_rule = {rid: sum(d.rule.id == rid for d in ref) for rid in negations}
    assert all(0 < n < len(EVENTS) for rid, n in per_rule.items() if rid != "rule-34"), per_rule  # ...not all
    assert {"rule-40", "rule-41", "rule-42", "rule-43", "rule-44"} <= fired
    public = {d.record_id for d in ref if d.rule.id == "rule-45"}
    # 8.8.8.8 and the two events without IpAddress; not 10.x, fe80::, "-", nor a list holding a 10.x
    assert public == {1, 3, 7}
    refs = {f"rule-{i}": {d.record_id for d in ref if d.rule.id == f"rule-{i}"} for i in range(46, 52)}
    # record 6 has Image == ParentImage; record 2's ParentImage is null, whose string "" every value holds
    assert refs == {
        "rule-46": {6, 8}, "rule-47": {2, 6, 9}, "rule-48": {6}, "rule-49": {8}, "rule-50": {9},
        "rule-51": {6},
    }
    assert {d.record_id for d in ref if d.rule.id == "rule-52"} == {9}


def test_the_memo_is_kept_across_batches_until_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values seen in an earlier batch are not matched against the anchors again while the memo fits in
    `memo_bytes`; once it holds more, it is emptied before the next batch. Detections are the same.
    (List values are matched element by element, not remembered: left out here.)"""
    scalars = [data for data in EVENTS if not any(isinstance(v, list) for v in data.values())]
    records = [
        RawJson(_evtx_json(1, "Microsoft-Windows-Sysmon/Operational", data, record=i + 1), i + 1, "t.evtx")
        for i, data in enumerate(scalars)
    ]
    hunter = BatchHunter(VectorIndex(_rules()), EvtxRecords())
    looked_up = 0
    bits = _FieldAnchors.bits

    def counting(self: _FieldAnchors, v: str) -> int:
        nonlocal looked_up
        looked_up += 1
        return bits(self, v)

    monkeypatch.setattr(_FieldAnchors, "bits", counting)
    runs = []
    for budget in (MEMO_BYTES, MEMO_BYTES, 0):
        hunter.memo_bytes = budget
        looked_up = 0
        found = [_key(d) for d in hunter.run(records, lambda w: pytest.fail(str(w))).detections]
        runs.append((looked_up, found))
    assert runs[0][1] and all(r[1] == runs[0][1] for r in runs)
    first, kept, emptied = (r[0] for r in runs)
    assert first > 0 and kept == 0  # the second batch found every value in the memo
    # what the budget is checked against follows what the memo holds (strings, bits, tables)
    held = sum(
        sys.getsizeof(seen) + sum(sys.getsizeof(v) + sys.getsizeof(b) for v, b in seen.items())
        for state in hunter._states.values() for _name, _key, _fa, seen, _neg in state[0]
    ) + sum(sys.getsizeof(shape) + sys.getsizeof(folded) for shape, folded in hunter._folded.items())
    assert held / 2 < hunter._memo_cost < held * 2
    assert emptied == first  # over a budget of 0, the memo was emptied before the batch and built again


def test_user_data_and_nested_values_match_the_reference() -> None:
    """UserData records and nested EventData values are hunted on their normalised fields."""
    rules = _rules()
    user_data = json.loads(_evtx_json(1, "Microsoft-Windows-Sysmon/Operational", None))
    user_data["Event"]["UserData"] = {"X": {"Image": "C:\\w\\cmd.exe"}}
    nested = _evtx_json(1, "Microsoft-Windows-Sysmon/Operational", {"Image": {"#text": "C:\\w\\cmd.exe"}})
    records = [RawJson(json.dumps(user_data), 1, "u.evtx"), RawJson(nested, 2, "u.evtx")]
    result = BatchHunter(VectorIndex(rules), EvtxRecords()).run(records, lambda w: None)
    index = RuleIndex(rules)
    ref = [d for r in records for d in match_event(index, _reference_event(r))]
    assert [_key(d) for d in result.detections] == [_key(d) for d in ref]
    assert {_det(d).rule.id for d in result.detections} >= {"rule-0"}


def test_guards_are_implied_by_their_conditions() -> None:
    assert guard(ir.FieldRef(F, "ParentImage", "endswith")) == [[(F, "ref-endswith", "ParentImage")]]
    assert guard(ir.FieldRef(F, "ParentImage", cased=True)) == [[(F, "ref-eq", "ParentImage")]]
    assert guard(ir.FieldRef(F, "ParentImage", "startswith", cased=True)) == []  # see rule 49 above
    cond = ir.And((
        ir.Or((ir.StrMatch(F, "endswith", "\\cmd.exe"), ir.StrMatch("OriginalFileName", "eq", "Cmd.Exe"))),
        ir.StrMatch("CommandLine", "contains", "/c"),
        ir.Not(ir.StrMatch("User", "contains", "system")),
    ))
    clauses = guard(cond)
    assert [(F, "endswith", "\\cmd.exe"), ("OriginalFileName", "eq", "cmd.exe")] in clauses
    assert [("CommandLine", "contains", "/c")] in clauses
    assert [("User", NOT, '[["contains", "system"]]')] in clauses  # holds when no test passes
    assert guard(ir.Or((ir.StrMatch(F, "eq", "a"), ir.CidrMatch("Ip", "10.0.0.0/8")))) == []
    # negations of inexact anchors (cased, glob, regex) would drop matches: none
    assert guard(ir.Not(ir.StrMatch(F, "contains", "X", cased=True))) == []
    assert guard(ir.Not(ir.RegexMatch(F, "abc"))) == []
    # not (a or b) on one field is one anchor; not (a and b) is a clause of two
    filters = ir.Or((ir.StrMatch(F, "startswith", "c:\\windows\\"), ir.StrMatch(F, "endswith", ".tmp")))
    negated = '[["endswith", ".tmp"], ["startswith", "c:\\\\windows\\\\"]]'
    assert guard(ir.Not(filters)) == [[(F, NOT, negated)]]
    both = ir.And((ir.StrMatch(F, "contains", "a"), ir.StrMatch("User", "eq", "b")))
    assert guard(ir.Not(both)) == [[(F, NOT, '[["contains", "a"]]'), ("User", NOT, '[["eq", "b"]]')]]
    # cidr tests join a negated anchor (the reference's own test); a network that does not parse does not
    local = ir.Or((ir.StrMatch("Ip", "contains", "-"), ir.CidrMatch("Ip", "10.0.0.0/8")))
    assert guard(ir.Not(local)) == [[("Ip", NOT, '[["cidr", "10.0.0.0/8"], ["contains", "-"]]')]]
    assert guard(ir.Not(ir.CidrMatch("Ip", "not-a-network"))) == []


def test_an_or_of_ands_keeps_every_branch_combination() -> None:
    # Blue Mockingbird's shape: (cmd.exe and 'sc config' ...) or (wmic.exe and ... endswith cor_profiler).
    # The images alone hold on most process creations; a clause from the command lines prunes them.
    cl = "CommandLine"
    cmd = ir.And((ir.StrMatch(F, "endswith", "\\cmd.exe"), ir.StrMatch(cl, "contains", "sc config")))
    wmic = ir.And((ir.StrMatch(F, "endswith", "\\wmic.exe"), ir.StrMatch(cl, "endswith", "cor_profiler")))
    clauses = guard(ir.Or((cmd, wmic)))
    assert len(clauses) == 4
    assert [("CommandLine", "contains", "sc config"), ("CommandLine", "endswith", "cor_profiler")] in clauses
    # a clause another one implies is dropped
    assert guard(ir.Or((cmd, ir.StrMatch(F, "endswith", "\\cmd.exe")))) == [[(F, "endswith", "\\cmd.exe")]]


def test_an_or_takes_the_selective_clause_of_each_branch() -> None:
    # EDR-Freeze's shape: "Image contains \\EDR-Freeze and Image endswith .exe" or an imphash; ".exe" holds on
    # nearly every image, so the branch is represented by its rarer clause.
    img = ir.And((ir.StrMatch(F, "contains", "\\EDR-Freeze"), ir.StrMatch(F, "endswith", ".exe")))
    clauses = guard(ir.Or((img, ir.StrMatch("Hashes", "contains", "IMPHASH=1195F7"))))
    assert clauses[0] == [(F, "contains", "\\edr-freeze"), ("Hashes", "contains", "imphash=1195f7")]
    plain = ir.And((ir.StrMatch(F, "contains", "\\EDR-Freeze"), ir.StrMatch(F, "endswith", "\\edr.exe")))
    assert guard(ir.Or((plain, ir.StrMatch("Hashes", "eq", "x"))))[0][0] == (F, "endswith", "\\edr.exe")


def test_regex_literals_are_required_parts_only() -> None:
    assert regex_literals(r"Invoke-(Mimikatz|Kerberoast)", frozenset()) == ("invoke-",)
    assert regex_literals(r"(a|b)cd?e", frozenset()) == ()  # 'c' alone is too short
    assert regex_literals(r"x?powershell\.exe", frozenset({"i"})) == ("powershell.exe",)
    assert regex_literals(r"(?x) power shell", frozenset()) == ()  # verbose: spaces are markup
    assert regex_literals(r"\w+`(\w+|-)`", frozenset()) == ("`",)  # one character, but a rare one
    # small character classes: one of the strings they spell (Raspberry Robin's dot ending file)
    raspberry = r"\\[a-zA-Z0-9]{1,32}\.[a-zA-Z0-9]{1,6}\.[ \"']{1}"
    assert regex_literals(raspberry, frozenset()) == (". ", '."', ".'")
    assert regex_literals(r"[Cc]md[./]exe", frozenset()) == ("cmd.exe", "cmd/exe")  # lower-cased, once
    assert regex_literals(r"ab[^c]d", frozenset()) == ("ab",)  # a negated class ends a run
    assert regex_literals(r"[abcde]xy", frozenset()) == ("xy",)  # so does too wide a class
    eight = tuple(a + b + c for a in "ab" for b in "cd" for c in "ef")
    assert regex_literals(r"[ab][cd][ef]x", frozenset()) == tuple(t + "x" for t in eight)
    assert regex_literals(r"[ab][cd][ef][gh]", frozenset()) == eight  # 16 would be too many: the run ends


def test_specialise_decides_event_id_and_channel() -> None:
    cond = ir.And(
        (ir.NumEq("EventID", 4688), ir.StrMatch("Channel", "eq", "security"), ir.StrMatch(F, "eq", "x"))
    )
    assert specialise(cond, "Security", 4688) == ir.StrMatch(F, "eq", "x")
    assert specialise(cond, "Security", 4624) == ir.Const(False)
    assert specialise(ir.Not(ir.NumEq("EventID", 1)), "Security", 1) == ir.Const(False)


def test_specialise_skips_only_what_it_cannot_change() -> None:
    """With `fixed_nodes`, specialising gives the same trees, and leaves the fixed subtrees themselves."""
    plain = ir.Or((ir.StrMatch(F, "endswith", "\\a.exe"), ir.StrMatch(F, "endswith", "\\b.exe")))
    folded = ir.Or((ir.StrMatch("User", "eq", "x"), ir.Const(True)))  # no EventID test, but a constant
    conds: list[ir.Node] = [
        ir.And((ir.NumEq("EventID", 4688), plain)),
        ir.And((ir.StrMatch("Channel", "eq", "security"), ir.Not(ir.Or((ir.NumEq("EventID", 1), plain))))),
        ir.And((plain, folded)),
        plain,
    ]
    fixed = fixed_nodes(conds)
    assert id(plain) in fixed and id(folded) not in fixed and id(conds[0]) not in fixed
    for channel, event_id in [("Security", 4688), ("Security", 1), ("System", 7045), (None, None)]:
        for cond in conds:
            assert specialise(cond, channel, event_id, fixed) == specialise(cond, channel, event_id)
    assert specialise(conds[0], "Security", 4688, fixed) is plain
    assert specialise(conds[2], "Security", 1, fixed) is plain  # the constant folded away


# below and above the automaton threshold; gated (keyword anchors) with few literals, with more than one of
# the gate's automata takes, and with too many
@pytest.mark.parametrize(
    ("n_literals", "gated"), [(3, False), (40, False), (40, True), (500, True), (3000, True)]
)
def test_field_anchor_index_finds_exactly_the_anchors_a_value_holds(n_literals: int, gated: bool) -> None:
    import random

    from casefile.hunt.vector import _AUTOMATON_MIN, _GATE_MAX, _GATE_PART, _FieldAnchors

    rng = random.Random(n_literals)
    # few letters: overlapping and repeated literals, one non-ASCII letter, a lone surrogate (which `json`
    # keeps and UTF-8 cannot encode)
    alphabet = "ab\\.xé-\ud800"
    anchors = _FieldAnchors(gated=gated)
    expected: list[tuple[str, str, int]] = []
    for pos in range(n_literals):
        op = rng.choice(["contains", "contains", "eq", "startswith", "endswith"])
        lit = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        anchors.add(op, lit, pos)
        expected.append((op, lit, pos))
    anchors.finish()
    assert (anchors.automaton is not None) == (n_literals > _AUTOMATON_MIN)
    anchors = pickle.loads(pickle.dumps(anchors))  # as a worker would get it
    assert (anchors.gate is not None) == (gated and n_literals < 1000)
    assert (len(anchors.auto_words) > _GATE_MAX) == (n_literals > 1000)  # too many to gate
    if anchors.gate is not None:
        parts = -(-len(anchors.auto_words) // _GATE_PART)
        assert len(anchors.gate.parts) == parts == (1 if n_literals < 100 else 2)
    for _ in range(2000):
        v = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        bits = anchors.positive(v)
        got = {pos for pos in range(n_literals) if bits >> pos & 1}
        want = {
            pos
            for op, lit, pos in expected
            if (op == "contains" and lit in v)
            or (op == "eq" and v == lit)
            or (op == "startswith" and v.startswith(lit))
            or (op == "endswith" and v.endswith(lit))
        }
        assert got >= want, (v, want - got)  # never drop a match
        assert got == want, (v, got - want)  # and no stray hits on this alphabet


def _candidates(plan: Any, owners: set[int]) -> list[int]:
    """The positions whose every clause has a hit, plus the unguarded ones, by a loop over owners."""
    from casefile.hunt.vector import _SLOTS

    got: dict[int, int] = {}
    for o in owners:
        got[o // _SLOTS] = got.get(o // _SLOTS, 0) | (1 << (o % _SLOTS))
    complete = [pos for pos, bits in got.items() if bits.bit_count() == plan.need[pos]]
    return sorted(complete + list(plan.always))


def test_candidate_bit_sets_agree_with_the_owner_sets() -> None:
    import random

    from casefile.hunt.vector import _SLOTS, MAX_CLAUSES, PartitionPlan, _bits

    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 60)
        need = {pos: rng.randint(1, MAX_CLAUSES) for pos in range(n) if rng.random() < 0.8}
        always = tuple(pos for pos in range(n) if pos not in need)
        plan = PartitionPlan(tuple(range(n)), always, need=need)
        owners = {
            pos * _SLOTS + k for pos, clauses in need.items() for k in range(clauses) if rng.random() < 0.6
        }
        assert list(plan.candidates_bits(_bits(owners))) == _candidates(plan, owners)
        assert list(plan.candidates_bits(0)) == list(always)


def test_negated_anchors_hold_exactly_when_no_test_passes() -> None:
    import random

    from casefile.hunt.vector import _FieldAnchors

    rng = random.Random(11)
    alphabet = "ab\\.x"
    ops = ["contains", "eq", "startswith", "endswith"]
    for _ in range(50):
        anchors = _FieldAnchors()
        # owner -> its negated anchors, each a list of (op, literal) tests; some owners have two anchors
        expected: dict[int, list[list[tuple[str, str]]]] = {}
        for owner in range(rng.randint(1, 30)):
            for _anchor in range(rng.choice([1, 1, 2])):
                tests = sorted({
                    (rng.choice(ops), "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))))
                    for _ in range(rng.randint(1, 3))
                })
                anchors.add(NOT, json.dumps(tests), owner)
                expected.setdefault(owner, []).append(tests)
        anchors.finish()
        for _ in range(200):
            v = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            passes = {
                "contains": v.__contains__, "eq": v.__eq__,
                "startswith": v.startswith, "endswith": v.endswith,
            }
            want = {
                owner for owner, group in expected.items()
                if any(not any(passes[op](lit) for op, lit in tests) for tests in group)
            }
            got = anchors.negated_bits(v)
            assert got == sum(1 << o for o in want), v
        assert anchors.neg_bits == sum(1 << o for o in expected)  # a missing field: every negation holds


def test_joined_values_lower_case_as_each_value_does() -> None:
    """The keyword scan lower-cases the joined values at once unless a capital sigma is about: for every
    other character Python's lower() must not depend on the neighbours, the separator included."""
    from casefile.hunt.vector import _SEP, _SIGMA

    bad = []
    for c in range(1, 0x110000):
        ch = chr(c)
        if 0xD800 <= c <= 0xDFFF or ch == _SIGMA:
            continue
        parts = ["A" + ch, ch + "b", ch]
        if _SEP.join(parts).lower() != _SEP.join(p.lower() for p in parts):
            bad.append(ch)
    assert bad == []
    parts = ["ΑΣ", "Σα"]  # the one context-dependent letter: final at the end of a value, not before it
    assert _SEP.join(parts).lower() == _SEP.join(p.lower() for p in parts)  # the separator ends a word too


def _compiled_reader() -> bool:
    from casefile.hunt import parallel

    return parallel._fast_fields is not None


# without and with enough decoy keywords for an automaton, and so a gate (`_FieldAnchors.gated`); records
# written in UTF-8 or with their non-ASCII characters escaped; keywords all ASCII or not
@pytest.mark.parametrize("decoys", [0, 12])
@pytest.mark.parametrize("utf8", [False, True])
@pytest.mark.parametrize("word", ["o'x", "ümlaut"])
def test_keywords_are_matched_in_each_value_as_the_reference_lower_cases_it(
    decoys: int, utf8: bool, word: str
) -> None:
    kw_info = RuleInfo(id="kw", title="kw", level=Level.MEDIUM, status=None, author=None)
    img_info = RuleInfo(id="img", title="img", level=Level.MEDIUM, status=None, author=None)
    route = ir.Route(channels=("Microsoft-Windows-Sysmon/Operational",), event_ids=(1,))
    keywords = ["mimi.katz", word, *(f"decoy{i}::" for i in range(decoys))]
    cond = ir.Or(tuple(ir.StrMatch(None, "contains", k) for k in keywords))
    img = ir.StrMatch(F, "endswith", "\\cmd.exe")
    rules = [
        CompiledRule(kw_info, (ir.Program("kw", "test", route, cond),)),
        CompiledRule(img_info, (ir.Program("img", "test", route, img),)),
    ]
    # a Kelvin sign lower-cases to an ASCII k, a dotted capital I to an i and a dot; a lone surrogate has no
    # UTF-8 form for the gate
    values = [
        "MIMI.KATZ here", "mimiXkatz", "O'X ÜMLAUT", "İ mimi.katz", "plain", "ΑΣ mimi.katz", "mimi.\u212aatz",
        "mimi.katz \ud800", "Ünïcode plain", "ÜMLAUT",
    ]
    records = [
        RawJson(_evtx_json(1, "Microsoft-Windows-Sysmon/Operational", {"Image": "c:\\cmd.exe", "Cmd": v}, i,
                           ascii=not utf8), i, "k.evtx")
        for i, v in enumerate(values)
    ]
    vindex = VectorIndex(rules)
    raw = vindex.plan("Microsoft-Windows-Sysmon/Operational", 1).raw
    assert raw is not None and (raw.gate is not None) == (decoys > 0) and raw.decides == (decoys > 0)
    assert raw.decides_utf8 == (decoys > 0 and word.isascii())
    # the compiled reader makes the keyword text the gate reads first of the records it reads (not those with
    # `\u` escapes, which json.dumps writes for non-ASCII characters unless `utf8`, nor the lone surrogate's),
    # but those holding a character that lower-cases into ASCII
    texts = []
    for r in records:  # (a keyword text belongs to the record just read)
        fields = EvtxRecords.fields(r, lambda w: pytest.fail(str(w)))
        texts.append(EvtxRecords.keyword_text(fields) if fields is not None else None)
    with_text = [0, 1, 4] + ([2, 5, 8, 9] if utf8 else [])
    assert [i for i, t in enumerate(texts) if t is not None] == (
        sorted(with_text) if _compiled_reader() else []
    )
    hunter = BatchHunter(vindex, EvtxRecords())
    fast = hunter.run(records, lambda w: pytest.fail(str(w))).detections
    index = RuleIndex(rules)
    ref = [d for r in records for d in match_event(index, _reference_event(r))]
    assert [_key(d) for d in fast] == [_key(d) for d in ref]
    # every value but the near miss and the plain ones, and the one word the keywords do not hold
    hits = {d.record_id for d in ref if d.rule.id == "kw"}
    assert hits == {0, 2, 3, 5, 6, 7} | ({9} if word == "ümlaut" else set())


RULES_WITH_CORRELATION = """
title: Failed logon
id: f0000000-0000-4000-8000-0000000000f1
name: failed_logon
level: low
logsource: {product: windows, service: security}
detection:
    sel: {EventID: 4625}
    condition: sel
---
title: Successful logon
id: f0000000-0000-4000-8000-0000000000f2
level: low
logsource: {product: windows, service: security}
detection:
    sel: {EventID: 4624}
    condition: sel
---
title: Many failed logons for one account
id: f0000000-0000-4000-8000-0000000000f3
level: high
correlation:
    type: event_count
    rules: [failed_logon]
    group-by: [TargetUserName]
    timespan: 5m
    condition: {gte: 3}
    generate: true
"""


def test_event_fields_are_left_out_only_where_nothing_reads_them(tmp_path: Path) -> None:
    """`iter_hunt(event_fields=False)` (what `casefile hunt` asks for) gives the same records, and keeps the
    fields of the detections a correlation groups."""
    from casefile.hunt import iter_hunt

    (tmp_path / "rules.yml").write_text(RULES_WITH_CORRELATION, encoding="utf-8")
    ruleset = load_rules([tmp_path / "rules.yml"])
    evidence = _logon_evidence(tmp_path)
    full = list(iter_hunt([evidence], ruleset, workers=1))
    lean = list(iter_hunt([evidence], ruleset, workers=1, event_fields=False))
    assert [d.to_record() for d in lean] == [d.to_record() for d in full]
    assert any(d.rule.title == "Many failed logons for one account" for d in lean)  # grouped on a field
    for d in lean:
        if d.rule.title == "Failed logon":
            assert d.fields["TargetUserName"] in ("alice", "bob")  # a correlation reads them
        elif d.rule.title == "Successful logon":
            assert dict(d.fields) == {}
    assert next(d for d in full if d.rule.title == "Successful logon").fields["TargetUserName"] == "alice"


def _logon_evidence(tmp_path: Path) -> Path:
    lines = []
    for i, (eid, user) in enumerate([(4625, "alice")] * 3 + [(4625, "bob"), (4624, "alice")]):
        record = json.loads(_evtx_json(eid, "Security", {"TargetUserName": user}, record=i + 1))
        system = record["Event"]["System"]
        system["TimeCreated"]["#attributes"]["SystemTime"] = f"2024-01-02T03:04:0{i}.000000Z"
        lines.append(json.dumps(record))
    evidence = tmp_path / "security.jsonl"
    evidence.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return evidence


@pytest.mark.parametrize("generate", ["true", "false"])
@pytest.mark.parametrize("min_level", [Level.INFORMATIONAL, Level.HIGH])
@pytest.mark.parametrize("workers", [1, 2])
def test_hunt_lines_are_the_lines_of_the_detections(
    tmp_path: Path, generate: str, min_level: Level, workers: int
) -> None:
    """`iter_hunt_lines` (what `casefile hunt --format jsonl` writes) gives `write_jsonl`'s lines of
    `iter_hunt`'s detections and the same counts, with a correlation that reads (and, with `generate:
    false`, suppresses) one rule, below or at the lowest level hunted."""
    from casefile.hunt import HuntStats, iter_hunt, iter_hunt_lines
    from casefile.hunt.output import write_jsonl

    rules = RULES_WITH_CORRELATION.replace("generate: true", f"generate: {generate}")
    (tmp_path / "rules.yml").write_text(rules, encoding="utf-8")
    ruleset = load_rules([tmp_path / "rules.yml"])
    evidence = _logon_evidence(tmp_path)
    expected, got = HuntStats(), HuntStats()
    out = io.StringIO()
    write_jsonl(iter_hunt([evidence], ruleset, workers=workers, min_level=min_level, stats=expected), out)
    lines = list(iter_hunt_lines([evidence], ruleset, workers=workers, min_level=min_level, stats=got))
    assert lines == out.getvalue().splitlines()
    assert got == expected
    titles = [json.loads(line)["rule_title"] for line in lines]
    assert "Many failed logons for one account" in titles
    assert ("Failed logon" in titles) == (generate == "true" and min_level == Level.INFORMATIONAL)
    assert ("Successful logon" in titles) == (min_level == Level.INFORMATIONAL)


def test_workers_send_lines_but_for_the_rules_correlations_read(tmp_path: Path) -> None:
    """With `lines_except`, the fast path delivers the other rules' detections as their JSONL lines, each run
    of them one block that names each line's rule."""
    from casefile.hunt.correlation import input_rule_ids
    from casefile.hunt.output import JsonlLines, LineBlock
    from casefile.hunt.parallel import vector_hits
    from casefile.ingest import discover

    (tmp_path / "rules.yml").write_text(RULES_WITH_CORRELATION, encoding="utf-8")
    ruleset = load_rules([tmp_path / "rules.yml"])
    evidence = discover([_logon_evidence(tmp_path)])
    needed = input_rule_ids(ruleset.correlations)

    def hits(lines_except: frozenset[str] | None) -> list[Any]:
        return list(vector_hits(
            evidence, ruleset.rules, workers=1, warn=lambda w: pytest.fail(str(w)), done=lambda ev, n: None,
            fields_of=needed, lines_except=lines_except,
        ))

    objects, packed = hits(None), hits(needed)
    mixed: list[Any] = []  # each block's lines as (rule id, line)
    for hit in packed:
        mixed.extend(zip(hit.rule_ids, hit.lines(), strict=True) if isinstance(hit, LineBlock) else [hit])
    assert all(isinstance(d, Detection) for d in objects) and len(objects) == len(mixed) == 5
    blocks = [isinstance(hit, LineBlock) for hit in packed]
    assert any(blocks) and not any(a and b for a, b in itertools.pairwise(blocks))  # a run: one block
    encode = JsonlLines().line
    for d, hit in zip(objects, mixed, strict=True):
        if d.rule.id in needed:
            assert hit == d and hit.fields["TargetUserName"] in ("alice", "bob")
        else:
            assert hit == (d.rule.id, encode(d))


def test_list_values_are_remembered_only_where_equal_lists_have_equal_string_forms() -> None:
    """`_list_bits` remembers a list value's anchor hits by the tuple of its elements when they are strings
    or None: `[1]`, `[true]` and `[1.0]` are equal tuples with other string forms, so they are not
    remembered, and each record's detections stay the reference's."""
    route = ir.Route(channels=("System",), event_ids=(7045,))
    tests: list[tuple[ir.StrOp, str]] = [
        ("contains", "true"), ("eq", "1"), ("endswith", ".0"), ("startswith", "svc")
    ]
    rules = [
        CompiledRule(
            RuleInfo(id=f"r{i}", title=f"r{i}", level=Level.MEDIUM, status=None, author=None),
            (ir.Program(f"r{i}", "test", route, ir.StrMatch("Data", op, lit)),),
        )
        for i, (op, lit) in enumerate(tests)
    ]
    lists: list[list[Any]] = [
        [1], [True], [1.0], ["1"], ["true"], [None], [], ["SvcHost", None], ["x", "y.0"], [1, "a"],
        [True, "a"],
    ]
    records = [
        RawJson(_evtx_json(7045, "System", {"Data": v}, i), i, "l.evtx")
        for i, v in enumerate(lists * 2)  # the second time round, remembered where they may be
    ]
    hunter = BatchHunter(VectorIndex(rules), EvtxRecords())
    fast = hunter.run(records, lambda w: pytest.fail(str(w))).detections
    index = RuleIndex(rules)
    ref = [d for r in records for d in match_event(index, _reference_event(r))]
    assert [_key(d) for d in fast] == [_key(d) for d in ref]
    assert {d.rule.id for d in ref} == {"r0", "r1", "r2", "r3"}
    remembered = {k for state in hunter._states.values() for _, _, _, seen, _ in state[0] for k in seen}
    assert remembered == {tuple(v) for v in lists if all(x is None or type(x) is str for x in v)}


def test_layouts_that_differ_in_case_keep_their_own_folded_names() -> None:
    """Field names are matched without case where the exact name is missing, through a table of the
    record's folded names kept per layout (`BatchHunter._view`): layouts whose names differ only in case (or
    order) must not share one."""
    route = ir.Route(channels=("Microsoft-Windows-Sysmon/Operational",), event_ids=(1,))
    info = RuleInfo(id="cmd", title="cmd", level=Level.MEDIUM, status=None, author=None)
    rules = [CompiledRule(info, (ir.Program("cmd", "test", route, ir.StrMatch(F, "endswith", "\\cmd.exe")),))]
    layouts: list[dict[str, Any]] = [
        {"Image": "c:\\cmd.exe"}, {"image": "c:\\cmd.exe"}, {"IMAGE": "c:\\x.exe", "image": "c:\\cmd.exe"},
        {"image": "c:\\cmd.exe", "IMAGE": "c:\\x.exe"}, {"Other": "c:\\cmd.exe"},
    ]
    records = [
        RawJson(_evtx_json(1, "Microsoft-Windows-Sysmon/Operational", data, i), i, "c.evtx")
        for i, data in enumerate(layouts * 3)
    ]
    hunter = BatchHunter(VectorIndex(rules), EvtxRecords())
    fast = hunter.run(records, lambda w: pytest.fail(str(w))).detections
    index = RuleIndex(rules)
    ref = [d for r in records for d in match_event(index, _reference_event(r))]
    assert [_key(d) for d in fast] == [_key(d) for d in ref]
    ids = [d.record_id for d in ref]
    assert {i % len(layouts) for i in ids if i is not None} == {0, 1, 3} and None not in ids
    if _compiled_reader():  # the tables are kept by the reader's layout keys
        assert len(hunter._folded) == len(layouts) and all(type(k) is str for k in hunter._folded)
