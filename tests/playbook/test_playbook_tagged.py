"""``!vault`` and ``!unsafe`` in playbooks and in the variables tasks use (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

import sandfleet
from sandfleet.errors import InputError
from sandfleet.load.playbook import load_playbook

VAULT = "!vault |\n          $ANSIBLE_VAULT;1.1;AES256\n          6231336539\n"
INLINE = '!vault "$ANSIBLE_VAULT;1.1;AES256\\n6231336539"'


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_unsafe_argv_is_not_a_template(tmp_path: Path) -> None:
    text = "- hosts: all\n  tasks:\n    - exec: {argv: [echo, !unsafe '{% raw', !unsafe '{{ x }}']}\n"
    book = load_playbook(write(tmp_path / "pb.yml", text))
    assert book.plays[0].tasks[0].exec.argv == ("echo", "{% raw", "{{ x }}")


@pytest.mark.parametrize(("task", "what"), [
    (f"exec:\n        argv: [echo, {INLINE}]", "argv item 2"),
    (f"exec:\n        argv: [echo]\n        env:\n          TOKEN: {INLINE}", "env TOKEN"),
    (f"exec: {{argv: [echo]}}\n      loop:\n        - {VAULT}", "a loop item"),
])
def test_a_vaulted_value_a_task_needs_is_refused_at_load(tmp_path: Path, task: str, what: str) -> None:
    path = write(tmp_path / "pb.yml", f"- hosts: all\n  tasks:\n    - {task}")
    with pytest.raises(InputError) as exc:
        load_playbook(path)
    assert f"{what} is vaulted (!vault); sandfleet cannot decrypt it" in exc.value.message
    assert exc.value.mark is not None and exc.value.mark.file == path


def test_vaulted_and_unsafe_variables_in_a_run(tmp_path: Path) -> None:
    inv = write(tmp_path / "hosts.yml", "all:\n  hosts:\n    web1:\n      ansible_connection: local\n"
                                        f"      token: {VAULT}      literal: !unsafe '{{{{ nope }}}}'\n")
    pb = write(tmp_path / "pb.yml", "- hosts: all\n  vars:\n    play_secret: !vault abc\n  tasks:\n"
                                    "    - name: literal\n      exec: {argv: [echo, '{{ literal }}']}\n"
                                    "    - name: vaulted\n      exec: {argv: [echo, '{{ token }}']}\n")
    result = sandfleet.run_playbook(pb, inv, dry_run=True)
    literal, vaulted = result.hosts["web1"].tasks
    assert literal.ok and literal.record["request"]["argv"] == ["echo", "{{ nope }}"]
    assert vaulted.status.value == "error"
    assert "variable 'token' is vaulted (!vault); sandfleet cannot decrypt it" in (vaulted.message or "")
    pb2 = write(tmp_path / "pb2.yml", "- hosts: all\n  vars:\n    play_secret: !vault abc\n  tasks:\n"
                                      "    - exec: {argv: [echo, '{{ play_secret }}']}\n")
    task, = sandfleet.run_playbook(pb2, inv, dry_run=True).hosts["web1"].tasks
    assert "variable 'play_secret' is vaulted" in (task.message or "")
