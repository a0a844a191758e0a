"""Windows `.evtx` files through the Rust `evtx` parser, record by record, salvaging damaged files."""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import os
import re
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

from evtx import PyEvtxParser

from casefile.ingest._crc import crc32
from casefile.ingest.model import RawRecord
from casefile.ingest.plugins import READERS, WarningSink
from casefile.models import IngestWarning

try:  # C (Cython proper): without a build, the parser reads every chunk
    from casefile.ingest.readers._binxml import chunk_records as _chunk_records
except ImportError:  # pragma: no cover - depends on the install
    _chunk_records = None  # type: ignore[assignment]

MAGIC = b"ElfFile\x00"
HEADER_SIZE = 4096
CHUNK_SIZE = 65536
CHUNK_MAGIC = b"ElfChnk\x00"
CHUNK_HEADER_SIZE = 512
RECORD_MAGIC = b"\x2a\x2a\x00\x00"
#: What reading a damaged zip member or gzip stream raises.
COMPRESSED_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, OSError)
#: Compressed EVTX is copied to a temporary file up to this size (Windows logs stay far below).
MAX_COPY = 16 << 30
#: Files of at most this many chunks (16 MB) are read into memory at once when `_binxml` writes their records.
IMAGE_CHUNKS = 256
#: After this many errors in a row without a good record the rest of the file is given up.
MAX_CONSECUTIVE_ERRORS = 256
#: Seconds a chunk may take in the child process that parses it (a chunk takes milliseconds): some
#: damaged or crafted bytes send the parser into an endless loop that holds the GIL, which only stopping
#: the process that runs it can end.
CHUNK_SECONDS = 10.0


def check_checksums(
    stream: IO[bytes], header: bytes, full_chunks: int, image: bytes | None = None
) -> tuple[list[str], set[int]]:
    """Problems with the CRC32 checksums of the file header and of each chunk (header and records), and
    the numbers of the chunks whose checksums do not match.

    A mismatch means bytes changed after Windows wrote them (damage, or tampering): the reader parses
    such chunks apart (`_Quarantine`), reads their records as found and reports the mismatch. `image`: the
    file's bytes up to its last whole chunk, read already (then the stream is not read).
    """
    problems = []
    damaged: set[int] = set()
    if not _header_ok(header):
        problems.append("file header checksum mismatch: header fields may be damaged")
    for number in range(full_chunks):
        # Only a chunk's header and the records it says it holds are read: unused space (zero-filled chunks,
        # and the end of chunks not yet full) is neither checked nor copied.
        offset = HEADER_SIZE + number * CHUNK_SIZE
        head: bytes | memoryview
        if image is not None:
            head = memoryview(image)[offset:offset + CHUNK_SIZE]
        else:
            stream.seek(offset)
            head = stream.read(CHUNK_HEADER_SIZE)
        if head[:len(CHUNK_MAGIC)] != CHUNK_MAGIC:
            continue  # unused (zero-filled) space; a damaged chunk header is reported by the parser
        part = _chunk_mismatch(head, stream.read if image is None else None)
        if part is not None:
            damaged.add(number)
            first, last = struct.unpack_from("<QQ", head, 24)
            problems.append(
                f"chunk {number} checksum mismatch ({part}): records {first}..{last} may be damaged "
                "or altered; read as found"
            )
    return problems, damaged


def _header_ok(header: bytes) -> bool:
    stored: int = struct.unpack_from("<I", header, 124)[0]
    return crc32(header[:120]) == stored


def _intact_header(head: bytes) -> bool:
    """Whether `head` starts with a whole file header, magic and checksum right (what a split asks first)."""
    return len(head) >= HEADER_SIZE and head.startswith(MAGIC) and _header_ok(head[:HEADER_SIZE])


def _plain_header(header: bytes) -> bool:
    """Whether a file header is one the parser takes as it stands: checksum right, version 3, a 4096-byte
    header block (chunks are then read without it: `_Chunkwise`)."""
    return _intact_header(header) and header[38:42] == b"\x03\x00\x00\x10"


def _layout(stream: IO[bytes], header: bytes) -> tuple[int, int, int]:
    """A file's whole chunks, the bytes of its partial last chunk, and the chunks its header declares
    (the stream is left at its end)."""
    full_chunks, partial = divmod(stream.seek(0, io.SEEK_END) - HEADER_SIZE, CHUNK_SIZE)
    declared: int = struct.unpack_from("<H", header, 42)[0]
    return full_chunks, partial, declared


def _chunk_header_mismatch(chunk: bytes | memoryview) -> bool:
    """Whether the checksum of a chunk's header (its first 512 bytes but the checksum) does not match."""
    stored: int = struct.unpack_from("<I", chunk, 124)[0]
    return crc32(chunk[128:512], crc32(chunk[:120])) != stored


def _chunk_mismatch(
    chunk: bytes | memoryview, read_records: Callable[[int], bytes] | None = None
) -> str | None:
    """Which checksum of a chunk (with its magic) does not match: "chunk header", "records", or None.

    `chunk` is the whole chunk, or its 512-byte header when `read_records(n)` gives the n bytes that
    follow it (only those up to its free space offset are read: the records' checksum covers no more)."""
    if _chunk_header_mismatch(chunk):
        return "chunk header"
    free_offset, data_crc = struct.unpack_from("<II", chunk, 48)
    if free_offset > CHUNK_SIZE:
        return "records"
    used = max(0, free_offset - CHUNK_HEADER_SIZE)
    records = read_records(used) if read_records is not None else memoryview(chunk)[512:512 + used]
    return "records" if crc32(records) != data_crc else None


#: `evtx_parts` gives up on a file it reads slower than this (bytes per second): the hunt's workers take
#: about 65 MB/s each, so checking a file first pays only where it reads several times faster (a
#: page-cached or local disk), not from slow media, where reading it whole overlaps reading and hunting.
MIN_SPLIT_READ = 200 << 20
#: Chunks `evtx_parts` reads between looks at its reading speed (64 MB).
_SPEED_CHUNKS = 1024


