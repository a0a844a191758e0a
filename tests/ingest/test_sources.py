"""Finding evidence: folder walks, zip and gzip read in place, damaged archives as warnings."""

from __future__ import annotations

import gzip
import shutil
import struct
import zipfile
from pathlib import Path

import pytest

from casefile.errors import InputError
from casefile.ingest import EvidenceFile, discover, read_events
from casefile.models import Event, IngestWarning

DATA = Path(__file__).parent.parent / "data" / "ingest"
FLAT = DATA / "nested" / "flat_otrf.jsonl"
ECS = DATA / "nested" / "deeper" / "winlogbeat.json"


def _read(*paths: Path) -> tuple[list[Event], list[IngestWarning]]:
    warnings: list[IngestWarning] = []
    return list(read_events(list(paths), on_warning=warnings.append)), warnings


def test_folders_are_walked_recursively_in_stable_order() -> None:
    warnings: list[IngestWarning] = []
    found = discover([DATA], on_warning=warnings.append)
    assert [(Path(f.path).relative_to(DATA).as_posix(), f.format) for f in found] == [
        ("evtx_shapes.json", "json"),
        ("evtxecmd.csv", "csv"),
        ("evtxecmd.json", "json"),
        ("powershell_utf16.json", "json"),
        ("nested/flat_otrf.jsonl", "json"),
        ("nested/not_really.evtx", "evtx"),  # by name: the reader says what is wrong with it
        ("nested/deeper/winlogbeat.json", "json"),
    ]
    assert found[0] == EvidenceFile(
        str(DATA / "evtx_shapes.json"), (DATA / "evtx_shapes.json").stat().st_size, "json",
        str(DATA / "evtx_shapes.json"),
    )
    assert found[0].location == DATA / "evtx_shapes.json"
    readme = str(DATA / "nested" / "README.txt")
    assert warnings == [IngestWarning(readme, "not a recognised log format; skipped")]


def test_whole_fixture_folder() -> None:
    events, warnings = _read(DATA)
    assert len(events) == 4 + 2 + 2 + 1 + 3 + 2
    assert sorted(str(w) for w in warnings) == sorted([
        f"{DATA / 'nested' / 'README.txt'}: not a recognised log format; skipped",
        f"{FLAT} (record 3): invalid JSON at line 3 column 154: Invalid control character; "
        "record skipped, resumed at line 4",
        f"{DATA / 'nested' / 'not_really.evtx'}: not an EVTX file: expected magic b'ElfFile\\x00', "
        "found b'This is '",
    ])


def test_missing_path_is_an_error() -> None:
    with pytest.raises(InputError, match="no-such-dir: no such file or folder"):
        discover([Path("no-such-dir")])


def test_zip_members_are_read_in_place(tmp_path: Path) -> None:
    archive = tmp_path / "triage.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(FLAT, "host1/logs/flat.jsonl")
        z.write(ECS, "host2/beat.json")
        z.writestr("host2/", "")
        z.writestr("__MACOSX/host2/._beat.json", b"\x00\x05\x16\x07 resource fork")
        z.writestr("host3/notes.txt", "collected by IR team")
        z.writestr("host3/sec.json.gz", gzip.compress(ECS.read_bytes()))
    events, warnings = _read(archive)
    assert sorted({e.source_file for e in events}) == [
        f"{archive}!host1/logs/flat.jsonl", f"{archive}!host2/beat.json", f"{archive}!host3/sec.json.gz",
    ]
    assert len(events) == 3 + 2 + 2
    # files are found as they are read: a member skipped after host1 is reported after host1's records
    assert [str(w) for w in warnings] == [
        f"{archive}!host1/logs/flat.jsonl (record 3): invalid JSON at line 3 column 154: Invalid control "
        "character; record skipped, resumed at line 4",
        f"{archive}!host3/notes.txt: not a recognised log format; skipped",
    ]
    member = next(f for f in discover([archive]) if f.member == "host3/sec.json.gz")
    assert (member.format, member.gzip, member.location) == ("json", True, archive)


