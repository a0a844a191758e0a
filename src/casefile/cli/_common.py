"""Shared CLI helpers: one error renderer, one console, progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

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


def fail(message: str, code: int = 2) -> typer.Exit:
    # One line whatever the terminal width (soft wrap): users grep these and paths are long.
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Render CasefileError as one clear line and exit 2, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CasefileError as exc:
            raise fail(str(exc)) from exc

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