def evtx_parts(
    path: str | Path, chunks_per_part: int, min_read: float = MIN_SPLIT_READ
) -> list[tuple[int, int]] | None:
    """Ranges of `chunks_per_part` whole chunks of an EVTX file, which tasks may read apart
    (`EvtxReader.read_part`) and get the records and warnings reading the whole file gives; None when the
    file is not in one part or not intact.

    Chunks stand alone (each holds its own string and template tables), but reading a damaged file has
    file-wide steps: checksum problems listed before the records, the cut last chunk, a truncation named
    against the header. So only a file without any is split: header checksum matching, no partial chunk,
    at least the chunks the header declares, and every chunk intact (checksums matching) or zero-filled.
    (In such a file only records that fail to parse in chunks whose checksums match, which takes crafted
    bytes, are read differently: one that starts a part is numbered after the chunk header's last record
    before it, and a parser failure stops its part rather than the file.) The file is read through once,
    unless it reads slower than `min_read` bytes per second (then None: read whole, it costs no more).
    """
    try:
        with open(path, "rb") as fh:
            header = fh.read(HEADER_SIZE)
            if not _intact_header(header):
                return None
            full_chunks, partial, declared = _layout(fh, header)
            if partial or full_chunks < declared or full_chunks <= chunks_per_part:
                return None
            fh.seek(HEADER_SIZE)
            started = time.monotonic()
            for number in range(full_chunks):
                looked = number and not number % _SPEED_CHUNKS  # (every 64 MB)
                if looked and number * CHUNK_SIZE < min_read * (time.monotonic() - started):
                    return None
                chunk = fh.read(CHUNK_SIZE)
                if chunk.startswith(CHUNK_MAGIC):
                    if _chunk_mismatch(chunk) is not None:
                        return None
                elif chunk.count(0) != len(chunk):  # neither a chunk nor unused space: the parser says what
                    return None
    except OSError:
        return None
    return [(a, min(a + chunks_per_part, full_chunks)) for a in range(0, full_chunks, chunks_per_part)]


class _PartView:
    """A file's header followed by its chunks `start` to `stop` (exclusive), read from the file as the parser
    asks: what an image of the part would hold, without 16 MB copied into memory (and paged in) per
    part. The parser reads it through its `read`, `seek` and `tell`, about a chunk at a time."""

    def __init__(self, stream: IO[bytes], header: bytes, start: int, stop: int) -> None:
        self._stream = stream
        self._header = header
        self._shift = start * CHUNK_SIZE  # file offset - view offset, past the header
        self._size = HEADER_SIZE + (stop - start) * CHUNK_SIZE
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        head = b""
        if self._pos < min(end, HEADER_SIZE):
            head = self._header[self._pos:min(end, HEADER_SIZE)]
            self._pos += len(head)
        if self._pos >= end:
            return head
        self._stream.seek(self._pos + self._shift)
        body = self._stream.read(end - self._pos)
        self._pos += len(body)
        return head + body if head else body


class _Renumbered:
    """A parser of an image holding chunks `offset`, `offset + 1`, ... of a file: its error messages name the
    file's chunk numbers, as the parser of the whole file does (it numbers the image's chunks from 0)."""

    def __init__(self, parser: Any, offset: int) -> None:
        self._records = parser.records_json()
        self._offset = offset

    def records_json(self) -> _Renumbered:
        return self

    def __iter__(self) -> _Renumbered:
        return self

    def __next__(self) -> dict[str, Any]:
        try:
            return next(self._records)  # type: ignore[no-any-return]
        except RuntimeError as exc:  # the parser's per-chunk / per-record error: iteration goes on after it
            text = _CHUNK_NUMBER.sub(lambda m: f"chunk number {int(m.group(1)) + self._offset}", str(exc))
            raise RuntimeError(text) from None


class _Chunkwise:
    """Stands in for the parser's `records_json()` over chunks `start` to `stop` (exclusive) of a file whose
    chunks' checksums match: a chunk's records are written by `_binxml.chunk_records` where it writes them all
    (what the parser gives, in about 60% of its time), else the parser reads the chunk from an image of the
    file header and that chunk, its messages naming the file's chunk numbers (`_Renumbered`). With `utf8`,
    the writer's texts that are not ASCII come as UTF-8 bytes (see `EvtxReader.decode_chunk`)."""

    def __init__(
        self, stream: IO[bytes], header: bytes, start: int, stop: int, image: bytes | None = None,
        utf8: bool = False,
    ) -> None:
        self._stream = stream
        self._utf8 = utf8
        self._header = header
        self._image = memoryview(image) if image is not None else None  # the file, read already
        self._next = start
        self._stop = stop
        self._pending: list[tuple[int, str | bytes]] = []  # the chunk's records, last first
        self._parser: _Renumbered | None = None

    def records_json(self) -> _Chunkwise:
        return self

    def __iter__(self) -> _Chunkwise:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            if self._pending:
                number, text = self._pending.pop()
                return {"event_record_id": number, "data": text}
            if self._parser is not None:
                try:
                    return next(self._parser)
                except StopIteration:
                    self._parser = None
            if self._next >= self._stop:
                raise StopIteration
            records = self._load()
            if records is not None:
                records.reverse()
                self._pending = records

    def written(self) -> list[tuple[int, str | bytes]] | None:
        """The next chunk's records, in order, where the writer writes them (taken whole: `_records` makes
        them without this iterator's dict per record); None when the caller must go on record by record
        (`__next__`): a chunk the parser reads, or the end."""
        if self._pending or self._parser is not None or self._next >= self._stop:
            return None
        return self._load()

    def _load(self) -> list[tuple[int, str | bytes]] | None:
        """Takes the next chunk: its records as written, or None, the parser then set on it."""
        number = self._next
        self._next += 1
        offset = HEADER_SIZE + number * CHUNK_SIZE
        if self._image is not None:
            chunk: bytes | memoryview = self._image[offset:offset + CHUNK_SIZE]
        else:
            self._stream.seek(offset)
            chunk = self._stream.read(CHUNK_SIZE)
        records = _chunk_records(chunk, self._utf8) if _chunk_records is not None else None
        if records is None:
            image = io.BytesIO(self._header + bytes(chunk))
            self._parser = _Renumbered(PyEvtxParser(image, number_of_threads=1), number)
        return records


