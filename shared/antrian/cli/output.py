"""What the ``antrian`` commands print: tables, moments and counts, and a refusal as one line."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import click

from antrian.errors import Conflict, NotFound
from antrian.runtime.startup import guarded

T = TypeVar("T")


def or_exit(program: str, work: Callable[[], T]) -> T:
    """Run ``work`` as :func:`~antrian.runtime.startup.guarded` does; what it names that does not exist, or a state
    that refuses it (a run not running, an email that cannot be resent, queues in use), ends the command with one
    line and exit code 1."""
    try:
        return guarded(program, work)
    except (NotFound, Conflict) as exc:
        raise click.ClickException(str(exc)) from None


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def moment(iso: str | None) -> str:
    """An ISO 8601 time as ``2026-12-02 14:05:09``; ``-`` when unknown."""
    return "-" if iso is None else iso[:19].replace("T", " ")


def plural(count: int, thing: str) -> str:
    """``1 failed job``, ``2 failed jobs``."""
    return f"{count} {thing}{'s' if count != 1 else ''}"
