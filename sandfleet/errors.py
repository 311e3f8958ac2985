"""The user-facing error hierarchy.

Every mistake a user can make in a file or on the command line becomes one of these, carrying
where it happened; the CLI turns it into one clear line and an exit code (docs/architecture.md §6). Anything
else that escapes is a bug in sandfleet and exits 70.

    SandfleetError          exit 70 (internal)
    ├── UsageError          exit 64 (bad command line)
    └── InputError          exit 65 (invalid playbook or inventory; nothing ran)

A file with several mistakes raises one :class:`InputError` carrying all of them
(:meth:`InputError.collect`): ``.errors`` lists each (with its own mark and allowed values) in
file order, the error itself is the first, and ``str()`` is one line per mistake.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Mark:
    """A position in a user's file: 1-based line and column, as editors count them."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SandfleetError(Exception):
    """Every error sandfleet raises on purpose; ``exit_code`` is what the command line exits with."""

    exit_code = 70


class UsageError(SandfleetError):
    """Arguments that cannot be used (or used together): the command line's exit 64."""

    exit_code = 64


class InputError(SandfleetError):
    """A mistake in a playbook or inventory: where, what is wrong, and what is allowed.

    ``errors`` is every mistake found in one pass (this one alone unless made by :meth:`collect`);
    ``message``, ``mark`` and ``allowed`` are the first's."""

    exit_code = 65
    errors: tuple[InputError, ...]

    def __init__(
        self,
        message: str,
        mark: Optional[Mark] = None,
        *,
        allowed: Optional[Iterable[str]] = None,
        file: Optional[str] = None,
    ) -> None:
        self.message = message
        self.mark = mark if mark is not None else (Mark(file, 1, 1) if file else None)
        self.allowed = tuple(allowed) if allowed is not None else ()
        self.errors = (self,)
        super().__init__(str(self))

    @classmethod
    def collect(cls, errors: Sequence[InputError]) -> InputError:
        """One error carrying ``errors`` (each flattened, in the order given; at least one)."""
        flat = tuple(e for error in errors for e in error.errors)
        if len(flat) == 1:
            return flat[0]
        first = flat[0]
        combined = cls(first.message, first.mark, allowed=first.allowed)
        combined.errors = flat
        combined.args = (str(combined),)
        return combined

    def line(self) -> str:
        """This one mistake as one line (``str()`` of a collected error has one per mistake)."""
        where = f"{self.mark}: " if self.mark else ""
        text = f"{where}error: {self.message}"
        if self.allowed:
            text += f" (allowed: {', '.join(self.allowed)})"
        return text

    def __str__(self) -> str:
        errors = getattr(self, "errors", (self,))
        return "\n".join(e.line() for e in errors) if len(errors) > 1 else self.line()
