"""``--results-dir``: one JSON file per host, names that never collide, written at finish."""

from __future__ import annotations

import io
import json
import os
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandfleet.errors import UsageError
from sandfleet.report.events import TaskStatus
from sandfleet.report.jsonl import dumps, task_result
from sandfleet.report.outputs import OutputOptions, make_reporter
from sandfleet.report.results_dir import MAX_STEM, encode_host, file_names
from support.report_fakes import event, feed, play, task


def test_one_file_per_host_with_every_result_and_its_tally(tmp_path: Path) -> None:
    out_dir = tmp_path / "results" / "nested"  # created, parents too
    reporter = make_reporter(OutputOptions(format="json", results_dir=str(out_dir)), io.StringIO(), {})
    loop_a = event("web1", "loop", "ok", item="a")
    failed = event("web1", "migrate", "failed", stderr="no table\n")
    feed(reporter, [(play(), ["web1", "web2", "idle"], [
        (task("loop"), [loop_a, event("web1", "loop", "ok", item="b", label="B")]),
        (task("migrate"), [failed, event("web2", "migrate", TaskStatus.SKIPPED)]),
    ])], unreachable={"web2": "connection refused"})
    reporter.play_aborted(play(), "any_errors_fatal: web1 failed 'migrate'")
    reporter.finish()
    assert sorted(os.listdir(out_dir)) == ["idle.json", "web1.json", "web2.json"]
    web1 = json.loads((out_dir / "web1.json").read_text())
    assert web1["host"] == "web1" and web1["unreachable"] is None
    same = [task_result(e) for e in (loop_a, event("web1", "loop", "ok", item="b", label="B"), failed)]
    assert web1["tasks"] == json.loads(dumps(same))  # the --format json objects
    assert web1["tasks"][2]["stderr"] == "no table\n" and web1["tasks"][1]["label"] == "B"
    assert web1["recap"] == {"ok": 2, "changed": 2, "failed": 1, "unreachable": 0, "sandbox_unavailable": 0,
                             "denied": 0, "skipped": 0, "ignored": 0, "cancelled": 0}
    assert web1["aborted"] == {"play": "deploy", "reason": "any_errors_fatal: web1 failed 'migrate'"}
    web2 = json.loads((out_dir / "web2.json").read_text())
    assert web2["unreachable"] == "connection refused" and web2["recap"]["unreachable"] == 1
    assert [t["status"] for t in web2["tasks"]] == ["skipped"]
    assert json.loads((out_dir / "idle.json").read_text())["tasks"] == []


def test_a_path_that_cannot_be_a_directory_fails_before_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="--results-dir"):
        make_reporter(OutputOptions(results_dir=str(blocker / "sub")), io.StringIO(), {})


def test_dry_run_refuses_report_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="dry-run"):
        make_reporter(OutputOptions(dry_run=True, results_dir=str(tmp_path)), io.StringIO(), {})


@pytest.mark.parametrize(("host", "name"), [
    ("web1.example.com", "web1.example.com"), ("db_2-a", "db_2-a"), ("a/b", "a%2Fb"), ("..", "%2E."),
    (".hidden", "%2Ehidden"), ("", "%"), ("50%", "50%25"), ("ünï", "%C3%BCn%C3%AF"), ("a b", "a%20b"),
    ("\udc80x", "%ED%B2%80x"), ("~x", "%7Ex"),
])
def test_host_names_become_safe_file_names(host: str, name: str) -> None:
    assert encode_host(host) == name


@given(st.lists(st.text(st.characters(exclude_categories=()), max_size=300), unique=True, max_size=8))
def test_file_names_never_collide_even_ignoring_case(hosts: list[str]) -> None:
    names = file_names(hosts)
    assert len({n.casefold() for n in names.values()}) == len(hosts)
    for host, name in names.items():
        assert name.endswith(".json") and len(name.encode()) <= MAX_STEM + 5
        assert "/" not in name and "\0" not in name and not name.startswith(".")
        stem = name[:-5]
        if "~" not in stem and stem != "%":  # unsuffixed names decode back to the host
            assert urllib.parse.unquote(stem, errors="surrogatepass") == host


def test_names_differing_in_case_get_suffixes(tmp_path: Path) -> None:
    names = file_names(["Web1", "web1", "db"])
    assert names["db"] == "db.json"
    assert names["Web1"].startswith("Web1~") and names["web1"].startswith("web1~")


def test_one_failing_report_does_not_stop_the_others(tmp_path: Path) -> None:
    (tmp_path / "junit").mkdir()
    out = io.StringIO()
    reporter = make_reporter(OutputOptions(junit=str(tmp_path / "junit" / "r.xml"), results_dir=str(tmp_path / "res")),
                             out, {})
    feed(reporter, [(play(), ["h"], [(task("t"), [event("h", "t")])])])
    (tmp_path / "junit").rmdir()  # the JUnit file can no longer be written
    with pytest.raises(FileNotFoundError):
        reporter.finish()
    assert "PLAY RECAP" in out.getvalue() and (tmp_path / "res" / "h.json").exists()
    reporter.finish()  # once only: nothing is written twice
    assert out.getvalue().count("PLAY RECAP") == 1
