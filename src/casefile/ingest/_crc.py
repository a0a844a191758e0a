"""CRC-32 as `zlib.crc32` computes it (EVTX checksums, zip members), by ISA-L where its wheel is installed.

ISA-L folds the data with carry-less multiplication: about ten times the speed of Debian's zlib on this
machine (42 against 3.7 GB/s), where checksums were 2-4% of a hunt worker's time (docs/performance.md).
Without the wheel (a platform it is not built for), zlib's: the same values.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

#: crc32(data, value=0) -> int, exactly `zlib.crc32`.
crc32: Callable[..., int] = zlib.crc32
try:
    from isal import isal_zlib
except ImportError:  # pragma: no cover - only where no wheel installs
    pass
else:
    crc32 = isal_zlib.crc32

__all__ = ["crc32"]
