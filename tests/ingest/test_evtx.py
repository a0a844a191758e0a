"""EVTX: the shared corpus reads cleanly; damaged copies of it give exact warnings and keep records."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from casefile.ingest import discover, read_events, read_records
from casefile.ingest.readers import evtx as evtx_reader
from casefile.ingest.readers.evtx import CHUNK_SIZE, HEADER_SIZE, EvtxReader
from casefile.models import Event, IngestWarning

DATA = Path(__file__).parent.parent / "data" / "ingest"
# 869 records in 10 chunks (record numbers 1..98, 99..197, 198..296, ...; their System
# EventRecordID runs from 437472), 1 118 208 bytes.
SAMPLE = Path("evtx") / "EVTX-ATTACK-SAMPLES" / "Lateral Movement" / "LM_5145_Remote_FileCopy.evtx"


def _read(*paths: Path) -> tuple[list[Event], list[IngestWarning]]:
    warnings: list[IngestWarning] = []
    return list(read_events(list(paths), on_warning=warnings.append)), warnings


@pytest.fixture()
def sample(shared_data: Path) -> bytes:
    return (shared_data / SAMPLE).read_bytes()


def _header(chunks: int) -> bytes:
    """A hand-built EVTX file header (version 3.1) declaring `chunks` chunks, with a valid CRC."""
    head = bytearray(HEADER_SIZE)
    last = max(chunks - 1, 0)
    struct.pack_into("<8sQQQIHHHH", head, 0, b"ElfFile\x00", 0, last, 1, 128, 1, 3, 4096, chunks)
    struct.pack_into("<I", head, 124, zlib.crc32(bytes(head[:120])))
    return bytes(head)


def test_garbage_named_evtx() -> None:
    events, warnings = _read(DATA / "nested" / "not_really.evtx")
    assert events == []
    assert [w.reason for w in warnings] == [
        "not an EVTX file: expected magic b'ElfFile\\x00', found b'This is '"
    ]


def test_hand_made_damaged_headers(tmp_path: Path) -> None:
    short = tmp_path / "short.evtx"
    short.write_bytes(b"ElfFile\x00" + bytes(92))
    empty = tmp_path / "empty.evtx"
    empty.write_bytes(_header(3))
    tampered = tmp_path / "tampered.evtx"
    tampered.write_bytes(_header(0)[:60] + b"\x01" + _header(0)[61:])
    events, warnings = _read(short, empty, tampered)
    assert events == []
    assert [str(w) for w in warnings] == [
        f"{short}: truncated EVTX: only 100 bytes, the file header alone is 4096",
        f"{empty}: truncated EVTX: header declares 3 chunks, file holds 0; records in the missing "
        "chunks are lost",
        f"{tampered}: file header checksum mismatch: header fields may be damaged",
    ]


def test_sniff() -> None:
    reader = EvtxReader()
    assert reader.sniff(b"ElfFile\x00rest", "x.bin") == 100
    assert reader.sniff(b"MZ", "Security.evtx") == 50
    assert reader.sniff(b"MZ", "x.bin") == 0


@pytest.mark.shared
def test_truncated_copy_recovers_records_of_the_partial_chunk(sample: bytes, tmp_path: Path) -> None:
    cut = tmp_path / "cut.evtx"
    cut.write_bytes(sample[: HEADER_SIZE + 2 * CHUNK_SIZE + 30_000])
    events, warnings = _read(cut)
    # 197 records in the two whole chunks, 43 more written whole before the cut in the third.
    assert len(events) == 240
    assert [str(w) for w in warnings] == [
        f"{cut}: truncated EVTX: file ends 30000 bytes into chunk 2 (chunks are 65536 bytes; header "
        "declares 10); recovered 43 records from the partial chunk, record 241 was cut off, later "
        "records are lost",
    ]
    whole = tmp_path / "whole.evtx"
    whole.write_bytes(sample)
    intact, _ = _read(whole)
    assert [e.record_id for e in events] == [e.record_id for e in intact[:240]]
    assert [e.fields for e in events[-43:]] == [e.fields for e in intact[197:240]]


@pytest.mark.shared
@pytest.mark.parametrize("cut", [1, 511, 512, 513, 4_321, 40_000, 65_535])
def test_any_cut_recovers_only_whole_records(sample: bytes, tmp_path: Path, cut: int) -> None:
    whole = tmp_path / "whole.evtx"
    whole.write_bytes(sample)
    intact, _ = _read(whole)
    path = tmp_path / "cut.evtx"
    path.write_bytes(sample[: HEADER_SIZE + 5 * CHUNK_SIZE + cut])
    events, warnings = _read(path)
    assert len(warnings) == 1 and warnings[0].reason.startswith(
        f"truncated EVTX: file ends {cut} bytes into chunk 5"
    )
    assert len(events) >= 5 * 98 - 50  # the five whole chunks at least
    assert [e.fields for e in events] == [e.fields for e in intact[: len(events)]]


@pytest.mark.shared
def test_truncated_to_header(sample: bytes, tmp_path: Path) -> None:
    cut = tmp_path / "header-only.evtx"
    cut.write_bytes(sample[:HEADER_SIZE])
    events, warnings = _read(cut)
    assert events == []
    assert [w.reason for w in warnings] == [
        "truncated EVTX: header declares 10 chunks, file holds 0; records in the missing chunks are lost"
    ]


def _records_altered(data: bytearray) -> None:
    start = HEADER_SIZE + CHUNK_SIZE + 20_000
    data[start:start + 16] = b"A" * 16  # chunk 1, inside a string value: still parses


def _header_altered_and_unused_space_written(data: bytearray) -> None:
    chunk = HEADER_SIZE + CHUNK_SIZE
    data[chunk + 100] ^= 0xFF  # chunk 1: a reserved byte of its header
    chunk += CHUNK_SIZE
    free = struct.unpack_from("<I", data, chunk + 48)[0]
    assert free < CHUNK_SIZE - 8
    data[chunk + free:chunk + free + 8] = b"leftover"  # chunk 2: its unused space, which no checksum covers


@pytest.mark.shared
@pytest.mark.parametrize(
    ("change", "part"),
    [(_records_altered, "records"), (_header_altered_and_unused_space_written, "chunk header")],
)
def test_altered_chunks_are_read_as_found_and_reported(
    sample: bytes, tmp_path: Path, change: Callable[[bytearray], None], part: str
) -> None:
    """A chunk header's checksum covers its first 512 bytes but itself, the records' checksum the bytes up to
    the chunk's free space offset: a changed chunk is reported and read as found; what lies in the unused
    space after the last record is not checked (Windows leaves whatever was there)."""
    data = bytearray(sample)
    change(data)
    altered = tmp_path / "altered.evtx"
    altered.write_bytes(bytes(data))
    events, warnings = _read(altered)
    assert len(events) == 869
    assert [str(w) for w in warnings] == [
        f"{altered}: chunk 1 checksum mismatch ({part}): records 99..197 may be damaged or altered; "
        "read as found",
    ]


@pytest.mark.shared
def test_unparseable_record_is_skipped(sample: bytes, tmp_path: Path) -> None:
    data = bytearray(sample)
    start = HEADER_SIZE + CHUNK_SIZE + 60_000
    data[start:start + 16] = b"A" * 16
    bad = tmp_path / "bad-record.evtx"
    bad.write_bytes(bytes(data))
    events, warnings = _read(bad)
    assert len(events) == 868
    assert 437472 + 188 not in {e.record_id for e in events}  # the 189th record
    assert [(w.record, w.reason) for w in warnings] == [
        (None, "chunk 1 checksum mismatch (records): records 99..197 may be damaged or altered; "
               "read as found"),
        (189, "EVTX parse error, records skipped: Failed to parse record number 189: An error occurred "
              "while trying to deserialize evtx stream.: Offset 0x0000ea64: Tried to read an invalid "
              "byte `0x41` as binxml value variant"),
    ]


#: Reads one EVTX file in a fresh interpreter with a short stop for damaged chunks, and prints its events'
#: record ids and its warnings as JSON: run under a time limit, since an endless loop of the parser in the
#: test's own process could not be stopped.
_READ_APART = textwrap.dedent("""
    import json, sys
    from casefile.ingest import read_events
    from casefile.ingest.readers import evtx
    evtx.CHUNK_SECONDS = 2.0
    warnings = []
    ids = [e.record_id for e in read_events([sys.argv[1]], on_warning=warnings.append)]
    print(json.dumps([ids, [[w.record, w.reason] for w in warnings]]))
