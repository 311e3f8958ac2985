"""Issue 19: a run that matched no host is not green; run --list-hosts/--list-tasks/--start-at-task."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import sandfleet
from sandfleet.cli import main
from sandfleet.errors import UsageError

INVENTORY = "all:\n  hosts:\n    web1: {ansible_connection: local}\n    web2: {ansible_connection: local}\n" \
            "  children:\n    web:\n      hosts: {web1: , web2: }\n"
PLAYBOOK = """\
- name: Web play
  hosts: web
  tags: [web]
  tasks:
    - name: install
      exec: {argv: [echo, install]}
      tags: [pkg]
    - name: start service
      exec: {argv: [echo, start]}
- hosts: webz
  tasks:
    - name: verify
      exec: {argv: [echo, verify]}
      tags: never
    - exec: {argv: [echo, last]}
"""
WARNING = "[WARNING]: Could not match supplied host pattern, ignoring: {}\n"


@pytest.fixture()
def files(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    (tmp_path / "typo.yml").write_text("- hosts: webz:&dbz\n  tasks:\n    - exec: {argv: [echo, hi]}\n"
                                       "- hosts: '!web'\n  tasks:\n    - exec: {argv: [echo, hi]}\n")
    return str(tmp_path / "hosts.yml"), str(tmp_path)


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


@pytest.mark.parametrize("dry", [[], ["--dry-run"]])
def test_a_run_in_which_no_play_matched_exits_1_and_warns(files: tuple[str, str], dry: list[str]) -> None:
    inv, d = files
    code, out, err = cli("run", f"{d}/typo.yml", "-i", inv, *dry)
    assert code == 1
    assert err == WARNING.format("webz") + WARNING.format("dbz")
    assert "PLAY [webz:&dbz] 0 host(s)" in out and "NO HOSTS MATCHED" in out
    result = sandfleet.run_playbook(f"{d}/typo.yml", inv, dry_run=True)
    assert (result.exit_code, dict(result.hosts), result.ok) == (1, {}, False)


def test_a_limit_that_matches_nothing_exits_1_and_is_warned(files: tuple[str, str]) -> None:
    inv, d = files
    code, _, err = cli("run", f"{d}/site.yml", "-i", inv, "-l", "web3", "--dry-run")
    assert code == 1 and err == WARNING.format("webz") + WARNING.format("web3")


def test_one_matching_play_keeps_the_run_green_with_the_warning(files: tuple[str, str]) -> None:
    inv, d = files
    code, out, err = cli("run", f"{d}/site.yml", "-i", inv)
    assert code == 0 and err == WARNING.format("webz") and "NO HOSTS MATCHED" not in out
    warnings: list[str] = []
    assert sandfleet.run_playbook(f"{d}/site.yml", inv, on_warning=warnings.append).exit_code == 0
    assert warnings == [WARNING.format("webz").rstrip("\n")]


def test_check_warns_and_says_nothing_would_run(files: tuple[str, str]) -> None:
    inv, d = files
    code, out, err = cli("check", f"{d}/typo.yml", "-i", inv)
    assert code == 1 and err == WARNING.format("webz") + WARNING.format("dbz")
    assert out.endswith("typo.yml: no play matches any host; nothing would run\n") and ": OK" not in out
    code, out, err = cli("check", f"{d}/site.yml", "-i", inv)
    assert code == 0 and err == WARNING.format("webz") and out.endswith("site.yml: OK\n")


def test_list_hosts_and_tasks_as_ansible_playbook_prints_them(files: tuple[str, str]) -> None:
    inv, d = files
    code, out, err = cli("run", f"{d}/site.yml", "-i", inv, "--list-hosts", "--list-tasks")
    assert code == 0 and err == WARNING.format("webz")
    assert out == (f"\nplaybook: {d}/site.yml\n\n"
                   "  play #1 (web): Web play\tTAGS: [web]\n    pattern: ['web']\n    hosts (2):\n      web1\n"
                   "      web2\n\n    tasks:\n      install\tTAGS: [pkg, web]\n      start service\tTAGS: [web]\n\n"
                   "  play #2 (webz): webz\tTAGS: []\n    pattern: ['webz']\n    hosts (0):\n\n    tasks:\n"
                   "      echo last\tTAGS: []\n")
    code, out, _ = cli("run", f"{d}/site.yml", "-i", inv, "--list-hosts", "-l", "web2")
    assert code == 0 and "hosts (1):\n      web2\n" in out and "tasks:" not in out


def test_list_tasks_applies_tags_and_start_at_task(files: tuple[str, str]) -> None:
    inv, d = files
    _, out, _ = cli("run", f"{d}/site.yml", "-i", inv, "--list-tasks", "-t", "pkg,never")
    assert "      install\tTAGS: [pkg, web]\n" in out and "verify\tTAGS: [never]" in out and "start service" not in out
    _, out, _ = cli("run", f"{d}/site.yml", "-i", inv, "--list-tasks", "--skip-tags", "pkg")
    assert "install" not in out and "start service" in out
    _, out, _ = cli("run", f"{d}/site.yml", "-i", inv, "--list-tasks", "--start-at-task", "start*")
    assert "install" not in out and "start service" in out and "echo last" in out


def test_start_at_task_skips_the_tasks_before_it_across_plays(files: tuple[str, str], tmp_path: Path) -> None:
    inv, _ = files
    (tmp_path / "two.yml").write_text("- hosts: web\n  tasks:\n    - {name: one, exec: {argv: [echo, '1']}}\n"
                                      "    - {name: two, exec: {argv: [echo, '2']}}\n"
                                      "- hosts: web1\n  tasks:\n    - {name: three, exec: {argv: [echo, '3']}}\n")
    result = sandfleet.run_playbook(tmp_path / "two.yml", inv, dry_run=True, start_at_task="two")
    assert [t.task for t in result.hosts["web1"].tasks] == ["two", "three"]
    assert [t.task for t in result.hosts["web2"].tasks] == ["two"]
    result = sandfleet.run_playbook(tmp_path / "two.yml", inv, dry_run=True, start_at_task="three")
    assert [t.task for t in result.hosts["web1"].tasks] == ["three"] and result.hosts["web2"].tasks == ()
    code, out, _ = cli("run", str(tmp_path / "two.yml"), "-i", inv, "--start-at-task", "three")
    assert code == 0 and "TASK [three]" in out and "TASK [one]" not in out and "TASK [two]" not in out


def test_an_unknown_start_at_task_is_a_usage_error_with_close_names(files: tuple[str, str]) -> None:
    inv, d = files
    with pytest.raises(UsageError, match=r"no task of .* has that name; did you mean 'start service'\?"):
        sandfleet.run_playbook(f"{d}/site.yml", inv, dry_run=True, start_at_task="strat service")
    code, out, err = cli("run", f"{d}/site.yml", "-i", inv, "--start-at-task", "nothing like it")
    assert code == 64 and out == "" and "--start-at-task 'nothing like it': no task of" in err
    code, _, err = cli("run", f"{d}/site.yml", "-i", inv, "--list-tasks", "--start-at-task", "instal")
    assert code == 64 and "did you mean 'install'?" in err


def test_help_names_the_listings_and_the_dry_run_preview() -> None:
    out = _help()
    assert "--list-hosts" in out and "--list-tasks" in out and "--start-at-task" in out
    assert "--dry-run previews each host's exact wrapper" in " ".join(out.split())


def _help() -> str:
    from sandfleet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["run"].format_help()  # type: ignore[attr-defined,no-any-return]
