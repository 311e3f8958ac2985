"""``sandfleet merge``: the slices' results directories give what the unsliced run gives (recap,
JSON events, JUnit, results directory, exit code), and anything that is not every slice of one run
is refused by name, never merged green (sandfleet/report/merge.py, docs/slicing.md).

Real runs on the local connection (one agent per host) plus a host that refuses connections;
sandbox: false, so every record is the same from run to run but for its timings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import sandfleet
from sandfleet.run.slicing import assign
from support import eventschema

ROOT = Path(__file__).resolve().parent.parent
HOSTS = [f"n{i}" for i in range(6)] + ["gone"]
N = 3
PLAYBOOK = """\
- name: first
  hosts: all
  sandbox: false
  tasks:
    - name: hello
      exec: {argv: [echo, "hello {{ inventory_hostname }}"]}
    - name: maybe
      exec: {argv: [sh, -c, "echo oops >&2; exit {{ 3 if inventory_hostname == 'n2' else 0 }}"]}
    - name: loop
      exec: {argv: [echo, "{{ item }}"]}
      loop: [a, b]
    - name: skipped
      exec: {argv: ['true']}
      when: inventory_hostname == 'nobody'
- name: second
  hosts: "n*:!n0"
  sandbox: false
  tasks:
    - name: again
      exec: {argv: ['true']}
"""
TIMINGS = ("started", "duration_ms")


def sandfleet_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandfleet", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("SANDFLEET_")})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_fleet(base: Path, hosts: list[str] = HOSTS, playbook: str = PLAYBOOK) -> tuple[Path, Path]:
    lines = ["all:", "  hosts:"]
    for h in hosts:
        if h == "gone":  # nothing listens there: unreachable at once
            lines += [f"    {h}:", "      ansible_host: 127.0.0.1", f"      ansible_port: {closed_port()}",
                      "      sandfleet_os: linux"]
        else:
            lines += [f"    {h}:", "      ansible_connection: local", "      sandfleet_os: linux"]
    inventory, book = base / "inv.yml", base / "pb.yml"
    inventory.write_text("\n".join(lines) + "\n")
    book.write_text(playbook)
    return inventory, book


@dataclass
class Runs:
    base: Path
    inventory: Path
    playbook: Path
    slices: list[Path]
    single: subprocess.CompletedProcess[str]  # the unsliced run, --format json
    single_junit: Path
    single_dir: Path

    def copy(self, tmp: Path) -> list[Path]:
        """The slices' directories, copied for a test to change."""
        out = []
        for path in self.slices:
            shutil.copytree(path, tmp / path.name)
            out.append(tmp / path.name)
        return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    base = tmp_path_factory.mktemp("merge")
    inventory, playbook = write_fleet(base)
    slices = []
    for k in range(1, N + 1):
        out = base / f"slice-{k}"
        proc = sandfleet_cli("run", str(playbook), "-i", str(inventory), "--slice", f"{k}/{N}", "--allow-unsandboxed",
                             "--results-dir", str(out))
        assert proc.returncode in (0, 2, 4, 6), proc.stderr
        slices.append(out)
    single = sandfleet_cli("run", str(playbook), "-i", str(inventory), "--allow-unsandboxed", "--format", "json",
                           "--junit", str(base / "single.xml"), "--results-dir", str(base / "single"))
    yield Runs(base, inventory, playbook, slices, single, base / "single.xml", base / "single")


def untimed(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in TIMINGS}


