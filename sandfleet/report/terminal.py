"""What a terminal gets that a pipe does not: colour, and a status line redrawn in place.

Colour only when the stream is a TTY, ``NO_COLOR`` is unset or empty (https://no-color.org) and
``TERM`` is not ``dumb``; the live status line only on a TTY that is not ``dumb`` (it needs
``\\r`` and erase-line). A pipe or a file gets plain lines, so logs and ``grep`` stay clean.
Output text from hosts is made printable first, so a task cannot drive the user's terminal.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Callable, Optional, TextIO

ERASE_LINE = "\r\x1b[K"
_STYLES = {
    "ok": "32", "changed": "33", "failed": "31", "timeout": "31", "error": "31", "unreachable": "1;31",
    "sandbox_unavailable": "35",
    "denied": "35", "skipped": "36", "cancelled": "1;33", "ignored": "36", "bold": "1", "dim": "2", "warning": "35",
}
# C0/C1 controls but tab and newline, DEL, and lone surrogates (non-UTF-8 bytes under surrogateescape).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def wants_live(stream: TextIO, environ: Mapping[str, str]) -> bool:
    return _is_tty(stream) and environ.get("TERM") != "dumb"


def wants_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    return wants_live(stream, environ) and not environ.get("NO_COLOR")


def printable(text: str) -> str:
    """Host output as safe terminal text: escapes shown as ``\\x1b``, undecodable bytes as ``\\x80``."""
    return _UNPRINTABLE.sub(escape_char, text)


def escape_char(match: re.Match[str]) -> str:
    """One character shown as its escape; a surrogateescape stand-in as the byte it stands for."""
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class Palette:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, style: str) -> str:
        code = _STYLES.get(style)
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and code else text


class Console:
    """Prints whole lines; when live, keeps one status line under them, erased before each line
    and redrawn after it, and refreshed by a ticker so the elapsed time moves while tasks run."""

    def __init__(self, stream: TextIO, status: Callable[[], str], live: bool, tick_s: float = 0.5,
                 environ: Optional[Mapping[str, str]] = None) -> None:
        self.stream, self.status, self.live, self.tick_s = stream, status, live, tick_s
        self.environ = environ or {}
        self.lock = threading.RLock()  # also guards the state ``status`` reads
        self._shown = False
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None

    def line(self, text: str) -> None:
        with self.lock:
            self._erase()
            self.stream.write(text + "\n")
            self._draw()
            self.stream.flush()

    def refresh(self) -> None:
        with self.lock:
            self._erase()
            self._draw()
            self.stream.flush()

    def start(self) -> None:
        """Start the ticker (once); a no-op when not live."""
        with self.lock:
            if not self.live or self._ticker is not None or self._stop.is_set():
                return
            self._ticker = threading.Thread(target=self._tick, name="status-line", daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        """Stop the ticker and erase the status line; lines printed later stay plain."""
        self._stop.set()
        ticker = self._ticker
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout=2)
        with self.lock:
            self._erase()
            self.live = False
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.refresh()

    def _erase(self) -> None:
        if self._shown:
            self.stream.write(ERASE_LINE)
            self._shown = False

    def _draw(self) -> None:
        if not self.live:
            return
        text = self.status()
        if text:
            self.stream.write(text[: max(10, self.width() - 1)])  # never wrap: \r must reach its start
            self._shown = True


    def width(self) -> int:
        """The terminal's width now (it may be resized), else ``COLUMNS``, else 80."""
        return _width(self.stream, self.environ)


def _width(stream: TextIO, environ: Optional[Mapping[str, str]] = None) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    if not columns:  # not a terminal we can ask, or a new pseudo-terminal that says 0 until sized
        value = (environ or {}).get("COLUMNS", "")
        columns = int(value) if value.isdigit() else 0
    return columns or 80


def elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m{secs:02d}s"


__all__ = ["Console", "Palette", "elapsed", "escape_char", "printable", "wants_colour", "wants_live"]
