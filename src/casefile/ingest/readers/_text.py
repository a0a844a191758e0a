"""The encoding of a text log (JSON, CSV) from its first bytes."""

from __future__ import annotations

import codecs
import io
from typing import IO

_BOMS = (
    # UTF-32's little-endian mark begins with UTF-16's: test it first
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def text_encoding(head: bytes) -> str:
    """The codec for a text file starting with `head` (its first 4 bytes or more).

    A byte order mark names UTF-16 or UTF-32 (PowerShell's `Out-File` writes UTF-16 with one); without
    one, the NUL bytes around a first ASCII character do, as JSON's own detection (RFC 4627) reads them:
    .NET and some collection tools write UTF-16 without a mark, which read as UTF-8 lost the whole file
    (JSON) or put a NUL between every character of every value (CSV), so that no rule matched.
    Otherwise UTF-8, its mark skipped.
    """
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec
    if len(head) >= 4:
        if head[:3] == b"\0\0\0" and head[3]:
            return "utf-32-be"
        if head[0] and head[1:4] == b"\0\0\0":
            return "utf-32-le"
    if len(head) >= 2:
        if not head[0] and head[1]:
            return "utf-16-be"
        if head[0] and not head[1]:
            return "utf-16-le"
    return "utf-8-sig"


#: The longest line a text log's `parts` checks (bytes): from a longer one on, the rest of the file is read
#: in one part.
MAX_PART_LINE = 1 << 20


class Bounded(io.RawIOBase):
    """The next `size` bytes of a binary stream (all the rest if `size` is negative), as a raw stream that
    `io.BufferedReader` and `io.TextIOWrapper` can wrap; closing it leaves the stream open."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self._stream = stream
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        size = len(buffer) if self._left < 0 else min(len(buffer), self._left)
        data = self._stream.read(size) if size else b""
        buffer[:len(data)] = data
        if self._left >= 0:
            self._left -= len(data)
        return len(data)


def line_part_name(part: tuple[int, ...]) -> str:
    """A text log's part (start byte, stop byte or -1 for the end, first line's number) in words."""
    start, stop, line = part
    return f"lines from {line} (bytes {start}..{'the end' if stop < 0 else stop - 1})"


__all__ = ["MAX_PART_LINE", "Bounded", "line_part_name", "text_encoding"]