def by_host(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["event"] == "task_result":
            out.setdefault(e["host"], []).append(untimed(e))
    return out


def junit_shape(path: Path) -> str:
    """The JUnit file without its timings; suite properties sorted (records come in the order
    hosts finished, which is timing too)."""
    root = ET.parse(path).getroot()
    for element in root.iter():
        for attr in ("time", "timestamp"):
            element.attrib.pop(attr, None)
        if element.tail is not None and not element.tail.strip():
            element.tail = None  # indentation, which moving properties disturbs
    for props in root.iter("properties"):
        items = sorted(props, key=lambda p: p.get("name") or "")
        for p in list(props):
            props.remove(p)
        props.extend(items)
    return ET.tostring(root, encoding="unicode")


def test_the_split_of_this_fixture_has_no_slice_that_only_fails() -> None:
    """Otherwise that slice would stop itself (a batch in which every host failed), which the
    unsliced run does not: a documented difference, not what these tests compare."""
    split = assign(HOSTS, N)
    for k in range(1, N + 1):
        assert {h for h, part in split.items() if part == k} - {"n2", "gone"}


def test_the_merge_gives_what_the_unsliced_run_gives(runs: Runs, tmp_path: Path) -> None:
    single = eventschema.parse(runs.single.stdout)
    assert runs.single.returncode == 6  # n2 failed, gone unreachable
    proc = sandfleet_cli("merge", *map(str, runs.slices), "--format", "json", "--junit", str(tmp_path / "m.xml"),
                         "--results-dir", str(tmp_path / "all"))
    assert proc.returncode == runs.single.returncode, proc.stderr
    merged = eventschema.parse(proc.stdout)  # the run's own event schema
    # The recap: the same tally for every host, in the same order.
    assert merged[-1] == single[-1] and list(merged[-1]["hosts"]) == list(single[-1]["hosts"])
    assert list(single[-1]["hosts"]) == HOSTS
    # The play starts with their hosts, the results per host, the unreachable host.
    assert [e for e in merged if e["event"] == "play_start"] == [e for e in single if e["event"] == "play_start"]
    assert by_host(merged) == by_host(single)
    unreachable = [e for e in single if e["event"] == "host_unreachable"]
    assert [e for e in merged if e["event"] == "host_unreachable"] == unreachable and len(unreachable) == 1
    # JUnit and the results directory, but for timings.
    assert junit_shape(tmp_path / "m.xml") == junit_shape(runs.single_junit)
    assert sorted(os.listdir(tmp_path / "all")) == sorted(os.listdir(runs.single_dir)) == [f"{h}.json" for h in
                                                                                          sorted(HOSTS)]
    for name in os.listdir(runs.single_dir):
        want, got = (json.loads((d / name).read_text()) for d in (runs.single_dir, tmp_path / "all"))
        assert [untimed(t) for t in got.pop("tasks")] == [untimed(t) for t in want.pop("tasks")]
        assert got == want


def test_the_text_recap_names_the_slices_and_the_failures(runs: Runs) -> None:
    proc = sandfleet_cli("merge", *map(str, runs.slices))
    assert proc.returncode == 6, proc.stderr
    assert f"MERGE of {N} slice(s)" in proc.stdout and "7 host(s)" in proc.stdout
    for k, path in enumerate(runs.slices, 1):
        assert f"slice {k}/{N}: {path}: " in proc.stdout
    assert "PLAY RECAP" in proc.stdout and "FAILED TASKS\n  n2: maybe (failed)" in proc.stdout
    assert "UNREACHABLE\n  gone: " in proc.stdout


def test_the_api_returns_the_unsliced_runs_result(runs: Runs) -> None:
    merged = sandfleet.merge_results(runs.slices)
    single = sandfleet.run_playbook(runs.playbook, runs.inventory, allow_unsandboxed=True)
    assert merged.exit_code == single.exit_code == 6 and list(merged.hosts) == list(single.hosts)
    for name, host in single.hosts.items():
        other = merged.hosts[name]
        assert other.unreachable == host.unreachable and other.ok == host.ok
        assert [untimed(t.to_json()) for t in other.tasks] == [untimed(t.to_json()) for t in host.tasks]
        assert [(t.task, t.status, t.rc, t.stdout) for t in other.tasks] == [(t.task, t.status, t.rc, t.stdout)
                                                                             for t in host.tasks]


# -- refused: not every slice of one run ----------------------------------------------------------


def refused(*args: str, says: str) -> subprocess.CompletedProcess[str]:
    proc = sandfleet_cli("merge", *args)
    assert proc.returncode == 65, proc.stdout + proc.stderr
    assert says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    return proc


def test_a_missing_slice_fails_the_merge_naming_it_and_writes_nothing(runs: Runs, tmp_path: Path) -> None:
    junit = tmp_path / "j.xml"
    refused(str(runs.slices[0]), str(runs.slices[2]), "--junit", str(junit),
            says=f"slice 2/{N} is missing (given: 1/{N} ({runs.slices[0]}), 3/{N} ({runs.slices[2]}))")
    assert not junit.exists()
    refused(str(runs.slices[0]), says=f"slices 2/{N}, 3/{N} are missing")


def test_a_slice_given_twice_is_refused(runs: Runs) -> None:
    refused(*map(str, runs.slices), str(runs.slices[1]), says=f"slice 2/{N} is given twice")


def test_slices_of_another_n_or_another_run_are_refused(runs: Runs, tmp_path: Path) -> None:
    other_n = tmp_path / "other-n"
    proc = sandfleet_cli("run", str(runs.playbook), "-i", str(runs.inventory), "--slice", "1/2",
                         "--allow-unsandboxed", "--results-dir", str(other_n))
    assert proc.returncode in (0, 2, 4, 6), proc.stderr
    refused(str(other_n), *map(str, runs.slices[1:]), says="the slices of one run all have the same N")
    other_run = tmp_path / "other-run"  # the same slice of the same playbook, with --limit
    proc = sandfleet_cli("run", str(runs.playbook), "-i", str(runs.inventory), "--slice", f"1/{N}", "--limit", "n*",
                         "--allow-unsandboxed", "--results-dir", str(other_run))
    assert proc.returncode in (0, 2), proc.stderr
    refused(str(other_run), *map(str, runs.slices[1:]), says="is from another run than")


def test_what_is_not_a_slices_directory_is_refused(runs: Runs, tmp_path: Path) -> None:
    refused(str(runs.single_dir), says="no @run.json, so this is not the --results-dir of a finished sliced run")
    refused(str(tmp_path / "nowhere"), says="no such directory")
    proc = sandfleet_cli("merge")
    assert proc.returncode == 64 and "RESULTS_DIR" in proc.stderr


# -- hostile or broken directories --------------------------------------------------------------


def summary(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "@run.json").read_text()))


