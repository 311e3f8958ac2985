"""Pipelining changes nothing but the wait (issue 20; sandfleet/run/pipeline.py).

Every playbook here runs twice against real agents (local connections, and real sshd hosts at the
end), once with ``sandfleet_pipelining`` on (the default) and once with it off; the JSON events
(per host, in order, timings removed), the order of plays and tasks, the recap, the JUnit report
and the exit code must be the same. Each play keyword's semantics has its case, and the lines
each host was sent (counted by wrapping the stream's writer) show that pipelining applied where
it may and nowhere else. Markers on disk prove that a task after a timeout, a refusal, a failure
or a cancel did not run.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from sandfleet.cli import main
from sandfleet.transports import base
from support import eventschema
from support.agents import wait_until
from support.ci import need
from support.sshd import Fleet as SshFleet
from support.sshd import running

ROOT = Path(__file__).resolve().parents[1]
HOSTS = ("h1", "h2", "h3")
TIMING = ("started", "duration_ms")


@dataclass
class Run:
    code: int
    err: str
    events: list[dict[str, Any]]
    junit: str
    sent: dict[str, list[str]] = field(default_factory=dict)  # per host: "init", "request" or "batch:N,M"

    def per_host(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for e in self.events:
            if "host" in e:
                out[e["host"]].append(e)
        return dict(out)

    def shared(self) -> list[dict[str, Any]]:
        """The events that are not one host's (plays, tasks, the recap): their order is the play's."""
        return [e for e in self.events if "host" not in e]

    def results(self, host: str) -> list[tuple[str, str]]:
        return [(e["task"], e["status"]) for e in self.per_host().get(host, []) if e["event"] == "task_result"]

    def batches(self, host: str) -> list[str]:
        return [kind for kind in self.sent.get(host, []) if kind.startswith("batch")]

    def lines(self, host: str) -> int:
        """Request and batch lines sent: the round trips the host's tasks waited for."""
        return sum(kind != "init" for kind in self.sent.get(host, []))

    def __repr__(self) -> str:
        return f"exit {self.code} {self.err} {self.sent} " + repr([self.results(h) for h in HOSTS])


