"""Ingest-internal types: where a piece of evidence lives, and one raw record read from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casefile.pickling import by_fields


@by_fields
@dataclass(frozen=True, slots=True)
class EvidenceFile:
    """One readable log file, possibly a member of a zip or a gzip stream.

    `path` is the name events carry as `source_file`: the file path as found by the walk, with
    `archive.zip!inner/path.json` for zip members. `on_disk` is the file on disk that holds the
    bytes (`location` gives it as a Path); `member` the zip member name; `gzip` whether the bytes (of
    the file or the member) are gzip-compressed. `size` is the size on disk (the uncompressed size for
    a zip member). `format` names the reader in `casefile.ingest.READERS` that will parse it. `part`, when
    set, is the range of the file a task reads alone, as its reader's `PartReader.parts` gives it (EVTX:
    chunks [start, stop); JSON: bytes [start, stop or -1 for the end) and the first line's number).
    """

    path: str
    size: int
    format: str
    # Text, not a Path: a hunt holds every discovered file, and a Path (its parts parsed) is about 420
    # bytes against the string's 100 (236,800 files at 10 M events of the benchmark).
    on_disk: str
    member: str | None = None
    gzip: bool = False
    part: tuple[int, ...] | None = None

    @property
    def location(self) -> Path:
        """The file on disk that holds the bytes."""
        return Path(self.on_disk)


@dataclass(slots=True)
class RawRecord:
    """One record as a reader decoded it, before shape normalisation.

    `index` says where the record is in its file: for EVTX the number its record header gives
    (the parser's "record number", counting from 1 in a fresh log), for JSON and CSV the line on
    which the record starts. `shape` names the normaliser in `casefile.ingest.SHAPES` when the
    reader knows it (EVTX always gives `evtx-json`); None lets the shapes sniff the record.

    Not frozen, though nothing changes one: a frozen dataclass's `__init__` sets each field through
    `object.__setattr__`, 0.41 against 0.08 us a record made positionally (one is made per record read).
    """

    index: int
    data: dict[str, Any]
    shape: str | None = None
