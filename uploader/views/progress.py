"""How far a recovery has got, for the person waiting on it.

On a terminal it redraws one bar in place; anywhere else (a log file, CI) it
writes a plain line now and then, because carriage returns make logs
unreadable.
"""

from __future__ import annotations

import os
import time
from typing import Callable, TextIO

__all__ = ["Progress"]

_BAR_WIDTH = 30
_MIN_BAR_WIDTH = 10
_BAR_INTERVAL = 0.1  # seconds between redraws of the bar
_LINE_INTERVAL = 5.0  # seconds between plain lines


class Progress:
    """Report (records, bytes) delivered out of *total_bytes* to *stream*.

    Feed it with :meth:`update` (the Uploader's ``on_progress``) and end it
    with :meth:`close`, which leaves the bar's final state on its own line.
    """

    def __init__(
        self,
        label: str,
        total_bytes: int,
        stream: TextIO,
        *,
        bar: bool | None = None,
        columns: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total_bytes = total_bytes
        self.stream = stream
        self.bar = _is_terminal(stream) if bar is None else bar
        # A bar wider than the terminal wraps, and "\r" then redraws only its last row.
        self.columns = columns or (_columns(stream) if self.bar else 80)
        self._clock = clock
        self._started = clock()
        self._last_draw: float | None = None
        self._records = 0
        self._bytes = 0
        self._width = 0  # of the bar line last drawn, to blank what a shorter one leaves

    def update(self, records: int, delivered_bytes: int, total_bytes: int | None = None) -> None:
        """Delivered so far, and the total when it is better known now than at the start."""
        self._records, self._bytes = records, delivered_bytes
        if total_bytes is not None:
            self.total_bytes = total_bytes
        now = self._clock()
        if self.bar:
            if self._last_draw is None or now - self._last_draw >= _BAR_INTERVAL:
                self._draw_bar()
                self._last_draw = now
        elif now - (self._last_draw or self._started) >= _LINE_INTERVAL:
            self.stream.write(
                f"{self.label}: {self._records:,} reports delivered so far "
                f"({self._fraction():.0%} of {_size(self.total_bytes)})\n"
            )
            self.stream.flush()
            self._last_draw = now

    def close(self) -> None:
        """Draw the final state of the bar and end its line (nothing for plain lines)."""
        if self.bar and self._last_draw is not None:
            self._draw_bar()
            self.stream.write("\n")
            self.stream.flush()

    def _fraction(self) -> float:
        return min(1.0, self._bytes / self.total_bytes) if self.total_bytes > 0 else 1.0

    def _draw_bar(self) -> None:
        fraction = self._fraction()
        numbers = f" {fraction:4.0%}  {self._records:,} reports  {_size(self._bytes)} / {_size(self.total_bytes)}"
        room = self.columns - 1  # the last column would make some terminals wrap
        # Narrow terminals: the bar shrinks first, then the label is cut.
        width = max(_MIN_BAR_WIDTH, min(_BAR_WIDTH, room - len(self.label) - len(numbers) - 3))
        done = round(fraction * width)
        rest = f" [{'#' * done}{'.' * (width - done)}]{numbers}"
        label = self.label
        if len(label) + len(rest) > room:
            label = label[: max(0, room - len(rest) - 3)] + "..."
        line = (label + rest)[:room]
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    value = n / 1000
    for unit in ("KB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
