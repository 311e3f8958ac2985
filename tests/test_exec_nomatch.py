"""Issue 19: a command whose pattern matches no host ran nothing, and says so as ``run`` does.

``sandfleet run`` in which no play matched any host exits 1 with Ansible's warning for each
pattern term that matched nothing (tests/test_play_semantics.py). ``sandfleet exec``,
``run_command``, ``Fleet.run`` and ``doctor`` used to exit 0 there, which reads as success: now
they exit 1 and warn with the pattern; a pattern that does match keeps its 0. Real local agents.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

import sandfleet
from sandfleet.cli import main
from support.ci import need

NO_MATCH = "[WARNING]: Could not match supplied host pattern, ignoring: {}"


@pytest.fixture(autouse=True)
def _bwrap() -> None:
    need(shutil.which("bwrap") is not None, "bubblewrap is not installed")


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def inv(tmp_path: Path) -> str:
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  children:\n    web:\n      hosts:\n"
                    "        web1: {ansible_connection: local}\n        web2: {ansible_connection: local}\n"
                    "    db:\n      hosts:\n        db1: {ansible_connection: local}\n")
    return str(path)


def test_exec_with_a_pattern_that_matches_nothing_exits_1_and_names_it(inv: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code, out, err = _cli("exec", "wbe", "-i", inv, "--", "touch", str(marker))
    assert (code, out) == (1, "") and not marker.exists()
    assert err.splitlines() == [NO_MATCH.format("wbe"), "sandfleet: warning: the pattern 'wbe' matches no host; "
                                                        "nothing ran"]
    code, out, err = _cli("exec", "wbe", "-i", inv, "--format", "json", "--", "true")
    assert code == 1 and [json.loads(line)["event"] for line in out.splitlines()] == ["run_start", "play_start",
                                                                                      "recap"]
    assert err.splitlines() == [NO_MATCH.format("wbe")]  # stdout stays JSON only
    code, out, err = _cli("exec", "wbe", "-i", inv, "--dry-run", "--", "true")
    assert code == 1 and "NO HOSTS MATCHED" in out and err.splitlines() == [NO_MATCH.format("wbe")]


def test_exec_limit_that_leaves_no_host_exits_1(inv: str) -> None:
    code, out, err = _cli("exec", "db", "-i", inv, "-l", "web", "--", "true")
    assert (code, out) == (1, "") and err == "sandfleet: warning: the pattern 'db' with --limit 'web' matches no " \
                                             "host; nothing ran\n"


def test_a_pattern_with_one_unmatched_term_still_runs_on_the_rest(inv: str) -> None:
    code, out, err = _cli("exec", "db1:typo", "-i", inv, "--", "echo", "{{ inventory_hostname }}")
    assert code == 0 and out == "db1 | OK | rc=0 | backend bwrap\ndb1\n"
    assert err.splitlines()[0] == NO_MATCH.format("typo")


def test_run_command_exits_1_and_warns(inv: str) -> None:
    warnings: list[str] = []
    result = sandfleet.run_command(["true"], hosts="wbe", inventory=inv, on_warning=warnings.append)
    assert (result.exit_code, result.ok, dict(result.hosts)) == (1, False, {})
    assert warnings == [NO_MATCH.format("wbe")]
    ok = sandfleet.run_command(["true"], hosts="db", inventory=inv, on_warning=warnings.append)
    assert ok.exit_code == 0 and list(ok.hosts) == ["db1"] and warnings == [NO_MATCH.format("wbe")]


def test_fleet_run_exits_1_and_warns_with_the_pattern(inv: str) -> None:
    warnings: list[str] = []
    with sandfleet.open_fleet(inv, "web") as fleet:
        result = fleet.run(["true"], hosts="db", on_warning=warnings.append)
        assert (result.exit_code, dict(result.hosts)) == (1, {})
        assert warnings == ["[WARNING]: the pattern 'db' matches no host of this fleet (web1, web2); nothing ran"]
        warnings.clear()
        result = fleet.run(["true"], hosts="wbe", on_warning=warnings.append)
        assert result.exit_code == 1 and warnings[0] == NO_MATCH.format("wbe") and len(warnings) == 2
        warnings.clear()
        result = fleet.run(["true"], hosts="web1", on_warning=warnings.append)
        assert result.exit_code == 0 and list(result.hosts) == ["web1"] and warnings == []
    with sandfleet.open_fleet(inv, "wbe") as empty:
        assert empty.hosts == ()
        result = empty.run(["true"], on_warning=warnings.append)
        assert result.exit_code == 1 and warnings == [
            "[WARNING]: this fleet has no host: its pattern 'wbe' matched none; nothing ran"]


def test_doctor_on_no_host_exits_1(inv: str) -> None:
    assert sandfleet.api.doctor(inv, "wbe").exit_code == 1
    code, out, _ = _cli("doctor", "-i", inv, "-l", "wbe")
    assert code == 1 and out == "sandfleet doctor: the pattern matches no host\n"