def rewrite(path: Path, change: Any) -> None:
    doc = summary(path)
    change(doc)
    (path / "@run.json").write_text(json.dumps(doc))


def first_host(path: Path) -> str:
    return str(summary(path)["hosts"][0])


def test_a_symlinked_results_file_is_not_followed(runs: Runs, tmp_path: Path) -> None:
    dirs = runs.copy(tmp_path)
    victim = dirs[1] / f"{first_host(dirs[1])}.json"
    secret = tmp_path / "secret.json"
    secret.write_text(victim.read_text())
    victim.unlink()
    victim.symlink_to(secret)
    refused(*map(str, dirs), says="a symbolic link (not followed)")
    (dirs[1] / "@run.json").rename(tmp_path / "real-summary")
    (dirs[1] / "@run.json").symlink_to(tmp_path / "real-summary")
    refused(*map(str, dirs), says="@run.json: cannot read it: a symbolic link")


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d.update(hosts=[*d["hosts"], "../../etc/passwd"]), "which is not one of its hosts"),
    (lambda d: d.update(assigned=[*d["assigned"], "n0" if "n0" not in d["assigned"] else "n3"]),
     "is in slice"),
    (lambda d: d.update(summary=2), "summary version 2"),
    (lambda d: d.update(slice={"index": 5, "count": 3, "source": "x"}), "is not a slice"),
    (lambda d: d.update(exit_code="0"), "'exit_code' is missing or not the right type"),
    (lambda d: d.update(exit_code=True), "'exit_code' is missing or not the right type"),
    (lambda d: d.update(plays=[{"name": "first", "targets": 7, "started": [["n0", 0]]}, d["plays"][1]]),
     "each started host must be [name, place, results]"),
    (lambda d: d["plays"][0]["started"][0].__setitem__(2, 99), "holds fewer results than"),
    (lambda d: d.update(fingerprint=["x"]), "'fingerprint' is missing or not the right type"),
    (lambda d: d.update(targeted=99), "says the run targets 99 hosts"),
])
def test_a_tampered_summary_is_refused_by_name(runs: Runs, tmp_path: Path, change: Any, says: str) -> None:
    dirs = runs.copy(tmp_path)
    rewrite(dirs[1], change)
    refused(*map(str, dirs), says=says)


def test_a_host_name_in_a_summary_is_never_a_path(runs: Runs, tmp_path: Path) -> None:
    dirs = runs.copy(tmp_path)
    (tmp_path / "passwd.json").write_text(json.dumps({"host": "../passwd", "tasks": [], "unreachable": None,
                                                      "recap": {}}))
    for path in dirs:
        rewrite(path, lambda d: d.update(targeted=d["targeted"] + 1))
    rewrite(dirs[1], lambda d: d.update(hosts=[*d["hosts"], "../passwd"], assigned=[*d["assigned"], "../passwd"]))
    refused(*map(str, dirs), says=f"{dirs[1]}/%2E.%2Fpasswd.json: missing")  # encoded, never a path


