"""A malformed deny glob is the playbook's mistake: ``check``, ``run`` and ``run --dry-run`` all
exit 65 at load with its ``file:line:col``, before any host is touched (never 70, never a
traceback, never a run that fails on the host with an agent error)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sandfleet.cli import main

ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = str(ROOT / "inventory" / "localhost.yml")


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("glob", "fragment"), [
    ("**/[z-a]", "bad character range z-a"),
    ("~/.ssh/[abc", "no ']' closes"),
    (":workspace_roots/[é]*", "holds 'é'"),
])
@pytest.mark.parametrize("command", [["check"], ["run"], ["run", "--dry-run"]], ids=" ".join)
def test_a_bad_glob_exits_65_at_its_key(tmp_path: Path, glob: str, fragment: str, command: list[str]) -> None:
    marker = tmp_path / "ran"
    playbook = tmp_path / "pb.yml"
    playbook.write_text(
        "- hosts: all\n"
        "  sandbox:\n"
        "    profile: workspace\n"
        "    filesystem:\n"
        f"      {glob!r}: deny\n"
        "  tasks:\n"
        f"    - exec: {{argv: [touch, {str(marker)!r}]}}\n", encoding="utf-8")
    code, out, err = cli(command[0], str(playbook), "-i", LOCALHOST, *command[1:])
    assert code == 65, err
    assert f"{playbook}:5:7: error: deny glob" in err and fragment in err
    assert "Traceback" not in err and "agent error" not in err and out == ""
    assert not marker.exists()
