"""Finding evidence: walk folders, look inside zip and gzip files, pick a reader for each file."""

from __future__ import annotations

import gzip
import io
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, cast

from casefile.errors import InputError
from casefile.ingest.model import EvidenceFile
from casefile.ingest.plugins import READERS, SNIFF_BYTES
from casefile.models import IngestWarning

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
#: Errors that mean "these bytes are damaged", raised by zipfile, gzip and zlib while reading.
ARCHIVE_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, OSError)
# Opening a zip member also raises RuntimeError (encryption, unsupported compression), and
# UnicodeDecodeError for a name flagged UTF-8 (bit 11) that is not.
_MEMBER_ERRORS = (
    zipfile.BadZipFile, EOFError, zlib.error, OSError, RuntimeError, NotImplementedError, UnicodeDecodeError
)

WarningSink = Callable[[IngestWarning], None]


def _ignore(_: IngestWarning) -> None:
    """Default sink for discover(): callers that want skipped files reported pass their own."""


def _pick(head: bytes, name: str) -> str | None:
    """The reader most confident about a file, None when none claims it."""
    best, best_score = None, 0
    for reader_name, reader in READERS:
        score = reader.sniff(head, name)
        if score > best_score:
            best, best_score = reader_name, score
    return best


def _gzip_head(fileobj: IO[bytes]) -> bytes:
    """The first decompressed bytes of a gzip stream; what came before damage if it is damaged
    early (the reader then reports the damage), the error itself if nothing could be read."""
    parts: list[bytes] = []
    size = 0
    with gzip.GzipFile(fileobj=fileobj) as inner:
        try:
            while size < SNIFF_BYTES and (block := inner.read1(SNIFF_BYTES - size)):
                parts.append(block)
                size += len(block)
        except ARCHIVE_ERRORS:
            if not parts:
                raise
    return b"".join(parts)


def _walk(path: Path, on_warning: WarningSink) -> Iterator[tuple[Path, str]]:
    """Files under a folder, each with its resolved path, in a stable order: names sorted, a folder's
    files before its subfolders'. Symlinked folders are not followed (no loops).

    Built on `os.scandir` rather than `os.walk` plus `Path.resolve` per file: the entry's type comes
    with the listing and a file's real path is its folder's plus its name unless it is a link itself,
    which made discovery of folders of tens of thousands of files several times cheaper."""

    def unreadable(exc: OSError, folder: str) -> None:
        on_warning(IngestWarning(str(exc.filename or folder), f"unreadable folder: {exc.strerror or exc}"))

    top = os.fspath(path)
    stack = [(top, os.path.realpath(top))]
    while stack:
        folder, real = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=_name)
        except OSError as exc:
            unreadable(exc, folder)
            continue
        subfolders: list[tuple[str, str]] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not _is_link(entry):
                    subfolders.append((entry.path, os.path.join(real, entry.name)))
                continue
            file = Path(entry.path)
            try:
                regular = entry.is_file()
            except OSError as exc:
                on_warning(IngestWarning(str(file), f"unreadable file: {exc.strerror or exc}"))
                continue
            if not regular:  # a FIFO would block the open forever; sockets, devices, dangling links
                on_warning(IngestWarning(str(file), "not a regular file; skipped"))
                continue
            yield file, os.path.realpath(file) if _is_link(entry) else os.path.join(real, entry.name)
        stack.extend(reversed(subfolders))


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _zip_members(path: Path, on_warning: WarningSink) -> Iterator[EvidenceFile]:
    try:
        archive = zipfile.ZipFile(path)
    except ARCHIVE_ERRORS as exc:
        on_warning(IngestWarning(str(path), f"unreadable zip archive: {exc}"))
        return
    except UnicodeDecodeError as exc:  # zipfile decodes every name as it opens the archive
        reason = f"unreadable zip archive: a member name flagged UTF-8 is not: {exc}"
        on_warning(IngestWarning(str(path), reason))
        return
    with archive:
        for info in archive.infolist():
            if info.is_dir() or info.filename.startswith("__MACOSX/"):
                continue  # folders, and macOS resource forks (AppleDouble), hold no log records
            source = f"{path}!{info.filename}"
            if archive.getinfo(info.filename) is not info:
                # Members are opened by name, which gives the last of that name: this one would be lost
                # without a word, and the last read twice.
                on_warning(IngestWarning(source, (
                    "zip member named as a later one, which is read in its place: extract both (7z x -aou "
                    "renames) and ingest them"
                )))
                continue
            if info.flag_bits & 0x1:
                on_warning(IngestWarning(
                    source, "encrypted zip member: password required; extract it and ingest the file"
                ))
                continue
            try:
                with archive.open(info) as member:
                    head = member.read(SNIFF_BYTES)
                is_gzip = head.startswith(GZIP_MAGIC)
                name = info.filename
                if is_gzip:
                    name = name.removesuffix(".gz")
                    with archive.open(info) as member:
                        head = _gzip_head(member)
            except _MEMBER_ERRORS as exc:
                on_warning(IngestWarning(source, f"unreadable zip member: {exc}"))
                continue
            if head.startswith(ZIP_MAGIC):
                on_warning(IngestWarning(source, "zip inside a zip is not read: extract the outer archive"))
                continue
            fmt = _pick(head, name)
            if fmt is None:
                on_warning(IngestWarning(source, "not a recognised log format; skipped"))
                continue
            yield EvidenceFile(source, info.file_size, fmt, str(path), member=info.filename, gzip=is_gzip)


