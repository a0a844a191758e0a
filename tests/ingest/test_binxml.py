"""`_binxml.chunk_records` against the `evtx` parser it stands in for.

Wherever it writes a chunk it must give exactly the parser's records (numbers and JSON text, byte for byte);
elsewhere it must give None, and the reader lets the parser read that chunk. It must also write the common
chunks, or the reader would silently lose its speed.
"""

from __future__ import annotations

import io
import pickle
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from evtx import PyEvtxParser

from casefile.ingest.readers import evtx as evtx_reader
from casefile.ingest.readers.evtx import CHUNK_SIZE, HEADER_SIZE, EvtxReader, evtx_parts

binxml = pytest.importorskip(
    "casefile.ingest.readers._binxml", reason="no compiled build of _binxml (no C compiler at install)"
)


def _parser_records(header: bytes, chunk: bytes) -> list[tuple[int, str]]:
    parser = PyEvtxParser(io.BytesIO(header + chunk))
    out = []
    for r in parser.records_json():
        assert r is not None
        out.append((r["event_record_id"], r["data"]))
    return out


def _corpus_chunks(shared_data: Path) -> list[tuple[bytes, bytes]]:
    out = []
    for path in sorted((shared_data / "evtx").rglob("*.evtx")):
        data = path.read_bytes()
        if not data.startswith(b"ElfFile\0"):
            continue
        for offset in range(HEADER_SIZE, len(data) - CHUNK_SIZE + 1, CHUNK_SIZE):
            chunk = data[offset:offset + CHUNK_SIZE]
            if chunk.startswith(b"ElfChnk\0"):
                out.append((data[:HEADER_SIZE], chunk))
    return out


@pytest.fixture(scope="module")
def corpus_chunks(shared_data: Path) -> list[tuple[bytes, bytes]]:
    return _corpus_chunks(shared_data)


Chunks = list[tuple[bytes, bytes]]


def test_corpus_chunks_are_written_as_the_parser_writes_them(corpus_chunks: Chunks) -> None:
    written = records = 0
    for header, chunk in corpus_chunks:
        want = _parser_records(header, chunk)
        records += len(want)
        got = binxml.chunk_records(chunk)
        if got is not None:
            assert got == want
            written += len(got)
    assert records > 30_000
    assert written > 0.93 * records, (written, records)  # the common chunks: the reader's speed


def test_utf8_gives_texts_beyond_ascii_as_their_utf8(corpus_chunks: Chunks) -> None:
    """`utf8=True` (the hunt's reader): the same records, a text that is not ASCII as its UTF-8 bytes."""
    as_bytes = as_str = 0
    for _, chunk in corpus_chunks:
        plain = binxml.chunk_records(chunk)
        raw = binxml.chunk_records(chunk, utf8=True)
        if plain is None:
            assert raw is None
            continue
        assert raw is not None and [n for n, _ in raw] == [n for n, _ in plain]
        for (_, text), (_, got) in zip(plain, raw, strict=True):
            if text.isascii():
                assert type(got) is str and got == text
                as_str += 1
            else:
                assert type(got) is bytes and got == text.encode()
                as_bytes += 1
    assert as_bytes > 500 and as_str > 20_000, (as_bytes, as_str)


# --- values changed in place: the writer's escaping and value forms against the parser's

def _values(chunk: bytes) -> list[tuple[int, int, int]]:
    """(type, offset, size) of every substitution value of the chunk's records, nested BinXml included."""
    out: list[tuple[int, int, int]] = []

    def instance(p: int, end: int) -> None:
        if chunk[p] != 0x0F or chunk[p + 4] != 0x0C:
            return
        p += 4
        definition = struct.unpack_from("<I", chunk, p + 6)[0]
        p += 10
        if definition == p:
            p += 24 + struct.unpack_from("<I", chunk, p + 20)[0]
        count = struct.unpack_from("<I", chunk, p)[0]
        p += 4
        at = p + 4 * count
        for i in range(count):
            size, kind = struct.unpack_from("<HB", chunk, p + 4 * i)
            if kind == 0x21:
                instance(at, at + size)
            else:
                out.append((kind, at, size))
            at += size

    free = struct.unpack_from("<I", chunk, 48)[0]
    pos = 512
    while pos + 24 <= free and chunk[pos:pos + 4] == b"\x2a\x2a\0\0":
        size = struct.unpack_from("<I", chunk, pos + 4)[0]
        instance(pos + 24, pos + size - 4)
        pos += size
    return out