@pytest.mark.parametrize(("content", "says"), [
    ("{not json", "not valid JSON"), ("[" * 100000 + "]" * 100000, "not valid JSON"), ("[]", "expected a JSON object"),
    (json.dumps({"host": "someone-else", "tasks": [], "unreachable": None, "recap": {}}), "not of"),
    (json.dumps({"host": "HOST", "tasks": [{"host": "HOST", "status": "exploded"}], "unreachable": None,
                 "recap": {}}), "unknown status 'exploded'"),
    (json.dumps({"host": "HOST", "tasks": "x", "unreachable": None, "recap": {}}), "'tasks' is missing"),
    (json.dumps({"host": "HOST", "tasks": [], "unreachable": None, "recap": {"ok": -1}}), "must not be negative"),
], ids=["syntax", "deep", "list", "other-host", "status", "tasks", "negative"])
def test_a_broken_results_file_is_refused_by_name(runs: Runs, tmp_path: Path, content: str, says: str) -> None:
    dirs = runs.copy(tmp_path)
    host = first_host(dirs[0])
    (dirs[0] / f"{host}.json").write_text(content.replace("HOST", host))
    proc = refused(*map(str, dirs), says=says)
    assert f"{host}.json" in proc.stderr


def test_a_slice_saying_it_failed_is_never_merged_green(runs: Runs, tmp_path: Path) -> None:
    """Every host file green, but the slice's own exit code says a task failed: the merge keeps it."""
    inventory, playbook = write_fleet(tmp_path, ["a", "b", "c"], "- hosts: all\n  sandbox: false\n  tasks:\n"
                                                                 "    - exec: {argv: ['true']}\n")
    dirs = []
    for k in (1, 2):
        out = tmp_path / f"s{k}"
        assert sandfleet_cli("run", str(playbook), "-i", str(inventory), "--slice", f"{k}/2", "--allow-unsandboxed",
                             "--results-dir", str(out)).returncode == 0
        dirs.append(out)
    assert sandfleet_cli("merge", *map(str, dirs)).returncode == 0
    rewrite(dirs[0], lambda d: d.update(exit_code=2))
    assert sandfleet_cli("merge", *map(str, dirs)).returncode == 2


# -- interrupted and dead slices -------------------------------------------------------------------


def start_slice(playbook: Path, inventory: Path, k: int, n: int, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory), "--slice",
                             f"{k}/{n}", "--allow-unsandboxed", "--results-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def wait_for(tag: str) -> None:
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "the long task never started"
        time.sleep(0.05)


def long_fleet(tmp_path: Path) -> tuple[Path, Path, str]:
    tag = f"slice-sleep-{os.getpid()}-{tmp_path.name}"
    inventory, playbook = write_fleet(tmp_path, ["a", "b"], f"""\
- hosts: all
  sandbox: false
  tasks:
    - exec: {{argv: ['true']}}
    - exec: {{argv: [bash, -c, 'exec -a {tag} sleep 300']}}
""")
    return inventory, playbook, tag


def test_an_interrupted_slice_merges_as_an_interrupted_run(tmp_path: Path) -> None:
    inventory, playbook, tag = long_fleet(tmp_path)
    proc = start_slice(playbook, inventory, 1, 2, tmp_path / "s1")
    wait_for(tag)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert summary(tmp_path / "s1")["interrupted"] is True
    subprocess.run(["pkill", "-f", tag], capture_output=True)
    other = start_slice(playbook, inventory, 2, 2, tmp_path / "s2")
    wait_for(tag)
    other.send_signal(signal.SIGINT)
    other.communicate(timeout=30)
    merged = sandfleet_cli("merge", str(tmp_path / "s1"), str(tmp_path / "s2"))
    assert merged.returncode == 130, merged.stderr
    assert "was interrupted: its results are partial" in merged.stdout and "cancelled=1" in merged.stdout


def test_a_killed_slice_leaves_no_summary_even_over_an_old_one(tmp_path: Path) -> None:
    """A run that died before its end must not pass for finished: the summary of an earlier run in
    the same directory goes when the run starts."""
    inventory, playbook, tag = long_fleet(tmp_path)
    out = tmp_path / "s1"
    out.mkdir()
    (out / "@run.json").write_text('{"summary": 1, "stale": true}')
    proc = start_slice(playbook, inventory, 1, 1, out)
    wait_for(tag)
    assert not (out / "@run.json").exists()
    proc.kill()
    proc.communicate(timeout=30)
    subprocess.run(["pkill", "-f", tag], capture_output=True)
    refused(str(out), says="no @run.json")


