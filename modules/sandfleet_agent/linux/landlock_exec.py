"""Run one command under a Landlock ruleset file: the by-hand form of a sandfleet Landlock run.

    python3 -m sandfleet_agent.linux.landlock_exec RULESET.json -- argv...

Why a separate entry point: a dry-run prints the ruleset file and this command line, so a user
can reproduce exactly what sandfleet would run. The process restricts itself (no_new_privs,
then landlock_restrict_self) and then ``execvp``s ``argv``, so the command inherits the sandbox
and nothing runs unconfined. ``RULESET.json`` may be ``-`` to read it from standard input.

Exit status when the command does not start, shell style: 126 when the ruleset cannot be read
or applied (the message says what is missing), 127 when the command is not found, 2 for a
malformed command line. Otherwise the process *is* the command, with its status.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from sandfleet_agent.linux.landlock_ruleset import (
    LandlockRuleset,
    LandlockUnavailable,
    RulesetError,
    build,
    restrict_current,
    socket_filter_for,
)

USAGE = "usage: python3 -m sandfleet_agent.linux.landlock_exec RULESET.json -- COMMAND [ARG...]"
PROG = "landlock_exec"


def _fail(message: str, status: int) -> int:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()
    return status


def main(argv: Optional[list[str]] = None) -> int:
    """Apply the ruleset to this process and exec the command; returns only on failure."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        return _fail(USAGE, 2)
    source, command = args[0], args[2:]
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
        ruleset = LandlockRuleset.from_json(text)
    except (OSError, UnicodeDecodeError, RulesetError) as exc:
        return _fail(f"cannot read ruleset {source}: {exc}", 126)
    try:
        socket_filter = socket_filter_for(ruleset)
        fd = build(ruleset)
    except LandlockUnavailable as exc:
        return _fail(f"sandbox unavailable: {exc}", 126)
    try:
        restrict_current(fd)
        socket_filter.install()
    except OSError as exc:
        return _fail(f"sandbox unavailable: cannot apply the Landlock ruleset: {exc}", 126)
    finally:
        os.close(fd)
    sys.stdout.flush()
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        return _fail(f"{command[0]}: command not found", 127)
    except OSError as exc:
        return _fail(f"{command[0]}: cannot execute: {exc.strerror}", 126)
    return 126  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main())
