"""Windows `.evtx` files through the Rust `evtx` parser, record by record, salvaging damaged files."""

from __future__ import annotations

import io
import json
import struct
import tempfile
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


def check_checksums(stream: IO[bytes], header: bytes, full_chunks: int) -> list[str]:
    """Problems with the CRC32 checksums of the file header and of each chunk (header and records).

    The parser does not verify them by default (verifying would drop whole chunks); a mismatch
    means bytes changed after Windows wrote them (damage, or tampering), so the records are read
    as found and the mismatch is reported.
    """
    problems = []
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
            part = "chunk header" if not header_ok else "records"
            problems.append(
                f"chunk {number} checksum mismatch ({part}): records {first}..{last} may be damaged "
                "or altered; read as found"
            )
    return problems


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


def _records(
    parser: Any, source: str, on_warning: WarningSink, *, last_number: int, what: str = "",
    decode: Callable[[str], Any] = json.loads,
) -> Iterator[RawRecord]:
    """Iterate a parser's JSON records; a bad chunk or record becomes a warning and iteration goes on.

    Records are numbered as their record headers number them; an unreadable one is named by the
    number after the last good one (the parser's message names the full range of a lost chunk).
    """
    iterator = parser.records_json()
    consecutive = 0
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except RuntimeError as exc:  # the parser's per-chunk / per-record error
            consecutive += 1
            on_warning(IngestWarning(
                source, f"EVTX parse error{what}, records skipped: {exc}", last_number + 1
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


class EvtxReader:
    """Reads EVTX with `evtx.PyEvtxParser`.

    Damage is reported, never fatal: a file without the `ElfFile` magic, a chunk the parser cannot
    read (its records are lost and named in the warning), and a truncated file. The parser
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
        for problem in check_checksums(stream, header, full_chunks):
            on_warning(IngestWarning(source, problem))
        stream.seek(0)
        try:
            parser = PyEvtxParser(str(disk_path), number_of_threads=self.threads)
        except (OSError, RuntimeError, ValueError) as exc:
            on_warning(IngestWarning(source, f"unreadable EVTX file: {exc}"))
            return
        last = 0
        for raw in _records(parser, source, on_warning, last_number=0, decode=self.decode):
            last = raw.index
            yield raw
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