class Hosts:
    """A few local hosts; each run gets a fresh workspace (markers start absent), named the same
    in what both runs report."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        self.tmp, self.runs = tmp, 0
        self.sent: dict[str, list[str]] = collections.defaultdict(list)
        send = base.AgentStream._send

        def counting(stream: base.AgentStream, line: str) -> None:
            message = json.loads(line)
            kind = "init" if "init" in message else "request"
            if "batch" in message:
                kind = "batch:" + ",".join(str(len(step["requests"])) for step in message["batch"])
            self.sent[stream.host].append(kind)
            send(stream, line)

        monkeypatch.setattr(base.AgentStream, "_send", counting)

    def inventory(self, ws: Path, pipelining: bool, host_vars: dict[str, dict[str, Any]]) -> Path:
        # a root each: the first task in a root makes its mount points, and hosts run in parallel
        hosts = {name: {"ansible_connection": "local", "sandfleet_workspace_roots": [str(ws / name)],
                        **host_vars.get(name, {})} for name in HOSTS}
        group = {} if pipelining else {"sandfleet_pipelining": False}
        path = ws.parent / f"inv-{ws.name}.yml"
        path.write_text(json.dumps({"all": {"hosts": hosts, "vars": group}}))
        return path

    def run(self, playbook: str, *args: str, pipelining: bool = True,
            host_vars: Optional[dict[str, dict[str, Any]]] = None) -> Run:
        self.runs += 1
        ws = self.tmp / f"ws{self.runs}"
        for name in HOSTS:
            (ws / name / "secret").mkdir(parents=True)
        pb = self.tmp / "pb.yml"  # one name: messages quote it
        pb.write_text(textwrap.dedent(playbook))
        junit = self.tmp / f"junit{self.runs}.xml"
        out, err = io.StringIO(), io.StringIO()
        self.sent.clear()
        report = [] if "--dry-run" in args else ["--junit", str(junit)]
        code = main(["run", str(pb), "-i", str(self.inventory(ws, pipelining, host_vars or {})), "--format",
                     "json", *report, *args], out, err)
        text = re.sub(re.escape(str(ws)) + "/h[0-9]", "WS", out.getvalue())
        return Run(code, err.getvalue(), eventschema.parse(text, progress=True),
                   re.sub(re.escape(str(ws)) + "/h[0-9]", "WS", junit.read_text()) if junit.exists() else "",
                   dict(self.sent))

    def both(self, playbook: str, *args: str, host_vars: Optional[dict[str, dict[str, Any]]] = None,
             free: bool = False) -> tuple[Run, Run]:
        """The playbook with pipelining and without; asserts they report the same."""
        on = self.run(playbook, *args, host_vars=host_vars)
        off = self.run(playbook, *args, pipelining=False, host_vars=host_vars)
        assert_same(on, off, free=free)
        for host in HOSTS:
            assert not off.batches(host), off
        return on, off


def normal(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in TIMING} for e in events]


def normal_junit(text: str) -> str:
    """The report without timings, each element's children in a canonical order (hosts run in
    parallel threads, so the order in which cases from different hosts were added varies)."""
    if not text:
        return ""

    def canonical(element: ET.Element) -> str:
        attrs = {k: v for k, v in element.attrib.items() if k not in ("time", "timestamp")}
        inner = sorted(canonical(child) for child in element)
        return f"<{element.tag} {sorted(attrs.items())}>{(element.text or '').strip()}{''.join(inner)}</{element.tag}>"

    return canonical(ET.fromstring(text))


def difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str:
    """The first event that differs, and only the fields that do (events are long)."""
    for x, y in zip(a, b):
        if x != y:
            keys = sorted(k for k in {*x, *y} if x.get(k) != y.get(k))
            return f"{x.get('event')} {x.get('task')}: " + "; ".join(f"{k}: {x.get(k)!r} / {y.get(k)!r}" for k in keys)
    return f"{len(a)} events / {len(b)}: {[e.get('task') for e in a]} / {[e.get('task') for e in b]}"


def assert_same(on: Run, off: Run, *, free: bool = False) -> None:
    """Same exit, messages, per-host events and reports; the plays' and tasks' starts in the same
    order (under ``free`` each host starts its own tasks when it gets there: the same starts)."""
    assert (on.code, on.err) == (off.code, off.err)
    a, b = normal(on.shared()), normal(off.shared())
    if free:
        a, b = sorted(a, key=json.dumps), sorted(b, key=json.dumps)
    assert a == b, difference(a, b)
    a, b = on.per_host(), off.per_host()
    assert a.keys() == b.keys()
    for host in a:
        assert normal(a[host]) == normal(b[host]), f"{host}: {difference(normal(a[host]), normal(b[host]))}"
    assert normal_junit(on.junit) == normal_junit(off.junit)


@pytest.fixture
def hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hosts:
    return Hosts(tmp_path, monkeypatch)


def markers(run_index: int, hosts: Hosts, name: str) -> set[str]:
    """The hosts where a task touched ``name-HOST`` in its workspace, in the run'th run."""
    return {p.name.split("-", 1)[1] for p in (hosts.tmp / f"ws{run_index}").glob(f"h*/{name}-*")}


MIXED = """
- hosts: all
  tasks:
    - {name: first, exec: {argv: [echo, "{{ inventory_hostname }}"]}}
    - name: loop
      exec: {argv: [echo, "{{ i }}-{{ n }}"]}
      loop: [a, b, c]
      loop_control: {loop_var: i, index_var: n, label: "item {{ n }}"}
    - {name: not on h1, exec: {argv: ["true"]}, when: "inventory_hostname != 'h1'"}
    - {name: ignored, exec: {argv: ["false"]}, ignore_errors: true}
    - {name: reg, exec: {argv: [echo, hello]}, register: out}
    - {name: reads reg, exec: {argv: [echo, "{{ out.stdout }}"]}}
    - {name: unchanged, exec: {argv: ["true"]}, changed_when: false}
    - name: judged
      exec: {argv: [sh, -c, "exit 3"]}
      failed_when: "out.rc == 0 and inventory_hostname == 'h2'"
    - {name: after judged, exec: {argv: [touch, "after-{{ inventory_hostname }}"], cwd: ":workspace_roots"}}
    - {name: fails on h3, exec: {argv: [test, "{{ inventory_hostname }}", "!=", h3]}}
    - {name: last, exec: {argv: [touch, "last-{{ inventory_hostname }}"], cwd: ":workspace_roots"}}
"""