def _complete_records(chunk: bytes) -> tuple[int, int | None]:
    """Where the whole records of a (cut) chunk end, and the number of the record cut off, if any.

    Records follow the 512-byte chunk header back to back, each starting with its magic, its size
    and its number, and ending with its size again.
    """
    offset = CHUNK_HEADER_SIZE
    while offset + 24 <= len(chunk) and chunk.startswith(RECORD_MAGIC, offset):
        size, number = struct.unpack_from("<IQ", chunk, offset + 4)
        if size < 28 or offset + size > len(chunk):
            return offset, number
        if struct.unpack_from("<I", chunk, offset + size - 4)[0] != size:
            return offset, number
        offset += size
    return min(offset, len(chunk)), None


_CHUNK_NUMBER = re.compile(r"chunk number (\d+)\b")


def _records(
    parser: Any, source: str, on_warning: WarningSink, *, last_number: int, what: str = "",
    decode: Callable[[str], Any] = json.loads,
    damaged: Callable[[int], list[Item] | None] | None = None,
    decode_chunk: Callable[[list[tuple[int, str | bytes]]], dict[str, Any]] | None = None,
) -> Iterator[RawRecord]:
    """Iterate a parser's JSON records; a bad chunk or record becomes a warning and iteration goes on.

    Records are numbered as their record headers number them; an unreadable one is named by the
    number after the last good one (the parser's message names the full range of a lost chunk).
    `damaged(n)` gives the records (and error messages) of chunk n when the parser refused it for its
    checksum, or None when n is not a chunk the reader found damaged; they take the chunk's place.
    `decode_chunk`: see `EvtxReader`.
    """
    iterator = parser.records_json()
    lane = iterator if type(iterator) is _Chunkwise else None
    salvaged: list[Item] = []
    consecutive = 0
    while True:
        error: str | None = None
        written = lane.written() if lane is not None else None
        if written is not None:  # a chunk written (none for zeros): its records, numbered, JSON objects
            consecutive = 0
            if decode_chunk is not None:
                if written:
                    last_number = written[-1][0]
                    yield RawRecord(last_number, decode_chunk(written), "evtx-json")
                continue
            for last_number, text in written:
                data = decode(cast(str, text))  # (bytes come only to a reader with `decode_chunk`)
                if not isinstance(data, dict):
                    on_warning(IngestWarning(
                        source, f"EVTX record{what} is a JSON {type(data).__name__}", last_number
                    ))
                    continue
                yield RawRecord(last_number, data, "evtx-json")
            continue
        if salvaged:
            item = salvaged.pop()
            if isinstance(item, _Panic):  # in the child, on a damaged chunk: this process's parser goes on
                error = f"PanicException: {item}"
            elif isinstance(item, str):
                error = item
            else:
                record = item
        else:
            try:
                record = next(iterator)
            except StopIteration:
                return
            except RuntimeError as exc:  # the parser's per-chunk / per-record error
                found = _CHUNK_NUMBER.search(str(exc)) if damaged is not None else None
                chunk = damaged(int(found.group(1))) if damaged is not None and found else None
                if chunk is not None:
                    salvaged = chunk[::-1]  # popped from the end
                    continue
                error = str(exc)
            except BaseException as exc:
                # pyo3's PanicException: the Rust parser failed an assertion (here or in the child)
                if not isinstance(exc, _ChildPanic) and type(exc).__name__ != "PanicException":
                    raise
                on_warning(IngestWarning(
                    source, f"EVTX parser failed{what}, reading stopped here: {exc}", last_number + 1
                ))
                return
        if error is not None:
            consecutive += 1
            on_warning(IngestWarning(
                source, f"EVTX parse error{what}, records skipped: {error}", last_number + 1
            ))
            if consecutive >= MAX_CONSECUTIVE_ERRORS:
                on_warning(IngestWarning(
                    source, f"gave up after {consecutive} unreadable EVTX records in a row{what}",
                    last_number + 1,
                ))
                return
            continue
        consecutive = 0
        number = record.get("event_record_id")
        last_number = number if isinstance(number, int) else last_number + 1
        try:
            data = decode(record["data"])
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            on_warning(IngestWarning(source, f"EVTX record{what} is not valid JSON: {exc}", last_number))
            continue
        if not isinstance(data, dict):
            on_warning(IngestWarning(
                source, f"EVTX record{what} is a JSON {type(data).__name__}", last_number
            ))
            continue
        yield RawRecord(last_number, data, "evtx-json")  # positional: the cheapest call


