"""Ctrl-C in the middle of a task, the live status line, and the recap's one count per task.

1. An interrupted run records every task in flight as ``cancelled`` on every host, remote ones
   too: on screen, in the recap, the JSON stream, JUnit and the results directory (real sshd
   hosts, tests/support/sshd.py, and a local one; a real ``python -m sandfleet`` and SIGINT).
2. The status line counts a host done when its task is over (a loop's last item), and names the
   hosts still running, as many as the terminal's width holds.
3. The recap counts a looped task once per host, as Ansible does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandfleet.report.events import TaskEvent, TaskStatus
from sandfleet.report.recap import Recap
from sandfleet.report.terminal import ERASE_LINE
from sandfleet.report.text import TextReporter, running_names
from support import eventschema
from support.agents import wait_until
from support.report_fakes import Tty, event, play, task
from support.sshd import Fleet, processes_with_env, running

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = play()


# --- 1. Ctrl-C: every task in flight is recorded cancelled, on every host ----------------------


@pytest.fixture(scope="module")
def sshd() -> Iterator[Fleet]:
    with running(2) as fleet:
        yield fleet


def test_ctrl_c_records_the_tasks_in_flight_as_cancelled_on_every_host(sshd: Fleet, tmp_path: Path) -> None:
    remote = sshd.hosts[:2]
    known_hosts = sshd.known_hosts(tmp_path / "known_hosts", remote)
    ssh_config = sshd.ssh_config(tmp_path / "ssh_config", known_hosts)
    inventory = sshd.inventory(tmp_path / "inv.yml", remote)
    local_ws = tmp_path / "ws"
    local_ws.mkdir()
    with inventory.open("a") as f:
        f.write(f"    here:\n      ansible_connection: local\n      sandfleet_os: linux\n"
                f"      sandfleet_workspace_roots: [{json.dumps(str(local_ws))}]\n")
    mark = uuid.uuid4().hex
    playbook = tmp_path / "pb.yml"
    playbook.write_text(f"""\
- hosts: all
  name: interrupted
  tasks:
    - name: first
      exec: {{argv: ['true']}}
    - name: long
      exec:
        argv: [sh, -c, 'touch started-{{{{ inventory_hostname }}}}; sleep 30']
        cwd: ":workspace_roots"
        env: {{INTERRUPT_TEST_MARK: "{mark}"}}
    - name: never
      exec: {{argv: ['true']}}
