"""Which outputs a run writes, fed from one stream of events, and the exit code at the end.

:class:`Outputs` keeps the :class:`Recap` (once per event, before any output sees it) and passes
every event on to the stdout format (text or JSON lines) and the optional files (``--junit``,
``--results-dir``, ``--report``). The exit code is computed from the recap alone (see :mod:`sandfleet.report.recap`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Optional, TextIO, get_args

from sandfleet.errors import UsageError
from sandfleet.load.playbook import Play, Task
from sandfleet.report.events import Reporter, TaskEvent
from sandfleet.report.jsonl import JsonReporter
from sandfleet.report.recap import EXIT_FAILED, EXIT_NO_SANDBOX, EXIT_UNREACHABLE, HostTally, Recap
from sandfleet.report.text import TextReporter

OutputFormat = Literal["text", "json"]
FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)


@dataclass(frozen=True)
class OutputOptions:
    format: OutputFormat = "text"
    dry_run: bool = False
    verbose: bool = False
    junit: Optional[str] = None
    results_dir: Optional[str] = None
    report: Optional[str] = None  # --report FILE.html


class Outputs(Reporter):
    """The reporter the runner is given: the recap first, then each output in turn."""

    def __init__(self, recap: Recap, outputs: list[Reporter]) -> None:
        self.recap, self.outputs = recap, outputs
        self._finished = False

    def play_start(self, play: Play, hosts: list[str]) -> None:
        self.recap.targeted(hosts)
        for output in self.outputs:
            output.play_start(play, hosts)

    def task_start(self, play: Play, task: Task, hosts: list[str]) -> None:
        for output in self.outputs:
            output.task_start(play, task, hosts)

    def task_event(self, event: TaskEvent) -> None:
        self.recap.add(event)
        for output in self.outputs:
            output.task_event(event)

    def host_unreachable(self, host: str, message: str) -> None:
        self.recap.unreachable(host, message)
        for output in self.outputs:
            output.host_unreachable(host, message)

    def play_aborted(self, play: Play, reason: str) -> None:
        self.recap.abort(play.name, reason)
        for output in self.outputs:
            output.play_aborted(play, reason)

    def finish(self) -> None:
        """Every output writes what it has, once; one failing (a full disk) does not stop the others."""
        if self._finished:
            return
        self._finished = True
        error: Optional[BaseException] = None
        for output in self.outputs:
            try:
                output.finish()
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    def stop_live(self) -> None:
        """Erase the live status line and stop its ticker, before something else writes to the
        terminal (an interrupt message, a bug's one-line report); ``finish`` may still follow."""
        for output in self.outputs:
            if isinstance(output, TextReporter):
                output.console.stop()

    def exit_code(self) -> int:
        return self.recap.exit_code()


def make_reporter(options: OutputOptions, out: TextIO, environ: Optional[Mapping[str, str]] = None) -> Outputs:
    """The outputs ``options`` ask for; a report path that cannot be written fails here, before the run."""
    if options.dry_run and (options.junit or options.results_dir or options.report):
        raise UsageError("--junit, --results-dir and --report record a real run; they cannot be used with --dry-run")
    recap = Recap()
    env = os.environ if environ is None else environ
    stdout: Reporter = (JsonReporter(out, recap, options.dry_run) if options.format == "json"
                        else TextReporter(out, recap, options.dry_run, options.verbose, env))
    outputs = [stdout]
    # Each file output is imported only when asked for: ~12 ms of every plain run's start otherwise.
    if options.junit:
        from sandfleet.report.junit import JUnitReporter

        check_file_target(options.junit)
        outputs.append(JUnitReporter(options.junit))
    if options.report:
        from sandfleet.report.html import HtmlReporter

        check_file_target(options.report, "--report")
        outputs.append(HtmlReporter(options.report, recap))
    if options.results_dir:
        from sandfleet.report.results_dir import ResultsDirReporter, prepare

        prepare(options.results_dir)
        outputs.append(ResultsDirReporter(options.results_dir, recap))
    return Outputs(recap, outputs)


def check_file_target(path: str, option: str = "--junit") -> None:
    """A report file's directory is created as ``--results-dir`` creates its own (CI jobs name
    ``reports/junit.xml`` in a fresh checkout, as ``pytest --junitxml`` allows), before the run,
    so a path that cannot be one fails before any host is touched."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory")
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create the directory {parent}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the directory {parent} is not writable")


def final_exit(reporter: Outputs) -> int:
    reporter.finish()
    return reporter.exit_code()


__all__ = ["EXIT_FAILED", "EXIT_NO_SANDBOX", "EXIT_UNREACHABLE", "HostTally", "OutputOptions", "Outputs", "Recap",
           "final_exit", "make_reporter"]
