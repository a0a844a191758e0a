"""JSON logs in every layout responders meet: NDJSON, arrays, concatenated (pretty-printed) objects.

The file is streamed: a buffer of text is decoded value by value with `raw_decode`, and refilled
as needed, so multi-gigabyte exports and huge single lines never sit whole in memory (one
record, however large, does). A record that does not parse is skipped with a warning naming its
line; reading resumes at the next line that starts an object. A large NDJSON file is read in parts
by several hunt workers (`ndjson_parts`).
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from casefile.ingest.model import RawRecord
from casefile.ingest.plugins import READERS, WarningSink
from casefile.ingest.readers._text import MAX_PART_LINE, Bounded, line_part_name, text_encoding
from casefile.models import IngestWarning

#: Bytes read from the file per refill.
READ_SIZE = 1 << 20
_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\r\n]*")
# Where reading resumes after a bad record: a line whose first non-blank character opens an object.
_RESYNC = re.compile(r"\n[ \t]*\{")
_EXTENSIONS = (".json", ".jsonl", ".ndjson", ".jsonlines")
# A decode error costs time in proportion to its offset in the buffer (json counts the lines before it), so
# after a bad record the text read is dropped once it exceeds this: a file of bad lines took a minute per
# 2 MB, one error per line at up to 1 MiB into the block. (Dropping costs a copy of the rest of the block.)
_KEEP_CONSUMED = 4096
#: The longest record read whole; a longer one is skipped with a warning (see `JsonReader._decode`).
MAX_RECORD_CHARS = 64 << 20


def _json_escape_bytes(exc: UnicodeError) -> tuple[str, int]:
    """Decode error handler: an undecodable byte becomes JSON text that parses (inside a string)
    to the four visible characters backslash, x, hex, hex -- instead of vanishing."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start:exc.end]
    return "".join(f"\\\\x{b:02x}" for b in bad), exc.end


_ERRORS = "casefile-json-escape"
codecs.register_error(_ERRORS, _json_escape_bytes)


class _Buffer:
    """Text decoded from a binary stream, consumed from the front, refilled at the back."""

    def __init__(self, stream: IO[bytes] | Bounded, line: int = 1) -> None:
        """`line`: the number of the stream's first line in its file."""
        head = stream.read(4)
        self._decoder = codecs.getincrementaldecoder(text_encoding(head))(errors=_ERRORS)
        self._stream = stream
        self.text = self._decoder.decode(head)
        self.pos = 0
        self.line = line  # line number of self.pos
        self.eof = False

    def fill(self, size: int = 0) -> bool:
        """Append one block of text, or blocks until `size` characters are unconsumed; False at end of file
        (no block added)."""
        if self.eof:
            return False
        # read1: whatever one read of the underlying stream gives, so that a damaged gzip/zip
        # stream raises only after the text before the damage has been handed out.
        read1 = getattr(self._stream, "read1", None)
        # Joined once: appending block by block copied a record of N blocks N times (a 600 MB line took
        # minutes).
        parts = [self.text[self.pos:]]
        have = len(parts[0])
        while True:
            block = read1(READ_SIZE) if read1 is not None else self._stream.read(READ_SIZE)
            if not block:
                self.eof = True
                parts.append(self._decoder.decode(b"", final=True))
                break
            parts.append(self._decoder.decode(block))
            have += len(parts[-1])
            if have >= size:
                break
        self.text = "".join(parts)
        self.pos = 0
        return not self.eof or len(parts) > 2

    def drop_consumed(self) -> None:
        """Forget the text before the position (as `fill` does)."""
        self.text = self.text[self.pos:]
        self.pos = 0

    def advance(self, to: int) -> None:
        self.line += self.text.count("\n", self.pos, to)
        self.pos = to

    def skip_ws(self) -> bool:
        """Skip blanks (refilling as needed); False when only blanks remain."""
        while True:
            end = _WS.match(self.text, self.pos)
            assert end is not None  # the pattern matches the empty string
            self.advance(end.end())
            if self.pos < len(self.text):
                return True
            if not self.fill():
                return False


def _incomplete(exc: json.JSONDecodeError, text: str) -> bool:
    """Whether a decode error may only mean the buffer ends mid-value (more text could fix it)."""
    return exc.msg.startswith("Unterminated string") or exc.pos >= len(text) - 8