class TestSameResults:
    """Each semantic of the play keywords, with and without pipelining."""

    @pytest.mark.parametrize("strategy", ["linear", "free"])
    def test_when_loops_register_conditions_and_a_host_failing_mid_batch(self, hosts: Hosts, strategy: str) -> None:
        on, off = hosts.both(MIXED.replace("- hosts: all", f"- hosts: all\n  strategy: {strategy}"),
                             free=strategy == "free")
        assert on.code == 2
        assert on.results("h1")[-2:] == [("fails on h3", "ok"), ("last", "ok")]
        assert on.results("h2")[-1] == ("judged", "failed")
        assert on.results("h3")[-1] == ("fails on h3", "failed")
        assert [e["label"] for e in on.per_host()["h1"] if e.get("task") == "loop" and e["event"] == "task_result"] \
            == ["item 0", "item 1", "item 2"]
        assert markers(1, hosts, "last") == {"h1"} and markers(1, hosts, "after") == {"h1", "h3"}
        # first .. reg (nothing sent for the skip); reads reg (it reads out) .. unchanged (changed_when
        # ends a batch); judged alone (failed_when: first and last); then the rest
        assert on.sent["h1"] == ["init", "batch:1,3,1,1", "batch:1,1", "request", "batch:1,1,1"]
        assert on.sent["h2"] == ["init", "batch:1,3,1,1,1", "batch:1,1", "request"]
        assert off.lines("h1") == 12

    def test_an_undefined_variable_in_task_3_of_5_is_reported_there(self, hosts: Hosts) -> None:
        pb = """
            - hosts: all
              tasks:
                - {name: t1, exec: {argv: ["true"]}}
                - {name: t2, exec: {argv: ["true"]}}
                - {name: t3, exec: {argv: [echo, "{{ only_h1 }}"]}}
                - {name: t4, exec: {argv: ["true"]}}
                - {name: t5, exec: {argv: [touch, "t5-{{ inventory_hostname }}"], cwd: ":workspace_roots"}}
            """
        on, _ = hosts.both(pb, host_vars={"h1": {"only_h1": "yes"}})
        assert on.results("h2") == [("t1", "ok"), ("t2", "ok"), ("t3", "error")]
        assert "undefined variable 'only_h1'" in on.per_host()["h2"][-1]["message"]
        assert on.results("h1") == [(f"t{i}", "ok") for i in range(1, 6)]
        assert markers(1, hosts, "t5") == {"h1"}
        assert on.batches("h1") == ["batch:1,1,1,1,1"] and on.batches("h2") == ["batch:1,1"]

    def test_refusals_and_timeouts_stop_the_rest_unless_ignored_as_without_pipelining(self, hosts: Hosts) -> None:
        pb = """
            - hosts: all
              tasks:
                - {name: t1, exec: {argv: ["true"]}}
                - name: slow, ignored
                  exec: {argv: [sleep, "5"], timeout: 0.3}
                  ignore_errors: true
                  when: "inventory_hostname == 'h1'"
                - name: slow
                  exec: {argv: [sleep, "5"], timeout: 0.3}
                  when: "inventory_hostname == 'h2'"
                - name: a sandbox bwrap cannot build
                  exec: {argv: ["true"], cwd: ":workspace_roots/secret"}
                  sandbox: {filesystem: {":root": read, ":workspace_roots": write, ":workspace_roots/secret": deny}}
                  ignore_errors: true
                  when: "inventory_hostname == 'h3'"
                - name: asks for the network
                  exec: {argv: ["true"]}
                  sandbox: {network: full}
                  ignore_errors: true
                - {name: after, exec: {argv: [touch, "after-{{ inventory_hostname }}"], cwd: ":workspace_roots"}}
            """
        on, _ = hosts.both(pb)
        ran = {h: [(t, s) for t, s in on.results(h) if s != "skipped"] for h in HOSTS}
        assert ran == {"h1": [("t1", "ok"), ("slow, ignored", "timeout"), ("asks for the network", "denied")],
                       "h2": [("t1", "ok"), ("slow", "timeout")],
                       "h3": [("t1", "ok"), ("a sandbox bwrap cannot build", "sandbox_unavailable")]}
        assert markers(1, hosts, "after") == set()  # not after a timeout, nor a refusal ignore_errors cannot hide
        # h1: the agent stops at the ignored timeout, the controller goes on: the rest is sent again
        assert on.batches("h1") == ["batch:1,1,1,1", "batch:1,1"]
        assert on.batches("h2") == ["batch:1,1,1,1"] and on.batches("h3") == ["batch:1,1,1,1"]

    def test_what_other_hosts_change_and_results_read_through_variables_are_waited_for(self, hosts: Hosts) -> None:
        """Rendered ahead, t3 would still list h2, which fails t2 meanwhile, and t4 would not see
        h1's result of t3: each starts a batch of its own. t5 reads t3's result through a play
        variable, known by then, so it travels with t4; t7 reads t6's the same way, so it waits."""
        pb = """
            - hosts: all
              vars: {seen: "{{ lines.stdout }}", six: "{{ r6.stdout }}"}
              tasks:
                - {name: t1, exec: {argv: ["true"]}}
                - {name: t2, exec: {argv: [test, "{{ inventory_hostname }}", "!=", h2]}}
                - {name: t3, exec: {argv: [echo, "{{ ansible_play_hosts | join(',') }}"]}, register: lines}
                - {name: t4, exec: {argv: [echo, "{{ hostvars['h1'].lines.stdout }}"]}}
                - {name: t5, exec: {argv: [echo, "{{ seen }}"]}}
                - {name: t6, exec: {argv: [echo, t6]}, register: r6}
                - {name: t7, exec: {argv: [echo, "{{ six }}"]}}
            """
        on, _ = hosts.both(pb)
        out = {(e["host"], e["task"]): e["stdout"] for e in on.events if e["event"] == "task_result"}
        assert out[("h1", "t3")] == out[("h1", "t4")] == out[("h3", "t4")] == out[("h3", "t5")] == "h1,h3\n"
        assert out[("h1", "t7")] == "t6\n"
        assert on.sent["h1"] == ["init", "batch:1,1", "request", "batch:1,1,1", "request"]

    def test_tags_select_what_travels(self, hosts: Hosts) -> None:
        pb = """
            - hosts: all
              tasks:
                - {name: a, exec: {argv: [echo, a]}, tags: [keep]}
                - {name: b, exec: {argv: [touch, "b-{{ inventory_hostname }}"], cwd: ":workspace_roots"}}
                - {name: c, exec: {argv: [echo, c]}, tags: [keep]}
                - {name: d, exec: {argv: [echo, d]}, tags: [keep]}
            """
        on, _ = hosts.both(pb, "-t", "keep")
        assert on.results("h1") == [("a", "ok"), ("c", "ok"), ("d", "ok")]
        assert markers(1, hosts, "b") == set() and on.batches("h1") == ["batch:1,1,1"]

    @pytest.mark.parametrize("keyword", ["serial: 1", "any_errors_fatal: true", "max_fail_percentage: 50",
                                         "run_once_task"])
    def test_keywords_that_let_hosts_observe_each_other_are_not_pipelined(self, hosts: Hosts, keyword: str) -> None:
        extra = "" if keyword == "run_once_task" else f"\n  {keyword}"
        once = "\n    - {name: once, exec: {argv: [echo, once]}, run_once: true}" if keyword == "run_once_task" else ""
        pb = f"""
- hosts: all{extra}
  tasks:
    - {{name: t1, exec: {{argv: [test, "{{{{ inventory_hostname }}}}", "!=", h2]}}}}{once}
    - {{name: t2, exec: {{argv: [touch, "t2-{{{{ inventory_hostname }}}}"], cwd: ":workspace_roots"}}}}
    - {{name: t3, exec: {{argv: ["true"]}}}}
"""
        on, off = hosts.both(pb)
        for host in HOSTS:
            assert not on.batches(host) and on.lines(host) == off.lines(host), on
        assert on.results("h2") == [("t1", "failed")]

    def test_a_loops_items_travel_together_in_any_play_unless_they_read_their_own_result(self, hosts: Hosts) -> None:
        """Items run whatever the one before did, as without pipelining; but where ``failed_when``
        sets the task's own result between items and the next item reads it, they go one by one."""
        pb = """
            - hosts: all
              serial: 1
              max_fail_percentage: 100
              tasks:
                - name: items
                  exec: {argv: [test, "{{ item }}", "!=", "{{ inventory_hostname }}"]}
                  loop: [h1, h2, x]
                - name: reads its own result
                  exec: {argv: [echo, "{{ r.rc if r is defined else 'first' }}"]}
                  loop: [a, b]
                  register: r
                  failed_when: false
            """
        on, _ = hosts.both(pb)
        assert [s for t, s in on.results("h1")] == ["failed", "ok", "ok"]  # every item ran; then the host stops
        assert on.results("h3") == [("items", "ok")] * 3 + [("reads its own result", "ok")] * 2
        stdout = [e["stdout"] for e in on.per_host()["h3"] if e.get("task") == "reads its own result"]
        assert stdout == ["first\n", "0\n"]
        assert on.sent["h1"] == ["init", "batch:3"] and on.sent["h3"] == ["init", "batch:3", "request", "request"]

    def test_several_plays_and_a_result_registered_in_an_earlier_one(self, hosts: Hosts) -> None:
        pb = """
            - hosts: all
              tasks:
                - {name: a, exec: {argv: [echo, "{{ inventory_hostname }}"]}, register: who}
                - {name: b, exec: {argv: ["true"]}}
            - hosts: h1:h2
              tasks:
                - {name: c, exec: {argv: [echo, "{{ who.stdout }}"]}}
                - {name: d, exec: {argv: [echo, d]}}
                - {name: e, exec: {argv: [echo, e]}}
            """
        on, _ = hosts.both(pb)
        assert [e["stdout"] for e in on.per_host()["h2"] if e.get("task") == "c"] == ["h2\n"]
        assert on.batches("h1") == ["batch:1,1", "batch:1,1,1"] and on.batches("h3") == ["batch:1,1"]

    def test_a_host_whose_agent_dies_mid_batch_is_unreachable_at_that_task(self, hosts: Hosts) -> None:
        pb = """
            - hosts: all
              tasks:
                - {name: t1, exec: {argv: ["true"]}}
                - name: t2
                  exec: {argv: [sh, -c, 'if [ "{{ inventory_hostname }}" = h2 ]; then kill -9 $PPID; sleep 5; fi']}
                  sandbox: false
                - {name: t3, exec: {argv: [touch, "t3-{{ inventory_hostname }}"], cwd: ":workspace_roots"}}
            """
        on, _ = hosts.both(pb, "--allow-unsandboxed")
        assert on.code == 4
        assert on.results("h2") == [("t1", "ok")]
        assert [e["event"] for e in on.per_host()["h2"]][-1] == "host_unreachable"
        assert markers(1, hosts, "t3") == {"h1", "h3"}
        assert on.batches("h2") == ["batch:1,1,1"]


