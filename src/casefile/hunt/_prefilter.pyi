from collections.abc import Callable
from typing import Any

def field_hits(
    anchors: list[tuple[str, str, Any, dict[Any, int], int]],
    fields: dict[str, Any],
    folded: dict[str, str],
    view: Any,
    miss: Callable[[Any, str, dict[Any, int]], int],
    list_bits: Callable[[Any, str, Any, Any, dict[Any, int]], int],
) -> int: ...
