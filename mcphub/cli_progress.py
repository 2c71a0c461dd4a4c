"""`mcphub call` showing a tool's progress notifications on stderr (stdout keeps the result alone).

On a terminal: a rich progress bar (a bar when the server gives a total, a spinner when it does not),
gone once the call ends. Piped: one line per notification, `progress: 2/3 step 2`, for logs and tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from mcphub.jobs import Progress as Reported
from mcphub.jobs import ProgressSink


class _Shown:
    def __init__(self, console: Console, bar: Progress | None, label: str) -> None:
        self._console = console
        self._bar = bar
        self._label = label
        self._task: TaskID | None = None

    async def show(self, reported: Reported) -> None:
        message = reported.message or ""
        if self._bar is None:
            shown = _number(reported.progress)
            if reported.total is not None:
                shown += f"/{_number(reported.total)}"
            self._console.print(f"progress: {shown} {message}".rstrip(), highlight=False, markup=False)
            return
        description = f"{self._label} {message}".rstrip()
        if self._task is None:
            self._task = self._bar.add_task(description, total=reported.total)
        self._bar.update(self._task, description=description, total=reported.total, completed=reported.progress)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@contextmanager
def progress_shown(label: str, console: Console | None = None) -> Iterator[ProgressSink]:
    """A progress callback for a call (`Call.progress`) that shows what the server reports."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield ProgressSink(_Shown(console, None, label).show)
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        yield ProgressSink(_Shown(console, bar, label).show)