#: The child process that parses EVTX apart (`_ChunkParser`): reads requests on stdin, each an image (a file
#: header and one chunk) or a file's path and a chunk's offset in it, with the chunk's number in the file,
#: and answers each with frames: a kind byte, a
#: number and a UTF-8 text. `R` is a record (its number and JSON text), `N` a record without a usable number,
#: `E` a parse error (the parser numbers the image's chunk 0: renumbered), `P` a parser panic, `Z` the end of
#: the image. On Linux it asks the kernel to kill it when its parent ends (PR_SET_PDEATHSIG): a hunt worker
#: stopped for stalling must not leave a looping child behind, and the loop cannot check for itself. (Were
#: the parent gone before that, stdin is at its end.) Ctrl-C is the parent's to handle.
_CHILD = r"""
import io, re, signal, struct, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
    pass
from evtx import PyEvtxParser
inp = sys.stdin.buffer
out = open(sys.stdout.fileno(), "wb", buffering=1 << 16, closefd=False)  # the pipe's size: fewer wakeups
chunk_zero = re.compile(r"chunk number 0\b")
def send(kind, number, text):
    body = text.encode("utf-8", "surrogatepass")
    out.write(struct.pack("<cQI", kind, number, len(body)) + body)
opened = None
while True:
    head = inp.read(21)
    if len(head) < 21:
        break
    mode, size, number, offset = struct.unpack("<BIQQ", head)
    body = inp.read(size)
    if mode == 2:  # the file is read: let it go (a temporary copy's space is freed only then), no answer
        if opened is not None:
            opened.close()
            opened = None
        continue
    try:
        if mode == 1:  # a file's path: its header and the chunk at `offset`
            path = body.decode("utf-8", "surrogateescape")
            # opened again for each read of a file (chunk 0 comes first): the path may name new bytes now
            if opened is None or opened.name != path or number == 0:
                if opened is not None:
                    opened.close()
                opened = open(path, "rb")
            opened.seek(0)
            image = opened.read(4096)
            opened.seek(offset)
            image += opened.read(65536)
        else:
            image = body
        records = PyEvtxParser(io.BytesIO(image), number_of_threads=1).records_json()
        first = True
        while True:
            try:
                r = next(records)
            except StopIteration:
                break
            except RuntimeError as exc:
                send(b"E", 0, chunk_zero.sub(f"chunk number {number}", str(exc), 1))
                continue
            rid = r.get("event_record_id")
            if type(rid) is int and 0 <= rid < 1 << 64:
                send(b"R", rid, r["data"])
            else:
                send(b"N", 0, r["data"])
            if first:  # the parent may be waiting: it starts on this one while the rest is parsed
                out.flush()
                first = False
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":
            send(b"P", 0, str(exc))
        else:
            send(b"E", 0, f"{type(exc).__name__}: {exc}")
    send(b"Z", 0, "")
    out.flush()
"""
_FRAME = struct.Struct("<cQI")
_REQUEST = struct.Struct("<BIQQ")
#: A frame longer than this means the child is not what it should be (a chunk's records are far smaller).
_MAX_FRAME = 256 << 20


class _Panic(str):
    """A parser panic reported by the child (an item of `_ChunkParser.results`)."""


class _ChildPanic(Exception):
    """The parser panicked in the child: reading the file stops there, as when it panics in-process."""


#: What parsing one chunk gives: records ({"event_record_id", "data"}), error messages, or a `_Panic`.
Item = dict[str, Any] | str