def test_ten_tasks_cost_one_line_per_host(hosts: Hosts) -> None:
    tasks = "".join(f"    - {{name: t{i}, exec: {{argv: [echo, '{i}']}}}}\n" for i in range(10))
    pb = "- hosts: all\n  tasks:\n" + tasks
    on, off = hosts.both(pb)
    for host in HOSTS:
        assert on.sent[host] == ["init", "batch:" + ",".join(["1"] * 10)]
        assert off.lines(host) == 10


def interrupted(tmp_path: Path, pipelining: bool) -> tuple[int, list[tuple[str, str]]]:
    """SIGINT to a real ``python -m sandfleet`` once the second of three tasks runs."""
    ws = tmp_path / f"ws-{pipelining}"
    ws.mkdir()
    inventory = tmp_path / f"inv-{pipelining}.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"here": {
        "ansible_connection": "local", "sandfleet_workspace_roots": [str(ws)], "sandfleet_pipelining": pipelining}}}}))
    playbook = tmp_path / "pb.yml"
    playbook.write_text("""\
- hosts: all
  tasks:
    - {name: first, exec: {argv: ['true']}}
    - {name: long, exec: {argv: [sh, -c, 'touch started; sleep 30'], cwd: ':workspace_roots'}}
    - {name: never, exec: {argv: [touch, never], cwd: ':workspace_roots'}}
""")
    code, out = sigint_once(playbook, inventory, lambda: (ws / "started").exists())
    assert not (ws / "never").exists()
    return code, [(e["task"], e["status"]) for e in eventschema.parse(out) if e["event"] == "task_result"]


