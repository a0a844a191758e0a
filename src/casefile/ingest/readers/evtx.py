"""Windows `.evtx` files through the Rust `evtx` parser, record by record, salvaging damaged files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import select
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from evtx import PyEvtxParser

from casefile.ingest.model import RawRecord
from casefile.ingest.plugins import READERS, WarningSink
from casefile.models import IngestWarning

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
#: After this many errors in a row without a good record the rest of the file is given up.
MAX_CONSECUTIVE_ERRORS = 256
#: Seconds a damaged chunk may take in the child process that parses it (a chunk takes milliseconds):
#: some damaged bytes send the parser into an endless loop that holds the GIL, which only stopping the
#: process that runs it can end.
DAMAGED_CHUNK_SECONDS = 10.0


def check_checksums(stream: IO[bytes], header: bytes, full_chunks: int) -> tuple[list[str], set[int]]:
    """Problems with the CRC32 checksums of the file header and of each chunk (header and records), and
    the numbers of the chunks whose checksums do not match.

    A mismatch means bytes changed after Windows wrote them (damage, or tampering): the reader parses
    such chunks apart (`_Quarantine`), reads their records as found and reports the mismatch.
    """
    problems = []
    damaged: set[int] = set()
    if zlib.crc32(header[:120]) != struct.unpack_from("<I", header, 124)[0]:
        problems.append("file header checksum mismatch: header fields may be damaged")
    stream.seek(HEADER_SIZE)
    for number in range(full_chunks):
        chunk = stream.read(CHUNK_SIZE)
        if not chunk.startswith(CHUNK_MAGIC):
            continue  # unused (zero-filled) space; a damaged chunk header is reported by the parser
        first, last = struct.unpack_from("<QQ", chunk, 24)
        free_offset, data_crc = struct.unpack_from("<II", chunk, 48)
        header_ok = zlib.crc32(chunk[:120] + chunk[128:512]) == struct.unpack_from("<I", chunk, 124)[0]
        data_ok = free_offset <= CHUNK_SIZE and zlib.crc32(chunk[512:free_offset]) == data_crc
        if not (header_ok and data_ok):
            damaged.add(number)
            part = "chunk header" if not header_ok else "records"
            problems.append(
                f"chunk {number} checksum mismatch ({part}): records {first}..{last} may be damaged "
                "or altered; read as found"
            )
    return problems, damaged


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
    damaged: Callable[[int], list[dict[str, Any] | str] | None] | None = None,
) -> Iterator[RawRecord]:
    """Iterate a parser's JSON records; a bad chunk or record becomes a warning and iteration goes on.

    Records are numbered as their record headers number them; an unreadable one is named by the
    number after the last good one (the parser's message names the full range of a lost chunk).
    `damaged(n)` gives the records (and error messages) of chunk n when the parser refused it for its
    checksum, or None when n is not a chunk the reader found damaged; they take the chunk's place.
    """
    iterator = parser.records_json()
    salvaged: list[dict[str, Any] | str] = []
    consecutive = 0
    while True:
        error: str | None = None
        if salvaged:
            item = salvaged.pop()
            if isinstance(item, str):
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
                if type(exc).__name__ != "PanicException":  # pyo3's: the Rust parser failed an assertion
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
        yield RawRecord(index=last_number, data=data, shape="evtx-json")


#: The child process of `_Quarantine`: reads length-prefixed EVTX images (a file header and one chunk) on
#: stdin and answers each with length-prefixed JSON frames: ["r", record number, JSON text] per record,
#: ["e", message] per error, ["end"] when the chunk is done. On Linux it asks the kernel to kill it when
#: its parent ends (PR_SET_PDEATHSIG): a hunt worker stopped for stalling must not leave a looping child
#: behind, and the loop cannot check for itself. (Were the parent gone before that, stdin is at its end.)
_CHILD = r"""
import io, json, signal, struct, sys
try:
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
    pass
from evtx import PyEvtxParser
inp, out = sys.stdin.buffer, sys.stdout.buffer
def send(item):
    body = json.dumps(item).encode("ascii")
    out.write(struct.pack("<I", len(body)) + body)
while True:
    head = inp.read(4)
    if len(head) < 4:
        break
    image = inp.read(struct.unpack("<I", head)[0])
    try:
        records = PyEvtxParser(io.BytesIO(image), number_of_threads=1).records_json()
        while True:
            try:
                r = next(records)
            except StopIteration:
                break
            except RuntimeError as exc:
                send(["e", str(exc)])
                continue
            send(["r", r.get("event_record_id"), r["data"]])
    except BaseException as exc:
        send(["e", f"{type(exc).__name__}: {exc}"])
    send(["end"])
    out.flush()
"""


class _Quarantine:
    """Parses damaged chunks one at a time in a child process, stopped when one takes too long.

    Damaged bytes can send the parser into an endless loop, in the Rust code and holding the GIL, so the
    only way to stop it is to stop the process; the hunt's worker or the CLI must not be that process.
    Records are framed as JSON, not pickled: the child parses hostile bytes.
    """

    #: After this many stops in one file, its other damaged chunks are skipped without a try.
    MAX_STOPS = 2

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.stops = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._buffer = bytearray()
        self._why = ""

    def records(self, header: bytes, chunk: bytes, number: int) -> list[dict[str, Any] | str]:
        """Damaged chunk `number`: its records as the parser gives them and its error messages, in order."""
        if self.stops >= self.MAX_STOPS:
            return [
                f"damaged chunk {number} not parsed: the parser already had to be stopped {self.stops} "
                "times on this file's damaged chunks"
            ]
        if self._child is None:
            self._child = subprocess.Popen(
                [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            self._buffer.clear()
        assert self._child.stdin is not None
        image = header + chunk
        out: list[dict[str, Any] | str] = []
        deadline = time.monotonic() + self.seconds
        try:
            self._child.stdin.write(struct.pack("<I", len(image)) + image)
            self._child.stdin.flush()
            while (frame := self._frame(deadline)) is not None:
                if frame[0] == "end":
                    return out
                out.append({"event_record_id": frame[1], "data": frame[2]} if frame[0] == "r" else frame[1])
        except OSError as exc:
            self._why = f"it could not be given the chunk: {exc}"
        self.close()
        self.stops += 1
        read = sum(1 for item in out if not isinstance(item, str))
        out.append(f"parser stopped on damaged chunk {number} ({self._why}) after {read} of its records")
        return out

    def _frame(self, deadline: float) -> list[Any] | None:
        """The child's next frame, or None when it has not come by `deadline` or the child is gone."""
        assert self._child is not None and self._child.stdout is not None
        fd = self._child.stdout.fileno()
        while True:
            if len(self._buffer) >= 4:
                size = struct.unpack_from("<I", self._buffer)[0]
                if len(self._buffer) >= 4 + size:
                    body = bytes(self._buffer[4:4 + size])
                    del self._buffer[:4 + size]
                    frame: list[Any] = json.loads(body)
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                self._why = f"no answer within {self.seconds:g} s"
                return None
            block = os.read(fd, 1 << 16)
            if not block:
                self._why = f"its process ended, exit status {self._child.wait()}"
                return None
            self._buffer += block

    def close(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.wait()
            for pipe in (self._child.stdin, self._child.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):  # what was left to write to the dead child
                        pipe.close()
            self._child = None


class EvtxReader:
    """Reads EVTX with `evtx.PyEvtxParser`.

    Damage is reported, never fatal: a file without the `ElfFile` magic, a chunk the parser cannot
    read (its records are lost and named in the warning), a chunk whose checksum does not match (parsed
    in a child process that is stopped if it loops: `_Quarantine`), and a truncated file. The parser
    silently ignores a partial last chunk, so this reader notices the truncation itself and
    parses the partial chunk on its own to recover the records written before the cut.
    """

    name = "evtx"

    def __init__(self, threads: int = 0, decode: Callable[[str], Any] = json.loads) -> None:
        #: Rust worker threads per file; 0 lets the parser decide (1 when files run in parallel).
        self.threads = threads
        #: Turns a record's JSON text into its `RawRecord.data` (the vectorised hunt keeps the text).
        self.decode = decode

    def sniff(self, head: bytes, name: str) -> int:
        if head.startswith(MAGIC):
            return 100
        # A damaged file named .evtx still goes to this reader, which says what is wrong with it.
        return 50 if name.lower().endswith(".evtx") else 0

    def read(
        self, stream: IO[bytes], source: str, on_warning: WarningSink, *, disk_path: Path | None = None
    ) -> Iterator[RawRecord]:
        if disk_path is not None:
            yield from self._read(stream, source, on_warning, disk_path)
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

    def _read(
        self, stream: IO[bytes], source: str, on_warning: WarningSink, disk_path: Path
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
        size = stream.seek(0, io.SEEK_END)
        declared = struct.unpack_from("<H", header, 42)[0]
        full_chunks, partial = divmod(size - HEADER_SIZE, CHUNK_SIZE)
        problems, damaged = check_checksums(stream, header, full_chunks)
        for problem in problems:
            on_warning(IngestWarning(source, problem))
        stream.seek(0)
        try:
            # With damaged chunks the parser checks every chunk's checksums, so that it refuses the damaged
            # ones, which are then parsed apart (`_Quarantine`), where an endless loop can be stopped.
            parser = PyEvtxParser(
                str(disk_path), number_of_threads=self.threads, validate_checksums=bool(damaged)
            )
        except (OSError, RuntimeError, ValueError) as exc:
            on_warning(IngestWarning(source, f"unreadable EVTX file: {exc}"))
            return
        quarantine = _Quarantine(DAMAGED_CHUNK_SECONDS) if damaged else None

        def apart(number: int) -> list[dict[str, Any] | str] | None:
            if quarantine is None or number not in damaged:
                return None
            stream.seek(HEADER_SIZE + number * CHUNK_SIZE)
            return quarantine.records(header, stream.read(CHUNK_SIZE), number)

        last = 0
        try:
            for raw in _records(parser, source, on_warning, last_number=0, decode=self.decode, damaged=apart):
                last = raw.index
                yield raw
        finally:
            if quarantine is not None:
                quarantine.close()
        if partial:
            yield from self._salvage(
                stream, header, full_chunks, partial, last, declared, source, on_warning
            )
        elif full_chunks < declared:
            on_warning(IngestWarning(
                source,
                f"truncated EVTX: header declares {declared} chunks, file holds {full_chunks}; "
                "records in the missing chunks are lost",
            ))

    def _salvage(
        self, stream: IO[bytes], header: bytes, full_chunks: int, partial: int, last: int,
        declared: int, source: str, on_warning: WarningSink,
    ) -> Iterator[RawRecord]:
        """Parse the cut-off last chunk alone, zero-padded to full size, for the records it still holds."""
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
        try:
            parser = PyEvtxParser(io.BytesIO(padded), number_of_threads=1)
        except (OSError, RuntimeError, ValueError) as exc:
            on_warning(IngestWarning(source, f"truncated EVTX: partial last chunk unreadable: {exc}"))
            return
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


READERS.register(EvtxReader.name, EvtxReader())