class _ChunkParser:
    """One child process that parses EVTX images (`_CHILD`), stopped when one takes too long.

    Damaged or crafted bytes can send the parser into an endless loop, in the Rust code and holding the
    GIL, so the only way to stop it is to stop the process that runs it; the hunt's worker or the CLI must
    not be that process. Records come back as UTF-8 text in frames, never pickled: the child parses hostile
    bytes. Requests are answered in order, so a few may be asked ahead (`asked`) and the child parses while
    this process works on what it sent. `stops` counts the images it had to be stopped on.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.stops = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._buffer = b""
        self._why = ""
        #: Whether the request `take` last stopped ended with the child ending by itself (not stopped for
        #: taking too long).
        self.died = False
        #: Requests sent whose answers were not all read yet (the oldest is being answered).
        self.asked = 0
        self._given = 0  # records of the oldest request handed on so far
        #: The file whose chunk 0 was asked, last, for the file read next (see `_chunks_apart`).
        self.ahead: str | None = None

    @property
    def running(self) -> bool:
        return self._child is not None

    def alive(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def claim(self, path: str | None) -> bool:
        """Whether chunk 0 of `path` was asked ahead; a request asked ahead for another file (or for a
        file that turned out to have no whole chunk: `path` None) stops the child, whose answers would
        otherwise come first."""
        if self.ahead is None:
            return False
        if self.ahead == path:
            self.ahead = None
            return True
        self.close()
        return False

    def send(self, image: bytes, number: int, *, path: str | None = None, flush: bool = True) -> None:
        """Ask for the records of `image` (a file header and one chunk), whose chunk is number `number` of
        its file (for messages); or, with `path`, of that file's header and chunk `number`, which the child
        reads itself (no chunk through the pipe: such requests are small enough to ask a few ahead).
        Without `flush` the request waits in the pipe's buffer for the next that flushes."""
        if self._child is None:
            # what the child says when it fails (a broken install, a missing module) ends the warning
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed with the child)
            try:
                self._child = subprocess.Popen(
                    [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=self._stderr,
                )
            except OSError:  # no process to be had (limits, a sandbox): the caller reports the file
                self.close()
                raise
            self._buffer = b""
            self.asked = 0
        self.asked += 1
        if path is None:
            request = _REQUEST.pack(0, len(image), number, 0) + image
        else:
            body = path.encode("utf-8", "surrogateescape")
            request = _REQUEST.pack(1, len(body), number, HEADER_SIZE + number * CHUNK_SIZE) + body
        self._write(request, flush)

    def release(self) -> None:
        """Let the child close the file it reads (no answer comes): the reader is done with it."""
        if self._child is not None:
            self._write(_REQUEST.pack(2, 0, 0, 0))

    def flush(self) -> None:
        """Write the requests sent without `flush`."""
        if self._child is not None:
            self._write(b"")

    def _write(self, data: bytes, flush: bool = True) -> None:
        """Write to the child; one that cannot take it is stopped (the next `take` says why)."""
        assert self._child is not None and self._child.stdin is not None
        try:
            self._child.stdin.write(data)
            if flush:
                self._child.stdin.flush()
        except OSError as exc:
            self._why = f"it could not be given the chunk: {exc}"
            self.died = True
            self.close()

    def results(self, what: str) -> list[Item]:
        """Everything the oldest request gives (see `take`)."""
        out: list[Item] = []
        done = False
        while not done:
            items, done = self.take(what)
            out += items
        return out

    def take(self, what: str) -> tuple[list[Item], bool]:
        """The next records and error messages the oldest request gives, in order (at least one, unless it
        is done), and whether it is done. If the child stops answering (or dies) it is stopped and the
        request ends with a message naming `what` (e.g. "chunk 3"); later requests are dropped."""
        out: list[Item] = []
        self.died = self._child is None and self.died  # a failed send() has said so already
        if self._child is not None:
            deadline = time.monotonic() + self.seconds
            buf, pos, head = self._buffer, 0, _FRAME.size
            unpack = _FRAME.unpack_from
            while True:
                n = len(buf)
                while pos + head <= n:  # every whole frame in the buffer
                    kind, number, size = unpack(buf, pos)
                    end = pos + head + size
                    if end > n:
                        break
                    text = buf[pos + head:end].decode("utf-8", "surrogatepass")
                    pos = end
                    if kind == b"R":
                        out.append({"event_record_id": number, "data": text})
                    elif kind == b"Z":
                        self._buffer = buf[pos:]
                        self.asked -= 1
                        self._given = 0
                        return out, True
                    elif kind == b"N":
                        out.append({"event_record_id": None, "data": text})
                    elif kind == b"P":
                        out.append(_Panic(text))
                    else:
                        out.append(text)
                if pos + head <= n and unpack(buf, pos)[2] > _MAX_FRAME:
                    self._why = f"it sent a frame of {unpack(buf, pos)[2]} bytes"
                    self.died = False
                    break
                if out:
                    self._buffer = buf[pos:]
                    self._given += sum(1 for item in out if not isinstance(item, str))
                    return out, False
                block = self._read(deadline)
                if block is None:
                    break
                buf, pos = buf[pos:] + block, 0
            self.close()
        self.stops += 1
        read = self._given + sum(1 for item in out if not isinstance(item, str))
        self._given = 0
        out.append(f"parser stopped on {what} ({self._why}) after {read} of its records")
        return out, True

    def _read(self, deadline: float) -> bytes | None:
        """What the child wrote next, or None when nothing came by `deadline` or the child is gone."""
        assert self._child is not None and self._child.stdout is not None
        fd = self._child.stdout.fileno()
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            self._why = f"no answer within {self.seconds:g} s"
            self.died = False
            return None
        block = os.read(fd, 1 << 18)
        if not block:
            self._why = f"its process ended, exit status {self._child.wait()}{self._last_words()}"
            self.died = True
            return None
        return block

    def _last_words(self) -> str:
        """The last line the child wrote to stderr, as `: line` (empty when it wrote nothing)."""
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(max(0, self._stderr.seek(0, io.SEEK_END) - 500))
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return f": {lines[-1].strip()}" if lines else ""

    def close(self) -> None:
        self.asked = 0
        self.ahead = None
        if self._child is not None:
            self._child.kill()
            self._child.wait()
            for pipe in (self._child.stdin, self._child.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):  # what was left to write to the dead child
                        pipe.close()
            self._child = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


class _Quarantine(_ChunkParser):
    """Parses a file's damaged chunks apart, one at a time, when the parser runs in this process."""

    #: After this many stops in one file, its other damaged chunks are skipped without a try.
    MAX_STOPS = 2

    def records(self, header: bytes, chunk: bytes, number: int) -> list[Item]:
        """Damaged chunk `number`: its records as the parser gives them and its error messages, in order."""
        if self.stops >= self.MAX_STOPS:
            return [
                f"damaged chunk {number} not parsed: the parser already had to be stopped {self.stops} "
                "times on this file's damaged chunks"
            ]
        self.send(header + chunk, number)
        return self.results(f"damaged chunk {number}")


class _Feed:
    """Stands in for the parser's `records_json()` iterator over items that `next_items` gives a list at a
    time (None when done): records are returned, error messages raised as the parser raises them."""

    def __init__(self, next_items: Callable[[], list[Item] | None]) -> None:
        self._next_items = next_items
        self._items: list[Item] = []

    def records_json(self) -> _Feed:
        return self

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> dict[str, Any]:
        while not self._items:
            items = self._next_items()
            if items is None:
                raise StopIteration
            self._items = items[::-1]  # popped from the end
        item = self._items.pop()
        if isinstance(item, _Panic):
            raise _ChildPanic(str(item))
        if isinstance(item, str):
            raise RuntimeError(item)
        return item


#: Reading apart waits on the child's pipe with `select`, which Windows offers for sockets only.
_CAN_ISOLATE = os.name == "posix"
#: Chunks asked of the child ahead of the one being read (small requests: the pipe never fills with them).
_AHEAD = 4


def _written(stream: IO[bytes], number: int) -> list[Item] | None:
    """Chunk `number`'s records as `_binxml` writes them (what the parser gives), or None: the parser's."""
    if _chunk_records is None:
        return None
    stream.seek(HEADER_SIZE + number * CHUNK_SIZE)
    records = _chunk_records(stream.read(CHUNK_SIZE))
    if records is None:
        return None
    return [{"event_record_id": n, "data": text} for n, text in records]


def _chunks_apart(
    child: _ChunkParser, path: Path, full_chunks: int, damaged: set[int], *, first_asked: bool = False,
    next_path: str | None = None, written: Callable[[int], list[Item] | None] | None = None,
) -> Iterator[list[Item]]:
    """The items of the file at `path` parsed in `child`, chunk by chunk, a few at a time: chunks are asked
    ahead, so that the child parses while this process works on what it sent.

    A stop costs the chunk it happened on; the next ones are asked again of a new child, until the child
    has had to be stopped `_Quarantine.MAX_STOPS` times. A child that ends by itself is given the chunk
    once more (a new child, what was already handed on skipped): the kernel ends a child when the thread
    that started it ends (the parent-death signal), which says nothing about the chunk.

    `first_asked`: chunk 0 was asked already (ahead, by the file before). Once every chunk is asked,
    chunk 0 of `next_path` (the file the caller reads next, if known) is asked too, where there is no
    `_binxml` writer: files of a few chunks would otherwise each wait for their first. `written(n)`: chunk
    n's items where this process writes them itself (`_written`, which cannot loop), or None for a chunk
    the child must parse; it is asked as chunks are asked, and what it wrote is kept until its turn.
    """
    name = str(path)
    asked = 1 if first_asked else 0  # the next chunk to ask for
    number = 0  # the chunk being read
    given = skip = 0  # items of this chunk handed on; items of a second try to drop (given by the first)
    retried = False
    local: dict[int, list[Item]] = {}  # chunks written here, ahead of their turn
    while number < full_chunks:
        if number in local:
            yield local.pop(number)
            number += 1
            continue
        if child.stops >= _Quarantine.MAX_STOPS:
            yield [
                f"chunks {number}..{full_chunks - 1} not parsed: the parser already had to be stopped "
                f"{child.stops} times on this file"
            ]
            return
        if not child.running:
            asked = number  # a stopped child's requests went with it
        requests = 0
        while asked < full_chunks and asked - number < _AHEAD:
            items = written(asked) if written is not None and asked not in local else None
            if items is not None:
                local[asked] = items
            elif asked not in local:
                child.send(b"", asked, path=name, flush=False)  # one write for the requests of one go
                requests += 1
            asked += 1
        if asked == full_chunks and next_path is not None and child.running and asked - number < _AHEAD:
            if _chunk_records is None:  # (with the writer, the next file's chunk 0 is most likely written)
                child.send(b"", 0, path=next_path, flush=False)
                child.ahead = next_path
                requests += 1
            next_path = None
        if requests:
            child.flush()
        if number in local:
            continue
        items, done = child.take(f"{'damaged ' if number in damaged else ''}chunk {number}")
        if done and child.died and not retried:
            items.pop()  # the stop's message: not a stop, yet
            child.stops -= 1
            retried, done = True, False
            skip = given + len(items)
        elif skip:
            dropped = min(skip, len(items))
            items, skip = items[dropped:], skip - dropped
        if items:
            given += len(items)
            yield items
        if done:
            number += 1
            given = skip = 0
            retried = False


class EvtxReader:
    """Reads EVTX with `evtx.PyEvtxParser`.

    Damage is reported, never fatal: a file without the `ElfFile` magic, a chunk the parser cannot
    read (its records are lost and named in the warning), a chunk whose checksum does not match (read as
    found, and reported), and a truncated file. The parser silently ignores a partial last chunk, so this
    reader notices the truncation itself and parses the partial chunk on its own to recover the records
    written before the cut.

    Some bytes (damaged, or crafted with valid checksums) send the parser into an endless loop that holds
    the GIL. With `isolate` (the default on POSIX systems) every chunk is parsed in a child process
    (`_ChunkParser`, one per reader and reused from file to file), which is stopped when a chunk takes
    `CHUNK_SECONDS`; that chunk's records are lost, named in a warning, and reading goes on. Without it
    (a hunt worker, which has its own stall timer: see `casefile.hunt.parallel`) the parser runs in this
    process and only damaged chunks are parsed apart.
    """

    name = "evtx"

    def __init__(
        self, threads: int = 0, decode: Callable[[str], Any] = json.loads, *, isolate: bool = _CAN_ISOLATE,
        decode_chunk: Callable[[list[tuple[int, str | bytes]]], dict[str, Any]] | None = None,
    ) -> None:
        #: Rust worker threads per file in this process; 0 lets the parser decide (1 when files run in
        #: parallel). A child parses one chunk at a time.
        self.threads = threads
        #: Turns a record's JSON text into its `RawRecord.data` (the vectorised hunt keeps the text).
        self.decode = decode
        #: If given, the records of a chunk that `_binxml` writes (most) come as one RawRecord, numbered as
        #: the chunk's last record and holding what this makes of their (number, JSON text) pairs, instead of
        #: a RawRecord each (the vectorised hunt: a record then costs no objects and generator steps of its
        #: own on its way to the hunt). Records read otherwise come one by one, through `decode`. The pairs'
        #: texts that are not ASCII are UTF-8 bytes: the hunt reads UTF-8, and a str would cost a decode
        #: here and an encode there (`decode` gets such bytes too, where a chunk's records come one by one).
        self.decode_chunk = decode_chunk
        self.isolate = isolate
        self._spare: list[_ChunkParser] = []  # idle children, for the next file
        self._lock = threading.Lock()
        _READERS.add(self)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_spare"], state["_lock"] = [], None  # processes and locks are this process's own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        _READERS.add(self)

    def close(self) -> None:
        """Stop the idle children (a reader in use keeps its own until the file is read)."""
        with self._lock:
            spare, self._spare = self._spare, []
        for child in spare:
            child.close()

    def _borrow(self) -> _ChunkParser:
        with self._lock:
            while self._spare and not self._spare[-1].alive():
                self._spare.pop().close()  # ended with the thread that started it (see `_chunks_apart`)
            child = self._spare.pop() if self._spare else _ChunkParser(CHUNK_SECONDS)
        child.stops = 0  # counted per file
        return child

    def _give_back(self, child: _ChunkParser) -> None:
        # left in the middle of a file (or stopped): not reused; a request asked ahead is the next file's
        if child.asked != (child.ahead is not None) or not child.running:
            child.close()
            return
        with self._lock:
            self._spare.append(child)

    def sniff(self, head: bytes, name: str) -> int:
        if head.startswith(MAGIC):
            return 100
        # A damaged file named .evtx still goes to this reader, which says what is wrong with it.
        return 50 if name.lower().endswith(".evtx") else 0

    def read(
        self, stream: IO[bytes], source: str, on_warning: WarningSink, *, disk_path: Path | None = None,
        next_path: Path | None = None,
    ) -> Iterator[RawRecord]:
        if disk_path is not None:
            yield from self._read(stream, source, on_warning, disk_path, next_path)
            return
        # A zip member or gzip stream: copied to a temporary file first, so the parser gets a
        # real file to seek in, and damaged compressed data cuts the copy short instead of
        # losing the whole file (the cut copy is then read like any truncated EVTX).
        with tempfile.TemporaryDirectory(prefix="casefile-evtx-") as tmp:
            copy = Path(tmp) / "copy.evtx"
            with copy.open("wb") as out:
                copied = 0
                # read1: one step of the decompressor at a time, so little is lost at the damage.
                read = getattr(stream, "read1", stream.read)
                try:
                    while block := read(1 << 20):
                        if copied == 0 and not block.startswith(MAGIC[: len(block)]):
                            out.write(block)  # not EVTX: the header check below says so
                            break
                        if copied + len(block) > MAX_COPY:
                            # A decompression bomb must not fill the disk.
                            on_warning(IngestWarning(
                                source, f"compressed EVTX larger than {MAX_COPY >> 20} MiB: "
                                "only its beginning is read",
                            ))
                            break
                        out.write(block)
                        copied += len(block)
                except COMPRESSED_ERRORS as exc:
                    on_warning(IngestWarning(
                        source, f"damaged archive data after {copied} bytes ({type(exc).__name__}: {exc}); "
                        "reading the EVTX up to there",
                    ))
            with copy.open("rb") as fh:
                yield from self._read(fh, source, on_warning, copy)

    def parts(self, path: str, part_bytes: int) -> list[tuple[int, int]] | None:
        """Chunk ranges of about `part_bytes` of an intact file (`evtx_parts`)."""
        return evtx_parts(path, max(1, part_bytes // CHUNK_SIZE))

    def part_name(self, part: tuple[int, ...]) -> str:
        return f"chunks {part[0]}..{part[1] - 1}"

    def may_split(self, head: bytes) -> bool:
        """Whether the file header is intact, as `evtx_parts` asks first."""
        return _intact_header(head)

    def read_part(
        self, stream: IO[bytes], source: str, on_warning: WarningSink, part: tuple[int, ...]
    ) -> Iterator[RawRecord]:
        """The records of chunks `part` (start, stop) of an intact file (`evtx_parts`), as reading the whole
        file gives them. Parsed in this process: a part goes to a hunt worker, which has its stall timer."""
        start, stop = part
        header = stream.read(HEADER_SIZE)
        last = 0  # what the whole file's reading would number an unreadable record after
        for number in range(start - 1, -1, -1):
            stream.seek(HEADER_SIZE + number * CHUNK_SIZE)
            head = stream.read(40)
            if head.startswith(CHUNK_MAGIC):
                last = struct.unpack_from("<Q", head, 32)[0]
                break
        if _chunk_records is not None and _plain_header(header):
            chunks: _Chunkwise | _Renumbered = _Chunkwise(
                stream, header, start, stop, utf8=self.decode_chunk is not None
            )
        else:
            try:
                parser = PyEvtxParser(_PartView(stream, header, start, stop), number_of_threads=self.threads)
            except (OSError, RuntimeError, ValueError) as exc:
                on_warning(IngestWarning(source, f"unreadable EVTX file: {exc}"))
                return
            chunks = _Renumbered(parser, start)
        yield from _records(
            chunks, source, on_warning, last_number=last, decode=self.decode, decode_chunk=self.decode_chunk
        )

    def _read(
        self, stream: IO[bytes], source: str, on_warning: WarningSink, disk_path: Path,
        next_path: Path | None = None,
    ) -> Iterator[RawRecord]:
        header = stream.read(HEADER_SIZE)
        if not header.startswith(MAGIC):
            on_warning(IngestWarning(
                source, f"not an EVTX file: expected magic b'ElfFile\\x00', found {header[:8]!r}"
            ))
            return
        if len(header) < HEADER_SIZE:
            on_warning(IngestWarning(
                source, f"truncated EVTX: only {len(header)} bytes, the file header alone is {HEADER_SIZE}"
            ))
            return
        full_chunks, partial, declared = _layout(stream, header)
        image = None
        if full_chunks <= IMAGE_CHUNKS and _chunk_records is not None and not self.isolate:
            # A file of a few chunks (most are) is read once, not chunk by chunk for its checksums and again
            # for its records.
            stream.seek(0)
            image = stream.read(HEADER_SIZE + full_chunks * CHUNK_SIZE)
            if len(image) != HEADER_SIZE + full_chunks * CHUNK_SIZE:  # changed as it was read
                image = None
        problems, damaged = check_checksums(stream, header, full_chunks, image)
        for problem in problems:
            on_warning(IngestWarning(source, problem))
        stream.seek(0)
        parser: Any
        if not damaged and _chunk_records is not None and _plain_header(header) and not self.isolate:
            parser = _Chunkwise(stream, header, 0, full_chunks, image, utf8=self.decode_chunk is not None)
        else:
            try:
                # With damaged chunks the parser checks every chunk's checksums, so that it refuses the
                # damaged ones, which are then parsed apart (`_Quarantine`), where an endless loop can be
                # stopped.
                parser = PyEvtxParser(
                    str(disk_path), number_of_threads=self.threads, validate_checksums=bool(damaged)
                )
            except (OSError, RuntimeError, ValueError) as exc:
                on_warning(IngestWarning(source, f"unreadable EVTX file: {exc}"))
                return
        if self.isolate:
            yield from self._read_apart(
                stream, header, full_chunks, partial, declared, damaged, source, on_warning, disk_path,
                next_path,
            )
            return
        quarantine = _Quarantine(CHUNK_SECONDS) if damaged else None
        # Callables made in these generators hold values, not the generator's scope: a closure would make a
        # reference cycle once compiled (Cython keeps a generator's locals, the closure among them, in the
        # scope the closure refers to), and a hunt worker freezes what cycles are left after each task.
        apart = None
        if quarantine is not None:
            apart = functools.partial(_parse_apart, quarantine, damaged, stream, header)
        last = 0
        try:
            for raw in _records(
                parser, source, on_warning, last_number=0, decode=self.decode, damaged=apart,
                decode_chunk=self.decode_chunk,
            ):
                last = raw.index
                yield raw
        finally:
            if quarantine is not None:
                quarantine.close()
        yield from self._end(stream, header, full_chunks, partial, last, declared, source, on_warning, None)

    def _read_apart(
        self, stream: IO[bytes], header: bytes, full_chunks: int, partial: int, declared: int,
        damaged: set[int], source: str, on_warning: WarningSink, disk_path: Path, next_path: Path | None,
    ) -> Iterator[RawRecord]:
        """`_read` with every chunk parsed in a child process (see `isolate`); the first chunk of
        `next_path` is asked ahead (see `_chunks_apart`)."""
        child = self._borrow()
        name = str(disk_path)
        # the cut last chunk is asked for after the whole ones: nothing may be asked ahead of it
        ahead = str(next_path) if next_path is not None and not partial else None
        try:
            first = child.claim(name if full_chunks else None)
            # Chunks that `_binxml` writes are written here, as a hunt's workers write them (`_Chunkwise`),
            # not parsed in the child: the same records either way, and the same chunks read by the parser.
            mine = not damaged and _chunk_records is not None and _plain_header(header)
            chunks = _chunks_apart(
                child, disk_path, full_chunks, damaged, first_asked=first, next_path=ahead,
                written=functools.partial(_written, stream) if mine else None,
            )
            feed = _Feed(functools.partial(next, chunks, None))  # (not a closure: see `_read`)
            last = 0
            for raw in _records(feed, source, on_warning, last_number=0, decode=self.decode):
                last = raw.index
                yield raw
            yield from self._end(
                stream, header, full_chunks, partial, last, declared, source, on_warning, child
            )
            if child.ahead is None:  # (asking ahead moves the child on to the next file)
                child.release()
        finally:
            self._give_back(child)

    def _end(
        self, stream: IO[bytes], header: bytes, full_chunks: int, partial: int, last: int, declared: int,
        source: str, on_warning: WarningSink, child: _ChunkParser | None,
    ) -> Iterator[RawRecord]:
        """After the whole chunks: the partial last chunk's records, or a warning about missing ones."""
        if partial:
            yield from self._salvage(
                stream, header, full_chunks, partial, last, declared, source, on_warning, child
            )
        elif full_chunks < declared:
            on_warning(IngestWarning(
                source,
                f"truncated EVTX: header declares {declared} chunks, file holds {full_chunks}; "
                "records in the missing chunks are lost",
            ))

    def _salvage(
        self, stream: IO[bytes], header: bytes, full_chunks: int, partial: int, last: int,
        declared: int, source: str, on_warning: WarningSink, child: _ChunkParser | None,
    ) -> Iterator[RawRecord]:
        """Parse the cut-off last chunk alone, zero-padded to full size, for the records it still holds
        (in `child`, if given)."""
        if partial < CHUNK_HEADER_SIZE:
            on_warning(IngestWarning(
                source,
                f"truncated EVTX: file ends {partial} bytes into chunk {full_chunks}, inside its header "
                f"(chunks are {CHUNK_SIZE} bytes; header declares {declared}); later records are lost",
            ))
            return
        stream.seek(HEADER_SIZE + full_chunks * CHUNK_SIZE)
        tail = stream.read(partial)
        complete, cut_record = _complete_records(tail)
        # Zeros after the last whole record end the parser's walk; the zeros must not reach into a
        # cut record, which would otherwise parse into a record of garbage.
        padded = header + tail[:complete] + bytes(CHUNK_SIZE - complete)
        recovered = 0
        parser: Any
        try:
            parser = PyEvtxParser(io.BytesIO(padded), number_of_threads=1)
        except (OSError, RuntimeError, ValueError) as exc:
            on_warning(IngestWarning(source, f"truncated EVTX: partial last chunk unreadable: {exc}"))
            return
        if child is not None:  # the check above reads the header only; the records are parsed apart
            child.send(padded, 0)  # 0: the parser's own numbering, as parsing it here would give
            items = iter([child.results(f"partial chunk {full_chunks}")])
            parser = _Feed(functools.partial(next, items, None))  # (not a closure: see `_read`)
        what = f" in partial chunk {full_chunks}"
        for raw in _records(parser, source, on_warning, last_number=last, what=what, decode=self.decode):
            recovered += 1
            yield raw
        on_warning(IngestWarning(
            source,
            f"truncated EVTX: file ends {partial} bytes into chunk {full_chunks} (chunks are {CHUNK_SIZE} "
            f"bytes; header declares {declared}); recovered {recovered} records from the partial chunk"
            + (f", record {cut_record} was cut off" if cut_record is not None else "")
            + ", later records are lost",
        ))


def _parse_apart(
    quarantine: _Quarantine, damaged: set[int], stream: IO[bytes], header: bytes, number: int
) -> list[Item] | None:
    """The items of chunk `number` parsed in `quarantine` if it is one of the `damaged`, else None."""
    if number not in damaged:
        return None
    stream.seek(HEADER_SIZE + number * CHUNK_SIZE)
    return quarantine.records(header, stream.read(CHUNK_SIZE), number)


#: Readers that may hold idle children: stopped at exit, and forgotten by a forked process (whose requests
#: would otherwise mix with its parent's on the same pipes).
_READERS: weakref.WeakSet[EvtxReader] = weakref.WeakSet()


def _close_all() -> None:
    for reader in list(_READERS):
        reader.close()


def _forget_all_in_child() -> None:
    for reader in list(_READERS):
        reader._spare, reader._lock = [], threading.Lock()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all_in_child)

READERS.register(EvtxReader.name, EvtxReader())