""")
    markers = [h.workspace / f"started-{h.name}" for h in remote] + [local_ws / "started-here"]
    junit, results = tmp_path / "report.xml", tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory),
                             "--ssh-config", str(ssh_config), "--format", "json", "--junit", str(junit),
                             "--results-dir", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        started = wait_until(lambda: all(m.exists() for m in markers) or proc.poll() is not None, within_s=60)
        assert started and proc.poll() is None, "the long task did not start on every host"
        assert len(processes_with_env("INTERRUPT_TEST_MARK", mark)) >= 3  # a task process on each host
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    hosts = [h.name for h in remote] + ["here"]

    # The JSON stream: each host's first task ok, the long one cancelled, nothing after it.
    events = eventschema.parse(out)
    tasks = [e for e in events if e["event"] == "task_result"]
    assert sorted((t["host"], t["task"], t["status"]) for t in tasks) == sorted(
        [(h, "first", "ok") for h in hosts] + [(h, "long", "cancelled") for h in hosts])
    for t in tasks:
        if t["status"] == "cancelled":
            assert t["rc"] is None and "interrupted" in t["message"] and t["request"]["argv"][0] == "sh"
    assert not [e for e in events if e["event"] == "host_unreachable"]  # a killed task is not a lost host
    recap = events[-1]
    assert recap["event"] == "recap"
    for h in hosts:
        assert recap["hosts"][h]["cancelled"] == 1 and recap["hosts"][h]["ok"] == 1, recap
        assert recap["hosts"][h]["failed"] == recap["hosts"][h]["unreachable"] == 0

    # JUnit: a cancelled testcase (an error) per host.
    cases = {(c.get("classname"), c.get("name")): [(x.tag, x.get("type")) for x in c]
             for c in ET.parse(junit).iter("testcase")}
    for h in hosts:
        assert ("error", "cancelled") in cases[(h, "long")], cases
    assert int(ET.parse(junit).getroot().get("errors") or 0) == 3

    # The results directory: the same record per host, and the tally.
    for h in hosts:
        doc = json.loads((results / f"{h}.json").read_text())
        assert [(t["task"], t["status"]) for t in doc["tasks"]] == [("first", "ok"), ("long", "cancelled")]
        assert doc["recap"]["cancelled"] == 1

    # Nothing of the task survives, on any host.
    assert wait_until(lambda: not processes_with_env("INTERRUPT_TEST_MARK", mark)), \
        f"task processes survived Ctrl-C: {processes_with_env('INTERRUPT_TEST_MARK', mark)}"
    assert wait_until(lambda: not any(h.agents() for h in remote)), "a remote agent survived Ctrl-C"


def test_the_text_output_shows_and_counts_cancelled_tasks() -> None:
    out = Tty()
    recap = Recap()
    reporter = TextReporter(out, recap, environ={"NO_COLOR": "1"})
    cancelled = TaskEvent("web1", "deploy", "long", TaskStatus.CANCELLED,
                          event("web1", "long", "error", message="the run was interrupted").result)
    for e in (event("web1", "first", "ok"), cancelled):
        recap.add(e)
        reporter.task_event(e)
    reporter.finish()
    text = out.getvalue().replace(ERASE_LINE, "")
    assert "cancelled: [web1]" in text and "the run was interrupted" in text
    assert "web1 : ok=1 changed=1 unreachable=0 failed=0 sandbox_unavailable=0 denied=0 skipped=0 ignored=0 " \
           "cancelled=1" in text
    assert "  web1: long (cancelled)" in text.split("FAILED TASKS\n")[1]
    assert recap.exit_code() == 2


# --- 2. the live status line ---------------------------------------------------------------------


def status_line(out: Tty) -> str:
    """The status line as last drawn: what follows the last line printed."""
    return out.getvalue().split(ERASE_LINE)[-1].split("\n")[-1]


def test_a_host_is_done_when_its_task_is_over_and_the_others_are_named() -> None:
    out = Tty()
    reporter = TextReporter(out, Recap(), environ={"COLUMNS": "200"})
    reporter.play_start(DEPLOY, ["web1", "web2", "db1"])
    reporter.task_start(DEPLOY, task("each"), ["web1", "web2", "db1"])
    assert status_line(out).startswith("[0/3 hosts] TASK [each]")
    assert status_line(out).endswith(" running: web1, web2, db1")
    reporter.task_event(event("web1", "each", "ok", item=1, final=False))
    reporter.task_event(event("web1", "each", "ok", item=2, final=False))
    assert status_line(out).startswith("[0/3 hosts]")  # items done, not the task
    reporter.task_event(event("web1", "each", "ok", item=3))
    assert status_line(out).startswith("[1/3 hosts]") and status_line(out).endswith(" running: web2, db1")
    reporter.host_unreachable("db1", "connection refused")
    assert status_line(out).startswith("[2/3 hosts]") and status_line(out).endswith(" running: web2")
    reporter.task_event(event("web2", "each", "ok", item=1))
    assert status_line(out).startswith("[3/3 hosts]") and "running" not in status_line(out)
    reporter.finish()


def test_the_running_hosts_are_cut_to_the_terminal_width() -> None:
    hosts = [f"host-{n:03d}.example.org" for n in range(40)]
    out = Tty()
    reporter = TextReporter(out, Recap(), environ={"COLUMNS": "120"})
    reporter.play_start(DEPLOY, hosts)
    reporter.task_start(DEPLOY, task("deploy"), hosts)
    reporter.task_event(event(hosts[0], "deploy", "ok"))
    line = status_line(out)
    assert len(line) <= 119 and line.startswith("[1/40 hosts] TASK [deploy]")
    shown = line.split(" running: ")[1]
    assert shown.startswith("host-001.example.org, host-002.example.org")
    named = shown.split(" +")[0].split(", ")
    assert shown.endswith(f" +{39 - len(named)} more") and hosts[0] not in named
    reporter.finish()


def test_running_names_keeps_the_count_when_no_name_fits() -> None:
    assert running_names(["a", "b"], 40) == " running: a, b"
    assert running_names(["alpha", "beta", "gamma"], 25) == " running: alpha +2 more"
    assert running_names(["alpha", "beta"], 3) == " running: +2 more"


# --- 3. the recap counts a looped task once -----------------------------------------------------


def items(host: str, name: str, *statuses: str, **kw: object) -> list[TaskEvent]:
    return [event(host, name, s, item=n, final=n == len(statuses) - 1, **kw)  # type: ignore[arg-type]
            for n, s in enumerate(statuses)]


@pytest.mark.parametrize(("statuses", "column"), [
    (("ok", "ok", "ok"), "ok"),
    (("ok", "skipped", "ok"), "ok"),
    (("skipped", "skipped"), "skipped"),
    (("ok", "failed", "ok"), "failed"),
    (("ok", "timeout"), "failed"),
    (("failed", "denied", "ok"), "denied"),
    (("ok", "sandbox_unavailable"), "sandbox_unavailable"),
])
def test_a_looped_task_counts_once_by_its_worst_item(statuses: tuple[str, ...], column: str) -> None:
    recap = Recap()
    for e in items("h", "each", *statuses):
        recap.add(e)
    recap.add(event("h", "after", "ok"))
    t = recap.hosts["h"]
    counts = {k: v for k, v in vars(t).items() if v and k != "changed"}
    expected = {column: 1, "ok": 2} if column == "ok" else {column: 1, "ok": 1}
    assert counts == expected
    assert len(recap.failures) == sum(s not in ("ok", "skipped") for s in statuses)  # each failed item listed


def test_changed_ignored_and_cancelled_loops() -> None:
    recap = Recap()
    for e in (event("h", "some changed", "ok", item=0, changed=False, final=False),
              event("h", "some changed", "ok", item=1, changed=True),
              event("h", "ignored", "ok", item=0, final=False),
              event("h", "ignored", "failed", item=1, ignored=True),
              event("h", "cut", "ok", item=0, final=False),
              TaskEvent("h", "deploy", "cut", TaskStatus.CANCELLED, item=1)):
        recap.add(e)
    t = recap.hosts["h"]
    assert (t.ok, t.changed, t.ignored, t.cancelled, t.failed) == (1, 1, 1, 1, 0)
    assert recap.exit_code() == 2


def test_exit_bits_of_every_failed_item_survive() -> None:
    recap = Recap()
    for e in items("h", "each", "denied", "failed"):
        recap.add(e)
    assert recap.hosts["h"].denied == 1 and recap.hosts["h"].failed == 0
    assert recap.exit_code() == 16 | 2


def test_a_real_loop_counts_once_in_the_json_recap(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    inventory = tmp_path / "inv.yml"
    inventory.write_text(f"all:\n  hosts:\n    here:\n      ansible_connection: local\n      sandfleet_os: linux\n"
                         f"      sandfleet_workspace_roots: [{json.dumps(str(ws))}]\n")
    playbook = tmp_path / "pb.yml"
    playbook.write_text("- hosts: all\n  tasks:\n"
                        "    - name: each\n      exec: {argv: [echo, '{{ item }}']}\n      loop: [a, b, c]\n"
                        "    - name: half\n      exec: {argv: ['true']}\n      loop: [1, 2]\n"
                        "      when: item == 2\n")
    proc = subprocess.run([sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory),
                           "--format", "json"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = eventschema.parse(proc.stdout)
    assert len([e for e in events if e["event"] == "task_result"]) == 5  # one per item, as before
    assert events[-1]["hosts"]["here"]["ok"] == 2 and events[-1]["hosts"]["here"]["skipped"] == 0
