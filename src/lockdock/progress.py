"""Progress reporting: rich on a terminal, silent otherwise (CI logs stay readable)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def interactive() -> bool:
    return sys.stderr.isatty()


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner with ``message`` while the block runs; nothing when not a TTY."""
    if not interactive():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


@contextmanager
def bar(description: str, total: float | None) -> Iterator[Any]:
    """A rich progress bar; yields an object with ``advance(n)``. No-op when not a TTY."""
    if not interactive():
        yield _NullBar()
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield _Bar(progress, task)


def say(message: str) -> None:
    """A step line on stderr (always shown: it is the log of what was done)."""
    print(message, file=sys.stderr, flush=True)


class _NullBar:
    def advance(self, amount: float = 1) -> None:
        pass


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task, amount)
