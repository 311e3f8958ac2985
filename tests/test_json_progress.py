"""``play_start``/``task_start`` in ``--format json`` (docs/events.md), and ``--junit`` creating
its directory as ``--results-dir`` does."""

from __future__ import annotations

from pathlib import Path

from test_run_local import sandfleet, write_inventory, write_playbook

from sandfleet.report.outputs import OutputOptions, make_reporter
from support import eventschema
from support.report_fakes import event, play, task

TWO_PLAYS = """\
- name: first
  hosts: all
  tasks:
    - name: hello
      exec: {argv: [echo, hello]}
    - name: never
      exec: {argv: ['false']}
      when: false
- name: second
  hosts: all
  tasks:
    - name: again
      exec: {argv: ['true']}
"""


def _kinds(events: list[dict]) -> list[str]:
    return [e["event"] for e in events]


def test_a_run_announces_each_play_and_task_before_its_results(tmp_path: Path) -> None:
    proc = sandfleet("run", str(write_playbook(tmp_path, TWO_PLAYS)), "-i", str(write_inventory(tmp_path)),
                     "--format", "json")
    assert proc.returncode == 0, proc.stderr
    events = eventschema.parse(proc.stdout, progress=True)  # every line validated against the schema
    assert _kinds(events) == ["play_start", "task_start", "task_result", "task_start", "task_result",
                              "play_start", "task_start", "task_result", "recap"]
    assert events[0] == {"event": "play_start", "play": "first", "hosts": ["here"]}
    assert events[1] == {"event": "task_start", "play": "first", "task": "hello", "hosts": ["here"]}
    assert events[3]["task"] == "never" and events[4]["status"] == "skipped"
    assert events[6] == {"event": "task_start", "play": "second", "task": "again", "hosts": ["here"]}
    # the default view of the helper is unchanged: results and the recap only
    assert _kinds(eventschema.parse(proc.stdout)) == ["task_result"] * 3 + ["recap"]


def test_a_dry_run_has_the_same_progress_events(tmp_path: Path) -> None:
    proc = sandfleet("run", str(write_playbook(tmp_path, TWO_PLAYS)), "-i", str(write_inventory(tmp_path)),
                     "--format", "json", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    events = eventschema.parse(proc.stdout, progress=True)
    assert _kinds(events)[:3] == ["play_start", "task_start", "task_result"]
    assert [e["task"] for e in events if e["event"] == "task_start"] == ["hello", "never", "again"]


def test_the_reporter_writes_progress_after_run_start() -> None:
    import io

    out = io.StringIO()
    reporter = make_reporter(OutputOptions(format="json"), out, {})
    p, t = play(), task("t")
    reporter.play_start(p, ["a", "b"])
    reporter.task_start(p, t, ["a", "b"])
    reporter.task_event(event("a", "t", "ok"))
    reporter.finish()
    lines = out.getvalue().splitlines()
    assert '"run_start"' in lines[0]
    events = eventschema.parse(out.getvalue(), progress=True)
    assert events[0] == {"event": "play_start", "play": p.name, "hosts": ["a", "b"]}
    assert events[1] == {"event": "task_start", "play": p.name, "task": "t", "hosts": ["a", "b"]}


def test_progress_is_additive_to_schema_1() -> None:
    from sandfleet.report.jsonl import SCHEMA_VERSION

    assert SCHEMA_VERSION == 1
    for bad in ({"event": "play_start", "play": "p"}, {"event": "task_start", "play": "p", "task": "t", "hosts": []},
                {"event": "task_start", "play": "p", "task": "t", "hosts": ["a"], "extra": 1}):
        try:
            eventschema.validate(bad)
        except Exception:
            continue
        raise AssertionError(f"schema accepted {bad}")


def test_junit_creates_its_directory_as_results_dir_does(tmp_path: Path) -> None:
    junit, results = tmp_path / "reports" / "deep" / "junit.xml", tmp_path / "reports" / "results"
    proc = sandfleet("run", str(write_playbook(tmp_path, TWO_PLAYS)), "-i", str(write_inventory(tmp_path)),
                     "--junit", str(junit), "--results-dir", str(results))
    assert proc.returncode == 0, proc.stderr
    assert junit.is_file() and (results / "here.json").is_file()


def test_junit_under_a_file_is_still_refused_before_anything_runs(tmp_path: Path) -> None:
    pb = write_playbook(tmp_path, TWO_PLAYS)
    proc = sandfleet("run", str(pb), "-i", str(write_inventory(tmp_path)), "--junit", str(pb / "r.xml"))
    assert proc.returncode == 64 and proc.stdout == "", proc.stderr
    assert "cannot create the directory" in proc.stderr
