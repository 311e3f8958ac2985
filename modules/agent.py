"""The agent: one process per host serving every task of a run over stdin/stdout JSON lines.

Protocol (each message one JSON line):

1. controller → agent: ``{"v": 1, "init": {"workspace_roots": [native...], "sandbox_pin": null}}``
2. agent → controller: ``{"v": 1, "hello": {"version": "...", "facts": {...}}}`` — the facts it
   probed once, so the controller can check the OS and report the backends.
3. then, repeatedly: an ExecRequest line in, its ExecResult line out (DESIGN §5).

A request that cannot be decoded gets a result with status ``error`` (its id when readable) and
the agent carries on; EOF on stdin ends the agent. Nothing but protocol lines goes to stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import IO, Any, Optional

from . import wire
from .executor import execute
from .facts import HostFacts, probe

PROTOCOL_VERSION = 1
AGENT_VERSION = "0.1.0"


def hello(facts: HostFacts) -> str:
    return json.dumps({"v": PROTOCOL_VERSION, "hello": {"version": AGENT_VERSION, "facts": facts.to_dict()}},
                      ensure_ascii=True, separators=(",", ":"))


def read_init(line: str) -> tuple[tuple[str, ...], Optional[str]]:
    data: Any = json.loads(line)
    init: Mapping[str, Any] = data.get("init", {}) if isinstance(data, dict) else {}
    roots = tuple(str(r) for r in init.get("workspace_roots") or ())
    pin = init.get("sandbox_pin")
    return roots, pin if isinstance(pin, str) and pin else None


def serve(stdin: IO[str], stdout: IO[str]) -> int:
    first = stdin.readline()
    if not first:
        return 0
    try:
        roots, pin = read_init(first)
    except ValueError as exc:
        stdout.write(json.dumps({"v": PROTOCOL_VERSION, "error": f"bad init line: {exc}"}) + "\n")
        stdout.flush()
        return 2
    facts = probe(roots)
    stdout.write(hello(facts) + "\n")
    stdout.flush()
    for line in stdin:
        if not line.strip():
            continue
        try:
            request = wire.decode_request(line)
        except wire.UnenforceableRequest as exc:  # a newer controller's rule this host cannot honour
            result = wire.ExecResult(id=exc.request_id or _id_of(line), status=wire.Status.SANDBOX_UNAVAILABLE,
                                     message=str(exc))
        except wire.WireError as exc:
            result = wire.ExecResult(id=_id_of(line), status=wire.Status.ERROR, message=f"bad request: {exc}")
        else:
            try:
                result = execute(request, facts, pin, cancel_fd=_fileno(stdin))
            except Exception as exc:  # never let one task take the agent (and the host's other tasks) down
                result = wire.ExecResult(id=request.id, status=wire.Status.ERROR,
                                         message=f"agent error: {type(exc).__name__}: {exc}")
        stdout.write(wire.encode_result(result) + "\n")
        stdout.flush()
    return 0


def _fileno(stream: IO[str]) -> Optional[int]:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None  # not a real file (tests feed a StringIO): no cancellation


def _id_of(line: str) -> str:
    try:
        data = json.loads(line)
        return str(data.get("id", "")) if isinstance(data, dict) else ""
    except ValueError:
        return ""


def main() -> int:
    return serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
