"""``--junit FILE``: the run as JUnit XML, so any CI shows each host x task as a test.

Mapping (the file validates against the common junit-10 schema, tests/data/junit.xsd):

- ``<testsuites name="sandfleet">`` holds one ``<testsuite>`` per play (``name`` = the play's name).
- One ``<testcase>`` per host x task, one per loop item: ``classname`` = the host (exactly as in
  the inventory; Jenkins shows a dotted name as package.class), ``name`` = the task's display
  name (with ``(item=...)``), ``time`` = the command's duration in seconds.
- ok (changed or not): passes. Ansible's ``JUNIT_FAIL_ON_CHANGE`` default, false.
- Every task that ran keeps its stdout and stderr (as the agent captured them) in
  ``<system-out>`` / ``<system-err>``.
- failed / timeout / error: ``<failure type=STATUS message=...>``; the message is one line (the
  rc and the reason), the text adds the stderr tail for CI pages that show only the failure.
- sandbox_unavailable, denied: ``<error type="sandbox_unavailable|denied">``: the command never
  ran (no sandbox could hold it, or it asked for more than the policy allows), which is the
  run's fault, not the command's (JUnit's error vs failure).
- each host's effective policy: a suite property ``policy:HOST`` = ``DIGEST (SOURCE > SOURCE)``
  (JUnit has no per-testcase properties).
- what ran, per task that reached a host: a suite property ``record:ID`` (the request id, e.g.
  ``p1/t2/web1``) holding JSON: the request as sent (argv, cwd, env names, timeout, intent), the
  backend, the wrapper and its files (for a persistent sandbox, the task as sent into it).
- cancelled (the run was interrupted while the task ran; its processes were killed):
  ``<error type="cancelled">``: it did not finish, through no fault of its own.
- skipped (``when`` false): ``<skipped/>``.
- a failure under ``ignore_errors``: passes (Ansible's ``JUNIT_FAIL_ON_IGNORE`` default, false),
  with what happened first in ``<system-out>`` and the command's output as usual.
- an unreachable host: one extra testcase ``name="host unreachable"`` with
  ``<error type="unreachable">``, in the play it dropped out of.
- a play aborted by ``any_errors_fatal`` / ``max_fail_percentage``: the suite's property ``aborted``.

Testcases are ordered by host (in the play's order), then in the order each host ran them, so a
file is reproducible. Characters XML 1.0 forbids (control characters, lone surrogates from
non-UTF-8 output) are written as visible escapes (``\\x1b``, ``\\x80``). The file is written
atomically at ``finish``, which also runs on Ctrl-C: an interrupted run leaves a partial report.
"""

from __future__ import annotations

import json
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

from sandfleet.load.playbook import Play
from sandfleet.report.atomic import write_atomic
from sandfleet.report.events import Reporter, TaskEvent, TaskStatus
from sandfleet.report.jsonl import request_record
from sandfleet.report.terminal import escape_char
from sandfleet_agent.portable.wire import ExecResult

UNREACHABLE_CASE = "host unreachable"
STDERR_TAIL = 20
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """``text`` with every character XML 1.0 cannot hold replaced by its visible escape."""
    return _NOT_XML.sub(escape_char, text)


@dataclass
class _Case:
    host: str
    element: ET.Element
    kind: str  # "pass", "failure", "error" or "skipped"
    seconds: float = 0.0


@dataclass
class _Suite:
    name: str
    hosts: list[str]
    timestamp: str
    cases: list[_Case] = field(default_factory=list)
    aborted: Optional[str] = None
    policies: dict[str, str] = field(default_factory=dict)  # host -> "digest (sources)"
    records: dict[str, str] = field(default_factory=dict)  # request id -> what ran, as JSON