def sigint_once(playbook: Path, inventory: Path, ready: Callable[[], bool]) -> tuple[int, str]:
    """A real ``python -m sandfleet run --format json``, sent SIGINT once ``ready``: its exit code
    and stdout."""
    proc = subprocess.Popen([sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory),
                             "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert wait_until(lambda: ready() or proc.poll() is not None, within_s=60)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out


def test_ctrl_c_during_a_batch_reports_the_task_in_flight_and_nothing_after(tmp_path: Path) -> None:
    """Both ways: the task running is ``cancelled``, the tasks after it in the batch neither run
    nor appear."""
    need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    on, off = interrupted(tmp_path, True), interrupted(tmp_path, False)
    assert on == off
    assert on[1] == [("first", "ok"), ("long", "cancelled")]


def test_ctrl_c_reports_the_tasks_a_fast_host_ran_ahead_of_a_linear_play(tmp_path: Path) -> None:
    """A linear play waits for its slowest host, while a fast host's agent runs the batch ahead.
    Interrupted then, the tasks the fast host finished are reported as they ended (their markers
    exist), the one it was running ``cancelled``, none after it; the slow host's task ``cancelled``."""
    need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    hosts = {}
    for name, second in (("fast", "true"), ("slow", "touch started; sleep 30")):
        (tmp_path / name).mkdir()
        hosts[name] = {"ansible_connection": "local", "sandfleet_workspace_roots": [str(tmp_path / name)],
                       "second": second}
    inventory = tmp_path / "inv.yml"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    playbook = tmp_path / "pb.yml"
    playbook.write_text("""\
- hosts: all
  tasks:
    - {name: first, exec: {argv: ['true']}}
    - {name: second, exec: {argv: [sh, -c, '{{ second }}'], cwd: ':workspace_roots'}}
    - {name: ahead1, exec: {argv: [touch, ahead1], cwd: ':workspace_roots'}}
    - {name: ahead2, exec: {argv: [sh, -c, 'touch ahead2; exit 3'], cwd: ':workspace_roots'}, ignore_errors: true}
    - {name: long, exec: {argv: [sh, -c, 'touch long; sleep 30'], cwd: ':workspace_roots'}}
    - {name: never, exec: {argv: [touch, never], cwd: ':workspace_roots'}}
""")
    code, out = sigint_once(playbook, inventory,
                            lambda: (tmp_path / "slow" / "started").exists() and (tmp_path / "fast" / "long").exists())
    assert code == 130
    events = eventschema.parse(out, progress=True)
    results = {host: [(e["task"], e["status"], e.get("ignored", False)) for e in events
                      if e["event"] == "task_result" and e["host"] == host] for host in hosts}
    assert results["fast"] == [("first", "ok", False), ("second", "ok", False), ("ahead1", "ok", False),
                               ("ahead2", "failed", True), ("long", "cancelled", False)]
    assert results["slow"] == [("first", "ok", False), ("second", "cancelled", False)]
    assert sorted(p.name for p in (tmp_path / "fast").iterdir() if not p.name.startswith(".")) == ["ahead1", "ahead2",
                                                                                                  "long"]
    assert not (tmp_path / "slow" / "ahead1").exists()
    starts = [(e["task"], e["hosts"]) for e in events if e["event"] == "task_start"]
    assert starts[-3:] == [("ahead1", ["fast"]), ("ahead2", ["fast"]), ("long", ["fast"])]
    recap = next(e for e in events if e["event"] == "recap")
    assert recap["hosts"]["fast"]["ok"] == 3 and recap["hosts"]["fast"]["ignored"] == 1


# --- real sshd hosts --------------------------------------------------------------------------------


def began(marker: Path, proc: subprocess.Popen[str]) -> bool:
    return marker.exists() or proc.poll() is not None


def empty(workspace: Path) -> None:
    """A host's workspace as new: markers, and the mount points a first task leaves, gone."""
    for child in workspace.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshFleet]:
    with running(2) as fleet:
        yield fleet


