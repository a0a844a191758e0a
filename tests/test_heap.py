"""casefile.heap: what a long run holds is out of the collector's sight while it runs, and only then."""

from __future__ import annotations

import gc
import pickle
from collections.abc import Iterator

import pytest

from casefile.heap import YOUNG_THRESHOLD, collect_less, load_pickle, long_lived


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()  # a test process may have frozen objects (it never does on purpose)
    yield
    gc.unfreeze()
    gc.enable()


def test_long_lived_freezes_what_is_alive_and_what_settle_is_called_for() -> None:
    before = [[i] for i in range(1000)]
    with long_lived() as settle:
        frozen = gc.get_freeze_count()
        assert frozen > 1000
        assert not any(x is before for x in gc.get_objects())  # frozen: not in any generation
        made = [[i] for i in range(1000)]
        assert any(x is made for x in gc.get_objects())
        settle()
        assert gc.get_freeze_count() >= frozen + 1000
        assert not any(x is made for x in gc.get_objects())
    assert gc.get_freeze_count() == 0  # handed back: cycles made meanwhile are collected as usual
    assert any(x is before for x in gc.get_objects())


def test_long_lived_leaves_a_process_that_froze_before_frozen() -> None:
    gc.freeze()
    outer = gc.get_freeze_count()
    with long_lived():
        pass
    assert gc.get_freeze_count() >= outer > 0


def test_load_pickle_pauses_the_collector_and_restores_it() -> None:
    data = pickle.dumps({"rules": [[i, str(i)] for i in range(5000)]})
    seen: list[bool] = []
    gc.callbacks.append(lambda phase, info: seen.append(True))
    try:
        assert load_pickle(data) == pickle.loads(data)
        seen.clear()
        load_pickle(data)
        assert seen == []  # 10,000 containers made, no collection started
    finally:
        gc.callbacks.pop()
    assert gc.isenabled()
    with pytest.raises(pickle.UnpicklingError):
        load_pickle(b"\x80\x05broken")
    assert gc.isenabled()
    gc.disable()
    load_pickle(data)
    assert not gc.isenabled()  # a caller's choice is left as it was


def test_long_lived_collects_the_young_less_often_and_restores_the_thresholds() -> None:
    original = gc.get_threshold()
    try:
        gc.set_threshold(700, 11, 12)
        with long_lived():
            assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)
            seen: list[int] = []
            gc.callbacks.append(lambda phase, info: seen.append(info["generation"]))
            try:
                gc.collect()  # from a known count of young objects
                seen.clear()
                keep = [[i] for i in range(YOUNG_THRESHOLD // 2)]
                assert seen == []  # CPython's 700 would have collected dozens of times
            finally:
                gc.callbacks.pop()
            del keep
        assert gc.get_threshold() == (700, 11, 12)
        gc.set_threshold(100_000, 10, 10)
        assert collect_less() == (100_000, 10, 10)
        assert gc.get_threshold() == (100_000, 10, 10)  # never more often than before
    finally:
        gc.set_threshold(*original)
