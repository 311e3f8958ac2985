"""What a run tells people and CI: progress lines, a recap, JSON events, and the exit code.

Exit code bits (DESIGN §8): 2 a task failed, 4 a host unreachable, 8 a sandbox could not be
provided; they combine. Failures under ``ignore_errors`` are shown but set no bit.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from sandfleet.modules.escaping import sh_join
from sandfleet.modules.wire import Status, encode_request
from sandfleet.playbook import Play
from sandfleet.runner.hostloop import SKIPPED, Reporter, TaskEvent

EXIT_FAILED, EXIT_UNREACHABLE, EXIT_NO_SANDBOX = 2, 4, 8


@dataclass
class HostTally:
    ok: int = 0
    failed: int = 0
    unreachable: int = 0
    sandbox_unavailable: int = 0
    skipped: int = 0
    ignored: int = 0


class Recap:
    """Counts per host and the failing tasks by name, for the recap and the exit code."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostTally] = {}
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def tally(self, host: str) -> HostTally:
        return self.hosts.setdefault(host, HostTally())

    def add(self, event: TaskEvent) -> None:
        with self._lock:
            t = self.tally(event.host)
            if event.status == Status.OK.value:
                t.ok += 1
            elif event.status == SKIPPED:
                t.skipped += 1
            elif event.ignored:
                t.ignored += 1
            elif event.status == Status.SANDBOX_UNAVAILABLE.value:
                t.sandbox_unavailable += 1
                self.failures.append(f"{event.host}: {event.task} (sandbox unavailable)")
            else:
                t.failed += 1
                self.failures.append(f"{event.host}: {event.task} ({event.status})")

    def unreachable(self, host: str) -> None:
        with self._lock:
            self.tally(host).unreachable += 1

    def exit_code(self) -> int:
        code = 0
        for t in self.hosts.values():
            code |= EXIT_FAILED if t.failed else 0
            code |= EXIT_UNREACHABLE if t.unreachable else 0
            code |= EXIT_NO_SANDBOX if t.sandbox_unavailable else 0
        return code