def test_over_ssh_the_same_events_and_one_line_per_batch(sshd: SshFleet, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = Hosts(tmp_path, monkeypatch)
    known = sshd.known_hosts(tmp_path / "known_hosts", sshd.hosts)
    config = sshd.ssh_config(tmp_path / "ssh_config", known)
    a, b = sshd.hosts
    runs = []
    for pipelining in (True, False):
        extra = {} if pipelining else {"sandfleet_pipelining": "false"}
        inventory = sshd.inventory(tmp_path / f"inv-{pipelining}.yml", [a, b],
                                   **{h.name: {"fails_at": "3" if h is b else "99", **extra} for h in (a, b)})
        for h in (a, b):
            empty(h.workspace)
        pb = tmp_path / "pb.yml"
        pb.write_text(textwrap.dedent("""
            - hosts: all
              tasks:
                - {name: t1, exec: {argv: [echo, "{{ inventory_hostname }}"]}}
                - {name: loop, exec: {argv: [echo, "{{ item }}"]}, loop: [x, y]}
                - name: t3
                  exec: {argv: [sh, -c, 'test "{{ fails_at }}" != 3']}
                - {name: ignored, exec: {argv: ["false"]}, ignore_errors: true, register: r}
                - {name: reads, exec: {argv: [echo, "{{ r.rc }}"]}}
                - {name: mark, exec: {argv: [touch, "mark-{{ inventory_hostname }}"], cwd: ":workspace_roots"}}
            """))
        out, err = io.StringIO(), io.StringIO()
        hosts.sent.clear()
        code = main(["run", str(pb), "-i", str(inventory), "--ssh-config", str(config), "--format", "json"], out, err)
        marks = {h.name for h in (a, b) if (h.workspace / f"mark-{h.name}").exists()}
        runs.append((Run(code, err.getvalue(), eventschema.parse(out.getvalue(), progress=True), "",
                         dict(hosts.sent)), marks))
    (on, on_marks), (off, off_marks) = runs
    assert_same(on, off)
    assert on.code == 2 and on_marks == off_marks == {a.name}
    assert on.results(b.name) == [("t1", "ok"), ("loop", "ok"), ("loop", "ok"), ("t3", "failed")]
    assert on.batches(a.name) == ["batch:1,2,1,1", "batch:1,1"] and on.lines(a.name) == 2
    assert off.lines(a.name) == 7


def test_over_ssh_a_host_lost_mid_batch_is_unreachable_where_it_was(sshd: SshFleet, tmp_path: Path) -> None:
    """Kill one host's sshd (and its sessions) while its batch's second task runs: both ways it is
    unreachable at that task, the other host finishes, nothing after ran."""
    known = sshd.known_hosts(tmp_path / "known_hosts", sshd.hosts)
    config = sshd.ssh_config(tmp_path / "ssh_config", known)
    a, b = sshd.hosts
    reports = []
    for pipelining in ("true", "false"):
        for h in (a, b):
            empty(h.workspace)
        inventory = sshd.inventory(tmp_path / f"inv-{pipelining}.yml", [a, b],
                                   **{h.name: {"sandfleet_pipelining": pipelining, "nap": "30" if h is b else "0"}
                                      for h in (a, b)})
        pb = tmp_path / "pb.yml"
        pb.write_text(textwrap.dedent("""
            - hosts: all
              tasks:
                - {name: t1, exec: {argv: ["true"]}}
                - name: t2
                  exec:
                    argv: [sh, -c, 'touch started-{{ inventory_hostname }}; sleep {{ nap }}']
                    cwd: ":workspace_roots"
                - {name: t3, exec: {argv: [touch, "after-{{ inventory_hostname }}"], cwd: ":workspace_roots"}}
            """))
        proc = subprocess.Popen([sys.executable, "-m", "sandfleet", "run", str(pb), "-i", str(inventory),
                                 "--ssh-config", str(config), "--format", "json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            started = b.workspace / f"started-{b.name}"
            assert wait_until(functools.partial(began, started, proc), 60)
            b.stop()
            out, _ = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            sshd.start(b)
        events = eventschema.parse(out)
        reports.append((proc.returncode, [(e.get("host"), e["event"], e.get("task"), e.get("status"))
                                          for e in events if e["event"] != "recap"],
                        {h.name for h in (a, b) if (h.workspace / f"after-{h.name}").exists()}))
    on, off = reports
    assert on[0] == off[0] == 4
    assert sorted(on[1], key=str) == sorted(off[1], key=str)
    assert [r for r in on[1] if r[0] == b.name] == [(b.name, "task_result", "t1", "ok"),
                                                    (b.name, "host_unreachable", None, None)]
    assert on[2] == off[2] == {a.name}


def test_the_junit_report_names_the_same_cases(hosts: Hosts) -> None:
    on, _ = hosts.both(MIXED)
    cases = [(c.get("classname"), c.get("name")) for c in ET.fromstring(on.junit).iter("testcase")]
    assert ("h3", "fails on h3") in cases and ("h1", "last") in cases


def test_a_dry_run_renders_what_it_rendered_and_sends_nothing(hosts: Hosts) -> None:
    on = hosts.run(MIXED, "--dry-run")
    off = hosts.run(MIXED, "--dry-run", pipelining=False)
    assert (on.code, on.err, normal(on.events)) == (off.code, off.err, normal(off.events))
    assert on.code == 0 and on.sent == {} and len([e for e in on.events if e["event"] == "task_result"]) > 10
