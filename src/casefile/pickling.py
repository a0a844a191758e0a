"""Pickling for the slots dataclasses that travel to worker processes and into the rule cache."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T", bound=type)


def by_fields(cls: T) -> T:
    """Class decorator (above `@dataclass`): pickle an instance as `cls(*its field values)`.

    The generic pickling of frozen slots dataclasses looks `fields()` up for every object, both ways:
    for the rule set (tens of thousands of IR nodes, pickled for every worker and loaded from the cache
    on every start) and the files and detections that cross processes, that was most of the time.
    Pickles made before (dataclass state) still load.
    """
    names = [f.name for f in fields(cls)]
    if not all(f.init for f in fields(cls)):
        raise TypeError(f"{cls.__name__}: a field outside __init__ cannot be pickled by value")
    get = operator.attrgetter(*names)
    reduce: Callable[[Any], tuple[Any, ...]]
    if len(names) == 1:  # attrgetter of one name gives the value, not a tuple

        def reduce(self: Any) -> tuple[Any, ...]:
            return (cls, (get(self),))
    else:

        def reduce(self: Any) -> tuple[Any, ...]:
            return (cls, get(self))

    cls.__reduce__ = reduce  # type: ignore[assignment]
    return cls


__all__ = ["by_fields"]