""")


@pytest.mark.shared
def test_damaged_chunk_that_stalls_the_parser_is_stopped(stalling_evtx: bytearray, tmp_path: Path) -> None:
    """One byte in chunk 1 (found by fuzzing) sends the parser into an endless loop that holds the GIL:
    the damaged chunk is parsed in a child process, which is stopped, and the rest of the file is read."""
    bad = tmp_path / "stalls.evtx"
    bad.write_bytes(bytes(stalling_evtx))
    done = subprocess.run(
        [sys.executable, "-c", _READ_APART, str(bad)], capture_output=True, text=True, timeout=300, check=True
    )
    ids, warnings = json.loads(done.stdout)
    others = [437471 + n for n in range(1, 870) if not 99 <= n <= 197]
    assert [i for i in ids if not 437471 + 99 <= i <= 437471 + 197] == others
    assert warnings[0] == [
        None, "chunk 1 checksum mismatch (records): records 99..197 may be damaged or altered; read as found"
    ]
    if len(ids) == len(others):  # evtx 0.14 loops on this chunk
        assert warnings[1:] == [[99, "EVTX parse error, records skipped: parser stopped on damaged chunk 1 "
                                     "(no answer within 2 s) after 0 of its records"]]
    else:  # a parser that no longer loops gives the chunk's records in their place
        assert ids == sorted(ids) and not any("stopped" in reason for _, reason in warnings)


def _variants(sample: bytes) -> dict[str, bytes]:
    """Damaged copies of the sample, one per kind of damage the reader reports."""
    def changed(offset: int, new: bytes) -> bytes:
        data = bytearray(sample)
        data[offset:offset + len(new)] = new
        return bytes(data)

    chunk_1 = HEADER_SIZE + CHUNK_SIZE
    return {
        "intact": sample,
        "altered string": changed(chunk_1 + 20_000, b"A" * 16),
        "bad record": changed(chunk_1 + 60_000, b"A" * 16),
        "destroyed chunk header": changed(chunk_1, b"XXXXXXXX"),
        "zeroed chunk": changed(chunk_1 + CHUNK_SIZE, bytes(CHUNK_SIZE)),
        "damaged file header": changed(16, b"\xff" * 8),
        "cut in a record": sample[:HEADER_SIZE + 2 * CHUNK_SIZE + 30_000],
        "cut in a chunk header": sample[:HEADER_SIZE + 3 * CHUNK_SIZE + 100],
        "cut after a chunk": sample[:HEADER_SIZE + 4 * CHUNK_SIZE],
    }


@pytest.mark.shared
def test_reading_apart_gives_what_reading_here_gives(sample: bytes, tmp_path: Path) -> None:
    """Every chunk parsed in a child process (`isolate`, the default) gives the records and warnings of
    the parser run in this process (what a hunt worker does), damage included."""
    here, apart = EvtxReader(isolate=False), EvtxReader()
    try:
        for name, data in _variants(sample).items():
            path = tmp_path / f"{name}.evtx"
            path.write_bytes(data)
            (evidence,) = discover([path])
            got = []
            for reader in (here, apart):
                warnings: list[IngestWarning] = []
                records = [(r.index, r.data) for r in read_records(evidence, warnings.append, reader=reader)]
                got.append((records, [(w.record, w.reason) for w in warnings]))
            assert got[0] == got[1], name
            assert len(got[0][0]) >= 240, name  # every copy keeps two chunks at least
        # the same path read twice, another file in its place the second time: read anew (the child opens
        # a file again for each read)
        path = tmp_path / "replaced.evtx"
        path.write_bytes(sample)
        (evidence,) = discover([path])
        assert len(list(read_records(evidence, lambda w: None, reader=apart))) == 869
        (tmp_path / "new.evtx").write_bytes(_variants(sample)["destroyed chunk header"])
        (tmp_path / "new.evtx").replace(path)
        (evidence,) = discover([path])
        assert len(list(read_records(evidence, lambda w: None, reader=apart))) == 869 - 99
        # one child served every file, and stays for the next until closed
        assert len(apart._spare) == 1
        child = apart._spare[0]._child
        assert child is not None
        apart.close()
        assert child.poll() is not None and apart._spare == []
    finally:
        apart.close()


@pytest.fixture()
def parser_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chunk left to the parser (no `_binxml` writer): the child's machinery, which serves the chunks
    the writer does not write, meets every chunk of these samples."""
    monkeypatch.setattr(evtx_reader, "_chunk_records", None)


