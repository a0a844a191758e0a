"""Extension points of the ingest stage: file readers and record-shape normalisers.

A new log format is one module that defines a `Reader` (or a `Shape`) and registers it here
under its name; `casefile.ingest` imports the built-in modules, which register the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from casefile.ingest.model import RawRecord
from casefile.models import Event, IngestWarning
from casefile.registry import Registry

WarningSink = Callable[[IngestWarning], None]

#: Bytes a reader gets to look at when sniffing a file.
SNIFF_BYTES = 4096
#: The most confident a reader's `sniff` may be (a file's magic bytes): readers asked later are not asked.
SNIFF_CERTAIN = 100
#: Bytes a `PartReader` gets to look at to say whether it might split a file (`may_split`).
SPLIT_HEAD = 1 << 20


class Reader(Protocol):
    """Turns the bytes of one file into raw records; reports damage through `on_warning`."""

    name: str

    def sniff(self, head: bytes, name: str) -> int:
        """Confidence 0..100 (`SNIFF_CERTAIN`) that a file called `name` starting with `head` is in this
        format."""
        ...

    def read(
        self, stream: IO[bytes], source: str, on_warning: WarningSink, *, disk_path: Path | None = None,
        next_path: Path | None = None,
    ) -> Iterator[RawRecord]:
        """Yield the records of `stream` (seekable); `disk_path` is set when it is a plain file, `next_path`
        when the caller knows the plain file of this format it reads next (a reader may start on it)."""
        ...


@runtime_checkable
class PartReader(Reader, Protocol):
    """A reader that can read a range of a file alone (`EvidenceFile.part`), as reading the whole file gives
    that range's records and warnings."""

    def parts(self, path: str, part_bytes: int) -> Iterable[tuple[int, ...]] | None:
        """Ranges of the plain file `path`, of about `part_bytes` each, in order, which read alone give what
        reading the whole file gives; None when the file is not to be split. May be lazy: found as the file
        is read through."""
        ...

    def may_split(self, head: bytes) -> bool:
        """Whether `parts` might split a file that begins with `head` (its first `SPLIT_HEAD` bytes, or all of
        it): asked before a compressed file is unpacked to be split (False: it is not unpacked for that)."""
        ...

    def read_part(
        self, stream: IO[bytes], source: str, on_warning: WarningSink, part: tuple[int, ...]
    ) -> Iterator[RawRecord]: ...

    def part_name(self, part: tuple[int, ...]) -> str:
        """A range in words, for messages (`chunks 0..255`)."""
        ...


class Shape(Protocol):
    """Turns one raw record of a known JSON shape into an Event."""

    name: str
    #: Lower runs first when records are sniffed; the catch-all shape has the highest.
    priority: int

    def matches(self, record: dict[str, Any]) -> bool: ...

    def normalise(self, record: dict[str, Any], source_file: str) -> Event: ...


READERS: Registry[Reader] = Registry("log reader")
SHAPES: Registry[Shape] = Registry("record shape")


def shapes_by_priority() -> list[Shape]:
    """The registered shapes in the order they are tried on an unlabelled record."""
    return sorted((s for _, s in SHAPES), key=lambda s: (s.priority, s.name))
