"""A rich progress bar on stderr, shown only for large work on a terminal."""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import Any

SHOW_FROM_BYTES = 256 * 1024 * 1024


class TerminalProgress:
    """Implements the hashing engine's `Progress`; rich is imported only if a bar is shown."""

    def __init__(self, description: str, enabled: bool) -> None:
        self._description = description
        self._enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None
        self._pending = 0
        self._lock = threading.Lock()

    def start(self, total_bytes: int) -> None:
        if not self._enabled or total_bytes < SHOW_FROM_BYTES or self._progress is not None:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._progress.add_task(self._description, total=total_bytes)
        self._progress.start()

    def advance(self, nbytes: int) -> None:
        if self._progress is None:
            return
        with self._lock:
            self._pending += nbytes
            if self._pending < 16 * 1024 * 1024:
                return
            pending, self._pending = self._pending, 0
        self._progress.update(self._task, advance=pending)

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
