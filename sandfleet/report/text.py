"""The text output people read: PLAY and TASK headers, one line per host and task, a recap.

Linear strategy: one ``TASK [name]`` header per ``task_start`` (so once per task per batch). Free
strategy: hosts start tasks on their own, so a header is printed only when the task differs from
the last header shown, and again when a result of another task arrives; every result line then
sits under its own task's header. On a TTY a status line under the output shows hosts done /
total for the current task, its name, the elapsed time and the names of the hosts still running
it, as many as fit the terminal's width, then ``+N more``. A host counts as done when its task is
over there: its one result, a loop's last item (:attr:`TaskEvent.final`), ``cancelled``, or the
host given up. Dry-run output keeps its own shape: the backend and the exact wrapper.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional, TextIO

from sandfleet.load.playbook import Play, Task
from sandfleet.report.events import Reporter, TaskEvent, TaskStatus
from sandfleet.report.recap import HostTally, Recap
from sandfleet.report.terminal import Console, Palette, elapsed, printable, wants_colour, wants_live
from sandfleet_agent.portable.limits import described
from sandfleet_agent.portable.wire import ExecResult

STDERR_TAIL, STDOUT_TAIL = 10, 40
NETWORK_LINES = 10  # proxy decisions shown per result


@dataclass
class _Progress:
    """The task the status line is about."""

    key: tuple[str, str]
    total: dict[str, None] = field(default_factory=dict)  # a set that keeps the order hosts started in
    done: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)


def _tail(text: str, lines: int) -> list[str]:
    return printable(text.rstrip()).splitlines()[-lines:]


def duration(ms: int) -> str:
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def outcome(event: TaskEvent) -> str:
    """The word a result line starts with (and its colour's name)."""
    if event.status is TaskStatus.OK:
        return "changed" if event.changed else "ok"
    return event.status


#: How a dry-run's event message starts for a task that reads an earlier task's registered
#: result (its status is ``skipped``: nothing was rendered); the dry-run shows it and counts it apart.
DEPENDS = "depends on a result"

NO_HOSTS_LINE = "NO HOSTS MATCHED: no play's pattern matched any host; nothing ran"


class TextReporter(Reporter):
    def __init__(self, out: TextIO, recap: Recap, dry_run: bool = False, verbose: bool = False,
                 environ: Optional[Mapping[str, str]] = None) -> None:
        env = environ if environ is not None else {}
        self.recap, self.dry_run, self.verbose = recap, dry_run, verbose
        self.paint = Palette(wants_colour(out, env))
        self.console = Console(out, self._status, live=wants_live(out, env) and not dry_run,
                               environ=env)
        self._t0 = time.monotonic()
        self._header: Optional[tuple[str, str]] = None
        self._progress: Optional[_Progress] = None
        self._finished = False
        self._warned: set[tuple[str, str]] = set()  # (host, warning) already shown
        self._depends: dict[str, int] = {}  # dry-run: per host, tasks that wait for a registered result

    # -- the Reporter calls ------------------------------------------------------------------

    def play_start(self, play: Play, hosts: list[str]) -> None:
        note = "" if hosts else "  (no hosts matched)"
        with self.console.lock:
            self._header, self._progress = None, None
            title = self.paint(f"PLAY [{printable(play.name)}]", "bold")
            self.console.line(f"\n{title} {len(hosts)} host(s){note}")

    def task_start(self, play: Play, task: Task, hosts: list[str]) -> None:
        if self.dry_run:
            return
        key = (play.name, task.name)
        with self.console.lock:
            if play.strategy != "free" or key != self._header:
                self._show_header(key)
            if self._progress is None or self._progress.key != key or play.strategy != "free":
                self._progress = _Progress(key)
            self._progress.total.update(dict.fromkeys(hosts))
            self.console.refresh()
        self.console.start()

    def task_event(self, event: TaskEvent) -> None:
        if self.dry_run:
            self.console.line(self._dry_text(event))
            return
        key = (event.play, event.task)
        with self.console.lock:
            if key != self._header:
                self._show_header(key)
            if self._progress is not None and self._progress.key == key and event.final:
                self._progress.done.add(event.host)
            self.console.line("\n".join(self._result_lines(event)))

    def host_unreachable(self, host: str, message: str) -> None:
        with self.console.lock:
            if self._progress is not None:
                self._progress.done.add(host)
            self.console.line(self.paint(f"unreachable: [{host}]", "unreachable") + f" {printable(message)}")

    def play_aborted(self, play: Play, reason: str) -> None:
        self.console.line(self.paint(f"PLAY ABORTED [{printable(play.name)}]: {printable(reason)}", "failed"))

    def finish(self) -> None:
        self.console.stop()
        if self._finished:
            return
        self._finished = True
        lines = self._dry_recap() if self.dry_run else self._recap_lines()
        self.console.line("\n".join(lines))

    # -- rendering ----------------------------------------------------------------------------

    def _show_header(self, key: tuple[str, str]) -> None:
        self._header = key
        self.console.line("\n" + self.paint(f"TASK [{printable(key[1])}]", "bold"))

    def _status(self) -> str:
        p = self._progress
        if p is None:
            return ""
        now = time.monotonic()
        text = (f"[{len(p.done)}/{len(p.total)} hosts] TASK [{printable(p.key[1])}] {elapsed(now - p.started)}"
                f" (run {elapsed(now - self._t0)})")
        running = [printable(h) for h in p.total if h not in p.done]
        return text + running_names(running, self.console.width() - 1 - len(text)) if running else text

    def _result_lines(self, event: TaskEvent) -> list[str]:
        word = outcome(event)
        head = self.paint(f"{word}: [{event.host}]", "ignored" if event.ignored else word)
        item = f" (item={event.label if event.label is not None else event.item})" \
            if event.item is not None or event.label is not None else ""
        r = event.result
        detail = ""
        if r is not None and event.status is not TaskStatus.SKIPPED and r.backend:
            detail = f" {r.backend} {duration(r.duration_ms)}"
            if r.rc is not None and event.status is not TaskStatus.OK:
                detail += f" rc={r.rc}"
        if event.run_once:
            detail += " (run_once)"
        if event.ignored:
            detail += self.paint(" ...ignoring", "ignored")
        lines = [head + printable(item) + detail]
        if r is not None and event.status is not TaskStatus.SKIPPED:
            lines.extend(self._output_lines(r, failed=event.status is not TaskStatus.OK))
            if self.verbose and event.request is not None:
                lines.extend(self._record_lines(event.request.argv, r))
            lines.extend(self._warning_lines(event.host, r))
        return lines

    def _output_lines(self, r: ExecResult, failed: bool) -> list[str]:
        lines: list[str] = []
        if failed and r.message:
            lines.extend("    " + ln for ln in printable(r.message).splitlines())
        show_stderr = (failed or self.verbose) and r.stderr.strip()
        if (self.verbose or (failed and not r.stderr.strip())) and r.stdout.strip():
            lines.extend("    > " + ln for ln in _tail(r.stdout, STDOUT_TAIL))
            if r.stdout_truncated:
                lines.append("    (stdout was truncated on the host)")
        if show_stderr:
            style = "failed" if failed else "dim"
            lines.extend(self.paint("    | " + ln, style) for ln in _tail(r.stderr, STDERR_TAIL))
            if r.stderr_truncated:
                lines.append("    (stderr was truncated on the host)")
        lines.extend(self._network_lines(r))
        if self.verbose and r.policy_sources:
            lines.append(self.paint(f"    policy: {printable(' > '.join(r.policy_sources))} "
                                    f"(digest {r.policy_digest})", "dim"))
        return lines

    def _record_lines(self, argv: Sequence[str], r: ExecResult) -> list[str]:
        """``-v``: the task's own argv and the wrapper that enforced it (for a persistent sandbox,
        its command; the task entered it as the argv above)."""
        from sandfleet_agent.backends.escaping import sh_join  # with the backends' package: ~8 ms, -v only

        lines = [self.paint(f"    $ {printable(sh_join(argv))}", "dim")]
        if r.wrapper:
            lines.append(self.paint(f"    wrapper: {printable(dry_argv(r.wrapper, r.wrapper_files))}", "dim"))
        return lines

    def _warning_lines(self, host: str, r: ExecResult) -> list[str]:
        """Each distinct warning once per host (``-v``: under every task): the same backend
        limitation under every task of a host drowned the output. JSON events carry them all."""
        return [self.paint(f"    [WARNING] {printable(w)}", "warning") for w in self._fresh_warnings(host, r)]

    def _fresh_warnings(self, host: str, r: ExecResult) -> list[str]:
        fresh = [w for w in dict.fromkeys(r.warnings) if self.verbose or (host, w) not in self._warned]
        self._warned.update((host, w) for w in fresh)
        return fresh

    def _network_lines(self, r: ExecResult) -> list[str]:
        """A managed-network task's proxy decisions: the denied ones always (they explain a
        failure), the allowed ones with ``-v``; at most ``NETWORK_LINES``, then a count."""
        shown = [d for d in r.network_decisions if d.decision != "allow" or self.verbose]
        lines = []
        for d in shown[:NETWORK_LINES]:
            word = "allowed" if d.decision == "allow" else "denied"
            times = f", {d.count} times" if d.count > 1 else ""
            lines.append(self.paint(f"    network: {word} {printable(d.host)}:{d.port} ({printable(d.reason)}{times})",
                                    "dim" if d.decision == "allow" else "warning"))
        if len(shown) > NETWORK_LINES:
            lines.append(f"    network: {len(shown) - NETWORK_LINES} more decisions (--format json lists them all)")
        return lines

    def _recap_lines(self) -> list[str]:
        lines = ["", self.paint(f"PLAY RECAP ({time.monotonic() - self._t0:.2f} s)", "bold")]
        width = max((len(printable(h)) for h in self.recap.hosts), default=0)
        for host, t in self.recap.hosts.items():
            lines.append(self.paint(f"{printable(host):<{width}}", _host_style(t)) + " : " + " ".join(
                self.paint(f"{name}={count}", name if count else "") for name, count in _counts(t)))
        if self.recap.failures:
            lines.append(self.paint("FAILED TASKS", "failed"))
            lines.extend(f"  {printable(str(f))}" for f in self.recap.failures)
        if self.recap.unreachable_messages:
            lines.append(self.paint("UNREACHABLE", "unreachable"))
            lines.extend(f"  {h}: {printable(m)}" for h, m in self.recap.unreachable_messages.items())
        if self.recap.aborted is not None:
            a = self.recap.aborted
            lines.append(self.paint("PLAY ABORTED", "failed"))
            lines.append(f"  [{printable(a.play)}] {printable(a.reason)}")
        if self.recap.no_hosts:
            lines.append(self.paint(NO_HOSTS_LINE, "failed"))
        return lines

    def _dry_text(self, event: TaskEvent) -> str:
        """One (host, task) of a dry-run. Everything in it comes from the playbook and inventory,
        which may be hostile, so it is shown through :func:`printable` like host output is."""
        head = f"{event.host} [{event.os}] {event.display_name}"
        r = event.result
        if event.status is TaskStatus.SKIPPED:
            if r is not None and r.message and r.message.startswith(DEPENDS):
                self._depends[event.host] = self._depends.get(event.host, 0) + 1
                return printable(f"{head}: {r.message}")
            return printable(f"{head}: skipped (when is false)")
        assert r is not None
        if not r.wrapper:
            return printable(f"{head}: {event.status}: {r.message}")
        lines = [f"{head}: backend {r.backend}", f"    $ {dry_argv(r.wrapper, r.wrapper_files)}"]
        for name, content in r.wrapper_files.items():
            lines.append(f"    --- {name}")
            lines.extend("    " + ln for ln in content.rstrip("\n").split("\n"))
        lines.append(f"    limits: {described(r.limits, r.limits_mechanism)}")
        lines.extend(f"    warning: {w}" for w in self._fresh_warnings(event.host, r))
        return printable("\n".join(lines))

    def _dry_recap(self) -> list[str]:
        """Per host: what was rendered, what its sandbox refused (``sandbox_unavailable``), what the
        policy denied, and ``errors``: tasks that could not even be rendered (a template that fails
        on this host, a cwd it cannot use), with ``ignore_errors`` or not. Nothing runs in a
        dry-run, so nothing else fails; an error is never counted as a refusal, which would read as
        a missing sandbox."""
        lines = [f"\nDRY-RUN ({time.monotonic() - self._t0:.2f} s): nothing was executed"]
        for host, t in self.recap.hosts.items():
            depends = self._depends.get(host, 0)
            lines.append(f"{printable(host):<20} rendered={t.ok} refused={t.sandbox_unavailable} "
                         f"denied={t.denied} skipped={t.skipped - depends} depends_on_a_result={depends} "
                         f"unreachable={t.unreachable} errors={t.failed + t.ignored}")
        if self.recap.no_hosts:
            lines.append(NO_HOSTS_LINE)
        return lines


def running_names(names: Sequence[str], room: int) -> str:
    """`` running: a, b +3 more``: as many names as fit in ``room`` characters, then how many
    did not; at least the count, even when nothing fits."""
    for shown in range(len(names), -1, -1):
        rest = len(names) - shown
        text = " running: " + ", ".join(names[:shown]) if shown else " running:"
        text += f" +{rest} more" if rest else ""
        if len(text) <= room or shown == 0:
            return text
    return ""  # unreachable: shown == 0 returns


def dry_argv(argv: Sequence[str], files: Mapping[str, str]) -> str:
    """The wrapper's argv shell-quoted for reading. A word that is a whole generated file (the
    Seatbelt profile after ``-p``, the Windows launcher after ``-Command``) is written
    ``"$(cat NAME)"``, NAME being that file, listed below the command, rather than printed twice
    with its quotes escaped. ``--format json`` carries every word and file exactly."""
    from sandfleet_agent.backends.escaping import sh  # with the backends' package: ~8 ms, not every run's

    by_content = {content: name for name, content in files.items() if "\n" in content}
    return " ".join(f'"$(cat {sh(by_content[w])})"' if w in by_content else sh(w) for w in argv)


def _counts(t: HostTally) -> list[tuple[str, int]]:
    return [("ok", t.ok), ("changed", t.changed), ("unreachable", t.unreachable), ("failed", t.failed),
            ("sandbox_unavailable", t.sandbox_unavailable), ("denied", t.denied), ("skipped", t.skipped),
            ("ignored", t.ignored), ("cancelled", t.cancelled)]


def _host_style(t: HostTally) -> str:
    if t.failed or t.unreachable or t.cancelled:
        return "failed"
    if t.sandbox_unavailable or t.denied:
        return "sandbox_unavailable"
    return "changed" if t.changed else "ok"


__all__ = ["DEPENDS", "TextReporter", "duration", "outcome", "running_names"]
