"""``omit``: Ansible's "as if this were not written", where a task has a place for it.

An argv item that is exactly omit is dropped (sandfleet's use for optional flags; Ansible omits
module parameters), an ``env`` value that is omit unsets that name (whichever level set it), a
cwd that is omit is no cwd. Anywhere else it would be a long random string passed on as text, so
it is an error: inside other text, as the program, in a ``sandbox:`` block (never templated).
"""

from __future__ import annotations

import io
import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

import sandfleet
from sandfleet.api import TaskResult
from sandfleet.cli import main
from sandfleet.errors import InputError
from sandfleet.load.playbook import load_playbook
from support.ci import need


def local_inventory(tmp: Path) -> str:
    path = tmp / "hosts.yml"
    path.write_text(json.dumps({"all": {"hosts": {"h1": {"ansible_connection": "local"}}}}))
    return str(path)


def run(tmp: Path, playbook: str, *, dry_run: bool = True, **kw: Any) -> tuple[int, list[TaskResult]]:
    if not dry_run:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    path = tmp / "pb.yml"
    path.write_text(textwrap.dedent(playbook))
    results: list[TaskResult] = []
    code = sandfleet.run_playbook(str(path), local_inventory(tmp), dry_run=dry_run, on_event=results.append,
                                  **kw).exit_code
    return code, results


def request(results: list[TaskResult], task: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r.record["request"] for r in results if r.task == task)
    return found


def message(results: list[TaskResult], task: str) -> str:
    return next(r.message or "" for r in results if r.task == task)


def test_an_argv_item_that_is_omit_is_dropped(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: h1
          vars: {verbose: false, jobs: null}
          tasks:
            - name: flags
              exec:
                argv: [make, "{{ '-v' if verbose else omit }}", "{{ ('-j' ~ jobs) if jobs else omit }}", all,
                       "{{ omit }}"]
            - name: looped
              exec: {argv: [echo, "{{ item }}"]}
              loop: ["{{ omit }}", kept]
        """)
    assert code == 0, results
    assert request(results, "flags")["argv"] == ["make", "all"]
    assert [r.record["request"]["argv"] for r in results if r.task.startswith("looped")] == [["echo"], ["echo", "kept"]]


def test_omit_as_the_program_or_inside_text_is_an_error(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: h1
          tasks:
            - name: program
              exec: {argv: ["{{ omit }}", x]}
              ignore_errors: true
            - name: inside
              exec: {argv: [echo, "--level={{ omit }}"]}
              ignore_errors: true
            - name: inside env
              exec: {argv: [echo], env: {A: "x{{ omit }}"}}
              ignore_errors: true
            - name: inside cwd
              exec: {argv: [echo], cwd: "/srv/{{ omit }}"}
              ignore_errors: true
        """)
    assert code == 0  # every one ignored
    assert "pb.yml:5:" in message(results, "program")
    assert "argv[0] (the program) renders to omit; only an argument can be left out" in message(results, "program")
    inside = message(results, "inside")
    assert "argv[1] renders to '--level={{ omit }}': omit works only as a whole value" in inside
    assert "__omit_place_holder__" not in inside
    assert "env A renders to 'x{{ omit }}'" in message(results, "inside env")
    assert "cwd renders to '/srv/{{ omit }}'" in message(results, "inside cwd")


def test_an_env_value_that_is_omit_unsets_the_name_at_every_level(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: h1
          environment: {PROXY: "http://proxy", KEEP: play, EARLY: "{{ omit }}"}
          tasks:
            - name: env
              exec:
                argv: [python3, -c,
                       "import os; print(sorted(k for k in os.environ if k in ('PROXY', 'KEEP', 'EARLY', 'NEW')))"]
                env: {PROXY: "{{ omit }}", NEW: "{{ omit if false else 'n' }}"}
        """, dry_run=False)
    assert code == 0, results
    assert request(results, "env")["env"] == ["KEEP", "NEW"]
    assert next(r.stdout for r in results) == "['KEEP', 'NEW']\n"


def test_a_cwd_that_is_omit_is_no_cwd(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: h1
          vars: {dir: "{{ omit }}"}
          tasks:
            - {name: cwd, exec: {argv: [pwd], cwd: "{{ dir }}"}}
            - {name: none, exec: {argv: [pwd]}}
        """)
    assert code == 0, results
    assert request(results, "cwd").get("cwd") == request(results, "none").get("cwd")


@pytest.mark.parametrize("block", [
    '{filesystem: {"{{ omit }}": read}}',
    '{filesystem: {":root": "{{ omit }}"}}',
    '{network: {allow: ["{{ omit }}"]}}',
    '{workspace_roots: ["/srv/{{ x }}"]}',
])
def test_a_template_in_a_sandbox_block_is_an_error_not_a_literal(tmp_path: Path, block: str) -> None:
    path = tmp_path / "pb.yml"
    path.write_text(f"- hosts: all\n  tasks:\n    - exec: {{argv: [echo]}}\n      sandbox: {block}\n")
    with pytest.raises(InputError) as info:
        load_playbook(str(path))
    assert info.value.mark is not None and info.value.mark.line == 4
    assert "in sandbox: the sandbox is never templated" in str(info.value)
    assert ("omit here" in str(info.value)) == ("omit" in block)
    err = io.StringIO()
    assert main(["check", str(path), "-i", local_inventory(tmp_path)], io.StringIO(), err) == 65
    assert f"{path}:4:" in err.getvalue()
