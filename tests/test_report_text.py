"""The text output and the recap, fed with fake events; TTY rules with a fake terminal stream."""

from __future__ import annotations

import io
import re
import time

import pytest

from sandfleet.report.events import TaskStatus
from sandfleet.report.outputs import OutputOptions, make_reporter
from sandfleet.report.recap import Recap
from sandfleet.report.terminal import ERASE_LINE, Console, printable
from sandfleet.report.text import TextReporter
from support.report_fakes import Tty, event, feed, play, task

ANSI = re.compile(r"\x1b\[")
DEPLOY = play()


def run_text(events: list, out: io.StringIO | None = None, environ: dict[str, str] | None = None,
             verbose: bool = False, hosts: list[str] | None = None) -> tuple[str, int]:
    out = out if out is not None else io.StringIO()
    reporter = make_reporter(OutputOptions(verbose=verbose), out, environ or {})
    by_task: dict[str, list] = {}
    for e in events:
        by_task.setdefault(e.task, []).append(e)
    feed(reporter, [(DEPLOY, hosts or sorted({e.host for e in events}), [(task(t), es) for t, es in by_task.items()])])
    reporter.finish()
    return out.getvalue(), reporter.exit_code()


def test_headers_lines_and_recap_when_piped() -> None:
    text, code = run_text([
        event("web1", "install", "ok"),
        event("web2", "install", "ok", changed=False),
        event("web1", "migrate", "failed", rc=3, stderr="".join(f"line {i}\n" for i in range(30))),
        event("web2", "migrate", TaskStatus.SKIPPED),
        event("web1", "probe", "failed", ignored=True),
        event("web2", "probe", "sandbox_unavailable"),
    ])
    assert not ANSI.search(text) and ERASE_LINE not in text
    assert text.count("TASK [install]") == 1 and text.count("TASK [migrate]") == 1
    assert "PLAY [deploy] 2 host(s)" in text
    assert "changed: [web1] bwrap 12 ms" in text and "ok: [web2] bwrap 12 ms" in text
    assert "failed: [web1] bwrap 12 ms rc=3" in text and "skipped: [web2]" in text
    assert "failed: [web1] bwrap 12 ms rc=1 ...ignoring" in text
    assert "sandbox_unavailable: [web2]\n" in text and "bubblewrap is not installed" in text
    tail = [ln for ln in text.splitlines() if ln.startswith("    | ")]
    assert tail == [f"    | line {i}" for i in range(20, 30)]  # the stderr tail, not all of it
    assert "web1 : ok=1 changed=1 unreachable=0 failed=1 sandbox_unavailable=0 denied=0 skipped=0 ignored=1" in text
    assert "web2 : ok=1 changed=0 unreachable=0 failed=0 sandbox_unavailable=1 denied=0 skipped=1 ignored=0" in text
    failed_section = text.split("FAILED TASKS\n")[1].splitlines()
    assert failed_section[:2] == ["  web1: migrate (failed)", "  web2: probe (sandbox unavailable)"]
    assert code == 2 | 8


def test_verbose_shows_stdout_and_failures_show_stdout_when_stderr_is_empty() -> None:
    events = [event("h", "a", "ok", stdout="all good\n"), event("h", "b", "failed", stdout="why it failed\n")]
    quiet, _ = run_text(events)
    assert "all good" not in quiet and "    > why it failed" in quiet
    loud, _ = run_text(events, verbose=True)
    assert "    > all good" in loud


def test_warnings_and_loop_items_and_run_once() -> None:
    from dataclasses import replace

    warned = event("h", "a", "ok")
    warned = replace(warned, result=replace(warned.result, warnings=("network rule ignored",)))
    text, _ = run_text([warned, event("h", "loop", "ok", item={"n": 1}, label="first"),
                        event("h", "loop", "ok", item="b"), event("h", "once", "ok", run_once=True)])
    assert "    [WARNING] network rule ignored" in text
    assert "changed: [h] (item=first) bwrap" in text and "changed: [h] (item=b) bwrap" in text
    assert "(run_once)" in text


def test_network_decisions_denied_always_allowed_with_verbose() -> None:
    from dataclasses import replace

    from sandfleet_agent.portable.wire import NetworkDecision

    fetched = event("h", "fetch", "failed", stderr="HTTP Error 403: Forbidden\n")
    decisions = (NetworkDecision("pypi.org", 443, "allow", "matches allow rule pypi.org", 2),
                 NetworkDecision("evil.test\x1b[31m", 443, "deny", "not in the allow list"))
    fetched = replace(fetched, result=replace(fetched.result, network_decisions=decisions))
    quiet, _ = run_text([fetched])
    assert "    network: denied evil.test\\x1b[31m:443 (not in the allow list)" in quiet
    assert "allowed" not in quiet
    loud, _ = run_text([fetched], verbose=True)
    assert "    network: allowed pypi.org:443 (matches allow rule pypi.org, 2 times)" in loud
    many = tuple(NetworkDecision(f"h{i}.test", 80, "deny", "not in the allow list") for i in range(13))
    crowded = replace(fetched, result=replace(fetched.result, network_decisions=many))
    text, _ = run_text([crowded])
    assert text.count("    network: denied") == 10 and "    network: 3 more decisions" in text


