"""``env: "{{ my_env }}"`` and ``environment: "{{ proxy_env }}"``: a level of a task's environment
given as one template that renders to a mapping, merged with the other levels (the play's
``environment``, the task's, ``exec.env``; the later wins) once rendered, and checked then as a
written mapping is checked at load."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

import sandfleet
from sandfleet.api import TaskResult
from sandfleet.errors import InputError
from sandfleet.load.playbook import EnvTemplate, load_playbook
from support.ci import need

SHOW = "import os; print(' '.join(f'{k}={os.environ[k]}' for k in sorted(os.environ) if k.startswith('SF_')))"


def run(tmp: Path, playbook: str, *, dry_run: bool = False, **kw: Any) -> tuple[int, list[TaskResult]]:
    if not dry_run:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    inv = tmp / "hosts.yml"
    inv.write_text(json.dumps({"all": {"hosts": {"h1": {"ansible_connection": "local"}},
                                       "vars": {"inv_env": {"SF_INV": "from-inventory", "SF_NUM": 7}}}}))
    path = tmp / "pb.yml"
    path.write_text(textwrap.dedent(playbook))
    results: list[TaskResult] = []
    code = sandfleet.run_playbook(str(path), str(inv), dry_run=dry_run, on_event=results.append, **kw).exit_code
    return code, results


def test_a_templated_env_is_rendered_typed_and_merged_with_every_level(tmp_path: Path) -> None:
    code, results = run(tmp_path, f"""
        - hosts: h1
          vars:
            proxy_env: {{SF_PROXY: "http://{{{{ inventory_hostname }}}}:3128", SF_LEVEL: play, SF_FLAG: true}}
            task_env: {{SF_LEVEL: task, SF_TASK: "1"}}
          environment: "{{{{ proxy_env }}}}"
          tasks:
            - name: merged
              environment: {{SF_LEVEL: task-static, SF_STATIC: x}}
              exec: {{argv: [python3, -c, "{SHOW}"], env: "{{{{ task_env | combine(inv_env) }}}}"}}
            - name: play level only
              exec: {{argv: [python3, -c, "{SHOW}"], env: {{SF_LEVEL: exec}}}}
        """)
    assert code == 0, results
    out = {r.task: r.stdout.strip() for r in results}
    assert out["merged"] == ("SF_FLAG=True SF_INV=from-inventory SF_LEVEL=task SF_NUM=7 SF_PROXY=http://h1:3128 "
                             "SF_STATIC=x SF_TASK=1")
    assert out["play level only"] == "SF_FLAG=True SF_LEVEL=exec SF_PROXY=http://h1:3128"


def test_the_loader_keeps_the_levels_in_order(tmp_path: Path) -> None:
    path = tmp_path / "pb.yml"
    path.write_text("- hosts: all\n  environment: {A: play}\n  tasks:\n"
                    "    - exec: {argv: [env], env: \"{{ e }}\"}\n      environment: {B: task}\n"
                    "    - exec: {argv: [env], env: {C: exec}}\n")
    first, second = load_playbook(str(path)).plays[0].tasks
    assert [type(layer).__name__ for layer in first.exec.env_layers] == ["tuple", "tuple", "EnvTemplate"]
    assert isinstance(first.exec.env_layers[2], EnvTemplate) and first.exec.env_layers[2].mark.line == 4
    assert dict(first.exec.env) == {"A": "play", "B": "task"}
    assert first.exec.env_templates() == ["{{ e }}"]
    assert second.exec.env_layers == () and dict(second.exec.env) == {"A": "play", "C": "exec"}


@pytest.mark.parametrize(("value", "fragment"), [
    ("'{{ [1, 2] }}'", "must render to a mapping of NAME: value, got a list"),
    ("'{{ \"text\" }}'", "must render to a mapping of NAME: value, got str 'text'"),
    ("'{{ {1: \"x\"} }}'", "renders a variable name 1: a name must be a non-empty string"),
    ("'{{ {\"A=B\": \"x\"} }}'", "renders a variable name 'A=B'"),
    ("'{{ dict(A=dict(nested=1)) }}'", "renders A to a mapping; a value must be plain text"),
    ("'{{ {\"A\": [1]} }}'", "renders A to a list"),
    ("'{{ {\"A\": none} }}'", "renders A to null"),
    ("'{{ missing_env }}'", "undefined variable 'missing_env'"),
])
def test_a_bad_rendered_env_is_an_error_naming_the_file_line_and_what_is_allowed(tmp_path: Path, value: str,
                                                                                  fragment: str) -> None:
    code, results = run(tmp_path, f"""
        - hosts: h1
          tasks:
            - name: bad
              exec: {{argv: [env], env: {value}}}
        """, dry_run=True)
    assert code == 2
    message = results[0].message or ""
    assert fragment in message, message
    assert "pb.yml:5:" in message and "task 'bad' on host 'h1'" in message


def test_an_env_that_is_omit_is_as_if_not_written(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: h1
          environment: {SF_A: a}
          tasks:
            - {name: t, exec: {argv: [env], env: "{{ omit }}"}}
        """, dry_run=True)
    assert code == 0
    assert results[0].record["request"]["env"] == ["SF_A"]


@pytest.mark.parametrize(("text", "key"), [("exec: {argv: [env], env: 'A=1'}", "env"),
                                           ("exec: {argv: [env]}\n      environment: A=1", "environment"),
                                           ("exec: {argv: [env], env: !unsafe '{{ x }}'}", "env")])
def test_text_that_is_not_a_template_is_refused_at_load(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "pb.yml"
    path.write_text(f"- hosts: all\n  tasks:\n    - {text}\n")
    with pytest.raises(InputError) as info:
        load_playbook(str(path))
    assert f"{key} must be a mapping of NAME: value, or one template giving such a mapping" in str(info.value)
    assert info.value.allowed and "{NAME: value, ...}" in info.value.allowed


def test_a_templated_env_reading_a_result_depends_on_it_in_a_dry_run(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: h1
          tasks:
            - {name: a, exec: {argv: [echo]}, register: r}
            - {name: b, exec: {argv: [env], env: "{{ {'OUT': r.stdout} }}"}}
        """, dry_run=True)
    assert code == 0
    assert (results[1].message or "").startswith("depends on a result: env reads 'r'")
