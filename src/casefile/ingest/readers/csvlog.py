"""CSV exports with a header row (EvtxECmd `--csv`, `Export-Csv`): one record per row.

Values are text, as CSV has no types; empty cells are empty strings. The file is streamed.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from casefile.ingest.model import RawRecord
from casefile.ingest.plugins import READERS, WarningSink
from casefile.ingest.readers._text import text_encoding
from casefile.models import IngestWarning

# Script blocks and payloads exceed csv's default 128 KiB field limit.
csv.field_size_limit(sys.maxsize)


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
        first_line = text.readline()
        delimiter = max(",;\t", key=first_line.count)
        text.seek(0)
        # strict: a malformed quote is an error to report, not a silent merge of rows.
        rows = csv.reader(text, delimiter=delimiter, strict=True)
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
