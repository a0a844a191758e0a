"""`casefile.ingest._crc.crc32`: ISA-L's CRC-32 where installed, giving exactly zlib's values."""

from __future__ import annotations

import importlib.util
import random
import zlib

import pytest

from casefile.ingest._crc import crc32


@pytest.mark.parametrize("size", [0, 1, 7, 15, 16, 17, 63, 64, 65, 120, 384, 4096, 65024, 65536 + 3])
def test_crc32_is_zlibs(size: int) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    for start in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32)):
        assert crc32(data, start) == zlib.crc32(data, start)
    assert crc32(data) == zlib.crc32(data)
    view = memoryview(data)[size // 3:]  # how the EVTX reader hands a chunk's records over
    assert crc32(view) == zlib.crc32(view)
    assert crc32(bytearray(data)) == zlib.crc32(data)


def test_crc32_chains_as_zlib_does() -> None:
    """A chunk header's checksum runs over two pieces, the second starting from the first's value."""
    data = random.Random(512).randbytes(512)
    assert crc32(data[128:512], crc32(data[:120])) == zlib.crc32(data[:120] + data[128:512])


def test_isal_is_used_where_installed() -> None:
    if importlib.util.find_spec("isal") is None:
        pytest.skip("isal is not installed: zlib's crc32 is used")
    from isal import isal_zlib

    assert crc32 is isal_zlib.crc32
