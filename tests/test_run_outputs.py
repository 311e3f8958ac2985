"""The report files and the terminal output of real ``sandfleet run``s on the local connection."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import xmlschema
from test_junit import XSD, ci_failures
from test_run_local import ROOT, sandfleet, write_inventory, write_playbook

from support import eventschema

THREE_TASKS = """\
- name: outputs
  hosts: all
  tasks:
    - name: say hello
      exec: {argv: [echo, hello]}
    - name: never
      exec: {argv: ['false']}
      when: false
    - name: break
      exec: {argv: [sh, -c, 'echo partial; echo "no such table: users" >&2; exit 3']}
"""


def test_junit_and_results_dir_from_a_real_run(tmp_path: Path) -> None:
    junit, results = tmp_path / "report.xml", tmp_path / "results"
    proc = sandfleet("run", str(write_playbook(tmp_path, THREE_TASKS)), "-i", str(write_inventory(tmp_path)),
                     "--junit", str(junit), "--results-dir", str(results))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "\x1b" not in proc.stdout and "TASK [break]" in proc.stdout and "FAILED TASKS\n  here: break" in proc.stdout

    xmlschema.XMLSchema(str(XSD)).validate(str(junit))
    cases = [(c.get("classname"), c.get("name"), [child.tag for child in c]) for c in ET.parse(junit).iter("testcase")]
    assert cases == [("here", "say hello", ["system-out"]), ("here", "never", ["skipped"]),
                     ("here", "break", ["failure", "system-out", "system-err"])]
    [failure] = ci_failures(junit)
    assert (failure["suite"], failure["host"], failure["task"]) == ("outputs", "here", "break")
    assert failure["type"] == "failed"
    assert failure["message"].startswith("rc=3") and "no such table: users" in failure["stderr"]
    assert failure["stdout"] == "partial\n"

    assert os.listdir(results) == ["here.json"]
    doc = json.loads((results / "here.json").read_text())
    assert [(t["task"], t["status"]) for t in doc["tasks"]] == [("say hello", "ok"), ("never", "skipped"),
                                                                ("break", "failed")]
    assert doc["tasks"][0]["stdout"] == "hello\n" and doc["tasks"][2]["rc"] == 3 and doc["tasks"][0]["backend"]
    assert doc["recap"] == {"ok": 1, "changed": 1, "failed": 1, "unreachable": 0, "sandbox_unavailable": 0,
                            "denied": 0, "skipped": 1, "ignored": 0, "cancelled": 0}
    assert doc["tasks"][0]["policy_sources"] == ["built-in default"] and len(doc["tasks"][0]["policy_digest"]) == 16


def test_json_format_with_report_files_keeps_stdout_pure(tmp_path: Path) -> None:
    proc = sandfleet("run", str(write_playbook(tmp_path, THREE_TASKS)), "-i", str(write_inventory(tmp_path)),
                     "--format", "json", "--junit", str(tmp_path / "r.xml"))
    assert proc.returncode == 2
    events = eventschema.parse(proc.stdout)
    assert [e["event"] for e in events] == ["task_result"] * 3 + ["recap"]


def test_bad_report_paths_and_dry_run_are_refused_before_anything_runs(tmp_path: Path) -> None:
    pb, inv = str(write_playbook(tmp_path, THREE_TASKS)), str(write_inventory(tmp_path))
    for extra in (["--junit", str(tmp_path / "pb.yml" / "r.xml")], ["--junit", str(tmp_path)],
                  ["--dry-run", "--junit", str(tmp_path / "r.xml")], ["--dry-run", "--results-dir", str(tmp_path)]):
        proc = sandfleet("run", pb, "-i", inv, *extra)
        assert proc.returncode == 64 and proc.stdout == "", (extra, proc.stderr)


def run_in_pty(args: list[str], env: dict[str, str]) -> str:
    """The CLI on a pseudo-terminal, as a person sees it; returns everything it wrote."""
    leader, follower = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sandfleet", *args], stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=follower, cwd=ROOT, env={**os.environ, "TERM": "xterm", **env})
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
        proc.wait(timeout=30)
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_colour_and_a_status_line_unless_no_color(tmp_path: Path) -> None:
    args = ["run", str(write_playbook(tmp_path, THREE_TASKS)), "-i", str(write_inventory(tmp_path))]
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    coloured = run_in_pty(args, {**env, "NO_COLOR": ""})
    assert "\x1b[33mchanged: [here]\x1b[0m" in coloured and "\x1b[31mfailed: [here]\x1b[0m" in coloured
    assert "\r\x1b[K" in coloured and "[0/1 hosts] TASK [say hello]" in coloured
    plain = run_in_pty(args, {"NO_COLOR": "1"})
    assert "\x1b[3" not in plain and "changed: [here]" in plain and "[0/1 hosts] TASK [say hello]" in plain


RECORDED = """\
- hosts: all
  tasks:
    - {name: one, exec: {argv: [echo, first], env: {SECRET_TOKEN: hunter2}}}
    - {name: two, exec: {argv: [echo, second]}}
    - {name: three, exec: {argv: [echo, third]}}
    - name: other
      exec: {argv: [echo, fourth]}
      sandbox: {profile: read-only}