def _classify(path: Path, on_warning: WarningSink) -> Iterator[EvidenceFile]:
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(SNIFF_BYTES)
            is_gzip = head.startswith(GZIP_MAGIC)
            if is_gzip:
                fh.seek(0)
                head = _gzip_head(fh)
    except ARCHIVE_ERRORS as exc:
        on_warning(IngestWarning(str(path), f"unreadable file: {exc}"))
        return
    if not is_gzip and head.startswith(ZIP_MAGIC):
        yield from _zip_members(path, on_warning)
        return
    name = path.name.removesuffix(".gz") if is_gzip else path.name
    fmt = _pick(head, name)
    if fmt is None:
        on_warning(IngestWarning(str(path), "not a recognised log format; skipped"))
        return
    name = str(path)
    yield EvidenceFile(name, size, fmt, name, gzip=is_gzip)


def discover(
    paths: Sequence[str | Path], *, on_warning: WarningSink | None = None
) -> list[EvidenceFile]:
    """Every readable log file under `paths` (folders walked recursively, zip members listed).

    Files no reader claims (READMEs, images) and damaged archives are reported to `on_warning`
    and left out. A path that does not exist raises InputError: that is a typo, not evidence.
    """
    sink = on_warning or _ignore
    found: list[EvidenceFile] = []
    seen: set[str] = set()

    def classify(file: Path, key: str) -> None:
        # The same file named twice (or a folder and a file inside it) is read once.
        if key not in seen:
            seen.add(key)
            found.extend(_classify(file, sink))

    for given in paths:
        path = Path(given)
        if path.is_dir():
            for file, key in _walk(path, sink):
                classify(file, key)
        elif path.is_file():
            classify(path, os.path.realpath(path))
        elif path.exists():
            sink(IngestWarning(str(path), "not a regular file; skipped"))
        else:
            raise InputError(str(path), "no such file or folder")
    return found


class _CheckedMember(io.RawIOBase):
    """A zip member whose CRC-32 is checked by us, after its bytes have been handed out.

    zipfile checks the CRC inside the read that reaches the end and then raises, so the records
    in that last block would be lost; here every byte is returned first and the mismatch is
    raised on the read after the end. A seek (the EVTX parser seeks) stops the check: the data
    is then not read in one pass, and EVTX carries its own checksums.
    """

    def __init__(self, member: zipfile.ZipExtFile, info: zipfile.ZipInfo) -> None:
        super().__init__()
        self._member = member
        self._info = info
        self._crc = 0
        self._checking = hasattr(member, "_expected_crc")
        if self._checking:
            member._expected_crc = None  # type: ignore[attr-defined]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._member.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checking = False
        return self._member.seek(offset, whence)

    def tell(self) -> int:
        return self._member.tell()

    def readinto(self, buffer: Any) -> int:
        data = self._member.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        if self._checking:
            if size:
                self._crc = zlib.crc32(data, self._crc)
            elif self._crc != self._info.CRC:
                self._checking = False
                raise zipfile.BadZipFile(
                    f"Bad CRC-32 for file {self._info.filename!r}: its bytes differ from what was "
                    "archived; read as found"
                )
        return size


@contextmanager
def open_evidence(evidence: EvidenceFile) -> Iterator[IO[bytes]]:
    """The uncompressed bytes of one evidence file as a seekable binary stream; InputError for a zip member
    that is no longer in its archive."""
    with ExitStack() as stack:
        stream: IO[bytes]
        if evidence.member is not None:
            archive = stack.enter_context(zipfile.ZipFile(evidence.location))
            try:
                info = archive.getinfo(evidence.member)
            except KeyError:  # the archive was rewritten since `discover` listed it
                gone = "no longer in the archive (changed since it was listed)"
                raise InputError(evidence.path, gone) from None
            member = cast(zipfile.ZipExtFile, stack.enter_context(archive.open(info)))
            stream = stack.enter_context(io.BufferedReader(_CheckedMember(member, info), 1 << 16))
        else:
            stream = stack.enter_context(evidence.location.open("rb"))
        if evidence.gzip:
            unzipped = stack.enter_context(gzip.GzipFile(fileobj=stream))
            yield cast(IO[bytes], unzipped)
        else:
            yield stream