def test_host_output_cannot_drive_the_terminal() -> None:
    text, _ = run_text([event("h", "a", "failed", stderr="\x1b]0;pwned\x07red\x1b[31m\udc80\n")])
    assert "\x1b" not in text and "\x07" not in text
    assert "    | \\x1b]0;pwned\\x07red\\x1b[31m\\x80" in text


def test_unreachable_and_abort_are_in_the_recap() -> None:
    out = io.StringIO()
    reporter = make_reporter(OutputOptions(), out, {})
    feed(reporter, [(DEPLOY, ["a", "b"], [(task("t"), [event("a", "t", "failed")])])],
         unreachable={"b": "connection refused"})
    reporter.play_aborted(DEPLOY, "any_errors_fatal: a failed 't'")
    reporter.finish()
    text = out.getvalue()
    assert "unreachable: [b] connection refused" in text
    assert "UNREACHABLE\n  b: connection refused" in text
    assert "PLAY ABORTED\n  [deploy] any_errors_fatal: a failed 't'" in text
    assert reporter.exit_code() == 2 | 4


def test_free_strategy_repeats_a_header_only_when_the_task_changes() -> None:
    free = play("f", strategy="free")
    out = io.StringIO()
    reporter = make_reporter(OutputOptions(), out, {})
    reporter.play_start(free, ["a", "b"])
    for host in ("a", "b"):
        reporter.task_start(free, task("one"), [host])
    reporter.task_event(event("a", "one", play_name="f"))
    reporter.task_start(free, task("two"), ["a"])
    reporter.task_event(event("b", "one", play_name="f"))  # b is still on task one
    reporter.task_event(event("a", "two", play_name="f"))
    reporter.finish()
    headers = [ln for ln in out.getvalue().splitlines() if ln.startswith("TASK [")]
    assert headers == ["TASK [one]", "TASK [two]", "TASK [one]", "TASK [two]"]
    lines = out.getvalue().splitlines()
    assert lines[lines.index("TASK [one]", lines.index("TASK [two]")) + 1] == "changed: [b] bwrap 12 ms"


def test_linear_strategy_prints_a_header_per_batch() -> None:
    out = io.StringIO()
    reporter = make_reporter(OutputOptions(), out, {})
    feed(reporter, [(DEPLOY, ["a", "b"], [(task("t"), [event("a", "t")]), (task("t"), [event("b", "t")])])])
    assert out.getvalue().count("TASK [t]") == 2


@pytest.mark.parametrize(("statuses", "unreachable", "code"), [
    ([], False, 0), (["ok", TaskStatus.SKIPPED], False, 0), (["failed"], False, 2), (["timeout"], False, 2),
    (["error"], False, 2), ([], True, 4), (["failed"], True, 6), (["sandbox_unavailable"], False, 8),
    (["failed", "sandbox_unavailable"], False, 10), (["sandbox_unavailable"], True, 12),
    (["failed", "sandbox_unavailable"], True, 14),
])
def test_exit_code_bits_combine(statuses: list[str], unreachable: bool, code: int) -> None:
    recap = Recap()
    for n, status in enumerate(statuses):
        recap.add(event(f"h{n}", "t", status))
        recap.add(event(f"h{n}", "u", "failed", ignored=True))  # ignored failures never set a bit
    if unreachable:
        recap.unreachable("gone", "no route to host")
    assert recap.exit_code() == code


def test_ignored_failures_alone_exit_0() -> None:
    recap = Recap()
    for status in ("failed", "timeout", "error", "sandbox_unavailable"):
        recap.add(event("h", status, status, ignored=True))
    assert recap.exit_code() == 0 and recap.hosts["h"].ignored == 4 and not recap.failures


