"""`python -m casefile`, and the `casefile` command's entry point.

Kept free of imports: worker processes (spawned, not forked) import the main script again, and the command
line interface (Typer, rich, every command module) is of no use to them.
"""

from __future__ import annotations


def main() -> None:
    from casefile.cli import main as run

    run()


if __name__ == "__main__":
    main()