def _tail(text: str, lines: int = 10) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class TextReporter(Reporter):
    def __init__(self, out: TextIO, recap: Recap, dry_run: bool = False, verbose: bool = False) -> None:
        self.out, self.recap, self.dry_run, self.verbose = out, recap, dry_run, verbose
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def _write(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def play_start(self, play: Play, hosts: list[str]) -> None:
        note = "" if hosts else "  (no hosts matched)"
        self._write(f"\nPLAY [{play.name}] {len(hosts)} host(s){note}")

    def task_event(self, event: TaskEvent) -> None:
        self.recap.add(event)
        r = event.result
        label = f"{event.task}" + (f" (item={event.item})" if event.item is not None else "")
        if self.dry_run:
            self._write(self._dry_text(event, label))
            return
        status = event.status if not event.ignored else f"{event.status}, ignored"
        detail = ""
        if r is not None and event.status != SKIPPED:
            detail = f" [{r.backend or '-'}] {r.duration_ms} ms"
            if r.rc is not None and event.status != Status.OK.value:
                detail += f" rc={r.rc}"
        lines = [f"{event.host:<20} {status:<20} {label}{detail}"]
        if r is not None and event.status != SKIPPED:
            failed = event.status != Status.OK.value
            if failed and r.message:
                lines.append(f"    {r.message}")
            if self.verbose and r.stdout.strip():
                lines.extend("    > " + ln for ln in _tail(r.stdout, 40).splitlines())
            if (failed or self.verbose) and r.stderr.strip():
                lines.extend("    | " + ln for ln in _tail(r.stderr).splitlines())
        if r is not None:
            lines.extend(f"    warning: {w}" for w in r.warnings)
        self._write("\n".join(lines))

    def _dry_text(self, event: TaskEvent, label: str) -> str:
        head = f"{event.host} [{event.os}] {label}"
        r = event.result
        if event.status == SKIPPED:
            return f"{head}: skipped (when is false)"
        assert r is not None
        if event.wrapper is None:
            return f"{head}: {event.status}: {r.message}"
        lines = [f"{head}: backend {event.wrapper.backend}", f"    $ {sh_join(event.wrapper.argv)}"]
        for name, content in event.wrapper.files.items():
            lines.append(f"    --- {name}")
            lines.extend("    " + ln for ln in content.rstrip("\n").splitlines())
        lines.extend(f"    warning: {w}" for w in r.warnings)
        return "\n".join(lines)

    def host_unreachable(self, host: str, message: str) -> None:
        self.recap.unreachable(host)
        self._write(f"{host:<20} UNREACHABLE          {message}")

    def finish(self) -> None:
        if self.dry_run:
            self._write(f"\nDRY-RUN ({time.monotonic() - self._t0:.2f} s): nothing was executed")
            for host, t in self.recap.hosts.items():
                self._write(f"{host:<20} rendered={t.ok} refused={t.sandbox_unavailable + t.failed} "
                            f"skipped={t.skipped} unreachable={t.unreachable}")
            return
        self._write(f"\nRECAP ({time.monotonic() - self._t0:.2f} s)")
        for host, t in self.recap.hosts.items():
            self._write(f"{host:<20} ok={t.ok} failed={t.failed} unreachable={t.unreachable} "
                        f"sandbox_unavailable={t.sandbox_unavailable} skipped={t.skipped} ignored={t.ignored}")
        if self.recap.failures:
            self._write("failed tasks:\n" + "\n".join(f"  {f}" for f in self.recap.failures))


class JsonReporter(Reporter):
    """One JSON object per line on stdout and nothing else (DESIGN §8)."""

    def __init__(self, out: TextIO, recap: Recap, dry_run: bool = False) -> None:
        self.out, self.recap, self.dry_run = out, recap, dry_run
        self._lock = threading.Lock()

    def _emit(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self.out.write(json.dumps(obj, ensure_ascii=True) + "\n")
            self.out.flush()

    def task_event(self, event: TaskEvent) -> None:
        self.recap.add(event)
        if self.dry_run:
            self._emit(self._dry_obj(event))
            return
        obj: dict[str, Any] = {"event": "task_result", "host": event.host, "play": event.play, "task": event.task}
        if event.result is not None:
            fields = asdict(event.result)
            fields["status"] = event.status
            fields["wrapper"] = list(event.result.wrapper)
            obj.update(fields)
        else:
            obj.update({"status": event.status})
        if event.ignored:
            obj["ignored"] = True
        if event.item is not None:
            obj["item"] = event.item
        self._emit(obj)

    def _dry_obj(self, event: TaskEvent) -> dict[str, Any]:
        obj: dict[str, Any] = {"host": event.host, "play": event.play, "task": event.task, "os": event.os,
                               "status": event.status}
        if event.request is not None:
            obj["request"] = json.loads(encode_request(event.request))
        if event.wrapper is not None:
            obj["backend"] = event.wrapper.backend
            obj["wrapper"] = {"argv": list(event.wrapper.argv), "files": dict(event.wrapper.files)}
        else:
            obj["backend"] = None
            obj["wrapper"] = None
        if event.result is not None:
            obj["message"] = event.result.message
            obj["warnings"] = list(event.result.warnings)
        return obj

    def host_unreachable(self, host: str, message: str) -> None:
        self.recap.unreachable(host)
        self._emit({"event": "host_unreachable", "host": host, "message": message})

    def finish(self) -> None:
        if not self.dry_run:
            self._emit({"event": "recap", "hosts": {h: asdict(t) for h, t in self.recap.hosts.items()}})


def make_reporter(fmt: str, out: TextIO, dry_run: bool, verbose: bool = False) -> TextReporter | JsonReporter:
    recap = Recap()
    return JsonReporter(out, recap, dry_run) if fmt == "json" else TextReporter(out, recap, dry_run, verbose)


def final_exit(reporter: TextReporter | JsonReporter, dry_run: bool) -> int:
    reporter.finish()
    return reporter.recap.exit_code()


__all__ = ["JsonReporter", "Recap", "TextReporter", "final_exit", "make_reporter"]

