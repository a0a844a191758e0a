"""Shared CLI helpers: one error renderer, one console, progress bars."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TextIO, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from casefile.errors import CasefileError

console = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")
#: Bytes of an output file's buffer (`text_output`).
OUTPUT_BUFFER = 1 << 20


def fail(message: str, code: int = 2) -> typer.Exit:
    # One line whatever the terminal width (soft wrap): users grep these and paths are long.
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Render CasefileError, and an OSError on a named file (an output path that is a folder or cannot
    be created, a full disk), as one clear line and exit 2, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CasefileError as exc:
            raise fail(str(exc)) from exc
        except OSError as exc:
            # Evidence that cannot be read is a warning long before this; what reaches here is a file the
            # command itself needs, and the file and the system's reason are what the user can act on.
            if exc.filename is None:
                raise
            reason = exc.strerror or str(exc)
            if isinstance(exc, FileExistsError):  # mkdir(exist_ok=True) on a path that is a file
                reason = "exists and is not a folder"
            target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else exc.filename
            raise fail(f"{target}: {reason}") from exc

    return wrapper


@contextmanager
def progress(enabled: bool | None = None) -> Iterator[Progress]:
    """A rich progress display on a terminal (disabled when stderr is not a TTY)."""
    disable = not console.is_terminal if enabled is None else not enabled
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disable,
        transient=False,
    ) as bar:
        yield bar


@contextmanager
def text_output(path: Path | None) -> Iterator[TextIO]:
    """UTF-8 text to `path`, or to stdout when it is None.

    Event values can hold lone surrogates (a JSON log's `"\\ud800"`), which UTF-8 cannot encode: they
    are written as `\\ud800` (backslashreplace), which inside a JSON string is that very escape, rather
    than stopping the run with a traceback."""
    if path is not None:
        # a 1 MiB buffer: a hunt writes hundreds of MB, and the file system's cost per write of the default
        # 8 KiB (pages written in part) was a fifth more (0.72 against 0.88 s of CPU for 270 MB)
        with path.open(
            "w", encoding="utf-8", newline="", errors="backslashreplace", buffering=OUTPUT_BUFFER
        ) as fh:
            yield fh
        return
    stdout = sys.stdout
    if not isinstance(stdout, io.TextIOWrapper):  # replaced by a caller; theirs to configure
        yield stdout
        return
    errors = stdout.errors
    stdout.reconfigure(errors="backslashreplace")
    try:
        yield stdout
    finally:
        stdout.reconfigure(errors=errors)