def test_an_unsliced_run_into_a_slices_directory_removes_its_summary(runs: Runs, tmp_path: Path) -> None:
    """Else the old summary would vouch for the new run's files as that slice's."""
    dirs = runs.copy(tmp_path)
    proc = sandfleet_cli("run", str(runs.playbook), "-i", str(runs.inventory), "--allow-unsandboxed", "--limit", "n0",
                         "--results-dir", str(dirs[0]))
    assert proc.returncode == 0, proc.stderr
    refused(*map(str, dirs), says=f"{dirs[0]}: no @run.json")


# -- the rest of the contract -----------------------------------------------------------------------


def test_merge_writes_nowhere_near_a_slice(runs: Runs, tmp_path: Path) -> None:
    dirs = runs.copy(tmp_path)
    before = sorted(os.listdir(dirs[0]))
    proc = sandfleet_cli("merge", *map(str, dirs), "--results-dir", str(dirs[0]))
    assert proc.returncode == 64 and "own directory" in proc.stderr, proc.stderr
    assert sorted(os.listdir(dirs[0])) == before


def test_an_abort_in_one_slice_is_named_with_its_slice(tmp_path: Path) -> None:
    inventory, playbook = write_fleet(tmp_path, ["a", "b", "c", "d"], """\
- name: fatal
  hosts: all
  any_errors_fatal: true
  sandbox: false
  tasks:
    - name: boom
      exec: {argv: [sh, -c, "exit {{ 1 if inventory_hostname == 'a' else 0 }}"]}
""")
    split = assign(["a", "b", "c", "d"], 2)
    dirs = []
    for k in (1, 2):
        dirs.append(tmp_path / f"s{k}")
        sandfleet_cli("run", str(playbook), "-i", str(inventory), "--slice", f"{k}/2", "--allow-unsandboxed",
                      "--results-dir", str(dirs[-1]))
    proc = sandfleet_cli("merge", *map(str, dirs), "--format", "json", "--junit", str(tmp_path / "j.xml"))
    assert proc.returncode == 2, proc.stderr
    recap = json.loads(proc.stdout.splitlines()[-1])
    assert recap["aborted"] == {"play": "fatal", "reason": f"slice {split['a']}/2: any_errors_fatal: a failed 'boom'"}
    assert list(recap["hosts"]) == ["a", "b", "c", "d"]
    aborted = [p.get("value") for p in ET.parse(tmp_path / "j.xml").iter("property") if p.get("name") == "aborted"]
    assert aborted == [recap["aborted"]["reason"]]


def test_a_run_that_matched_no_host_merges_to_exit_1(tmp_path: Path) -> None:
    inventory, playbook = write_fleet(tmp_path, ["a"], "- hosts: nosuchgroup\n  tasks:\n    - exec: {argv: ['true']}\n")
    dirs = []
    for k in (1, 2):
        dirs.append(tmp_path / f"s{k}")
        proc = sandfleet_cli("run", str(playbook), "-i", str(inventory), "--slice", f"{k}/2", "--results-dir",
                             str(dirs[-1]))
        assert proc.returncode == 1, proc.stderr
    merged = sandfleet_cli("merge", *map(str, dirs))
    assert merged.returncode == 1 and "NO HOSTS MATCHED" in merged.stdout, merged.stdout + merged.stderr


def test_host_names_that_differ_in_case_get_their_own_files_once_merged(tmp_path: Path) -> None:
    hosts = ["Web", "web", "x1", "x2"]
    assert assign(hosts, 2)["Web"] != assign(hosts, 2)["web"]  # each alone in its slice: plain names there
    inventory, playbook = write_fleet(tmp_path, hosts, "- hosts: all\n  sandbox: false\n  tasks:\n"
                                                       "    - exec: {argv: [echo, '{{ inventory_hostname }}']}\n")
    dirs = []
    for k in (1, 2):
        dirs.append(tmp_path / f"s{k}")
        sandfleet_cli("run", str(playbook), "-i", str(inventory), "--slice", f"{k}/2", "--allow-unsandboxed",
                      "--results-dir", str(dirs[-1]))
    assert {"Web.json", "web.json"} <= set(os.listdir(dirs[0])) | set(os.listdir(dirs[1]))
    assert sandfleet_cli("merge", *map(str, dirs), "--results-dir", str(tmp_path / "all")).returncode == 0
    files = os.listdir(tmp_path / "all")
    assert len({f.casefold() for f in files}) == 4  # a case-insensitive file system keeps all four
    stdout = {json.loads((tmp_path / "all" / f).read_text())["tasks"][0]["stdout"] for f in files}
    assert stdout == {f"{h}\n" for h in hosts}