@pytest.mark.shared
@pytest.mark.usefixtures("parser_only")
def test_first_chunk_of_the_next_file_is_asked_ahead(sample: bytes, tmp_path: Path) -> None:
    """A caller that names the file it reads next (`following`) has its first chunk parsed meanwhile, by
    the same child; a wrong guess costs a new child, never a wrong record."""
    whole, cut, header_only = tmp_path / "whole.evtx", tmp_path / "cut.evtx", tmp_path / "header.evtx"
    whole.write_bytes(sample)
    cut.write_bytes(sample[:HEADER_SIZE + CHUNK_SIZE + 30_000])  # one whole chunk and a cut one
    header_only.write_bytes(sample[:HEADER_SIZE + 1_000])  # no whole chunk
    here, apart = EvtxReader(isolate=False), EvtxReader()

    def read(reader: EvtxReader, path: Path, then: Path | None = None) -> tuple[list[Any], list[str | None]]:
        (evidence,) = discover([path])
        following = discover([then])[0] if then is not None else None
        warnings: list[IngestWarning] = []
        records = [
            (r.index, r.data)
            for r in read_records(evidence, warnings.append, reader=reader, following=following)
        ]
        return records, [w.reason for w in warnings]

    def pid() -> int:
        assert len(apart._spare) == 1 and apart._spare[0]._child is not None
        return apart._spare[0]._child.pid

    try:
        expected = {p: read(here, p) for p in (whole, cut, header_only)}
        assert read(apart, whole, then=cut) == expected[whole]
        first = pid()
        assert apart._spare[0].ahead == str(cut)
        assert read(apart, cut, then=whole) == expected[cut]  # chunk 0 was asked ahead; not past a cut chunk
        assert pid() == first and apart._spare[0].ahead is None
        assert read(apart, whole, then=cut) == expected[whole]
        assert pid() == first
        assert read(apart, whole, then=header_only) == expected[whole]  # a wrong guess: a new child
        second = pid()
        assert second != first and apart._spare[0].ahead == str(header_only)
        assert read(apart, header_only) == expected[header_only]  # no whole chunk: a new child
        assert pid() != second and apart._spare[0].ahead is None
    finally:
        apart.close()


