"""Finding evidence: walk folders, look inside zip and gzip files, pick a reader for each file."""

from __future__ import annotations

import gzip
import io
import os
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, cast

from casefile.errors import InputError
from casefile.ingest._crc import crc32
from casefile.ingest.model import EvidenceFile
from casefile.ingest.plugins import READERS, SNIFF_BYTES, SNIFF_CERTAIN
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
    """The reader most confident about a file (the first of those equally confident), None when none claims
    it."""
    best, best_score = None, 0
    for reader_name, reader in READERS:
        score = reader.sniff(head, name)
        if score > best_score:
            best, best_score = reader_name, score
            if score >= SNIFF_CERTAIN:  # no reader can be surer: the others need not look (JSON's decodes)
                break
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


def _walk(
    top: str, on_warning: WarningSink, unreadable: set[str], skip: frozenset[str] = frozenset()
) -> Iterator[tuple[str, str, bool]]:
    """Files under a folder in a stable order (names sorted, a folder's files before its subfolders'), each
    as (path, position, link): `position` is the real path the walk stands at (its folder's real path plus
    the name), the file's own real path unless `link` (the entry is a symbolic link). Symlinked folders
    are not followed (no loops), nor subfolders whose real path is in `skip`; the real paths of folders
    that cannot be listed are added to `unreadable`.

    Built on `os.scandir` and text paths rather than `os.walk`, `Path.resolve` and a Path per file: the
    entry's type comes with the listing, and a Path's parsing was most of a walk over many files."""

    def unreadable_folder(exc: OSError, folder: str, real: str) -> None:
        unreadable.add(real)
        on_warning(IngestWarning(str(exc.filename or folder), f"unreadable folder: {exc.strerror or exc}"))

    stack = [(top, os.path.realpath(top))]
    while stack:
        folder, real = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=_name)
        except OSError as exc:
            unreadable_folder(exc, folder, real)
            continue
        subfolders: list[tuple[str, str]] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not _is_link(entry):
                    sub = os.path.join(real, entry.name)
                    if sub not in skip:
                        subfolders.append((entry.path, sub))
                continue
            try:
                regular = entry.is_file()
            except OSError as exc:
                on_warning(IngestWarning(entry.path, f"unreadable file: {exc.strerror or exc}"))
                continue
            if not regular:  # a FIFO would block the open forever; sockets, devices, dangling links
                on_warning(IngestWarning(entry.path, "not a regular file; skipped"))
                continue
            yield entry.path, os.path.join(real, entry.name), _is_link(entry)
        stack.extend(reversed(subfolders))


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _zip_members(path: str, on_warning: WarningSink) -> Iterator[EvidenceFile]:
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


#: A file's head is read through its descriptor: a buffered file object costs more than the three calls
#: (discovery opens every file, and runs beside the hunt's workers).
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def _head(fd: int) -> bytes:
    """The first SNIFF_BYTES of an open file (fewer if it is shorter)."""
    head = os.read(fd, SNIFF_BYTES)
    while 0 < len(head) < SNIFF_BYTES and (more := os.read(fd, SNIFF_BYTES - len(head))):
        head += more  # (a short read before the end: some network file systems)
    return head


def _classify(path: str, on_warning: WarningSink) -> Iterator[EvidenceFile]:
    try:
        fd = os.open(path, _READ_FLAGS)
        try:
            size = os.fstat(fd).st_size
            head = _head(fd)
            is_gzip = head.startswith(GZIP_MAGIC)
            if is_gzip:
                os.lseek(fd, 0, os.SEEK_SET)
                with os.fdopen(fd, "rb", closefd=False) as fh:
                    head = _gzip_head(fh)
        finally:
            os.close(fd)
    except ARCHIVE_ERRORS as exc:
        on_warning(IngestWarning(path, f"unreadable file: {exc}"))
        return
    if not is_gzip and head.startswith(ZIP_MAGIC):
        yield from _zip_members(path, on_warning)
        return
    name = os.path.basename(path)
    fmt = _pick(head, name.removesuffix(".gz") if is_gzip else name)
    if fmt is None:
        on_warning(IngestWarning(path, "not a recognised log format; skipped"))
        return
    yield EvidenceFile(path, size, fmt, path, gzip=is_gzip)


class _Seen:
    """Which files a discovery has already looked at, kept in memory that grows with the paths named, the
    symbolic links met and the folders that could not be listed, not with the files walked.

    A file is known by its real path. A walk reaches each real path under its folder at one position
    only (linked folders are not followed), in a fixed order (`_walk`): a file under a folder walked
    before was looked at then (unless it lies in a folder that could not be listed), and one under the
    folder being walked was if its position comes first. Only what links point to and the files named
    on their own need remembering.
    """

    def __init__(self) -> None:
        self.walked: set[str] = set()  # real paths of the folders walked to the end
        self.named: set[str] = set()  # real paths of files named on their own or through a link
        self.unreadable: set[str] = set()  # real paths of folders that could not be listed

    def met(self, key: str, walked: set[str] | None = None) -> bool:
        """Whether the file of real path `key` was met before: by name, or by a walk that has ended (one
        of `walked`, if given: the only folders walked that may hold it)."""
        return key in self.named or (
            _inside(key, self.walked if walked is None else walked) and not _inside(key, self.unreadable)
        )

    def first_named(self, key: str) -> bool:
        """Whether a file named on its own, or through a link outside the walk at hand, is met for the
        first time (it is then remembered)."""
        if self.met(key):
            return False
        self.named.add(key)
        return True

    def first_linked(self, key: str, position: str, walking: str) -> bool:
        """`first_named` for a link the walk of the real folder `walking` meets at `position`: the file
        it points to was met if that walk reached it already."""
        if _under(key, walking) and not _inside(key, self.unreadable) and _walked_before(
            key, position, walking
        ):
            return False
        return self.first_named(key)

    def walk(self, path: str, sink: WarningSink) -> Iterator[str]:
        """The files a walk of the folder `path` meets for the first time, in `_walk` order."""
        real = os.path.realpath(path)
        if _inside(real, self.walked, itself=True) and not _inside(real, self.unreadable, itself=True):
            return  # walked already, all of it
        # Folders walked before that a file here may lie in: those inside this one (a folder walked
        # before that holds this one was handled above). Those read whole are not walked again; files in
        # the others are looked up (mostly there are none, and a file costs one set lookup).
        inner = {folder for folder in self.walked if _under(folder, real)}
        whole = frozenset(f for f in inner if not any(_under(u, f) or u == f for u in self.unreadable))
        inner -= whole
        for file, position, link in _walk(path, sink, self.unreadable, whole):
            if link:
                first = self.first_linked(os.path.realpath(file), position, real)
            else:  # where it is: a walk meets a real path there once, so only earlier walks or links could
                first = not self.met(position, inner)
            if first:
                yield file
        self.walked.add(real)


