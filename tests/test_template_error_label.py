"""Issue 19: a template that fails to render on a host is an error, and every output says so.

Such a task never reaches the host's sandbox. The outputs used to say otherwise: the dry-run's
recap counted it as ``refused`` (the word for a sandbox the host could not provide) and the HTML
report labelled its bar ``no sandbox`` and its failure ``backend none`` (the name of
``sandbox: false``). Its label now comes from one place (``TaskEvent.backend_label``): ``not run``,
while ``no sandbox`` is kept for a task whose host really had none (a Landlock pin with Landlock
turned off, ``SANDFLEET_LANDLOCK_MAX_ABI=0``, as tests/test_run_local.py does). Real runs on the
local connection, each output read as a user reads it.
"""

from __future__ import annotations

import io
import json
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sandfleet.cli import main
from support.ci import need

PLAYBOOK = """\
- hosts: all
  tasks:
    - name: greet
      exec: {argv: [echo, "{{ nope }}"]}
"""


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def _files(tmp_path: Path, playbook: str = PLAYBOOK, hosts: str = "    here: {ansible_connection: local}\n"
           ) -> tuple[str, str]:
    pb, inv = tmp_path / "pb.yml", tmp_path / "inv.yml"
    pb.write_text(playbook)
    inv.write_text("all:\n  hosts:\n" + hosts)
    return str(pb), str(inv)


class _Tags(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.data: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.data.append(data)


def test_every_output_calls_a_template_error_an_error(tmp_path: Path) -> None:
    need(shutil.which("bwrap") is not None, "bubblewrap is installed")
    pb, inv = _files(tmp_path)
    junit, report = tmp_path / "junit.xml", tmp_path / "run.html"
    code, out, _ = _cli("run", pb, "-i", inv, "--junit", str(junit), "--report", str(report))
    assert code == 2, out  # a task failed: bit 2, never 8 (no sandbox)
    where = f"{pb}:4:27: error: task 'greet' on host 'here': undefined variable 'nope' in the value of 'argv[1]'"
    lines = out.splitlines()
    assert lines[lines.index("TASK [greet]") + 1:][:2] == ["error: [here]", f"    {where}"]
    assert "here : ok=0 changed=0 unreachable=0 failed=1 sandbox_unavailable=0 denied=0" in out
    assert "  here: greet (error)" in out
    assert "sandbox" not in out.split("PLAY RECAP")[0].lower()  # nothing above the recap speaks of a sandbox

    code, out, _ = _cli("run", pb, "-i", inv, "--format", "json")
    events = [json.loads(line) for line in out.splitlines()]
    (result,) = [e for e in events if e["event"] == "task_result"]
    assert code == 2 and (result["status"], result["backend"], result["message"]) == ("error", None, where)
    assert events[-1]["hosts"]["here"] == {"ok": 0, "changed": 0, "failed": 1, "unreachable": 0,
                                           "sandbox_unavailable": 0, "denied": 0, "skipped": 0, "ignored": 0,
                                           "cancelled": 0}

    (case,) = ET.parse(junit).getroot().iter("testcase")
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "error" and failure.text == where
    assert case.find("error") is None  # JUnit's <error> is for tasks the host would not run

    page = _Tags(report.read_text(encoding="utf-8"))
    (bar,) = [a for t, a in page.tags if t == "rect" and "bar" in a.get("class", "")]
    assert (bar["data-status"], bar["data-backend"]) == ("error", "not run")
    facts = [a for t, a in page.tags if t == "p" and a.get("class") == "facts"]
    assert len(facts) == 1 and "no rc \u00b7 not run \u00b7 0 ms" in "".join(page.data)
    assert "no sandbox" not in "".join(page.data) and "backend none" not in "".join(page.data)


def test_the_dry_run_recap_counts_it_as_an_error_not_a_refusal(tmp_path: Path) -> None:
    pb, inv = _files(tmp_path)
    code, out, _ = _cli("run", pb, "-i", inv, "--dry-run")
    assert code == 2
    assert out.splitlines()[-1].split() == ["here", "rendered=0", "refused=0", "denied=0", "skipped=0",
                                            "depends_on_a_result=0", "unreachable=0", "errors=1"]


def test_not_run_beside_no_sandbox_and_a_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One page, three labels: the template error (``not run``), a task its host had no sandbox
    for (``no sandbox``: pinned to Landlock, Landlock turned off) and one that ran (``bwrap``)."""
    need(shutil.which("bwrap") is not None, "bubblewrap is installed")
    monkeypatch.setenv("SANDFLEET_LANDLOCK_MAX_ABI", "0")
    playbook = PLAYBOOK + "      ignore_errors: true\n    - name: after\n      exec: {argv: [echo, hi]}\n"
    pb, inv = _files(tmp_path, playbook, "    here: {ansible_connection: local}\n"
                     "    pinned: {ansible_connection: local, sandfleet_sandbox: landlock}\n")
    report = tmp_path / "run.html"
    code, out, _ = _cli("run", pb, "-i", inv, "--forks", "1", "--report", str(report))
    assert code == 8, out
    page = _Tags(report.read_text(encoding="utf-8"))
    bars = [(a["data-host"], a["data-task"], a["data-status"], a["data-backend"]) for t, a in page.tags
            if t == "rect" and "bar" in a.get("class", "")]
    assert bars == [("here", "greet", "ignored", "not run"), ("here", "after", "ok", "bwrap"),
                    ("pinned", "greet", "ignored", "not run"), ("pinned", "after", "sandbox_unavailable", "no sandbox")]
    code, out, _ = _cli("run", pb, "-i", inv, "--forks", "1", "--dry-run")
    recap = {line.split()[0]: line.split()[1:] for line in out.splitlines()[-2:]}
    assert "refused=0" in recap["here"] and "errors=1" in recap["here"] and "rendered=1" in recap["here"]
    # the pin is refused by a dry-run for a root agent, rendered for another: never counted with the error
    assert "errors=1" in recap["pinned"] and {"rendered=1", "refused=1"} & set(recap["pinned"])
