"""``--slice K/N``: the split (balanced, stable, the same in every process), reading K and N from
job engines, what a sliced run says and lists, and the examples that run slices on Kubernetes and
GitHub Actions (sandfleet/run/slicing.py, docs/slicing.md)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandfleet.errors import UsageError
from sandfleet.load.keywords import TagFilter
from sandfleet.load.playbook import load_playbook_data
from sandfleet.run.slicing import ENGINES, MAX_SLICES, Slice, assign, fingerprint, parse_slice, select, weights

ROOT = Path(__file__).resolve().parent.parent
#: Every engine variable: a test sets only its own, whatever the machine running it has set.
ENGINE_VARS = [v for e in ENGINES for v in (e.index_var, e.count_var) if v]


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in ENGINE_VARS}, **extra}


def sandfleet(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandfleet", *args], capture_output=True, text=True,
                          env=env if env is not None else clean_env(), cwd=cwd, timeout=120)


def names(count: int, prefix: str = "web") -> list[str]:
    return [f"{prefix}{i:04d}.example.com" for i in range(count)]


# -- K/N and the engines ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "want"), [("1/1", (1, 1)), ("2/4", (2, 4)), (" 4/4 ", (4, 4)), ("03/08", (3, 8)),
                                            (f"{MAX_SLICES}/{MAX_SLICES}", (MAX_SLICES, MAX_SLICES))])
def test_k_of_n_counts_from_one(text: str, want: tuple[int, int]) -> None:
    got = parse_slice(text, {})
    assert (got.index, got.count) == want and str(got) == f"{want[0]}/{want[1]}"


@pytest.mark.parametrize(("text", "says"), [
    ("0/4", "K must be from 1 to 4"), ("5/4", "K must be from 1 to 4"), ("1/0", "N must be from 1 to"),
    (f"1/{MAX_SLICES + 1}", f"N must be from 1 to {MAX_SLICES}"), ("4", "expected K/N"), ("", "expected K/N"),
    ("a/4", "expected K/N"), ("1/b", "N must be a whole number"), ("-1/4", "expected K/N"), ("1/4/2", "N must be"),
    ("\uff12/4", "expected K/N"), ("\u0661/4", "expected K/N"),  # digits of other scripts are not numbers here
    ("1/" + "9" * 5000, "N must be a whole number"),  # no int() of a 5,000-digit string
    ("1e3/4", "expected K/N"), ("0x1/4", "expected K/N"), ("1/4\n--limit all", "N must be a whole number"),
    ("auto/0", "N must be from 1"), ("automatic", "expected K/N"),
])
def test_a_wrong_slice_says_what_is_allowed(text: str, says: str) -> None:
    with pytest.raises(UsageError, match="--slice") as exc:
        parse_slice(text, {})
    assert says in str(exc.value)


def test_a_pair_is_checked_like_the_text() -> None:
    assert parse_slice((2, 3), {}) == Slice(2, 3, "slice=(2, 3)")
    for bad in ((0, 3), (4, 3), (True, 3), (1, 2, 3), ("1", "2")):
        with pytest.raises(UsageError):
            parse_slice(bad, {})  # type: ignore[arg-type]


@pytest.mark.parametrize(("env", "text", "want"), [
    ({"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "3"}, "auto", (1, 3)),  # GitLab counts from 1
    ({"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "3"}, "auto", (3, 3)),
    ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "3"}, "auto/3", (2, 3)),
    ({"BUILDKITE_PARALLEL_JOB": "0", "BUILDKITE_PARALLEL_JOB_COUNT": "5"}, "auto", (1, 5)),  # Buildkite from 0
    ({"BUILDKITE_PARALLEL_JOB": "4", "BUILDKITE_PARALLEL_JOB_COUNT": "5"}, "auto", (5, 5)),
    ({"CIRCLE_NODE_INDEX": "1", "CIRCLE_NODE_TOTAL": "2"}, "auto", (2, 2)),
    ({"JOB_COMPLETION_INDEX": "0"}, "auto/4", (1, 4)),  # Kubernetes from 0, no count
    ({"JOB_COMPLETION_INDEX": "3"}, "auto/4", (4, 4)),
    ({"JOB_COMPLETION_INDEX": "2", "CI_NODE_TOTAL": "1"}, "auto/4", (3, 4)),  # GitLab sets TOTAL=1 alone
    ({"JOB_COMPLETION_INDEX": "0", "CI_NODE_INDEX": ""}, "auto/2", (1, 2)),  # empty = unset
])
def test_auto_reads_the_engine_and_its_counting(env: dict[str, str], text: str, want: tuple[int, int]) -> None:
    got = parse_slice(text, env)
    assert (got.index, got.count) == want
    assert all(f"{k}={v}" in got.source for k, v in env.items() if v and k in got.source)


@pytest.mark.parametrize(("env", "text", "says"), [
    ({}, "auto", "no job engine's slice variable is set"),
    ({"CI_NODE_TOTAL": "1"}, "auto", "no job engine's slice variable is set"),
    ({"JOB_COMPLETION_INDEX": "1"}, "auto", "give --slice auto/N, N being the Job's .spec.completions"),
    ({"JOB_COMPLETION_INDEX": "4"}, "auto/4", "JOB_COMPLETION_INDEX=4 (Kubernetes Indexed Job, counting from 0) "
                                              "is not one of 4 jobs: expected 0 to 3"),
    ({"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "3"}, "auto", "counting from 1) is not one of 3 jobs: expected 1 to 3"),
    ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "3"}, "auto/4", "CI_NODE_TOTAL=3 (GitLab CI parallel) says there are 3"),
    ({"CI_NODE_INDEX": "2"}, "auto", "CI_NODE_INDEX is set but CI_NODE_TOTAL is not"),
    ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "many"}, "auto", "CI_NODE_TOTAL='many' (GitLab CI parallel) is not"),
    ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "5000"}, "auto", "N must be from 1 to"),
    ({"JOB_COMPLETION_INDEX": "1", "CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "3"}, "auto",
     "several job engines' variables are set (JOB_COMPLETION_INDEX='1', CI_NODE_INDEX='2')"),
    ({"JOB_COMPLETION_INDEX": "x1"}, "auto/4", "JOB_COMPLETION_INDEX='x1' (Kubernetes Indexed Job) is not a job index"),
    ({"JOB_COMPLETION_INDEX": "-1"}, "auto/4", "JOB_COMPLETION_INDEX='-1'"),
    ({"JOB_COMPLETION_INDEX": "1; rm -rf /"}, "auto/4", "JOB_COMPLETION_INDEX='1; rm -rf /'"),
    ({"JOB_COMPLETION_INDEX": "\u0661"}, "auto/4", "is not a job index"),
    ({"BUILDKITE_PARALLEL_JOB": "0x1", "BUILDKITE_PARALLEL_JOB_COUNT": "4"}, "auto", "BUILDKITE_PARALLEL_JOB='0x1'"),
])
def test_auto_says_which_variable_is_wrong(env: dict[str, str], text: str, says: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_slice(text, env)
    assert says in str(exc.value)


def test_the_message_when_no_engine_is_set_names_every_engine_and_github() -> None:
    with pytest.raises(UsageError) as exc:
        parse_slice("auto", {})
    message = str(exc.value)
    for engine in ENGINES:
        assert engine.index_var in message
    assert "${{ matrix.slice }}" in message


# -- the split ----------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 8])
@pytest.mark.parametrize("hosts", [0, 1, 3, 5, 10, 40, 41, 43, 200, 1000])
def test_every_host_in_exactly_one_slice_and_sizes_within_one(hosts: int, count: int) -> None:
    everyone = names(hosts)
    split = assign(everyone, count)
    assert sorted(split) == sorted(everyone)
    assert set(split.values()) <= set(range(1, count + 1))
    sizes = [sum(1 for k in split.values() if k == part) for part in range(1, count + 1)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == hosts, sizes
    slices = [select(everyone, Slice(k, count)) for k in range(1, count + 1)]
    assert sorted(h for s in slices for h in s) == sorted(everyone)
    assert all(s == [h for h in everyone if h in set(s)] for s in slices)  # the inventory's order kept


def test_the_split_does_not_depend_on_the_order_hosts_are_given_in() -> None:
    everyone = names(300)
    shuffled = everyone[:]
    random.Random(7).shuffle(shuffled)
    assert assign(everyone, 6) == assign(shuffled, 6)


def test_every_process_computes_the_same_split_whatever_its_hash_seed() -> None:
    """Python's ``hash()`` is salted per process; a split that used it would differ here."""
    code = ("import json, sys; from sandfleet.run.slicing import assign; "
            "print(json.dumps(assign([f'h{i}' for i in range(200)] + ['ünï', 'a b', '\\udc80x'], 4)))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "random")}
    assert len(outs) == 1
    assert json.loads(outs.pop()) == assign([f"h{i}" for i in range(200)] + ["ünï", "a b", "\udc80x"], 4)


def test_a_hosts_weights_do_not_depend_on_n() -> None:
    assert weights("web1", 8)[:4] == weights("web1", 4)
    assert weights("web1", 4) != weights("web2", 4)


def moved(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(1 for host, part in before.items() if host in after and after[host] != part)


def every_nth(hosts: list[str], count: int) -> dict[str, int]:
    """The split the issue rules out: every N-th host of the sorted list."""
    return {h: i % count + 1 for i, h in enumerate(sorted(hosts))}


@pytest.mark.parametrize("count", [4, 8])
@pytest.mark.parametrize("hosts", [100, 250, 500, 1000])
def test_adding_or_removing_a_host_moves_only_a_few_others(hosts: int, count: int) -> None:
    """Over 20 random fleets each, adding or removing one host moves a handful of others (at most
    6 seen, of 1,000 with N = 8), far below the bound the issue sets (1/N of the fleet) that
    "every N-th of the sorted list" exceeds."""
    rng = random.Random(hosts * 31 + count)
    worst = 0
    for _ in range(20):
        fleet = [f"{rng.choice(['web', 'db', 'ci'])}{rng.randrange(10 ** 6)}.example.com" for _ in range(hosts)]
        fleet = list(dict.fromkeys(fleet))
        before = assign(fleet, count)
        added = assign([*fleet, "newcomer.example.com"], count)
        removed = assign(fleet[1:], count)
        worst = max(worst, moved(before, added), moved(before, removed))
    assert worst <= 8 and worst < hosts / count / 2, worst
    # The test can fail: the ruled-out split moves most hosts when one is inserted near the start.
    naive = list(dict.fromkeys(names(hosts, "m")))
    assert moved(every_nth(naive, count), every_nth([*naive, "a-new-host"], count)) > hosts / count


def test_the_slice_is_independent_of_forks(tmp_path: Path) -> None:
    inventory, playbook = local_fleet(tmp_path, 9)
    listed = [sandfleet("run", str(playbook), "-i", str(inventory), "--slice", "2/3", "--list-hosts", "-f",
                        forks).stdout for forks in ("1", "50")]
    assert listed[0] == listed[1] and "3 of the run's 9 host(s)" in listed[0]


# -- fingerprint ---------------------------------------------------------------------------------


def book(tags: tuple[str, ...] = ()) -> Any:
    return load_playbook_data([{"hosts": "all", "tasks": [{"name": "one", "exec": {"argv": ["true"]}, "tags": ["a"]},
                                                          {"name": "two", "exec": {"argv": ["true"]}}]}], "pb")


def test_the_fingerprint_changes_with_the_hosts_and_the_tasks_selected() -> None:
    pb = book()
    base = fingerprint(pb, [["a", "b"]], TagFilter(), None)
    assert base == fingerprint(book(), [["a", "b"]], TagFilter(), None) and len(base) == 16
    assert base != fingerprint(pb, [["a"]], TagFilter(), None)  # another --limit
    assert base != fingerprint(pb, [["b", "a"]], TagFilter(), None)
    assert base != fingerprint(pb, [["a", "b"]], TagFilter.from_cli(["a"], None), None)  # --tags
    assert base != fingerprint(pb, [["a", "b"]], TagFilter(), (0, 1))  # --start-at-task


# -- the command line -----------------------------------------------------------------------------


def local_fleet(tmp_path: Path, count: int, body: str | None = None) -> tuple[Path, Path]:
    hosts = "".join(f"    n{i}:\n      ansible_connection: local\n      sandfleet_os: linux\n" for i in range(count))
    inventory = tmp_path / "inv.yml"
    inventory.write_text(f"all:\n  hosts:\n{hosts}")
    playbook = tmp_path / "pb.yml"
    playbook.write_text(body or "- hosts: all\n  tasks:\n    - exec: {argv: [echo, '{{ inventory_hostname }}']}\n"
                                "      sandbox: false\n")
    return inventory, playbook


def listed_hosts(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.startswith("      ")]


def test_list_hosts_shows_each_slice_and_the_slices_cover_the_run(tmp_path: Path) -> None:
    inventory, playbook = local_fleet(tmp_path, 10)
    seen: list[str] = []
    for k in range(1, 5):  # as a Kubernetes Indexed Job gives it: JOB_COMPLETION_INDEX from 0, N on the command
        proc = sandfleet("run", str(playbook), "-i", str(inventory), "--slice", "auto/4", "--list-hosts",
                         env=clean_env(JOB_COMPLETION_INDEX=str(k - 1)))
        assert proc.returncode == 0, proc.stderr
        assert f"slice {k}/4 (Kubernetes Indexed Job: JOB_COMPLETION_INDEX={k - 1}): " in proc.stdout
        hosts = listed_hosts(proc.stdout)
        assert len(hosts) in (2, 3)
        seen += hosts
    assert sorted(seen) == [f"n{i}" for i in range(10)]
    assert not list(tmp_path.glob("**/*.json"))  # nothing ran


def test_a_wrong_slice_is_exit_64_naming_the_variable_before_anything_loads(tmp_path: Path) -> None:
    inventory, playbook = local_fleet(tmp_path, 2)
    for args, env, says in [
        (["--slice", "5/4"], clean_env(), "--slice 5/4: K must be from 1 to 4"),
        (["--slice", "auto/4"], clean_env(JOB_COMPLETION_INDEX="4"), "JOB_COMPLETION_INDEX=4"),
        (["--slice", "auto"], clean_env(), "no job engine's slice variable is set"),
    ]:
        for command in (["run", str(playbook)], ["exec", "all"]):
            tail = ["--", "true"] if command[0] == "exec" else []
            proc = sandfleet(*command, "-i", str(inventory), *args, *tail, env=env)
            assert proc.returncode == 64 and says in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr and proc.stdout == ""
    broken = tmp_path / "broken.yml"
    broken.write_text("- hosts: all\n  tasks: 3\n")
    proc = sandfleet("run", str(broken), "-i", str(inventory), "--slice", "0/2")
    assert proc.returncode == 64, proc.stderr  # the command line first, then the files


def test_a_sliced_run_runs_only_its_hosts_and_says_which_slice(tmp_path: Path) -> None:
    inventory, playbook = local_fleet(tmp_path, 5)
    ran: list[str] = []
    for k in (1, 2):
        proc = sandfleet("run", str(playbook), "-i", str(inventory), "--slice", f"{k}/2", "--allow-unsandboxed",
                         "--format", "json")
        assert proc.returncode == 0, proc.stderr
        assert f"sandfleet: slice {k}/2 (--slice {k}/2): " in proc.stderr
        results = [json.loads(line) for line in proc.stdout.splitlines()]
        hosts = [e["host"] for e in results if e["event"] == "task_result"]
        assert [e["stdout"] for e in results if e["event"] == "task_result"] == [f"{h}\n" for h in hosts]
        ran += hosts
    assert sorted(ran) == [f"n{i}" for i in range(5)]


def test_exec_takes_the_slice_too(tmp_path: Path) -> None:
    inventory, _ = local_fleet(tmp_path, 4)
    ran = []
    for k in (1, 2):
        proc = sandfleet("exec", "all", "-i", str(inventory), "--slice", f"{k}/2", "--no-sandbox",
                         "--allow-unsandboxed", "--format", "json", "--", "echo", "{{ inventory_hostname }}")
        assert proc.returncode == 0, proc.stderr
        ran += [e["stdout"].strip() for e in map(json.loads, proc.stdout.splitlines()) if e["event"] == "task_result"]
    assert sorted(ran) == ["n0", "n1", "n2", "n3"]


def test_more_slices_than_hosts_runs_nothing_exits_0_and_still_writes_its_summary(tmp_path: Path) -> None:
    inventory, playbook = local_fleet(tmp_path, 2)
    split = assign(["n0", "n1"], 5)
    empty = next(k for k in range(1, 6) if k not in split.values())
    results = tmp_path / "results"
    proc = sandfleet("run", str(playbook), "-i", str(inventory), "--slice", f"{empty}/5", "--results-dir",
                     str(results))
    assert proc.returncode == 0, proc.stderr
    assert "none falls in this slice (more slices than hosts)" in proc.stderr
    assert os.listdir(results) == ["@run.json"]
    summary = json.loads((results / "@run.json").read_text())
    assert summary["slice"]["index"] == empty and summary["assigned"] == [] and summary["targeted"] == 2


def test_run_once_warns_at_load_time_when_sliced(tmp_path: Path) -> None:
    body = ("- hosts: all\n  tasks:\n    - name: migrate\n      exec: {argv: ['true']}\n      run_once: true\n"
            "      sandbox: false\n")
    inventory, playbook = local_fleet(tmp_path, 2, body)
    sliced = sandfleet("run", str(playbook), "-i", str(inventory), "--slice", "1/2", "--list-hosts")
    assert f"{playbook}:3:7: warning: run_once with --slice 1/2: this task runs once in each slice" in sliced.stderr
    plain = sandfleet("run", str(playbook), "-i", str(inventory), "--list-hosts")
    assert "run_once" not in plain.stderr
    real = sandfleet("run", str(playbook), "-i", str(inventory), "--slice", "1/2", "--allow-unsandboxed")
    assert real.returncode == 0 and "run_once with --slice 1/2" in real.stderr, real.stderr


def test_a_config_file_cannot_set_a_standing_slice(tmp_path: Path) -> None:
    inventory, playbook = local_fleet(tmp_path, 2)
    (tmp_path / "sandfleet.yml").write_text("slice: 1/2\n")
    proc = sandfleet("run", str(playbook), "-i", str(inventory), "--list-hosts", cwd=tmp_path)
    assert proc.returncode == 65 and "unknown config key 'slice'" in proc.stderr, proc.stderr
    assert "a standing slice would silently skip most hosts" in proc.stderr


# -- the examples: Kubernetes and GitHub Actions --------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for name in ("job.yaml", "merge-job.yaml"):
        docs += [d for d in yaml.safe_load_all((ROOT / "examples" / "k8s-indexed-job" / name).read_text()) if d]
    return docs


def test_the_kubernetes_example_is_an_indexed_job_with_one_slice_per_completion() -> None:
    job, merge = k8s_documents()
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    n = spec["completions"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == n and n >= 2
    [container] = spec["template"]["spec"]["containers"]
    argv = [*container.get("command", []), *container["args"]]
    assert argv[:2] == ["sandfleet", "run"] and argv[argv.index("--slice") + 1] == f"auto/{n}"
    results = argv[argv.index("--results-dir") + 1]
    assert results == "/results/index-$(JOB_COMPLETION_INDEX)"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    # The merge reads every index's directory, by name: a missing slice fails it.
    assert (merge["apiVersion"], merge["kind"]) == ("batch/v1", "Job")
    [merger] = merge["spec"]["template"]["spec"]["containers"]
    margv = [*merger.get("command", []), *merger["args"]]
    assert margv[:2] == ["sandfleet", "merge"]
    assert [a for a in margv if a.startswith("/results/index-")] == [f"/results/index-{i}" for i in range(n)]
    assert merger["image"] == container["image"]
    # Inventory and key from a Secret (the slices only), results on one shared volume.
    for pod, secret in ((spec["template"]["spec"], True), (merge["spec"]["template"]["spec"], False)):
        volumes = pod["volumes"]
        assert any("secret" in v for v in volumes) is secret
        assert [v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v] == \
            ["sandfleet-results"]
        assert pod["containers"][0]["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
    pvc = yaml.safe_load((ROOT / "examples" / "k8s-indexed-job" / "results-pvc.yaml").read_text())
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_kubernetes_command_line_runs_here_each_index_its_own_hosts(tmp_path: Path) -> None:
    """The manifest's argv, with the Secret's and ConfigMap's paths pointed at the example's files:
    every index lists its slice, and the indexes cover the inventory once."""
    job, _ = k8s_documents()
    n = job["spec"]["completions"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    argv = [*container.get("command", []), *container["args"]][1:]
    example = str(ROOT / "examples" / "k8s-indexed-job")
    argv = [a.replace("/etc/sandfleet/job", example).replace("/etc/sandfleet/ssh", example) for a in argv]
    cut = argv.index("--results-dir")
    argv = argv[:cut] + argv[cut + 2:]
    seen: list[str] = []
    for index in range(n):
        proc = sandfleet(*argv, "--list-hosts", env=clean_env(JOB_COMPLETION_INDEX=str(index)))
        assert proc.returncode == 0, proc.stderr
        seen += listed_hosts(proc.stdout.split("play #2")[0])
    inventory = yaml.safe_load((ROOT / "examples" / "k8s-indexed-job" / "inventory.yml").read_text())
    assert sorted(seen) == sorted(inventory["all"]["children"]["runners"]["hosts"])


def test_the_github_workflow_runs_a_matrix_of_slices_then_merges_them() -> None:
    flow = yaml.safe_load((ROOT / "examples" / "github-actions" / "sandfleet-slices.yml").read_text())
    jobs = flow["jobs"]
    matrix = jobs["slice"]["strategy"]["matrix"]["slice"]
    n = len(matrix)
    assert matrix == list(range(1, n + 1)) and n >= 2
    assert jobs["slice"]["strategy"]["fail-fast"] is False  # one red slice must not cancel the others
    runs = [s["run"] for s in jobs["slice"]["steps"] if "sandfleet run" in s.get("run", "")]
    assert len(runs) == 1 and f"--slice ${{{{ matrix.slice }}}}/{n}" in runs[0]
    upload = next(s for s in jobs["slice"]["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()"
    merge = jobs["merge"]
    assert merge["needs"] == "slice" and "!cancelled()" in merge["if"]
    [command] = [s["run"] for s in merge["steps"] if "sandfleet merge" in s.get("run", "")]
    assert all(f"results/sandfleet-slice-{k}" in command for k in range(1, n + 1)), command
    assert flow["permissions"] == {"contents": "read"}


def test_the_api_takes_the_slice_as_text_or_a_pair(tmp_path: Path) -> None:
    import sandfleet

    inventory, playbook = local_fleet(tmp_path, 6)
    notes: list[str] = []
    ran = []
    for part in ((1, 3), "2/3", (3, 3)):
        result = sandfleet.run_playbook(playbook, inventory, allow_unsandboxed=True, slice=part,
                                        on_warning=notes.append)
        assert result.exit_code == 0
        ran.append(sorted(result.hosts))
    split = assign([f"n{i}" for i in range(6)], 3)
    assert ran == [sorted(h for h, k in split.items() if k == part) for part in (1, 2, 3)]
    assert [n.split(":")[1].strip() for n in notes] == ["slice 1/3 (slice=(1, 3))", "slice 2/3 (--slice 2/3)",
                                                        "slice 3/3 (slice=(3, 3))"]
    with pytest.raises(UsageError, match="K must be from 1 to 3"):
        sandfleet.run_command(["true"], inventory=inventory, slice="4/3")
