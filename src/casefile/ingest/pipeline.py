"""From paths to Events: discover -> read raw records -> normalise shapes, each step on its own.

Reading and normalising are separate functions so that a parallel runner can read files in
worker processes and normalise wherever it likes; `read_events` is the simple serial composition.
"""

from __future__ import annotations

import gzip
import itertools
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from casefile.errors import InputError
from casefile.ingest.model import EvidenceFile, RawRecord
from casefile.ingest.plugins import (
    READERS,
    SHAPES,
    PartReader,
    Reader,
    Shape,
    WarningSink,
    shapes_by_priority,
)
from casefile.ingest.sources import iter_discover, open_evidence
from casefile.models import Event, IngestWarning

# What a damaged input can raise while a reader streams it: archive/compression errors,
# undecodable text, and InputError from a reader that gives up on the whole file.
_READ_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, OSError, UnicodeError, InputError)


#: Warnings listed per evidence file; past it they are counted, and one more warning says how many (a file
#: of a million bad lines must not print, or hold, a million warnings).
MAX_FILE_WARNINGS = 1000


class _Capped:
    """One file's warning sink: passes on the first MAX_FILE_WARNINGS, counts the rest."""

    __slots__ = ("listed", "more", "sink")

    def __init__(self, sink: WarningSink) -> None:
        self.sink = sink
        self.listed = self.more = 0

    def __call__(self, warning: IngestWarning) -> None:
        if self.listed < MAX_FILE_WARNINGS:
            self.listed += 1
            self.sink(warning)
        else:
            self.more += 1

    def summary(self, path: str) -> None:
        if self.more:
            self.sink(IngestWarning(
                path, f"{self.more} more warnings for this file not listed (the first {self.listed} are)"
            ))


def read_records(
    evidence: EvidenceFile, on_warning: WarningSink, *, reader: Reader | None = None,
    following: EvidenceFile | None = None,
) -> Iterator[RawRecord]:
    """The raw records of one evidence file; damage becomes warnings, records read so far are kept.

    `reader` replaces the registered reader for the file's format (e.g. one that keeps raw text);
    `following` is the file the caller reads next, if known (the EVTX reader starts on it meanwhile).
    The first MAX_FILE_WARNINGS warnings of the file are passed on, then one that counts the rest.
    """
    reader = reader or READERS.get(evidence.format)
    next_path = (
        _plain(following) if following is not None and following.format == evidence.format else None
    )
    capped = on_warning if isinstance(on_warning, _Capped) else _Capped(on_warning)
    try:
        with open_evidence(evidence) as stream:
            if evidence.part is None:
                yield from reader.read(
                    stream, evidence.path, capped, disk_path=_plain(evidence), next_path=next_path
                )
            elif isinstance(reader, PartReader):
                yield from reader.read_part(stream, evidence.path, capped, evidence.part)
            else:  # a caller's mistake, not the evidence's
                raise TypeError(f"the {reader.name} reader cannot read part of a file")
    except _READ_ERRORS as exc:
        reason = exc.reason if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        damaged = isinstance(exc, zipfile.BadZipFile | EOFError | zlib.error | gzip.BadGzipFile)
        kind = "damaged archive data" if damaged else "read error"
        # always listed: where reading stopped matters more than any warning counted before it
        capped.sink(IngestWarning(evidence.path, f"{kind}, reading stopped here: {reason}"))
    if capped is not on_warning:  # the caller's own cap (read_file) says it at the end of its file
        capped.summary(evidence.path)


T = TypeVar("T")


def with_next(items: Iterable[T]) -> Iterator[tuple[T, T | None]]:
    """Each item with the one after it (None after the last): how callers name the file they read next
    (`read_records(..., following=...)`). Items are taken one ahead of the one given out."""
    ahead, following = itertools.tee(items)
    next(following, None)
    # not strict: for no items the second iterable still holds its None
    return zip(ahead, itertools.chain(following, (None,)), strict=False)


def _plain(evidence: EvidenceFile) -> Path | None:
    """The file itself, when the evidence is a plain file (not an archive member, not compressed)."""
    return evidence.location if evidence.member is None and not evidence.gzip else None


def _shape_for(record: dict[str, Any], shapes: Sequence[Shape]) -> Shape:
    for shape in shapes:
        if shape.matches(record):
            return shape
    raise LookupError("no record shape registered")  # the flat shape matches everything


#: What a shape raises on a record whose structure defeats it: a warning (`defeated`), never a traceback.
SHAPE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, RecursionError)


def defeated(source_file: str, index: int, exc: BaseException) -> IngestWarning:
    """The warning for a record whose shape raised `exc` (one of SHAPE_ERRORS)."""
    return IngestWarning(source_file, f"record could not be normalised: {type(exc).__name__}: {exc}", index)


def normalise(
    raw: RawRecord, source_file: str, on_warning: WarningSink, *, shapes: Sequence[Shape] | None = None
) -> Event | None:
    """One raw record as an Event, or None (with a warning) when its structure defeats its shape."""
    try:
        shape = SHAPES.get(raw.shape) if raw.shape else _shape_for(raw.data, shapes or shapes_by_priority())
        return shape.normalise(raw.data, source_file)
    except SHAPE_ERRORS as exc:
        on_warning(defeated(source_file, raw.index, exc))
        return None


def read_file(
    evidence: EvidenceFile, on_warning: WarningSink, *, following: EvidenceFile | None = None
) -> Iterator[Event]:
    """The Events of one evidence file (`following`: see `read_records`)."""
    shapes = shapes_by_priority()
    capped = _Capped(on_warning)  # the reader's warnings and the shapes' count together
    for raw in read_records(evidence, capped, following=following):
        event = normalise(raw, evidence.path, capped, shapes=shapes)
        if event is not None:
            yield event
    capped.summary(evidence.path)


def read_events(paths: Sequence[str | Path], *, on_warning: WarningSink) -> Iterator[Event]:
    """Every Event under `paths` (files, folders, zip/gz), file by file in a stable order.

    Damaged files, records and archives, and files in no known format, are reported through
    `on_warning`; reading goes on. A path that does not exist raises InputError.
    """
    for evidence, following in with_next(iter_discover(paths, on_warning=on_warning)):
        yield from read_file(evidence, on_warning, following=following)
