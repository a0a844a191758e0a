"""Shared fixtures: the reference data folder (skip with a reason when it is absent)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from casefile.config import SHARED_DATA_ENV, shared_data_dir
from casefile.ingest.readers.evtx import CHUNK_SIZE, HEADER_SIZE

#: An EVTX sample of the shared corpus: 869 records in 10 chunks (record numbers 1..98, 99..197, ...;
#: their System EventRecordID runs from 437472), 1 118 208 bytes.
EVTX_SAMPLE = Path("evtx") / "EVTX-ATTACK-SAMPLES" / "Lateral Movement" / "LM_5145_Remote_FileCopy.evtx"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (or $CASEFILE_SHARED_DATA); tests that need it skip, saying why, without it."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(f"reference data not found: set {SHARED_DATA_ENV} or place it at ../shared/data")
    return path


@pytest.fixture()
def stalling_evtx(shared_data: Path) -> bytearray:
    """`EVTX_SAMPLE` with one byte changed (found by fuzzing) that sends evtx 0.14 into an endless loop on
    chunk 1 (records 99..197), holding the GIL; its checksums no longer match."""
    data = bytearray((shared_data / EVTX_SAMPLE).read_bytes())
    data[HEADER_SIZE + CHUNK_SIZE + 1256] = 152
    return data


@pytest.fixture()
def crafted_evtx(stalling_evtx: bytearray) -> bytearray:
    """`stalling_evtx` with chunk 1's checksums made valid again: nothing tells the reader that the chunk
    was changed, as in a file crafted to stop the tools that read it."""
    data = stalling_evtx
    chunk = HEADER_SIZE + CHUNK_SIZE
    # The chunk's first record gets a double for an unsigned integer (same size), which the parser reads and
    # casefile's own writer (`_binxml`) leaves to it: the parser must meet the chunk for it to loop. (The
    # writer reads the crafted chunk, the parser's loop aside.)
    instance = chunk + 512 + 24 + 4
    definition = struct.unpack_from("<I", data, instance + 6)[0]
    assert chunk + definition == instance + 10  # defined where first used
    values = chunk + definition + 24 + struct.unpack_from("<I", data, chunk + definition + 20)[0]
    kinds = [values + 4 + 4 * i + 2 for i in range(struct.unpack_from("<I", data, values)[0])]
    data[next(at for at in kinds if data[at] == 0x0A)] = 0x0C
    free = struct.unpack_from("<I", data, chunk + 48)[0]
    struct.pack_into("<I", data, chunk + 52, zlib.crc32(bytes(data[chunk + 512:chunk + free])))
    # the chunk header's own checksum covers the records' (at 52): made valid after it
    header = bytes(data[chunk:chunk + 120] + data[chunk + 128:chunk + 512])
    struct.pack_into("<I", data, chunk + 124, zlib.crc32(header))
    return data


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real data directory from a test."""
    monkeypatch.setenv("CASEFILE_HOME", str(tmp_path_factory.mktemp("casefile-home")))
