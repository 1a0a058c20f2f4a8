"""Progress and cancellation for long analyses, whoever runs them.

Analyses wrap their outer loops in `progress(...)`. In a notebook cell that is a tqdm bar; inside the explorer's
worker thread the same loop reports to the widget's progress bar instead and stops at the next step when the
user clicks elsewhere (`Cancelled`), so a superseded run never finishes a half-updated view.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["Cancelled", "Task", "progress", "check_cancelled", "running"]

T = TypeVar("T")


class Cancelled(Exception):
    """The run was superseded or cancelled by the user."""


class Task:
    """A cancellable unit of work with a progress callback (fraction 0..1, description)."""

    def __init__(self, on_progress: Callable[[float, str], None] | None = None) -> None:
        self._cancel = threading.Event()
        self.on_progress = on_progress

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def report(self, fraction: float, desc: str = "") -> None:
        if self.cancelled:
            raise Cancelled("superseded by a newer request")
        if self.on_progress is not None:
            self.on_progress(min(max(fraction, 0.0), 1.0), desc)


_current: contextvars.ContextVar[Task | None] = contextvars.ContextVar("heatwidget_task", default=None)


class running:  # noqa: N801 - used as a context manager: `with running(task): ...`
    """Make `task` the current task for the analyses called inside the block."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._token: contextvars.Token | None = None

    def __enter__(self) -> Task:
        self._token = _current.set(self.task)
        return self.task

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _current.reset(self._token)


def check_cancelled() -> None:
    """Raise Cancelled if the current task (if any) was cancelled; call between expensive steps."""
    task = _current.get()
    if task is not None and task.cancelled:
        raise Cancelled("superseded by a newer request")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", disable: bool | None = None) -> Iterator[T]:
    """Iterate with a progress bar (tqdm in cells; the widget's bar under the explorer) and cancellation points."""
    task = _current.get()
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if task is None:
        from tqdm.auto import tqdm

        # Short loops get no bar: a bar per cell for a 3-step loop is noise.
        quiet = disable if disable is not None else (total is not None and total <= 2)
        yield from tqdm(items, total=total, desc=desc or None, disable=quiet, leave=False)
        return
    n = max(total or 1, 1)
    task.report(0.0, desc)
    for i, item in enumerate(items):
        yield item
        task.report((i + 1) / n, desc)
