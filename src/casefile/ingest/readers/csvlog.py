"""CSV exports with a header row (EvtxECmd `--csv`, `Export-Csv`): one record per row.

Values are text, as CSV has no types; empty cells are empty strings. The file is streamed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from casefile.ingest.model import RawRecord
from casefile.ingest.plugins import READERS, WarningSink
from casefile.ingest.readers._text import text_encoding
from casefile.models import IngestWarning

#: The longest CSV line, and field, read (script blocks and payloads exceed csv's default 128 KiB); a
#: longer one is skipped with a warning: a compressed bomb of one line must not take the memory.
MAX_LINE_CHARS = 64 << 20
csv.field_size_limit(MAX_LINE_CHARS)


def _bounded_lines(text: IO[str], source: str, on_warning: WarningSink) -> Iterator[str]:
    """The lines of `text`; one longer than MAX_LINE_CHARS is read past in pieces and given as an empty line
    (which csv skips, and which keeps its line count), with a warning."""
    number = 0
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
        head = stream.read(4)
        stream.seek(0)
        text = io.TextIOWrapper(stream, encoding=text_encoding(head), errors="backslashreplace", newline="")
        # The delimiter is the most frequent candidate in the header line; quoting is Excel's.
        first_line = text.readline(MAX_LINE_CHARS)
        delimiter = max(",;\t", key=first_line.count)
        text.seek(0)
        # strict: a malformed quote is an error to report, not a silent merge of rows.
        rows = csv.reader(_bounded_lines(text, source, on_warning), delimiter=delimiter, strict=True)
        try:
            header = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            on_warning(IngestWarning(source, f"unreadable CSV header: {exc}", 1))
            return
        while True:
            line = rows.line_num + 1
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
            yield RawRecord(index=line, data=record)


READERS.register(CsvReader.name, CsvReader())