#: UTF-16 code units a string may hold: JSON escapes, control characters, non-ASCII, surrogates (paired and
#: not), NUL (inside and at the end).
_UNITS = [0x22, 0x5C, 0x2F, 0x01, 0x08, 0x09, 0x0A, 0x0C, 0x0D, 0x1F, 0x7F, 0xE9, 0x20AC, 0xFFFF, 0xD83D,
          0xDE00, 0x0000, 0x0130, 0x212A, 0x41]


def test_changed_values_are_written_as_the_parser_writes_them(corpus_chunks: Chunks) -> None:
    rng = random.Random(20)
    picked = rng.sample(corpus_chunks, 120)
    compared = given_up = 0
    for header, original in picked:
        values = _values(original)
        for _ in range(4):
            chunk = bytearray(original)
            for kind, offset, size in rng.sample(values, min(8, len(values))):
                if kind == 0x01 and size >= 2:  # a string: some of its characters
                    for _ in range(rng.randint(1, 3)):
                        unit = rng.choice(_UNITS)
                        if unit == 0xD83D and rng.random() < 0.5 and size >= 4:  # a pair, now and then
                            at = rng.randrange(0, size // 2 - 1)
                            struct.pack_into("<HH", chunk, offset + 2 * at, 0xD83D, 0xDE00)
                        else:
                            struct.pack_into("<H", chunk, offset + 2 * rng.randrange(size // 2), unit)
                elif kind in (0x11, 0x0A, 0x15, 0x08, 0x06, 0x04, 0x13, 0x0F, 0x0D):  # numbers, times
                    for at in range(offset, offset + size):
                        if kind != 0x13 or at >= offset + 2:  # (a SID's count stays)
                            chunk[at] = rng.randrange(256) if rng.random() < 0.5 else rng.choice((0, 0xFF))
            got = binxml.chunk_records(bytes(chunk))
            if got is None:
                given_up += 1
                continue
            assert got == _parser_records(header, bytes(chunk))
            compared += 1
    assert compared > 120 and given_up > 20, (compared, given_up)


def test_each_special_character_at_each_position_of_a_string(corpus_chunks: Chunks) -> None:
    """A quote, a backslash, a control character, DEL, a non-ASCII letter or an ASCII letter at every
    position of long plain strings (across the eight-unit runs the writer copies at once, with SSE2):
    written as the parser writes them."""

    def plain(chunk: bytes, offset: int, size: int) -> bool:
        units = struct.unpack_from(f"<{size // 2}H", chunk, offset)
        return all(0x20 <= u < 0x7F and u not in (0x22, 0x5C) for u in units)

    long_strings = [
        (header, chunk, offset, size)
        for header, chunk in corpus_chunks[::7]
        for kind, offset, size in _values(chunk)
        if kind == 0x01 and 40 <= size <= 80 and plain(chunk, offset, size)
    ][:6]
    assert len(long_strings) >= 3
    compared = 0
    for header, original, offset, size in long_strings:
        for unit in (0x22, 0x5C, 0x01, 0x1F, 0x7F, 0xE9, 0x20AC, 0x41):
            for at in range(size // 2):
                chunk = bytearray(original)
                struct.pack_into("<H", chunk, offset + 2 * at, unit)
                written = binxml.chunk_records(bytes(chunk))
                if written is not None:
                    assert written == _parser_records(header, bytes(chunk)), (unit, at)
                    compared += 1
    assert compared > 500


#: Parses pickled (header, chunk) pairs read from stdin, one at a time, and writes each one's records (or the
#: parser's error) as a pickle, flushed: a chunk the parser loops on stops only this process.
_PARSE_EACH = r"""
import io, pickle, sys
from evtx import PyEvtxParser
for header, chunk in pickle.load(sys.stdin.buffer):
    try:
        records = PyEvtxParser(io.BytesIO(header + chunk)).records_json()
        got = [(r["event_record_id"], r["data"]) for r in records]
    except Exception as exc:
        got = f"{type(exc).__name__}: {exc}"
    sys.stdout.buffer.write(pickle.dumps(got))
    sys.stdout.flush()
"""


def _parsed_apart(items: list[tuple[bytes, bytes]]) -> list[Any]:
    """The parser's records (or error) for each item, in child processes; None for one it stalls on."""
    out: list[Any] = []
    while len(out) < len(items):
        rest = items[len(out):]
        try:
            run = subprocess.run(
                [sys.executable, "-c", _PARSE_EACH], input=pickle.dumps(rest), capture_output=True,
                timeout=30, check=True,
            )
            stdout, stalled = run.stdout, False
        except subprocess.TimeoutExpired as exc:
            stdout, stalled = exc.stdout or b"", True
        stream = io.BytesIO(stdout)
        while stream.tell() < len(stdout):
            try:
                out.append(pickle.load(stream))
            except (EOFError, pickle.UnpicklingError):  # cut by the stop
                break
        if stalled:
            out.append(None)
    return out


def test_changed_bytes_are_written_as_the_parser_writes_them_or_left(corpus_chunks: Chunks) -> None:
    """Bytes changed anywhere in the records (1 to 6 of them; the writer takes no checksum): every chunk
    the writer still writes, the parser reads without an error, to the same records. (Found this way: keys
    the parser writes unescaped, `<Data Name=...>` named so only under `<EventData>`, values no token takes
    that the parser still reads and refuses, the end token after the values, the chunk's string and
    template tables.)"""
    rng = random.Random(6)
    written: list[tuple[bytes, bytes]] = []
    expected = []
    while len(written) < 300:
        header, original = rng.choice(corpus_chunks)
        free = struct.unpack_from("<I", original, 48)[0]
        chunk = bytearray(original)
        for _ in range(rng.randint(1, 6)):
            chunk[rng.randrange(512, free)] = rng.randrange(256)
        got = binxml.chunk_records(bytes(chunk))
        if got is not None:
            written.append((header, bytes(chunk)))
            expected.append(got)
    parsed = _parsed_apart(written)
    compared = [(got, want) for got, want in zip(expected, parsed, strict=True) if want is not None]
    assert len(compared) > 250
    for got, want in compared:
        assert got == want


def test_chunks_out_of_the_common_layout_are_left_to_the_parser(corpus_chunks: Chunks) -> None:
    chunk = next(c for _, c in corpus_chunks if binxml.chunk_records(c))
    first, last = struct.unpack_from("<QQ", chunk, 24)
    assert last > first
    for change in (
        lambda c: struct.pack_into("<Q", c, 32, last + 1),  # a record the header counts is missing
        lambda c: struct.pack_into("<Q", c, 32, last - 1),  # a record past the header's last
        lambda c: struct.pack_into("<Q", c, 24, first + 1),  # numbers that do not follow the header's
        lambda c: struct.pack_into("<I", c, 48, 100),  # free space inside the header
        lambda c: struct.pack_into("<I", c, 48, CHUNK_SIZE + 1),
        lambda c: struct.pack_into("<I", c, 512 + 4, 20),  # a record too short
        lambda c: struct.pack_into("<I", c, 512 + 4, CHUNK_SIZE),  # a record past the chunk
        lambda c: c.__setitem__(512, 0),  # a record without its magic
        lambda c: c.__setitem__(0, ord("X")),  # no chunk magic
    ):
        changed = bytearray(chunk)
        change(changed)
        assert binxml.chunk_records(bytes(changed)) is None
    assert binxml.chunk_records(chunk[:-1]) is None


def test_a_chunk_of_zeros_holds_no_records_as_for_the_parser(corpus_chunks: Chunks) -> None:
    """Unused space (files are made ahead of their records): no records and no error, as the parser reads
    it; a single byte other than zero anywhere makes it the parser's to report."""
    header = corpus_chunks[0][0]
    zeros = bytes(CHUNK_SIZE)
    assert binxml.chunk_records(zeros) == [] == _parser_records(header, zeros)
    for at in (0, 1, 7, 8, 511, 512, CHUNK_SIZE // 2, CHUNK_SIZE - 1):
        chunk = bytearray(zeros)
        chunk[at] = 1
        assert binxml.chunk_records(bytes(chunk)) is None, at
        with pytest.raises(RuntimeError, match="chunk header magic"):
            _parser_records(header, bytes(chunk))


def test_random_bytes_never_crash_the_writer(corpus_chunks: Chunks) -> None:
    """Crafted bytes anywhere in the records: a result or None, never a crash or a hang (every loop is
    bounded by the chunk)."""
    rng = random.Random(7)
    for _, original in rng.sample(corpus_chunks, 60):
        for _ in range(20):
            chunk = bytearray(original)
            for _ in range(rng.randint(1, 16)):
                chunk[rng.randrange(512, CHUNK_SIZE)] = rng.randrange(256)
            got = binxml.chunk_records(bytes(chunk))
            assert got is None or all(isinstance(n, int) and isinstance(t, str) for n, t in got)


# --- the reader: the same records and warnings with and without the writer

def _read_all(path: Path, part: tuple[int, int] | None = None) -> tuple[list[tuple[int, Any]], list[str]]:
    warnings: list[str] = []
    reader = EvtxReader(decode=lambda text: {"text": text}, isolate=False)
    with open(path, "rb") as stream:
        if part is None:
            records = reader.read(stream, str(path), lambda w: warnings.append(w.reason), disk_path=path)
        else:
            records = reader.read_part(stream, str(path), lambda w: warnings.append(w.reason), part)
        return [(r.index, r.data["text"]) for r in records], warnings


def test_reader_gives_the_parsers_records(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = sorted((shared_data / "evtx").rglob("*.evtx"), key=lambda p: p.stat().st_size)[-40:]
    with_writer = [_read_all(path) for path in paths]
    monkeypatch.setattr(evtx_reader, "_chunk_records", None)
    assert with_writer == [_read_all(path) for path in paths]
    assert sum(len(records) for records, _ in with_writer) > 5_000


def test_reader_parts_and_odd_chunks(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of chunks the writer writes, chunks it leaves to the parser (arrays, a record without a
    template) and a zero-filled chunk, read whole and in parts: the parser's records either way."""
    chunks = _corpus_chunks(shared_data)
    written = [c for _, c in chunks if binxml.chunk_records(c) is not None]
    left = [c for _, c in chunks if binxml.chunk_records(c) is None]
    assert written and left
    body = [written[0], left[0], bytes(CHUNK_SIZE), written[1], left[-1], written[2]]
    header = bytearray(chunks[0][0])
    struct.pack_into("<H", header, 42, len(body))
    struct.pack_into("<I", header, 124, zlib.crc32(bytes(header[:120])))
    path = tmp_path / "mixed.evtx"
    path.write_bytes(bytes(header) + b"".join(body))
    parts = evtx_parts(path, 2)
    assert parts == [(0, 2), (2, 4), (4, 6)]
    whole = _read_all(path)
    in_parts = [_read_all(path, part) for part in parts]
    monkeypatch.setattr(evtx_reader, "_chunk_records", None)
    assert whole == _read_all(path)
    assert in_parts == [_read_all(path, part) for part in parts]
    assert len(whole[0]) > 50


def test_isolated_reader_writes_what_it_can_itself(shared_data: Path, tmp_path: Path) -> None:
    """With every chunk parsed apart (`isolate`, the CLI's own reading), chunks the writer writes are written
    in this process, as a hunt worker writes them: the same records and warnings, and no child for a file
    of such chunks; chunks left to the parser still go to the child."""
    chunks = _corpus_chunks(shared_data)
    written = [c for _, c in chunks if binxml.chunk_records(c) is not None]
    left = [c for _, c in chunks if binxml.chunk_records(c) is None]
    header = bytearray(chunks[0][0])
    struct.pack_into("<H", header, 42, 2)
    struct.pack_into("<I", header, 124, zlib.crc32(bytes(header[:120])))
    plain, mixed = tmp_path / "plain.evtx", tmp_path / "mixed.evtx"
    plain.write_bytes(bytes(header) + written[0] + written[1])
    mixed.write_bytes(bytes(header) + written[2] + left[0])
    apart = EvtxReader()
    try:
        for path in (plain, mixed):
            warnings: list[Any] = []
            with open(path, "rb") as stream:
                records = apart.read(stream, str(path), warnings.append, disk_path=path)
                got = [(r.index, r.data) for r in records]
            reader = EvtxReader(isolate=False)
            with open(path, "rb") as stream:
                want = [(r.index, r.data) for r in reader.read(stream, str(path), print, disk_path=path)]
            assert got == want and warnings == [] and len(got) > 1
            children = [spare._child for spare in apart._spare if spare._child is not None]
            assert bool(children) == (path == mixed)
    finally:
        apart.close()


def test_chunk_the_parser_loops_on_is_left_to_it(stalling_evtx: bytearray, shared_data: Path) -> None:
    """The chunk crafted so that the parser loops: the writer checks the chunk's string and template tables
    as the parser loads them, before any record, and leaves this chunk to it, so that every reader meets
    the loop alike and stops it (`test_evtx`, `test_workers`). The unchanged chunk it writes."""
    chunk = HEADER_SIZE + CHUNK_SIZE
    assert binxml.chunk_records(bytes(stalling_evtx[chunk:chunk + CHUNK_SIZE])) is None
    original = shared_data / "evtx" / "EVTX-ATTACK-SAMPLES" / "Lateral Movement"
    original /= "LM_5145_Remote_FileCopy.evtx"
    assert binxml.chunk_records(original.read_bytes()[chunk:chunk + CHUNK_SIZE]) is not None
