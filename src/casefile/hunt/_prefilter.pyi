from typing import Any

def field_hits(
    anchors: list[tuple[str, str, Any, dict[Any, int], int]],
    fields: dict[str, Any],
    folded: dict[str, str],
    view: Any,
    hunter: Any,
) -> int: ...
