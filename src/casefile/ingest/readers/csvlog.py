"""CSV exports with a header row (EvtxECmd `--csv`, `Export-Csv`): one record per row.

Values are text, as CSV has no types; empty cells are empty strings. The file is streamed; a large
UTF-8 file is read in parts by several hunt workers (`csv_parts`).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from casefile.ingest.model import RawRecord
from casefile.ingest.plugins import READERS, WarningSink
from casefile.ingest.readers._text import MAX_PART_LINE, Bounded, line_part_name, text_encoding
from casefile.models import IngestWarning

#: The longest CSV line, and field, read (script blocks and payloads exceed csv's default 128 KiB); a
#: longer one is skipped with a warning: a compressed bomb of one line must not take the memory.
MAX_LINE_CHARS = 64 << 20
csv.field_size_limit(MAX_LINE_CHARS)


def _bounded_lines(text: IO[str], source: str, on_warning: WarningSink, first: int = 1) -> Iterator[str]:
    """The lines of `text` (the first numbered `first`); one longer than MAX_LINE_CHARS is read past in
    pieces and given as an empty line (which csv skips, and which keeps its line count), with a warning."""
    number = first - 1
    limit = MAX_LINE_CHARS
    while line := text.readline(limit):
        number += 1
        if len(line) >= limit and not line.endswith(("\n", "\r")):
            while (more := text.readline(limit)) and not more.endswith(("\n", "\r")):
                pass
            on_warning(IngestWarning(source, f"CSV line longer than {limit:,} characters; skipped", number))
            line = "\n"
        yield line


class CsvReader:
    """Reads comma-separated files whose first row names the columns."""

    name = "csv"

    def sniff(self, head: bytes, name: str) -> int:
        if not name.lower().endswith(".csv"):
            return 0
        first = head.split(b"\n", 1)[0]
        # the delimiters `read` picks from (German/French Excel writes `;`)
        return 60 if any(d in first for d in (b",", b";", b"\t")) else 0

    def read(
        self, stream: IO[bytes], source: str, on_warning: WarningSink, *, disk_path: Path | None = None,
        next_path: Path | None = None,
    ) -> Iterator[RawRecord]:
        text, delimiter = _text(stream)
        # strict: a malformed quote is an error to report, not a silent merge of rows.
        rows = csv.reader(_bounded_lines(text, source, on_warning), delimiter=delimiter, strict=True)
        try:
            header = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            on_warning(IngestWarning(source, f"unreadable CSV header: {exc}", 1))
            return
        yield from _rows(rows, header, source, on_warning)

    def parts(self, path: str, part_bytes: int) -> Iterator[tuple[int, int, int]] | None:
        """Byte ranges of about `part_bytes` of a UTF-8 CSV file, cut between rows (`csv_parts`)."""
        return csv_parts(path, part_bytes)

    def may_split(self, head: bytes) -> bool:
        return text_encoding(head[:4]) == "utf-8-sig"  # UTF-16 files are not split

    part_name = staticmethod(line_part_name)

    def read_part(
        self, stream: IO[bytes], source: str, on_warning: WarningSink, part: tuple[int, ...]
    ) -> Iterator[RawRecord]:
        """The rows of `part` (start, stop or -1 for the end, the first line's number) of a file `csv_parts`
        split, under the file's header, as reading the whole file gives them."""
        start, stop, first = part
        text, delimiter = _text(stream)
        header = next(csv.reader(_bounded_lines(text, source, _ignore), delimiter=delimiter, strict=True))
        text.detach()  # (not closing the stream)
        stream.seek(start)  # after the header: no byte order mark
        body = io.TextIOWrapper(
            io.BufferedReader(Bounded(stream, stop - start if stop >= 0 else -1)),
            encoding="utf-8", errors="backslashreplace", newline="",
        )
        rows = csv.reader(_bounded_lines(body, source, on_warning, first), delimiter=delimiter, strict=True)
        yield from _rows(rows, header, source, on_warning, first - 1)


def _text(stream: IO[bytes]) -> tuple[io.TextIOWrapper, str]:
    """The stream's text from its start, and its delimiter (`_delimiter` of its first line)."""
    head = stream.read(4)
    stream.seek(0)
    text = io.TextIOWrapper(stream, encoding=text_encoding(head), errors="backslashreplace", newline="")
    first_line = text.readline(MAX_LINE_CHARS)
    text.seek(0)
    return text, _delimiter(first_line)


def _delimiter(header_line: str) -> str:
    """The most frequent candidate in the header line (quoting is Excel's)."""
    return max(",;\t", key=header_line.count)


def _ignore(warning: IngestWarning) -> None:
    pass  # a split file's header gives no warning (`csv_parts`)


def csv_parts(path: str | Path, part_bytes: int) -> Iterator[tuple[int, int, int]] | None:
    """Parts (start byte, stop byte or -1 for the end, first line's number) of a UTF-8 CSV file after its
    header: ranges of about `part_bytes` that `CsvReader.read_part` reads alone, under the header, and gets
    what reading the whole file gives; None for a file no larger than a part, not UTF-8 (or ASCII), or
    whose header does not read.

    The file is read through as the parts are taken (lazily) and its rows parsed as `read` parses them; a
    part ends after a row, where the whole file's reader is between rows (a quoted cell may hold line
    breaks, so not after every line). From a row `csv` refuses, a line over `MAX_PART_LINE` or a carriage
    return that ends no line (which the reader takes for a line end), the rest of the file is one last
    part, read from a point where the whole read is in the same state.
    """
    try:
        fh = open(path, "rb")  # noqa: SIM115  (closed by the parts' generator, or here)
    except OSError:
        return None
    try:
        size = fh.seek(0, io.SEEK_END)
        fh.seek(0)
        if size <= part_bytes or text_encoding(fh.read(4)) != "utf-8-sig":
            fh.close()
            return None
        fh.seek(0)
        rows = _Rows(fh)
        rows.header()
    except (OSError, StopIteration, csv.Error, UnicodeError):
        fh.close()
        return None
    return _csv_parts(fh, rows, part_bytes)


class _Rows:
    """A file's rows as `CsvReader.read` parses them, with the bytes and lines read so far."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.bytes = self.lines = 0
        self.plain = True  # every line so far read as the reader's text would give it
        source = self._lines()
        first = next(source)
        self.rows = csv.reader(
            itertools.chain([first], source), delimiter=_delimiter(first), strict=True
        )

    def _lines(self) -> Iterator[str]:
        while raw := self.fh.readline(MAX_PART_LINE):
            body = raw.removesuffix(b"\n").removesuffix(b"\r")
            if b"\r" in body or (len(raw) == MAX_PART_LINE and not raw.endswith(b"\n")):
                self.plain = False
                return
            line = raw.decode("utf-8-sig" if not self.bytes else "utf-8", "backslashreplace")
            self.bytes += len(raw)
            self.lines += 1
            yield line

    def header(self) -> list[str]:
        header: list[str] = next(self.rows)
        if not self.plain:
            raise csv.Error("the header is not plain")
        return header


def _csv_parts(fh: IO[bytes], rows: _Rows, part_bytes: int) -> Iterator[tuple[int, int, int]]:
    start, first = rows.bytes, rows.lines + 1
    with fh:
        try:
            while True:
                next(rows.rows)
                if not rows.plain:
                    break
                if rows.bytes - start >= part_bytes:
                    yield start, rows.bytes, first
                    start, first = rows.bytes, rows.lines + 1
        except (StopIteration, csv.Error, OSError):
            pass  # the rest is read as one part, and its reader says what is wrong
    yield start, -1, first


def _rows(
    rows: Iterator[list[str]], header: list[str], source: str, on_warning: WarningSink, before: int = 0
) -> Iterator[RawRecord]:
    """The records of `rows` (a `csv.reader`) under `header`; `before`: the file's lines before its first."""
    while True:
        line = before + rows.line_num + 1  # type: ignore[attr-defined]
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            on_warning(IngestWarning(source, f"invalid CSV row: {exc}; skipped", line))
            continue
        if not row:
            continue
        record: dict[str, Any] = dict(zip(header, row, strict=False))
        if len(row) > len(header):
            on_warning(IngestWarning(
                source, f"CSV row has {len(row)} cells, the header {len(header)}; extra cells kept "
                "as _extra", line,
            ))
            record["_extra"] = row[len(header):]
        yield RawRecord(line, record)


READERS.register(CsvReader.name, CsvReader())