"""


def test_every_output_records_what_ran(tmp_path: Path) -> None:
    """Three tasks of one sandbox setting (the 2nd and 3rd run inside its persistent sandbox, whose
    command alone would not say what ran) and one of another: each task's own argv and intent is
    in the JSON events, the results dir, the JUnit file and the -v text; environment values not."""
    from test_run_local import protect_names

    inv = write_inventory(tmp_path)
    protect_names(tmp_path / "ws")
    junit, results = tmp_path / "r.xml", tmp_path / "results"
    pb = write_playbook(tmp_path, RECORDED)
    proc = sandfleet("run", str(pb), "-i", str(inv), "--format", "json", "--junit", str(junit),
                     "--results-dir", str(results))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = [e for e in eventschema.parse(proc.stdout) if e["event"] == "task_result"]
    words = ["first", "second", "third", "fourth"]
    assert [e["request"]["argv"] for e in ran] == [["echo", w] for w in words]
    assert ran[0]["request"]["env"] == ["SECRET_TOKEN"] and "hunter2" not in proc.stdout
    assert [e["request"]["sandbox"]["permissions"][0]["path"] for e in ran][-1] == {"special": "root"}
    reused = [e for e in ran if "--as-pid-1" in e["wrapper"]]
    assert reused, "the persistent sandbox was never used"
    for e in reused:  # the sandbox's command, and the task as it was sent into it
        (entry,) = [v for k, v in e["wrapper_files"].items() if k.startswith("task, sent on fd 0")]
        assert json.loads(entry)["argv"] == e["request"]["argv"]
    stored = json.loads((results / "here.json").read_text())["tasks"]
    assert [t["request"]["argv"] for t in stored] == [["echo", w] for w in words]
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    records = [json.loads(v) for k, v in props.items() if k.startswith("record:")]
    assert [r["request"]["argv"] for r in records] == [["echo", w] for w in words]
    assert all(r["wrapper"] and r["request"]["sandbox"] for r in records)
    text = sandfleet("run", str(pb), "-i", str(inv), "-v").stdout
    assert all(f"$ echo {w}" in text for w in words) and "wrapper: " in text and "hunter2" not in text


def test_the_dry_run_is_the_same_event_stream(tmp_path: Path) -> None:
    proc = sandfleet("run", str(write_playbook(tmp_path, RECORDED)), "-i", str(write_inventory(tmp_path)),
                     "--format", "json", "--dry-run")
    first = json.loads(proc.stdout.splitlines()[0])
    assert first["event"] == "run_start" and first["dry_run"] is True and first["schema"] == 1
    events = eventschema.parse(proc.stdout)
    assert [e["event"] for e in events] == ["task_result"] * 4 + ["recap"]
    assert all(e["dry_run"] is True and e["request"]["argv"][0] == "echo" for e in events[:4])
