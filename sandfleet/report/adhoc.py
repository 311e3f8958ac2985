"""``sandfleet exec``'s text: one block per host, in the shape of Ansible's ad-hoc output.

    web1 | OK | rc=0 | backend bwrap
    <the command's stdout, as it printed it>
    db1 | FAILED | rc=2 | backend bwrap | exited with 2
    <stdout>
    --- stderr
    <stderr>
    gone | UNREACHABLE! | cannot reach gone at 127.0.0.1:1: Connection refused

The header's words: OK, FAILED, TIMEOUT, DENIED, SANDBOX UNAVAILABLE, ERROR (with the host's
message), UNREACHABLE!. stderr follows when the command failed, or always with ``-v``, which also
shows the argv as sent, the wrapper that enforced it and the policy's sources. A managed
network's refused connections are listed under the header (the allowed ones with ``-v``). Warnings
go to stderr, Ansible's ``[WARNING]:``, each distinct one once per run (every one with ``-v``), so
stdout holds only the blocks.

:class:`AdhocText` reads the run as the ``--format json`` event lines it prints (docs/events.md):
it is the stream ``run_command`` writes them to, and it turns each ``task_result`` and
``host_unreachable`` into a block as it arrives. exec's text and its JSON are therefore one record,
and an unreachable host shows when it is given up, not at the end. Every string a host, a
playbook author or an inventory controls goes through :func:`printable`: output cannot drive the
terminal.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any, Optional, TextIO

from sandfleet.report.terminal import Palette, printable, wants_colour
from sandfleet.report.text import NETWORK_LINES, dry_argv
from sandfleet_agent.backends.escaping import sh_join

#: The header's word for each status (``task_result``'s ``status``).
WORDS = {"ok": "OK", "failed": "FAILED", "timeout": "TIMEOUT", "sandbox_unavailable": "SANDBOX UNAVAILABLE",
         "denied": "DENIED", "error": "ERROR", "skipped": "SKIPPED", "cancelled": "CANCELLED"}
UNREACHABLE = "UNREACHABLE!"


class AdhocText(io.TextIOBase):
    """A write-only text stream of ``--format json`` event lines, shown as ad-hoc blocks on ``out``."""

    def __init__(self, out: TextIO, err: TextIO, verbose: bool = False,
                 environ: Optional[Mapping[str, str]] = None) -> None:
        super().__init__()
        self.out, self.err, self.verbose = out, err, verbose
        env = environ if environ is not None else {}
        self.paint, self.paint_err = Palette(wants_colour(out, env)), Palette(wants_colour(err, env))
        self._partial = ""
        self._warned: set[str] = set()

    # -- the stream JsonReporter writes to -----------------------------------------------------

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                self.event(json.loads(line))
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered here: each event's block is written and flushed as it arrives."""

    # -- events --------------------------------------------------------------------------------

    def event(self, obj: Mapping[str, Any]) -> None:
        """One event; ``run_start`` and ``recap`` show nothing (exec prints no recap: its exit
        code says what the recap would)."""
        kind = obj.get("event")
        if kind == "task_result":
            self._warn(obj)
            self.out.write("\n".join(self.task_lines(obj)) + "\n")
        elif kind == "host_unreachable":
            head = printable(f"{obj['host']} | {UNREACHABLE} | {obj['message']}")
            self.out.write(self.paint(head, "unreachable") + "\n")
        self.out.flush()
        self.err.flush()

    def task_lines(self, obj: Mapping[str, Any]) -> list[str]:
        status = str(obj["status"])
        failed = status != "ok"
        parts = [str(obj["host"]), WORDS.get(status, status.upper())]
        if obj.get("rc") is not None:
            parts.append(f"rc={obj['rc']}")
        if obj.get("backend"):
            parts.append(f"backend {obj['backend']}")
        message_rest: list[str] = []
        if failed and obj.get("message"):
            first, *message_rest = printable(str(obj["message"])).split("\n")
            parts.append(first)
        lines = [self.paint(" | ".join(printable(p) for p in parts), status)]
        lines.extend("    " + ln for ln in message_rest)
        lines.extend(self._network_lines(obj.get("network_decisions") or []))
        if self.verbose:
            lines.extend(self._record_lines(obj))
        lines.extend(_stream(obj, "stdout"))
        if (failed or self.verbose) and str(obj.get("stderr") or "").strip():
            lines.append(self.paint("--- stderr", "dim"))
            lines.extend(self.paint(ln, "failed" if failed else "") for ln in _stream(obj, "stderr"))
        return lines

    # -- parts ---------------------------------------------------------------------------------

    def _warn(self, obj: Mapping[str, Any]) -> None:
        for warning in obj.get("warnings") or []:
            if self.verbose or warning not in self._warned:
                self._warned.add(warning)
                self.err.write(self.paint_err(printable(f"[WARNING]: [{obj['host']}] {warning}"), "warning") + "\n")

    def _network_lines(self, decisions: list[Mapping[str, Any]]) -> list[str]:
        """A managed network's refusals (they explain a failure); the allowed ones with ``-v``."""
        shown = [d for d in decisions if d.get("decision") != "allow" or self.verbose]
        lines = []
        for d in shown[:NETWORK_LINES]:
            allowed = d.get("decision") == "allow"
            count = int(d.get("count") or 1)
            times = f", {count} times" if count > 1 else ""
            text = printable(f"    network: {'allowed' if allowed else 'denied'} {d.get('host')}:{d.get('port')} "
                             f"({d.get('reason')}{times})")
            lines.append(self.paint(text, "dim" if allowed else "warning"))
        if len(shown) > NETWORK_LINES:
            lines.append(f"    network: {len(shown) - NETWORK_LINES} more decisions (--format json lists them all)")
        return lines

    def _record_lines(self, obj: Mapping[str, Any]) -> list[str]:
        """``-v``: the argv as the host received it (rendered), the wrapper that enforced it and
        the policy layers that bounded it."""
        lines = []
        request = obj.get("request") or {}
        if request.get("argv"):
            lines.append(f"    $ {sh_join(request['argv'])}")
        if obj.get("wrapper"):
            lines.append(f"    wrapper: {dry_argv(obj['wrapper'], obj.get('wrapper_files') or {})}")
        if obj.get("policy_sources"):
            lines.append(f"    policy: {' > '.join(obj['policy_sources'])} (digest {obj.get('policy_digest')})")
        return [self.paint(printable(ln), "dim") for ln in lines]


def _stream(obj: Mapping[str, Any], name: str) -> list[str]:
    """A command's stdout or stderr as printable lines, and a note when the host truncated it."""
    text = str(obj.get(name) or "")
    text = text[:-1] if text.endswith("\n") else text  # the final newline ends the last line; others are output
    lines = printable(text).split("\n") if text else []
    if obj.get(f"{name}_truncated"):
        lines.append(f"({name} was truncated on the host: this is its end)")
    return lines


__all__ = ["UNREACHABLE", "WORDS", "AdhocText"]