class JsonReader:
    """Reads NDJSON, a JSON array (or several), and concatenated objects, pretty-printed or not.

    Top-level arrays are opened and their elements yielded one by one; every record must be an
    object. `RawRecord.index` is the line on which the record starts.
    """

    name = "json"

    def sniff(self, head: bytes, name: str) -> int:
        text = head.decode(text_encoding(head), errors="ignore").lstrip("\ufeff \t\r\n")
        if text[:1] in ("{", "["):
            return 80
        return 40 if name.lower().endswith(_EXTENSIONS) else 0

    def read(
        self, stream: IO[bytes], source: str, on_warning: WarningSink, *, disk_path: Path | None = None,
        next_path: Path | None = None,
    ) -> Iterator[RawRecord]:
        yield from self._records(_Buffer(stream), source, on_warning)

    def parts(self, path: str, part_bytes: int) -> Iterator[tuple[int, int, int]] | None:
        """Byte ranges of about `part_bytes` of an NDJSON file (`ndjson_parts`)."""
        return ndjson_parts(path, part_bytes)

    def may_split(self, head: bytes) -> bool:
        """Whether the first line holds one object, as `ndjson_parts` asks (a JSON array, pretty-printed
        JSON: no)."""
        first = head[:MAX_PART_LINE].split(b"\n", 1)[0]
        return _one_object(first.removeprefix(codecs.BOM_UTF8))

    part_name = staticmethod(line_part_name)

    def read_part(
        self, stream: IO[bytes], source: str, on_warning: WarningSink, part: tuple[int, ...]
    ) -> Iterator[RawRecord]:
        """The records of `part` (start, stop or -1 for the end, the first line's number) of a file
        `ndjson_parts` split, as reading the whole file gives them."""
        start, stop, line = part
        stream.seek(start)
        buf = _Buffer(Bounded(stream, stop - start if stop >= 0 else -1), line)
        yield from self._records(buf, source, on_warning)

    def _records(self, buf: _Buffer, source: str, on_warning: WarningSink) -> Iterator[RawRecord]:
        depth = 0  # open top-level arrays
        while buf.skip_ws():
            char = buf.text[buf.pos]
            if char == "[":
                depth += 1
                buf.advance(buf.pos + 1)
                continue
            if char == ",":  # between array elements, or objects written as `{..},{..}`
                buf.advance(buf.pos + 1)
                continue
            if depth and char == "]":
                depth -= 1
                buf.advance(buf.pos + 1)
                continue
            start_line = buf.line
            value = self._decode(buf, source, on_warning)
            if value is _SKIPPED:
                continue
            if isinstance(value, dict):
                yield RawRecord(start_line, value)
            else:
                on_warning(IngestWarning(
                    source, f"JSON value is a {type(value).__name__}, not an object; skipped", start_line
                ))
        if depth:
            on_warning(IngestWarning(source, "JSON array not closed: file truncated?", buf.line))

    def _decode(self, buf: _Buffer, source: str, on_warning: WarningSink) -> Any:
        """One value at the buffer position, or _SKIPPED after warning about a bad one."""
        while True:
            try:
                value, end = _DECODER.raw_decode(buf.text, buf.pos)
            except RecursionError:
                # Hostile nesting deeper than Python's recursion limit: skip like a bad record.
                nested = json.JSONDecodeError("nested too deeply", buf.text, buf.pos)
                self._skip_bad(buf, nested, source, on_warning)
                return _SKIPPED
            except json.JSONDecodeError as exc:
                if _incomplete(exc, buf.text) and not buf.eof:
                    held = len(buf.text) - buf.pos
                    if held >= MAX_RECORD_CHARS:
                        # No log record is this long (an EVTX record is at most 64 KiB): a compressed bomb of
                        # one line must not take the memory. Skipped from the end of what is held.
                        too_big = json.JSONDecodeError(
                            f"record longer than {MAX_RECORD_CHARS:,} characters", buf.text,
                            len(buf.text) - 1,
                        )
                        self._skip_bad(buf, too_big, source, on_warning)
                        return _SKIPPED
                    # Grow geometrically so a huge record is not re-parsed once per block.
                    buf.fill(min(2 * held, MAX_RECORD_CHARS))
                    continue
                self._skip_bad(buf, exc, source, on_warning)
                return _SKIPPED
            except ValueError:
                # An integer of more digits than `int` reads (sys.get_int_max_str_digits(), 4300 by default):
                # what the record holds cannot be a log value; skip it like a bad record.
                digits = sys.get_int_max_str_digits()
                too_long = json.JSONDecodeError(f"integer longer than {digits} digits", buf.text, buf.pos)
                self._skip_bad(buf, too_long, source, on_warning)
                return _SKIPPED
            buf.advance(end)
            return value

    @staticmethod
    def _skip_bad(buf: _Buffer, exc: json.JSONDecodeError, source: str, on_warning: WarningSink) -> None:
        start_line = buf.line
        error_line = start_line + buf.text.count("\n", buf.pos, exc.pos)
        column = exc.pos - (buf.text.rfind("\n", 0, exc.pos) + 1) + 1
        search_from = exc.pos
        while True:
            found = _RESYNC.search(buf.text, search_from)
            if found is not None:
                buf.advance(found.start() + 1)
                break
            # Drop the scanned text but its last character, which may be the newline of a match.
            buf.advance(max(buf.pos, len(buf.text) - 1))
            if not buf.fill():
                buf.advance(len(buf.text))
                break
            search_from = 0
        if buf.pos > _KEEP_CONSUMED:
            buf.drop_consumed()
        on_warning(IngestWarning(
            source,
            f"invalid JSON at line {error_line} column {column}: {exc.msg.removesuffix(' at')}; "
            f"record skipped, resumed at line {buf.line}",
            start_line,
        ))