class TestTerminal:
    def test_colour_and_live_status_on_a_tty(self) -> None:
        text, _ = run_text([event("a", "t", "ok"), event("b", "t", "failed")], out=Tty())
        assert "\x1b[33mchanged: [a]\x1b[0m" in text and "\x1b[31mfailed: [b]\x1b[0m" in text
        assert "[0/2 hosts] TASK [t]" in text and "[1/2 hosts] TASK [t]" in text
        assert text.endswith("\n") and text.rstrip("\n").splitlines()[-1].count(ERASE_LINE) == 0

    def test_no_color_keeps_the_status_line_but_drops_colour(self) -> None:
        text, _ = run_text([event("a", "t", "ok")], out=Tty(), environ={"NO_COLOR": "1"})
        assert not ANSI.search(text.replace(ERASE_LINE, "")) and "[0/1 hosts] TASK [t]" in text

    def test_empty_no_color_means_unset(self) -> None:
        text, _ = run_text([event("a", "t", "ok")], out=Tty(), environ={"NO_COLOR": ""})
        assert "\x1b[33m" in text

    def test_dumb_terminal_gets_plain_lines(self) -> None:
        text, _ = run_text([event("a", "t", "ok")], out=Tty(), environ={"TERM": "dumb"})
        assert "\x1b" not in text

    def test_status_line_is_erased_before_each_line_and_stays_one_line(self) -> None:
        out = Tty()
        console = Console(out, lambda: "status " + "x" * 500, live=True)
        console.line("first")
        console.line("second")
        console.stop()
        assert out.getvalue().startswith("first\nstatus ")
        drawn = out.getvalue().split(ERASE_LINE)
        assert drawn[1].startswith("second\n") and all(len(part.split("\n")[-1]) < 100 for part in drawn)
        assert out.getvalue().endswith(ERASE_LINE)

    def test_ticker_moves_elapsed_and_stops_in_finish(self) -> None:
        out = Tty()
        reporter = TextReporter(out, Recap(), environ={})
        reporter.console.tick_s = 0.01
        reporter.play_start(DEPLOY, ["a"])
        reporter.task_start(DEPLOY, task("slow"), ["a"])
        deadline = time.monotonic() + 5
        while out.getvalue().count("TASK [slow]") < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert out.getvalue().count("[0/1 hosts] TASK [slow]") >= 3  # redrawn by the ticker
        reporter.finish()
        ticker = reporter.console._ticker
        assert ticker is not None and not ticker.is_alive()
        settled = out.getvalue()
        time.sleep(0.05)
        assert out.getvalue() == settled and settled.endswith("\n")


def test_printable_keeps_text_and_escapes_controls() -> None:
    assert printable("tab\tnew\nüñí €") == "tab\tnew\nüñí €"
    assert printable("\x00\x1b\x7f\x9b\udcff\ud800") == "\\x00\\x1b\\x7f\\x9b\\xff\\ud800"


def test_dry_run_text_keeps_its_shape() -> None:
    out = io.StringIO()
    reporter = make_reporter(OutputOptions(dry_run=True), out, {})
    reporter.play_start(DEPLOY, ["h"])
    reporter.task_start(DEPLOY, task("t"), ["h"])
    reporter.task_event(event("h", "t", TaskStatus.SKIPPED))
    reporter.finish()
    assert "TASK [" not in out.getvalue() and "h [None] t: skipped (when is false)" in out.getvalue()
    assert "DRY-RUN (" in out.getvalue()


def test_dry_run_text_shows_a_generated_file_once_and_escapes_hostile_text() -> None:
    """A profile passed as one argv word is written "$(cat NAME)" and listed once below; every
    value (paths, names, messages) is shown through printable(), so a hostile playbook cannot
    drive the reviewer's terminal with escapes or hide a line behind a carriage return."""
    from sandfleet_agent.backends.base import Wrapper
    from sandfleet_agent.backends.escaping import sh_split

    profile = "(version 1)\n(deny default)\n"
    wrapper = Wrapper("seatbelt", ("/usr/bin/sandbox-exec", "-p", profile, "-DROOT=/w/\x1b[2Jx\rok", "--", "true"),
                      files={"seatbelt.sb": profile})
    out = io.StringIO()
    reporter = make_reporter(OutputOptions(dry_run=True), out, {})
    reporter.task_event(event("mac\x1b[31m", "t", wrapper=wrapper))
    reporter.task_event(event("mac", "u\r", "sandbox_unavailable", wrapper=None, message="bad\x1b]0;x\x07"))
    reporter.finish()
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    command = next(ln for ln in text.splitlines() if ln.startswith("    $ "))
    assert command == "    $ /usr/bin/sandbox-exec -p \"$(cat seatbelt.sb)\" '-DROOT=/w/\\x1b[2Jx\\x0dok' -- true"
    assert sh_split(command[6:])[2] == "$(cat seatbelt.sb)"
    assert text.count("(deny default)") == 1 and "    --- seatbelt.sb\n    (version 1)\n    (deny default)\n" in text
    assert "mac\\x1b[31m [linux] t: backend seatbelt" in text
    assert "mac [linux] u\\x0d: sandbox_unavailable: bad\\x1b]0;x\\x07" in text
