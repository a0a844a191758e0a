"""The encoding of a text log (JSON, CSV) from its first bytes."""

from __future__ import annotations

import codecs

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


__all__ = ["text_encoding"]