@pytest.mark.shared
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.usefixtures("parser_only")
def test_one_reader_shared_by_threads(shared_data: Path) -> None:
    """Threads reading through one reader each get a child of their own; a child started by a thread ends
    with that thread (its parent-death signal), and the reader does not reuse it afterwards."""
    files = sorted((shared_data / "evtx" / "EVTX-ATTACK-SAMPLES").rglob("*.evtx"))[:40]
    evidence = discover(files)
    here, apart = EvtxReader(isolate=False), EvtxReader()

    def read_all(reader: EvtxReader, part: list[Any], out: dict[str, Any]) -> None:
        for ev in part:
            out[ev.path] = [(r.index, r.data) for r in read_records(ev, lambda w: None, reader=reader)]

    expected: dict[str, Any] = {}
    read_all(here, evidence, expected)
    got: dict[str, Any] = {}
    threads = [threading.Thread(target=read_all, args=(apart, evidence[i::4], got)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == expected
        assert 1 <= len(apart._spare) <= 4  # a thread between two files may take another's child
        children = [c._child for c in apart._spare if c._child is not None]
        for child in children:  # ended with their threads
            child.wait(timeout=10)
        again: dict[str, Any] = {}
        read_all(apart, evidence, again)
        assert again == expected and len(apart._spare) == 1
    finally:
        apart.close()


@pytest.mark.shared
@pytest.mark.usefixtures("parser_only")
def test_a_child_that_cannot_parse_says_why(
    sample: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that cannot start its work (here: the parser missing) ends each warning with the last line
    it wrote; after two stops the rest of the file is named, not tried."""
    path = tmp_path / "sample.evtx"
    path.write_bytes(sample)
    (evidence,) = discover([path])
    monkeypatch.setattr(evtx_reader, "_CHILD", (
        "import sys\nsys.stdin.buffer.read(21)\n"
        "sys.stderr.write('Traceback ...\\nModuleNotFoundError: No module named evtx\\n')\nsys.exit(1)\n"
    ))
    reader = EvtxReader()
    warnings: list[IngestWarning] = []
    try:
        assert list(read_records(evidence, warnings.append, reader=reader)) == []
    finally:
        reader.close()
    why = "its process ended, exit status 1: ModuleNotFoundError: No module named evtx"
    full_chunks = (len(sample) - HEADER_SIZE) // CHUNK_SIZE
    assert [(w.record, w.reason) for w in warnings] == [
        (1, f"EVTX parse error, records skipped: parser stopped on chunk 0 ({why}) after 0 of its records"),
        (1, f"EVTX parse error, records skipped: parser stopped on chunk 1 ({why}) after 0 of its records"),
        (1, f"EVTX parse error, records skipped: chunks 2..{full_chunks - 1} not parsed: the parser already "
            "had to be stopped 2 times on this file"),
    ]


@pytest.mark.shared
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="open files are listed in /proc")
@pytest.mark.usefixtures("parser_only")
def test_the_child_lets_a_read_file_go(sample: bytes, tmp_path: Path) -> None:
    """A compressed EVTX is read from a temporary copy: once read, the child holds it open no longer (a
    deleted file's space is freed only when nothing holds it)."""
    (tmp_path / "c.evtx.gz").write_bytes(gzip.compress(sample))
    (evidence,) = discover([tmp_path / "c.evtx.gz"])
    reader = EvtxReader()
    try:
        assert len(list(read_records(evidence, lambda w: None, reader=reader))) == 869
        (child,) = reader._spare
        assert child._child is not None
        pid = child._child.pid
        for _ in range(100):  # the child closes it when it gets to the request
            held = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
            if not any("casefile-evtx-" in target for target in held):
                break
            time.sleep(0.02)
        assert not any("casefile-evtx-" in target for target in held), held
    finally:
        reader.close()


@pytest.mark.shared
@pytest.mark.usefixtures("parser_only")
def test_no_child_to_be_had_is_a_read_error(
    sample: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no process can be started (limits, a sandbox) the file gets a warning saying so; the rest of
    the run goes on."""
    (tmp_path / "a.evtx").write_bytes(sample)
    (tmp_path / "b.ndjson").write_text('{"EventID": 1, "Image": "x"}\n', encoding="utf-8")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(subprocess, "Popen", refuse)  # (the module the reader starts its child with)
    warnings: list[IngestWarning] = []
    reader = EvtxReader()
    evidence = discover([tmp_path])
    got = [len(list(read_records(ev, warnings.append, reader=reader if ev.format == "evtx" else None)))
           for ev in evidence]
    assert got == [0, 1]
    assert [(Path(w.file).name, w.reason) for w in warnings] == [
        ("a.evtx", "read error, reading stopped here: OSError: [Errno 24] Too many open files"),
    ]


@pytest.mark.shared
def test_crafted_chunk_with_valid_checksums_is_stopped(crafted_evtx: bytearray, tmp_path: Path) -> None:
    """Nothing tells the reader that chunk 1 was crafted: it is parsed apart like every chunk, stopped, and
    the rest of the file is read (the in-process parser would loop for ever)."""
    bad = tmp_path / "crafted.evtx"
    bad.write_bytes(bytes(crafted_evtx))
    done = subprocess.run(
        [sys.executable, "-c", _READ_APART, str(bad)], capture_output=True, text=True, timeout=300, check=True
    )
    ids, warnings = json.loads(done.stdout)
    if len(ids) == 869:
        pytest.skip("this evtx release no longer loops on the crafted chunk")
    assert ids == [437471 + n for n in range(1, 870) if not 99 <= n <= 197]
    assert warnings == [[99, "EVTX parse error, records skipped: parser stopped on chunk 1 (no answer within "
                             "2 s) after 0 of its records"]]


@pytest.mark.shared
@pytest.mark.usefixtures("parser_only")
def test_a_child_that_ends_by_itself_is_asked_again(
    sample: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel ends a child when the thread that started it ends (its parent-death signal): the chunk
    it was on is asked again of a new child, and nothing is lost or given twice. A second end is a stop."""
    path = tmp_path / "sample.evtx"
    path.write_bytes(sample)
    (evidence,) = discover([path])
    here = EvtxReader(isolate=False)
    expected = [(r.index, r.data) for r in read_records(evidence, lambda w: None, reader=here)]
    marker = tmp_path / "ended"
    child = evtx_reader._CHILD
    for every_time in (False, True):
        # the child ends before sending chunk 1's 51st record: the first time only, or every time
        again = "True" if every_time else f"not os.path.exists({str(marker)!r})"
        code = child.replace(
            "def send(kind, number, text):\n",
            "import os\nsent = [0]\n"
            "def send(kind, number, text):\n"
            "    if globals()['number'] == 1 and kind == b'R':\n"
            "        sent[0] += 1\n"
            f"        if sent[0] > 50 and {again}:\n"
            f"            open({str(marker)!r}, 'w').close(); out.flush(); os._exit(9)\n",
        )
        assert code != child
        monkeypatch.setattr(evtx_reader, "_CHILD", code)
        reader = EvtxReader()
        warnings: list[IngestWarning] = []
        try:
            got = [(r.index, r.data) for r in read_records(evidence, warnings.append, reader=reader)]
        finally:
            reader.close()
        assert marker.exists()
        if not every_time:
            assert got == expected and warnings == []
        else:  # chunk 1 (records 99..197) keeps the 50 records sent before the child ended
            assert got == [(n, data) for n, data in expected if not 149 <= n <= 197]
            assert [(w.record, w.reason) for w in warnings] == [
                (149, "EVTX parse error, records skipped: parser stopped on chunk 1 (its process ended, exit "
                      "status 9) after 50 of its records"),
            ]


_ORPHAN = textwrap.dedent("""
    import os, sys, threading, time
    from casefile.ingest.readers import evtx
    data = open(sys.argv[1], "rb").read()
    quarantine = evtx._Quarantine(600.0)
    head, chunk = data[:evtx.HEADER_SIZE], data[evtx.HEADER_SIZE + evtx.CHUNK_SIZE:][:evtx.CHUNK_SIZE]
    threading.Thread(target=quarantine.records, args=(head, chunk, 1), daemon=True).start()
    while quarantine._child is None:
        time.sleep(0.01)
    time.sleep(1.0)  # the child is in the parser's loop by now
    print(quarantine._child.pid, flush=True)
    os._exit(0)  # as a hunt worker stopped for stalling ends
""")


@pytest.mark.shared
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_looping_child_ends_with_its_parent(stalling_evtx: bytearray, tmp_path: Path) -> None:
    bad = tmp_path / "stalls.evtx"
    bad.write_bytes(bytes(stalling_evtx))
    done = subprocess.run(
        [sys.executable, "-c", _ORPHAN, str(bad)], capture_output=True, text=True, timeout=120, check=True
    )
    child = Path("/proc") / done.stdout.strip()
    for _ in range(100):
        if not child.exists():
            break
        time.sleep(0.1)
    assert not child.exists(), "the damaged chunk's parser outlived the process that started it"


def _quarantine_with_child(monkeypatch: pytest.MonkeyPatch, code: str) -> evtx_reader._Quarantine:
    monkeypatch.setattr(evtx_reader, "_CHILD", code)
    return evtx_reader._Quarantine(0.5)


def test_quarantine_stops_a_child_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    quarantine = _quarantine_with_child(monkeypatch, "import time\nwhile True: time.sleep(1)")
    first = quarantine.records(b"h", b"c", 3)
    assert first == ["parser stopped on damaged chunk 3 (no answer within 0.5 s) after 0 of its records"]
    assert quarantine.records(b"h", b"c", 4) == [
        "parser stopped on damaged chunk 4 (no answer within 0.5 s) after 0 of its records"
    ]
    # after two stops, a file's other damaged chunks are not tried
    assert quarantine.records(b"h", b"c", 5) == [
        "damaged chunk 5 not parsed: the parser already had to be stopped 2 times on this file's "
        "damaged chunks"
    ]


def test_quarantine_keeps_what_a_dying_child_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    send = (
        "import struct, sys\n"
        "sys.stdin.buffer.read(12 + 2)\n"  # the request, so that the parent's write cannot meet a closed pipe
        "sys.stdout.buffer.write(struct.pack('<cQI', b'R', 7, 2) + b'{}')\n"
        "sys.stdout.buffer.write(struct.pack('<cQI', b'E', 0, 3) + b'bad')\n"
        "sys.stdout.flush()\n"
        "sys.exit(3)\n"
    )
    quarantine = _quarantine_with_child(monkeypatch, send)
    assert quarantine.records(b"h", b"c", 1) == [
        {"event_record_id": 7, "data": "{}"},
        "bad",
        "parser stopped on damaged chunk 1 (its process ended, exit status 3) after 1 of its records",
    ]
    quarantine.close()


def _destroyed_chunk_1(sample: bytes, tmp_path: Path) -> Path:
    """A copy of the sample whose chunk 1 header magic is overwritten."""
    data = bytearray(sample)
    data[HEADER_SIZE + CHUNK_SIZE:HEADER_SIZE + CHUNK_SIZE + 8] = b"XXXXXXXX"
    bad = tmp_path / "bad-chunk.evtx"
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.shared
def test_destroyed_chunk_header_loses_that_chunk_only(sample: bytes, tmp_path: Path) -> None:
    bad = _destroyed_chunk_1(sample, tmp_path)
    events, warnings = _read(bad)
    assert len(events) == 869 - 99
    assert {e.record_id for e in events} == {437471 + n for n in range(1, 870) if not 99 <= n <= 197}
    assert [(w.record, w.reason) for w in warnings] == [
        (99, "EVTX parse error, records skipped: Failed to parse chunk number 1: Failed to parse chunk "
             "header: Invalid EVTX chunk header magic, expected `ElfChnk0`, found `[58, 58, 58, 58, 58, "
             "58, 58, 58]`"),
    ]


@pytest.mark.shared
def test_evtx_inside_zip_and_gzip(sample: bytes, tmp_path: Path) -> None:
    plain = tmp_path / "plain.evtx"
    plain.write_bytes(sample)
    (tmp_path / "c.evtx.gz").write_bytes(gzip.compress(sample))
    with zipfile.ZipFile(tmp_path / "c.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("Windows/System32/winevt/Logs/Security.evtx", sample)
    found = discover([tmp_path])
    assert [(Path(f.path).relative_to(tmp_path).as_posix(), f.format, f.gzip, f.member) for f in found] == [
        ("c.evtx.gz", "evtx", True, None),
        ("c.zip!Windows/System32/winevt/Logs/Security.evtx", "evtx", False,
         "Windows/System32/winevt/Logs/Security.evtx"),
        ("plain.evtx", "evtx", False, None),
    ]
    events, warnings = _read(tmp_path)
    assert warnings == []
    by_file: dict[str, list[tuple[int | None, dict[str, object]]]] = {}
    for e in events:
        name = Path(e.source_file).relative_to(tmp_path).as_posix()
        by_file.setdefault(name, []).append((e.record_id, dict(e.fields)))
    assert len(by_file["plain.evtx"]) == 869
    assert by_file["c.evtx.gz"] == by_file["plain.evtx"]
    assert by_file["c.zip!Windows/System32/winevt/Logs/Security.evtx"] == by_file["plain.evtx"]


@pytest.mark.shared
def test_whole_shared_evtx_corpus(shared_data: Path) -> None:
    """All 870 .evtx files parse without an exception and without a warning.

    The corpus holds no damaged file: every chunk's header and record checksums match (checked by
    the reader), no file is cut short. One file (YamatoSecurity ... ID302 RDS Gateway Logon
    Logoff.evtx) has the header's dirty flag set (not closed cleanly), which is not damage.
    Damage is exercised on altered copies above.
    """
    events, warnings = _read(shared_data / "evtx")
    assert len(events) == 32_916
    assert [w for w in warnings if w.file.endswith(".evtx")] == []
    assert {w.reason for w in warnings} == {"not a recognised log format; skipped"}  # READMEs, licences
    assert all(e.timestamp is not None and e.event_id is not None and e.computer for e in events)
    # ETW-converted logs carry no Channel: 415 in etw_rpc_zerologon.evtx, one WEF bookmark event.
    assert sum(1 for e in events if e.channel is None) == 416
    files = Counter(e.source_file for e in events)
    assert len(files) == 870
    assert all(isinstance(e.fields["EventID"], int) for e in events)


@pytest.mark.shared
def test_evtx_in_damaged_gzip_keeps_records_before_the_damage(sample: bytes, tmp_path: Path) -> None:
    packed = gzip.compress(sample)
    gz = tmp_path / "cut.evtx.gz"
    gz.write_bytes(packed[: len(packed) // 2])
    whole = tmp_path / "whole.evtx"
    whole.write_bytes(sample)
    intact, _ = _read(whole)
    events, warnings = _read(gz)
    assert len(events) > 300  # several whole chunks survive the damage
    assert [e.fields for e in events] == [e.fields for e in intact[: len(events)]]
    assert len(warnings) == 2
    assert warnings[0].reason.startswith("damaged archive data after ")
    assert warnings[0].reason.endswith(
        "(EOFError: Compressed file ended before the end-of-stream marker was reached); "
        "reading the EVTX up to there"
    )
    assert warnings[1].reason.startswith("truncated EVTX: file ends ")


@pytest.mark.shared
def test_evtx_zip_member_with_bad_crc(sample: bytes, tmp_path: Path) -> None:
    archive = tmp_path / "crc.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("Security.evtx", sample)
    data = bytearray(archive.read_bytes())
    start = data.index(b"ElfFile\x00") + HEADER_SIZE + CHUNK_SIZE + 20_000
    data[start:start + 16] = b"A" * 16
    archive.write_bytes(bytes(data))
    events, warnings = _read(archive)
    assert len(events) == 869
    source = f"{archive}!Security.evtx"
    assert [str(w) for w in warnings] == [
        f"{source}: damaged archive data after {len(sample)} bytes (BadZipFile: Bad CRC-32 for file "
        "'Security.evtx': its bytes differ from what was archived; read as found); reading the EVTX "
        "up to there",
        f"{source}: chunk 1 checksum mismatch (records): records 99..197 may be damaged or altered; "
        "read as found",
    ]


def test_compressed_evtx_copy_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from casefile.ingest.readers import evtx as evtx_reader

    monkeypatch.setattr(evtx_reader, "MAX_COPY", 3 << 20)
    gz = tmp_path / "bomb.evtx.gz"
    gz.write_bytes(gzip.compress(_header(100) + bytes(8 << 20)))
    events, warnings = _read(gz)
    assert events == []
    assert warnings[0].reason == "compressed EVTX larger than 3 MiB: only its beginning is read"
    garbage = tmp_path / "not.evtx.gz"
    garbage.write_bytes(gzip.compress(b"MZ" + bytes(4 << 20)))
    events, warnings = _read(garbage)
    assert [w.reason for w in warnings] == [
        "not an EVTX file: expected magic b'ElfFile\\x00', found b'MZ\\x00\\x00\\x00\\x00\\x00\\x00'"
    ]


@pytest.mark.shared
def test_chunks_given_whole_give_what_records_one_by_one_give(sample: bytes, tmp_path: Path) -> None:
    """With `decode_chunk` the records of each chunk `_binxml` writes come as one RawRecord (numbered as
    the chunk's last): spelt out, they are the records, numbers and warnings the reader gives one by one,
    damage included, whole or in parts."""
    import dataclasses

    class Chunk(dict[str, Any]):
        pass

    def keep(texts: list[tuple[int, str | bytes]]) -> Chunk:
        chunk = Chunk()
        chunk["texts"] = texts
        return chunk

    def text(t: str) -> dict[str, str]:
        return {"text": t}

    one_by_one = EvtxReader(threads=1, decode=text, isolate=False)
    whole = EvtxReader(threads=1, decode=text, isolate=False, decode_chunk=keep)
    chunks_seen = 0
    for name, data in _variants(sample).items():
        path = tmp_path / f"{name}.evtx"
        path.write_bytes(data)
        (evidence,) = discover([path])
        reads = [evidence]
        if name == "intact":  # and in parts, as hunt workers share a large file
            parts = evtx_reader.evtx_parts(path, 3)
            assert parts is not None
            reads += [dataclasses.replace(evidence, part=p) for p in parts]
        for ev in reads:
            got = []
            for reader in (one_by_one, whole):
                warnings: list[IngestWarning] = []
                records: list[tuple[int, Any]] = []
                for r in read_records(ev, warnings.append, reader=reader):
                    if type(r.data) is Chunk:
                        chunks_seen += 1
                        assert r.index == r.data["texts"][-1][0]
                        for number, t in r.data["texts"]:  # UTF-8 where not ASCII, else the str
                            assert type(t) is str or not t.isascii()
                            records.append((number, t.decode() if type(t) is bytes else t))
                    else:
                        t = r.data["text"]
                        records.append((r.index, t.decode() if type(t) is bytes else t))
                got.append((records, [(w.record, w.reason) for w in warnings]))
            assert got[0] == got[1], name
            assert got[0][0] or ev.part is not None, name  # (the last parts: unused chunks)
    assert chunks_seen > 20


def _records_of(ev: Any) -> tuple[list[tuple[int, Any]], list[IngestWarning]]:
    warnings: list[IngestWarning] = []
    reader = EvtxReader(threads=1, isolate=False)
    records = [(r.index, r.data) for r in read_records(ev, warnings.append, reader=reader)]
    return records, warnings


def _read_in_parts(
    path: Path, parts: list[tuple[int, int]]
) -> tuple[list[tuple[int, Any]], list[IngestWarning]]:
    import dataclasses

    (whole,) = discover([path])
    records: list[tuple[int, Any]] = []
    warnings: list[IngestWarning] = []
    for part in parts:
        got, said = _records_of(dataclasses.replace(whole, part=part))
        records += got
        warnings += said
    return records, warnings


@pytest.mark.shared
def test_an_intact_file_read_in_parts_gives_what_it_gives_whole(sample: bytes, tmp_path: Path) -> None:
    # Chunks stand alone: a large file is split between hunt workers (`evtx_parts`), each reading its part.
    path = tmp_path / "intact.evtx"
    path.write_bytes(sample)
    parts = evtx_reader.evtx_parts(path, 3)  # 17 chunks, the last 7 unused
    assert parts == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15), (15, 17)]
    whole = _records_of(discover([path])[0])
    assert len(whole[0]) == 869 and whole[1] == []
    assert _read_in_parts(path, parts) == whole
    # unused (zero-filled) chunks are skipped alike
    data = bytearray(sample)
    data[HEADER_SIZE + 4 * CHUNK_SIZE:HEADER_SIZE + 5 * CHUNK_SIZE] = bytes(CHUNK_SIZE)
    path.write_bytes(bytes(data))
    parts = evtx_reader.evtx_parts(path, 4)
    assert parts == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 17)]
    whole = _records_of(discover([path])[0])
    assert 0 < len(whole[0]) < 869 and whole[1] == []  # chunk 4 zeroed: its records gone, no warning
    assert _read_in_parts(path, parts) == whole


def test_a_part_view_reads_as_an_image_of_the_header_and_its_chunks(tmp_path: Path) -> None:
    """The parser reads a part through `_PartView` (header, then chunks start..stop of the file): any
    seeks and reads give the bytes of that image."""
    import io
    import random

    data = random.Random(3).randbytes(HEADER_SIZE + 6 * CHUNK_SIZE)
    path = tmp_path / "f.evtx"
    path.write_bytes(data)
    image = data[:HEADER_SIZE] + data[HEADER_SIZE + 2 * CHUNK_SIZE:HEADER_SIZE + 5 * CHUNK_SIZE]
    rng = random.Random(5)
    with path.open("rb") as fh:
        view = evtx_reader._PartView(fh, data[:HEADER_SIZE], 2, 5)
        assert view.read() == image and view.read(10) == b"" and view.tell() == len(image)
        expected = io.BytesIO(image)
        assert view.seek(0) == 0
        for _ in range(300):
            if rng.random() < 0.4:
                whence = rng.choice([io.SEEK_SET, io.SEEK_CUR, io.SEEK_END])
                base = {io.SEEK_SET: 0, io.SEEK_CUR: expected.tell(), io.SEEK_END: len(image)}[whence]
                offset = rng.randint(-base, len(image) + 9 - base)  # never before the start
                assert view.seek(offset, whence) == expected.seek(offset, whence)
            size = rng.choice([-1, 1, 100, HEADER_SIZE, HEADER_SIZE + 7, CHUNK_SIZE, 3 * CHUNK_SIZE])
            assert view.read(size) == expected.read(size) and view.tell() == expected.tell()
        with pytest.raises(ValueError, match="negative seek"):
            view.seek(-1)


@pytest.mark.shared
def test_only_intact_files_are_split(sample: bytes, tmp_path: Path) -> None:
    def variant(name: str, offset: int, data: bytes) -> Path:
        changed = bytearray(sample)
        changed[offset:offset + len(data)] = data
        path = tmp_path / name
        path.write_bytes(bytes(changed))
        return path

    assert evtx_reader.evtx_parts(variant("same.evtx", 0, b""), 3) is not None
    assert evtx_reader.evtx_parts(variant("same.evtx", 0, b""), 17) is None  # one part: nothing to split
    records = HEADER_SIZE + CHUNK_SIZE + 20_000
    assert evtx_reader.evtx_parts(variant("altered.evtx", records, b"A" * 16), 3) is None
    assert evtx_reader.evtx_parts(variant("header.evtx", 60, b"\x07"), 3) is None  # header checksum
    garbage = variant("garbage.evtx", HEADER_SIZE + CHUNK_SIZE, b"XXXXXXXX")
    assert evtx_reader.evtx_parts(garbage, 3) is None  # neither a chunk nor unused space
    cut = tmp_path / "cut.evtx"
    cut.write_bytes(sample[:-1000])
    assert evtx_reader.evtx_parts(cut, 3) is None
    # what a compressed file's head is asked before it is unpacked to be split: its file header
    reader = EvtxReader()
    assert reader.may_split(sample[:1 << 20]) and reader.may_split(sample[:HEADER_SIZE])
    assert not reader.may_split(variant("header.evtx", 60, b"\x07").read_bytes())
    assert not reader.may_split(sample[:HEADER_SIZE - 1]) and not reader.may_split(b"PK\x03\x04")


@pytest.mark.shared
def test_a_part_names_chunks_and_records_as_the_whole_file_does(sample: bytes, tmp_path: Path) -> None:
    # The parser numbers the chunks of a part's image from 0: its messages are renumbered, and a record
    # lost at a part's start is numbered after the last record of the chunk before.
    bad = _destroyed_chunk_1(sample, tmp_path)
    whole = _records_of(discover([bad])[0])
    assert [(w.record, w.reason[:65]) for w in whole[1]] == [
        (99, "EVTX parse error, records skipped: Failed to parse chunk number 1"),
    ]
    assert _read_in_parts(bad, [(0, 1), (1, 4), (4, 17)]) == whole


@pytest.mark.shared
def test_a_file_that_reads_slowly_is_not_split(
    sample: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checking a file before splitting it pays only where it reads fast; from slow media it is read whole.
    path = tmp_path / "intact.evtx"
    path.write_bytes(sample)
    monkeypatch.setattr(evtx_reader, "_SPEED_CHUNKS", 4)
    assert evtx_reader.evtx_parts(path, 3) is not None
    assert evtx_reader.evtx_parts(path, 3, min_read=float("inf")) is None