def test_gzip_is_read_in_place(tmp_path: Path) -> None:
    gz = tmp_path / "beat.json.gz"
    gz.write_bytes(gzip.compress(ECS.read_bytes()))
    events, warnings = _read(gz)
    assert warnings == []
    assert [e.event_id for e in events] == [4104, 1102]
    assert {e.source_file for e in events} == {str(gz)}


def test_encrypted_zip_member_is_reported(tmp_path: Path) -> None:
    archive = tmp_path / "sample.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(ECS, "locked.json")
        z.write(FLAT, "open.jsonl")
    # Mark the first member encrypted (bit 0 of the flags) in its local and central headers, as
    # `zip -e` would; zipfile cannot write encrypted archives itself.
    data = bytearray(archive.read_bytes())
    central = data.index(b"PK\x01\x02")
    for offset in (6, central + 8):
        flags = struct.unpack_from("<H", data, offset)[0]
        struct.pack_into("<H", data, offset, flags | 0x1)
    archive.write_bytes(bytes(data))
    events, warnings = _read(archive)
    assert {e.source_file for e in events} == {f"{archive}!open.jsonl"}
    assert warnings[0] == IngestWarning(
        f"{archive}!locked.json", "encrypted zip member: password required; extract it and ingest the file"
    )


def test_corrupt_zip_is_reported(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    events, warnings = _read(archive)
    assert events == []
    assert warnings == [IngestWarning(str(archive), "unreadable zip archive: File is not a zip file")]


def test_zip_member_with_damaged_data_keeps_what_was_read(tmp_path: Path) -> None:
    archive = tmp_path / "crc.zip"
    payload = b"".join(b'{"EventID": %d, "pad": "%s"}\n' % (i, b"x" * 50) for i in range(2000))
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("events.jsonl", payload)
    data = bytearray(archive.read_bytes())
    start = data.index(b'{"EventID": 1500')
    data[start + 20:start + 24] = b"ZZZZ"  # stored data changed: CRC-32 check fails at the end
    archive.write_bytes(bytes(data))
    events, warnings = _read(archive)
    # The CRC can only be checked at the end: every record is read as found (one is damaged
    # and skipped), and the warning says the member's bytes are not what was archived.
    assert len(events) == 1999
    assert [str(w) for w in warnings] == [
        f"{archive}!events.jsonl (record 1501): invalid JSON at line 1501 column 27: Expecting ':' "
        "delimiter; record skipped, resumed at line 1502",
        f"{archive}!events.jsonl: damaged archive data, reading stopped here: BadZipFile: Bad CRC-32 for "
        "file 'events.jsonl': its bytes differ from what was archived; read as found",
    ]


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    payload = b"".join(b'{"EventID": %d}\n' % i for i in range(50_000))
    gz = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(payload)
    gz.write_bytes(whole[: len(whole) // 2])
    events, warnings = _read(gz)
    assert 0 < len(events) < 50_000
    assert [e.event_id for e in events] == list(range(len(events)))
    assert warnings == [IngestWarning(
        str(gz),
        "damaged archive data, reading stopped here: EOFError: Compressed file ended before the "
        "end-of-stream marker was reached",
    )]


def test_garbage_gzip_is_reported(tmp_path: Path) -> None:
    gz = tmp_path / "bad.json.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 64)
    events, warnings = _read(gz)
    assert events == []
    assert len(warnings) == 1 and warnings[0].file == str(gz)
    assert warnings[0].reason.startswith("unreadable file: ")


def test_zip_inside_zip_is_reported(tmp_path: Path) -> None:
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as z:
        z.write(ECS, "beat.json")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as z:
        z.write(inner, "inner.zip")
    events, warnings = _read(outer)
    assert events == []
    assert warnings == [IngestWarning(
        f"{outer}!inner.zip", "zip inside a zip is not read: extract the outer archive"
    )]


def test_file_named_like_evidence_in_a_walk(tmp_path: Path) -> None:
    shutil.copytree(DATA / "nested", tmp_path / "copy")
    (tmp_path / "copy" / "empty.json").write_bytes(b"")
    events, warnings = _read(tmp_path)
    assert len(events) == 3 + 2
    assert f"{tmp_path / 'copy' / 'empty.json'}" not in {w.file for w in warnings}  # empty: no records


def test_unreadable_folder_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy(ECS, locked / "beat.json")
    shutil.copy(ECS, tmp_path / "open.json")
    real_scandir = os.scandir

    def scandir(path: str | Path) -> object:
        # Tests run as root, whom chmod 000 does not stop: deny the folder the way the OS would.
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    events, warnings = _read(tmp_path)
    assert {e.source_file for e in events} == {str(tmp_path / "open.json")}
    assert warnings == [IngestWarning(str(locked), "unreadable folder: Permission denied")]


def test_each_file_is_read_once(tmp_path: Path) -> None:
    shutil.copy(ECS, tmp_path / "beat.json")
    found = discover([tmp_path, tmp_path / "beat.json", tmp_path / "." / "beat.json"])
    assert [f.path for f in found] == [str(tmp_path / "beat.json")]


def test_fifo_and_dangling_link_are_skipped(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "pipe.json")
    (tmp_path / "gone.json").symlink_to(tmp_path / "missing.json")
    shutil.copy(ECS, tmp_path / "beat.json")
    events, warnings = _read(tmp_path)  # would hang on opening the FIFO
    assert len(events) == 2
    assert sorted(str(w) for w in warnings) == [
        f"{tmp_path / 'gone.json'}: not a regular file; skipped",
        f"{tmp_path / 'pipe.json'}: not a regular file; skipped",
    ]
    pipe_warnings: list[IngestWarning] = []
    assert discover([tmp_path / "pipe.json"], on_warning=pipe_warnings.append) == []
    assert [w.reason for w in pipe_warnings] == ["not a regular file; skipped"]


def test_small_truncated_gzip_keeps_its_first_records(tmp_path: Path) -> None:
    gz = tmp_path / "small.jsonl.gz"
    whole = gzip.compress(b'{"EventID": 1}\n{"EventID": 2}\n' * 40)
    gz.write_bytes(whole[:-12])  # the end-of-stream marker and the last bytes are gone
    events, warnings = _read(gz)
    assert [e.event_id for e in events][:2] == [1, 2]
    assert [w.reason for w in warnings] == [
        "damaged archive data, reading stopped here: EOFError: Compressed file ended before the "
        "end-of-stream marker was reached",
    ]


def test_links_in_a_walk(tmp_path: Path) -> None:
    # A folder's own files come before its subfolders'; a linked folder is not walked (it could loop);
    # a linked file is the file it points to, so it is read once, under the name found first.
    shutil.copy(ECS, tmp_path / "z.json")
    (tmp_path / "a").mkdir()
    shutil.copy(ECS, tmp_path / "a" / "x.json")
    (tmp_path / "b").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "link.json").symlink_to(tmp_path / "a" / "x.json")
    (tmp_path / "c" / "loop").symlink_to(tmp_path, target_is_directory=True)
    found = discover([tmp_path])
    assert [f.path for f in found] == [str(tmp_path / "z.json"), str(tmp_path / "a" / "x.json")]
    named_first = discover([tmp_path / "c" / "link.json", tmp_path])
    assert [f.path for f in named_first] == [str(tmp_path / "c" / "link.json"), str(tmp_path / "z.json")]
    assert named_first[0].location == tmp_path / "c" / "link.json"
    assert named_first[0].size == (tmp_path / "a" / "x.json").stat().st_size


def test_evidence_files_pickle_whole(tmp_path: Path) -> None:
    # Workers get their files pickled: every field must come back, zip members and gzip flags included.
    import pickle

    with zipfile.ZipFile(tmp_path / "logs.zip", "w") as z:
        z.write(ECS, "inner/beat.json")
    (tmp_path / "flat.jsonl.gz").write_bytes(gzip.compress(FLAT.read_bytes()))
    found = discover([tmp_path])
    assert {(f.member, f.gzip) for f in found} == {("inner/beat.json", False), (None, True)}
    assert pickle.loads(pickle.dumps(found, pickle.HIGHEST_PROTOCOL)) == found


def _flag_utf8(data: bytearray, signature: bytes) -> None:
    """Set bit 11 (names are UTF-8) in the flags of the first header with `signature`."""
    offset = data.index(signature) + (6 if signature == b"PK\x03\x04" else 8)
    flags = struct.unpack_from("<H", data, offset)[0]
    struct.pack_into("<H", data, offset, flags | 0x800)


@pytest.mark.parametrize("headers", [(b"PK\x01\x02",), (b"PK\x03\x04",)], ids=["central", "local"])
def test_zip_member_name_flagged_utf8_that_is_not_is_reported(tmp_path: Path, headers: tuple[bytes]) -> None:
    """zipfile decodes a name flagged UTF-8 strictly: in the central directory as the archive opens (which
    stopped discovery with a traceback), in a member's local header as the member opens."""
    archive = tmp_path / "names.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("aaaa.json", b'{"EventID": 1}\n')
        z.writestr("good.json", b'{"EventID": 2}\n')
    data = bytearray(archive.read_bytes().replace(b"aaaa.json", b"a\xff\xfea.json"))
    for signature in headers:
        _flag_utf8(data, signature)
    archive.write_bytes(bytes(data))
    events, warnings = _read(archive)
    assert len(warnings) == 1
    if headers == (b"PK\x01\x02",):  # the archive cannot be opened at all
        assert events == []
        assert warnings[0].file == str(archive)
        assert warnings[0].reason.startswith("unreadable zip archive: a member name flagged UTF-8 is not: ")
    else:  # the member alone: its name in the central directory is read as cp437
        assert [e.event_id for e in events] == [2]
        assert warnings[0].file == f"{archive}!a\u00a0\u25a0a.json"
        assert warnings[0].reason.startswith("unreadable zip member: 'utf-8' codec can't decode byte 0xff")


def test_zip_member_gone_since_discovery_is_a_warning(tmp_path: Path) -> None:
    """An archive rewritten between `discover` and the read (a long hunt over a live collection): the member
    no longer in it is a warning (zipfile's KeyError was a traceback), the others are read."""
    from casefile.ingest import read_file

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("one.json", '{"EventID": 1}\n')
        z.writestr("two.json", '{"EventID": 2}\n')
    found = discover([archive])
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("one.json", '{"EventID": 1}\n')
    warnings: list[IngestWarning] = []
    events = [e for f in found for e in read_file(f, warnings.append)]
    assert [e.event_id for e in events] == [1]
    assert warnings == [IngestWarning(
        f"{archive}!two.json",
        "read error, reading stopped here: no longer in the archive (changed since it was listed)",
    )]


def test_zip_members_of_the_same_name_are_reported_not_read_twice(tmp_path: Path) -> None:
    """A member is opened by its name, which gives the last member of that name: two members named alike were
    the last one read twice, and the first (the one most extractors overwrite: a place to hide) lost."""
    import warnings as python_warnings

    archive = tmp_path / "dup.zip"
    with python_warnings.catch_warnings(), zipfile.ZipFile(archive, "w") as z:
        python_warnings.simplefilter("ignore")  # zipfile warns of the duplicate name as it writes it
        z.writestr("x.json", '{"EventID": 1}\n')
        z.writestr("x.json", '{"EventID": 2}\n')
        z.writestr("y.json", '{"EventID": 3}\n')
    events, warnings = _read(archive)
    assert [e.event_id for e in events] == [2, 3]
    assert [(w.file, w.reason) for w in warnings] == [(
        f"{archive}!x.json",
        "zip member named as a later one, which is read in its place: extract both (7z x -aou renames) and "
        "ingest them",
    )]


def _set_dedup(paths: list[Path]) -> list[str]:
    """What discovery gives, by the plain rule it keeps in less memory: every file the walk meets, in
    order, but those whose real path was met before."""
    import os

    from casefile.ingest.sources import _walk

    seen: set[str] = set()
    out: list[str] = []
    for given in paths:
        path = os.fspath(given)
        if os.path.isdir(path):
            walked = _walk(path, _ignore, set())
            found = [(f, os.path.realpath(f) if link else pos) for f, pos, link in walked]
        else:
            found = [(path, os.path.realpath(path))]
        for file, key in found:
            if key not in seen:
                seen.add(key)
                out.append(file)
    return out


def _ignore(_: IngestWarning) -> None:
    pass


@pytest.mark.parametrize("seed", range(60))
def test_files_met_twice_are_read_once_without_a_set_of_every_file(tmp_path: Path, seed: int) -> None:
    # Random trees with links to files before and after them in the walk, into other named folders and
    # out of them, nested and repeated roots, and files named on their own: discovery remembers only the
    # links and the named files, and must give what a set of every real path met would.
    import random

    rng = random.Random(seed)
    root = tmp_path / "t"
    folders = [root]
    files: list[Path] = []
    for i in range(rng.randint(3, 12)):
        folder = rng.choice(folders) / f"d{rng.randint(0, 3)}{i}"
        folder.mkdir(parents=True, exist_ok=True)
        folders.append(folder)
    for i in range(rng.randint(5, 25)):
        file = rng.choice(folders) / f"f{rng.randint(0, 9)}{i}.json"
        file.write_bytes(ECS.read_bytes())
        files.append(file)
    outside = tmp_path / "outside.json"
    outside.write_bytes(ECS.read_bytes())
    targets = [*files, outside]
    for i in range(rng.randint(1, 8)):
        link = rng.choice(folders) / f"{rng.choice('aflz')}link{i}.json"
        link.symlink_to(rng.choice(targets))
        targets.append(link)
    linked_folders = []
    for i in range(rng.randint(0, 2)):  # not walked inside a walk; walked when named
        link = rng.choice(folders) / f"{rng.choice('adz')}dirlink{i}"
        link.symlink_to(rng.choice(folders), target_is_directory=True)
        linked_folders.append(link)
    choices = [*folders, *targets, *linked_folders]
    given = [rng.choice(choices) for _ in range(rng.randint(1, 6))]
    found = [f.path for f in discover(given)]
    assert found == _set_dedup([Path(p) for p in given])
    assert len(found) == len(set(found))


def test_discovery_goes_as_it_is_asked(tmp_path: Path) -> None:
    # Files are found as the iterator advances (a hunt starts on the first files and holds none it is not
    # reading); a path that does not exist is refused before anything is read.
    from casefile.ingest import count_files, iter_discover

    for name in ("a.json", "b.json", "c.json"):
        shutil.copy(ECS, tmp_path / name)
    found = iter_discover([tmp_path])
    assert next(found).path == str(tmp_path / "a.json")
    (tmp_path / "c.json").unlink()  # gone before the walk reaches it: never seen
    assert [f.path for f in found] == [str(tmp_path / "b.json")]
    with pytest.raises(InputError, match="no-such-dir"):
        iter_discover([tmp_path, tmp_path / "no-such-dir"])
    with pytest.raises(InputError, match="no-such-dir"):
        count_files([tmp_path, tmp_path / "no-such-dir"])


def test_count_files_counts_what_discovery_looks_at(tmp_path: Path) -> None:
    # A progress total: files on disk once each (a zip once, whatever it holds), those no reader claims too
    from casefile.ingest import count_files, iter_discover

    shutil.copytree(DATA, tmp_path / "data")
    with zipfile.ZipFile(tmp_path / "data" / "two.zip", "w") as z:
        z.write(ECS, "one.json")
        z.write(ECS, "two.json")
    (tmp_path / "link.json").symlink_to(tmp_path / "data" / "evtx_shapes.json")
    given = [tmp_path, tmp_path / "data" / "evtxecmd.csv"]
    skipped: list[str] = []
    found = list(iter_discover(given, on_skip=skipped.append))
    on_disk = {f.on_disk for f in found}
    assert skipped == [str(tmp_path / "data" / "nested" / "README.txt")]
    assert len(found) == len(on_disk) + 1  # the zip's two members
    assert count_files(given) == len(on_disk) + len(skipped)


def test_files_in_a_folder_that_could_not_be_listed_are_still_read_through_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A folder one may enter but not list: its files were not read by the walk, so a link to one, met
    # later in the walk, and a folder inside it named on its own, are read.
    import os

    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    shutil.copy(ECS, locked / "x.json")
    shutil.copy(ECS, locked / "inner" / "y.json")
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "link.json").symlink_to(locked / "x.json")
    real_scandir = os.scandir

    def scandir(path: str | Path) -> object:
        if Path(path) == locked:  # tests run as root, whom chmod does not stop
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = discover([tmp_path, locked / "inner"])
    assert [f.path for f in found] == [str(tmp_path / "z" / "link.json"), str(locked / "inner" / "y.json")]


def test_excluded_files_are_left_out_silently(tmp_path: Path) -> None:
    from casefile.ingest import count_files, iter_discover

    for name in ("a.json", "out.jsonl"):
        shutil.copy(ECS, tmp_path / name)
    (tmp_path / "again.jsonl").symlink_to(tmp_path / "out.jsonl")
    warnings: list[IngestWarning] = []
    exclude = [tmp_path / "." / "out.jsonl"]
    found = list(iter_discover([tmp_path], on_warning=warnings.append, exclude=exclude))
    assert [f.path for f in found] == [str(tmp_path / "a.json")] and warnings == []
    assert count_files([tmp_path], exclude) == 1


def test_the_first_certain_reader_wins_and_the_rest_are_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from casefile.ingest.plugins import READERS, SNIFF_CERTAIN
    from casefile.ingest.sources import _pick

    asked: list[str] = []

    class Sniffer:
        def __init__(self, name: str, score: int) -> None:
            self.name, self.score = name, score

        def sniff(self, head: bytes, name: str) -> int:
            asked.append(self.name)
            return self.score if head.startswith(b"CERT") else 0

    # the registry asks its readers in name order: a, b, then the built-in ones
    monkeypatch.setitem(READERS._items, "a-unsure", Sniffer("a-unsure", 50))
    monkeypatch.setitem(READERS._items, "b-certain", Sniffer("b-certain", SNIFF_CERTAIN))
    monkeypatch.setitem(READERS._items, "zz-certain", Sniffer("zz-certain", SNIFF_CERTAIN))
    assert _pick(b"CERT and more", "log.bin") == "b-certain"
    assert asked == ["a-unsure", "b-certain"]
    asked.clear()
    assert _pick(b"plain text", "log.bin") is None
    assert "zz-certain" in asked  # not certain: every reader is asked

    def not_asked(head: bytes, name: str) -> int:
        raise AssertionError("the JSON reader was asked about an EVTX file")

    monkeypatch.setattr(READERS.get("json"), "sniff", not_asked)
    monkeypatch.delitem(READERS._items, "zz-certain")
    assert _pick(b"ElfFile\x00" + bytes(100), "Security.evtx") == "evtx"


def test_a_head_read_in_short_pieces_is_read_whole() -> None:
    """`_head` reads a file's first SNIFF_BYTES through its descriptor; where a read gives fewer bytes
    before the end (a pipe here, some network file systems), it reads on."""
    import os
    import threading
    import time

    from casefile.ingest.plugins import SNIFF_BYTES
    from casefile.ingest.sources import _head

    r, w = os.pipe()
    data = bytes(range(256)) * (SNIFF_BYTES // 128)

    def write() -> None:
        os.write(w, data[:100])
        time.sleep(0.05)
        os.write(w, data[100:])
        os.close(w)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert _head(r) == data[:SNIFF_BYTES]
    finally:
        writer.join()
        os.close(r)
    r, w = os.pipe()
    os.write(w, b"short")
    os.close(w)
    assert _head(r) == b"short"  # the end: what there is
    os.close(r)
