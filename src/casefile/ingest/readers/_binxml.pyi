from typing import Literal, overload

@overload
def chunk_records(
    chunk: bytes | bytearray | memoryview, utf8: Literal[False] = False
) -> list[tuple[int, str]] | None: ...
@overload
def chunk_records(
    chunk: bytes | bytearray | memoryview, utf8: bool
) -> list[tuple[int, str | bytes]] | None: ...