def _under(path: str, folder: str) -> bool:
    """Whether the real path `path` lies inside the real folder `folder`."""
    return path.startswith(folder if folder.endswith(os.sep) else folder + os.sep)


def _inside(path: str, folders: set[str], *, itself: bool = False) -> bool:
    """Whether the real path `path` lies inside one of `folders` (or is one, with `itself`): its parents
    are looked up, so the cost does not grow with the number of folders."""
    if not folders:
        return False
    if itself and path in folders:
        return True
    parent, child = os.path.dirname(path), path
    while parent != child:
        if parent in folders:
            return True
        parent, child = os.path.dirname(parent), parent
    return False


def _walked_before(key: str, position: str, folder: str) -> bool:
    """Whether a walk of `folder` (`_walk`) reaches the real path `key` before `position`, both inside it."""
    a = key[len(folder):].strip(os.sep).split(os.sep)
    b = position[len(folder):].strip(os.sep).split(os.sep)
    for depth, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            x_file, y_file = depth == len(a) - 1, depth == len(b) - 1
            if x_file != y_file:
                return x_file  # a folder's files come before its subfolders'
            return x < y  # names in sorted order, files and subfolders alike
    return False


def _files(
    paths: Sequence[str | Path], sink: WarningSink, exclude: Iterable[str | Path] = ()
) -> Iterator[str]:
    """The regular files under `paths` (`_walk` order, each given path in turn), each once, but those of
    `exclude`."""
    seen = _Seen()
    seen.named.update(os.path.realpath(path) for path in exclude)  # as if met already
    for given in paths:
        path = os.fspath(Path(given))  # Path: the name as discovery gives it ("a/./b" -> "a/b")
        if os.path.isdir(path):
            yield from seen.walk(path, sink)
        elif os.path.isfile(path):
            if seen.first_named(os.path.realpath(path)):
                yield path
        else:
            sink(IngestWarning(path, "not a regular file; skipped"))


def _check_paths(paths: Sequence[str | Path]) -> None:
    for given in paths:
        if not os.path.exists(given):
            raise InputError(os.fspath(Path(given)), "no such file or folder")


def iter_discover(
    paths: Sequence[str | Path], *, on_warning: WarningSink | None = None,
    on_skip: Callable[[str], None] | None = None, exclude: Sequence[str | Path] = (),
) -> Iterator[EvidenceFile]:
    """Every readable log file under `paths` (folders walked recursively, zip members listed), found as
    the iterator is advanced: memory does not grow with the number of files.

    Files no reader claims (READMEs, images) and damaged archives are reported to `on_warning`
    and left out; `on_skip` is told the path of each file `count_files` counted that gives no evidence.
    The same file named twice (or a folder and a file inside it, or a link and its target) is read once,
    under the name met first. Files of `exclude` are left out without a word (a hunt's own output, which
    a walk finds as it is written). A path that does not exist raises InputError before anything is
    read: that is a typo, not evidence.
    """
    _check_paths(paths)
    return _discovered(paths, on_warning or _ignore, on_skip, exclude)


def _discovered(
    paths: Sequence[str | Path], sink: WarningSink, on_skip: Callable[[str], None] | None,
    exclude: Sequence[str | Path],
) -> Iterator[EvidenceFile]:
    for file in _files(paths, sink, exclude):
        found = False
        for ev in _classify(file, sink):
            found = True
            yield ev
        if not found and on_skip is not None:
            on_skip(file)


def discover(paths: Sequence[str | Path], *, on_warning: WarningSink | None = None) -> list[EvidenceFile]:
    """`iter_discover`'s files as a list."""
    return list(iter_discover(paths, on_warning=on_warning))


def count_files(paths: Sequence[str | Path], exclude: Sequence[str | Path] = ()) -> int:
    """How many files a discovery of `paths` (leaving out `exclude`) looks at (a zip archive counts once),
    without opening them: a progress bar's total. Warnings are left to the discovery."""
    _check_paths(paths)
    return sum(1 for _ in _files(paths, _ignore, exclude))


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
                self._crc = crc32(data, self._crc)
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
    if evidence.member is None and not evidence.gzip:  # most evidence: the file itself, opened by its name
        with open(evidence.on_disk, "rb") as plain:  # (a Path costs more than the opening, once per file)
            yield plain
        return
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
