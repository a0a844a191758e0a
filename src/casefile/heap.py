"""Keeping the cyclic garbage collector off the objects a long run holds for its whole length.

A hunt holds hundreds of thousands of objects for as long as it runs (the rule set, the partition plans
built as partitions are met), while records, events and detections flow through it. The flow promotes
objects to the oldest generation, and every full collection it triggers walks everything there again:
a quarter of the CPU of a `casefile hunt` parent with workers, a seventh of a `casefile investigate`.
Frozen objects (`gc.freeze`) are left out of collections; they are still freed when nothing refers to
them, so only a reference cycle left behind would outlive the run (a pass over the corpus leaves none).
"""

from __future__ import annotations

import gc
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: Allocations of tracked objects (net of those freed) between two collections of the youngest generation,
#: where CPython's default is 700: each record and detection allocates a few, and each collection walks what
#: is young, so a hunt collected about every 30 records. Its records make no reference cycles (a pass over
#: the corpus leaves none), so collecting less often holds no more garbage for long; a worker's pass over
#: the corpus takes 1-2% less CPU (eighteenth round, docs/performance.md).
YOUNG_THRESHOLD = 50_000


def collect_less() -> tuple[int, int, int]:
    """Collect the youngest generation only every `YOUNG_THRESHOLD` allocations (never more often than
    before); returns the thresholds before, for `gc.set_threshold`."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], YOUNG_THRESHOLD), before[1], before[2])
    return before


@contextmanager
def long_lived() -> Iterator[Callable[[], None]]:
    """What is alive on entry is out of the collector's sight until exit, and the collector runs less often
    (`collect_less`).

    Yields `settle`, which does the same for what has been made since: call it where what remains lives
    as long as the run (after a unit of work that built plans). On exit everything frozen here is handed
    back to the collector (unless the process had frozen objects before, which it then leaves frozen), and
    its thresholds are as before: cyclic garbage made before then is collected as usual, at the latest when
    the interpreter exits.
    """
    already = gc.get_freeze_count() > 0
    gc.freeze()
    before = collect_less()
    try:
        yield gc.freeze
    finally:
        gc.set_threshold(*before)
        if not already:
            gc.unfreeze()


def load_pickle(data: bytes) -> Any:
    """`pickle.loads` with the collector paused: every object a pickle makes is kept, so the collections
    its allocations would trigger only walk the growing result (about 15% of loading the rule cache)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return pickle.loads(data)
    finally:
        if enabled:
            gc.enable()


__all__ = ["YOUNG_THRESHOLD", "collect_less", "load_pickle", "long_lived"]