class JUnitReporter(Reporter):
    def __init__(self, path: str) -> None:
        self.path = path
        self._suites: list[_Suite] = []
        self._lock = threading.Lock()

    def play_start(self, play: Play, hosts: list[str]) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        with self._lock:
            self._suites.append(_Suite(play.name, list(hosts), stamp))

    def task_event(self, event: TaskEvent) -> None:
        case = testcase(event)
        with self._lock:
            suite = self._suite(event.play)
            suite.cases.append(case)
            r = event.result
            if r is not None and r.policy_digest:
                suite.policies.setdefault(event.host, f"{r.policy_digest} ({' > '.join(r.policy_sources)})")
            if r is not None and event.request is not None:
                suite.records[event.request.id] = json.dumps(
                    {"request": request_record(event.request), "backend": r.backend, "wrapper": list(r.wrapper),
                     "wrapper_files": dict(r.wrapper_files)}, ensure_ascii=True, sort_keys=True)

    def host_unreachable(self, host: str, message: str) -> None:
        element = _element("testcase", classname=host, name=UNREACHABLE_CASE, time="0.000")
        element.append(_element("error", xml_text(message), type="unreachable", message=message))
        with self._lock:
            self._suite(None).cases.append(_Case(host, element, "error"))

    def play_aborted(self, play: Play, reason: str) -> None:
        with self._lock:
            suite = self._suite(play.name)
            suite.aborted = suite.aborted or reason

    def finish(self) -> None:
        with self._lock:
            data = render(self._suites)
        write_atomic(self.path, data)

    def _suite(self, play: Optional[str]) -> _Suite:
        """The running play's suite (the last started); plays run one after another."""
        for suite in reversed(self._suites):
            if play is None or suite.name == play:
                return suite
        self._suites.append(_Suite(play or "sandfleet", [], datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")))
        return self._suites[-1]


def testcase(event: TaskEvent) -> _Case:
    r = event.result
    seconds = (r.duration_ms / 1000) if r is not None else 0.0
    case = _element("testcase", classname=event.host, name=event.display_name, time=f"{seconds:.3f}")
    kind = "pass"
    if event.status is TaskStatus.SKIPPED:
        case.append(_element("skipped", message="skipped"))
        kind = "skipped"
    elif event.failed and not event.ignored:
        kind = "error" if event.status.refused or event.status is TaskStatus.CANCELLED else "failure"
        case.append(_element(kind, _failure_text(r), type=event.status, message=_reason(event.status, r)))
    if r is not None:
        out = r.stdout
        if event.ignored:
            out = f"ignored failure ({_reason(event.status, r)})\n{out}"
        if out:
            case.append(_element("system-out", out))
        if r.stderr:
            case.append(_element("system-err", r.stderr))
    return _Case(event.host, case, kind, seconds)


def _reason(status: str, r: Optional[ExecResult]) -> str:
    """One line for a CI summary: the rc, and the agent's message or else the last stderr line."""
    if r is None:
        return status
    parts = [status] if r.rc is None else [f"rc={r.rc}"]
    detail = r.message or next((ln for ln in reversed(r.stderr.splitlines()) if ln.strip()), "")
    first = detail.strip().splitlines()[:1]
    parts.extend(first)
    return ": ".join(parts)


def _failure_text(r: Optional[ExecResult]) -> str:
    if r is None:
        return ""
    lines = [r.message] if r.message else []
    if r.stderr.strip():
        lines.append("stderr (last lines):")
        lines.extend(r.stderr.rstrip().splitlines()[-STDERR_TAIL:])
    return "\n".join(lines)


def _element(tag: str, text: str = "", **attrs: str) -> ET.Element:
    element = ET.Element(tag, {k: xml_text(v) for k, v in attrs.items()})
    if text:
        element.text = xml_text(text)
    return element


def render(suites: list[_Suite]) -> bytes:
    root = ET.Element("testsuites", name="sandfleet")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for index, suite in enumerate(suites):
        cases = _ordered(suite)
        counts = {k: sum(1 for c in cases if c.kind == kind)
                  for k, kind in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped"))}
        seconds = sum(c.seconds for c in cases)
        element = _element("testsuite", name=suite.name, id=str(index), timestamp=suite.timestamp,
                           tests=str(len(cases)), time=f"{seconds:.3f}", **{k: str(v) for k, v in counts.items()})
        if suite.aborted is not None or suite.policies or suite.records:
            properties = ET.SubElement(element, "properties")
            if suite.aborted is not None:
                properties.append(_element("property", name="aborted", value=suite.aborted))
            for host in sorted(suite.policies, key=lambda h: suite.hosts.index(h) if h in suite.hosts else 0):
                properties.append(_element("property", name=f"policy:{host}", value=suite.policies[host]))
            for request_id, record in suite.records.items():
                properties.append(_element("property", name=f"record:{request_id}", value=record))
        element.extend(c.element for c in cases)
        root.append(element)
        totals["tests"] += len(cases)
        totals["failures"] += counts["failures"]
        totals["errors"] += counts["errors"]
        total_time += seconds
    root.attrib.update({k: str(v) for k, v in totals.items()})
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def _ordered(suite: _Suite) -> list[_Case]:
    """By host in the play's order (stable within a host), so parallel runs give the same file."""
    rank = {h: i for i, h in enumerate(suite.hosts)}
    return sorted(suite.cases, key=lambda c: rank.get(c.host, len(rank)))


__all__ = ["UNREACHABLE_CASE", "JUnitReporter", "render", "testcase", "xml_text"]