_SKIPPED = object()


def ndjson_parts(path: str | Path, part_bytes: int) -> Iterator[tuple[int, int, int]] | None:
    """Parts (start byte, stop byte or -1 for the end, first line's number) of an NDJSON file: ranges of
    about `part_bytes` that `JsonReader.read_part` reads alone and gets what reading the whole file gives;
    None unless the file starts with a line holding one JSON object and is larger than a part.

    The file is read through as the parts are taken (lazily), each line checked to be one JSON object
    (orjson) or blank, and a part ends before a line that starts with `{`. There the whole file's reader
    is between two top-level values, whatever came before: every line before held one object (a JSON
    string holds no newline), and its resync after a record it refused stops at such a line too. From the
    first line that is not one object (damaged, pretty-printed, an array, a line longer than
    `MAX_PART_LINE`, text orjson refuses), the rest of the file is one last part, which its reader reads
    from that point as the whole file's would.
    """
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            first = fh.readline(MAX_PART_LINE)
    except OSError:
        return None
    if size <= part_bytes or not _one_object(first.removeprefix(codecs.BOM_UTF8)):
        return None
    return _ndjson_parts(path, part_bytes)


def _ndjson_parts(path: str | Path, part_bytes: int) -> Iterator[tuple[int, int, int]]:
    start = pos = 0  # the part's first byte; the current line's
    first_line = line = 1  # their lines' numbers
    try:
        with open(path, "rb") as fh:
            while True:
                text = fh.readline(MAX_PART_LINE)
                ended = text.endswith(b"\n")
                if not text or (not ended and len(text) == MAX_PART_LINE):
                    break
                checked = text.removeprefix(codecs.BOM_UTF8) if not pos else text
                blank = not checked.strip(b" \t\r\n")  # JSON's blanks, which the reader skips
                if not blank and not _one_object(checked):
                    break
                # A part ends before a line that starts with its object: where the reader's resync after a
                # bad record would stop too, so even a record `json` refused reads alike.
                if not blank and checked[:1] == b"{" and pos - start >= part_bytes:
                    yield start, pos, first_line
                    start, first_line = pos, line
                pos += len(text)
                line += ended
    except OSError:
        pass  # the rest is read as one part, and its reader says what is wrong
    yield start, -1, first_line


def _one_object(line: bytes) -> bool:
    """Whether `line` holds one JSON object (and blanks), as orjson reads it."""
    try:
        return type(orjson.loads(line)) is dict
    except orjson.JSONDecodeError:
        return False

READERS.register(JsonReader.name, JsonReader())
