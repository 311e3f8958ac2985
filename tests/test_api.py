"""The public Python API driven with real parts: local-connection inventories written here, the real
agent and bubblewrap, the real CLI as the reference. (Over real sshd: tests/runner/test_api_ssh.py.)

Hosts ``alpha`` and ``beta`` are this machine through ``ansible_connection: local`` (one agent
each); ``gone`` is an SSH host on a loopback port where nothing listens (refused at once). Every
controller reads the ssh_config written here, never root's own.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

import sandfleet
from sandfleet.transports.local import LocalConnection
from sandfleet_agent.linux.sandbox_pool import ENTRY_NAME
from sandfleet_agent.portable.policy import DEFAULT_PROTECTED
from support import eventschema
from support.agents import local_agents, snapshot, survivors, wait_until
from support.sshd import free_port

ROOT = Path(__file__).resolve().parent.parent
#: Fields that differ between two runs of the same job by nature: when a task started and how
#: long it took. Everything else in a record (wrapper, request, policy digest, warnings, ...) is
#: the same for the same job on the same machine.
TIMING = ("started", "duration_ms")

PLAYBOOK = """\
- name: parity
  hosts: all
  tasks:
    - name: hello
      exec: {argv: [echo, "hello {{ inventory_hostname }}"]}
    - name: each
      exec: {argv: [echo, "{{ item }}"]}
      loop: [one, two]
    - name: never
      exec: {argv: [echo, never]}
      when: false
    - name: ignored failure
      exec: {argv: [sh, -c, "echo oops >&2; exit 3"]}
      ignore_errors: true
    - name: fails on beta
      exec: {argv: [sh, -c, "exit 1"]}
      when: inventory_hostname == "beta"
    - name: after
      exec: {argv: [echo, after]}
    - name: wants too much
      exec: {argv: [touch, /etc/sandfleet-api-test]}
      sandbox: {filesystem: {"/": write}}
"""


@dataclass
class Job:
    """A workspace, an inventory and an ssh_config in one directory."""

    dir: Path
    inventory: Path
    ssh_config: Path
    workspace: Path

    def playbook(self, text: str = PLAYBOOK) -> Path:
        path = self.dir / "pb.yml"
        path.write_text(text)
        return path


def make_job(base: Path, policy: str = "", gone: bool = True) -> Job:
    """``alpha`` and ``beta`` (local), and ``gone`` (SSH, refused) unless ``gone=False``."""
    ws = base / "ws"
    ws.mkdir()
    for name in DEFAULT_PROTECTED:  # a first sandbox would otherwise add mount points: same wrapper every run
        (ws / name).mkdir(exist_ok=True)
    lines = ["all:", "  vars:", "    sandfleet_os: linux", f"    sandfleet_workspace_roots: [{json.dumps(str(ws))}]"]
    lines += [f"    {line}" for line in policy.splitlines()]
    lines += ["  hosts:", "    alpha: {ansible_connection: local}", "    beta: {ansible_connection: local}"]
    if gone:
        lines.append(f"    gone: {{ansible_host: 127.0.0.1, ansible_port: {free_port('127.0.0.1')}, ansible_user: x}}")
    inventory = base / "inv.yml"
    inventory.write_text("\n".join(lines) + "\n")
    ssh_config = base / "ssh_config"
    ssh_config.write_text(f"Host *\n    UserKnownHostsFile {base / 'known_hosts'}\n    IdentitiesOnly yes\n")
    return Job(base, inventory, ssh_config, ws)


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return make_job(tmp_path)


@pytest.fixture(autouse=True)
def new_agents() -> Iterator[Callable[[], list[int]]]:
    """The local agents this test started that still run (whatever ran before it is not counted);
    no test here may leave one behind."""
    older = set(local_agents())

    def mine() -> list[int]:
        return sorted(set(local_agents()) - older)

    yield mine
    assert wait_until(lambda: not mine()), mine()


@dataclass
class CliRun:
    code: int
    events: list[dict[str, Any]]  # run_start first


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Job, Path, CliRun]:
    """The reference: ``python -m sandfleet run PB -i INV --format json``, once for the module."""
    job = make_job(tmp_path_factory.mktemp("parity"))
    pb = job.playbook()
    proc = subprocess.run([sys.executable, "-m", "sandfleet", "run", str(pb), "-i", str(job.inventory),
                           "--format", "json", "--ssh-config", str(job.ssh_config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    eventschema.parse(proc.stdout)  # every line valid against the schema, run_start once and first
    return job, pb, CliRun(proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()])


def untimed(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in TIMING}


def per_host(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Task records by host, each host's in the order it ran them (hosts interleave freely)."""
    hosts: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        hosts.setdefault(r["host"], []).append(untimed(r))
    return hosts


def task_records(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "task_result"]


def once_per_task(tasks: tuple[sandfleet.TaskResult, ...]) -> list[tuple[sandfleet.TaskResult, bool]]:
    """A looped task as the recap counts it (Ansible's rule): once, as its worst item, changed
    when an item changed; with whether it changed."""
    s = sandfleet.TaskStatus
    groups: list[list[sandfleet.TaskResult]] = []
    for t in tasks:
        last = groups[-1][-1].record if groups else {}
        if "item" in t.record and "item" in last and last["task"] == t.record["task"]:
            groups[-1].append(t)
        else:
            groups.append([t])
    worst_first = [lambda t: t.status is s.DENIED, lambda t: t.status is s.SANDBOX_UNAVAILABLE,
                   lambda t: not t.ignored and t.status not in (s.OK, s.SKIPPED), lambda t: t.ignored,
                   lambda t: t.status is s.OK, lambda t: True]
    picked = [next(t for rule in worst_first for t in group if rule(t)) for group in groups]
    return [(t, t.status is s.OK and any(u.changed for u in group)) for t, group in zip(picked, groups)]


def tally(host: sandfleet.HostResult) -> dict[str, int]:
    """The recap's counters for one host, recomputed from its results (a looped task counts once)."""
    s = sandfleet.TaskStatus
    tasks = [t for t, _ in once_per_task(host.tasks)]
    return {"ok": sum(t.status is s.OK for t in tasks), "changed": sum(c for _, c in once_per_task(host.tasks)),
            "failed": sum(t.status in (s.FAILED, s.TIMEOUT, s.ERROR) and not t.ignored for t in tasks),
            "unreachable": int(host.unreachable is not None),
            "sandbox_unavailable": sum(t.status is s.SANDBOX_UNAVAILABLE for t in tasks),
            "denied": sum(t.status is s.DENIED for t in tasks), "skipped": sum(t.status is s.SKIPPED for t in tasks),
            "ignored": sum(t.ignored for t in tasks), "cancelled": sum(t.status is s.CANCELLED for t in tasks)}


# --- 1 and 7: the API is the command line --------------------------------------------------------


def test_run_playbook_records_exit_code_and_recap_equal_the_cli_json(parity: tuple[Job, Path, CliRun]) -> None:
    job, pb, cli = parity
    seen: list[sandfleet.TaskResult] = []
    result = sandfleet.run_playbook(pb, inventory=job.inventory, ssh_config=str(job.ssh_config), on_event=seen.append)

    cli_tasks = task_records(cli.events)
    # The job is what it claims to be: every kind of outcome, a loop, and the timing fields present.
    assert {r["status"] for r in cli_tasks} == {"ok", "failed", "skipped", "denied"}, cli.events
    assert [r.get("item") for r in cli_tasks if r["host"] == "alpha" and r["task"] == "each"] == ["one", "two"]
    assert all(set(TIMING) <= set(r) for r in cli_tasks if r["status"] in ("ok", "failed"))

    assert per_host([r.to_json() for r in seen]) == per_host(cli_tasks)
    for r in seen:  # the typed fields say what the record says (``task`` as shown: with its loop item)
        rec = r.to_json()
        assert (r.host, r.status, r.rc, r.stdout, r.backend, r.changed) == (
            rec["host"], rec["status"], rec.get("rc"), rec.get("stdout", ""), rec.get("backend"), rec["changed"])
        assert r.task == (f"{rec['task']} (item={rec['item']})" if "item" in rec else rec["task"])

    assert result.exit_code == cli.code == 2 | 4 | 16
    recap = cli.events[-1]
    assert recap["event"] == "recap"
    assert {h: tally(r) for h, r in result.hosts.items()} == recap["hosts"]
    assert result.aborted == f"{recap['aborted']['play']}: {recap['aborted']['reason']}"
    unreachable = {e["host"]: e["message"] for e in cli.events if e["event"] == "host_unreachable"}
    assert {h: r.unreachable for h, r in result.hosts.items() if r.unreachable} == unreachable == {
        "gone": unreachable["gone"]}
    assert list(result.hosts) == ["alpha", "beta", "gone"]  # inventory order


def test_to_json_is_plain_json_and_a_copy(parity: tuple[Job, Path, CliRun]) -> None:
    job, pb, _ = parity
    result = sandfleet.run_playbook(pb, inventory=job.inventory, ssh_config=str(job.ssh_config), limit="alpha")
    first = result.hosts["alpha"].tasks[0]
    record = first.to_json()
    assert json.loads(json.dumps(record)) == record  # lists, not tuples; str, not enums
    assert type(record["status"]) is str and type(record["wrapper"]) is list
    record["wrapper"].clear()
    assert first.to_json()["wrapper"], "to_json() handed out the frozen result's own list"


def test_on_event_once_per_result_and_output_json_prints_the_cli_events(parity: tuple[Job, Path, CliRun]) -> None:
    job, pb, cli = parity
    seen: list[sandfleet.TaskResult] = []
    out = io.StringIO()
    result = sandfleet.run_playbook(pb, inventory=job.inventory, ssh_config=str(job.ssh_config),
                                    on_event=seen.append, output=out, format="json")

    events = [json.loads(line) for line in out.getvalue().splitlines()]
    eventschema.parse(out.getvalue())
    # once per task result: as many calls as records, each result object once, the same objects as the result's
    assert len(seen) == len(task_records(events)) == len(task_records(cli.events)) == 14
    assert len({id(r) for r in seen}) == len(seen)
    assert sorted(map(id, seen)) == sorted(id(t) for h in result.hosts.values() for t in h.tasks)
    for host, results in result.hosts.items():
        assert [id(t) for t in results.tasks] == [id(t) for t in seen if t.host == host]

    # the same event stream as the CLI: run_start first, the recap last, the same unreachable hosts and
    # the same records per host (hosts interleave differently from run to run)
    assert events[0] == cli.events[0] == {"event": "run_start", "sandfleet": sandfleet.__version__, "schema": 1,
                                          "dry_run": False}
    assert events[-1] == cli.events[-1]
    assert sorted(e["event"] for e in events) == sorted(e["event"] for e in cli.events)
    assert [e for e in events if e["event"] == "host_unreachable"] == [
        e for e in cli.events if e["event"] == "host_unreachable"]
    assert per_host(task_records(events)) == per_host(task_records(cli.events))
    assert per_host(task_records(events)) == per_host([r.to_json() for r in seen])


# --- 2: an unreachable host is a result ---------------------------------------------------------


def test_run_command_with_an_unreachable_host_returns_results_for_the_others(job: Job) -> None:
    result = sandfleet.run_command(["echo", "hi {{ inventory_hostname }}"], inventory=job.inventory,
                                   ssh_config=str(job.ssh_config))
    assert result.exit_code == 4 and result.exit_code & 4 and not result.ok
    assert list(result.hosts) == ["alpha", "beta", "gone"]
    for name in ("alpha", "beta"):
        host = result.hosts[name]
        assert host.ok and host.unreachable is None
        assert [(t.status, t.rc, t.stdout, t.backend) for t in host.tasks] == [("ok", 0, f"hi {name}\n", "bwrap")]
    gone = result.hosts["gone"]
    assert gone.tasks == () and not gone.ok
    assert gone.unreachable is not None and "Connection refused" in gone.unreachable, gone.unreachable


# --- 3: an open fleet keeps one agent per host ----------------------------------------------------


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every LocalConnection.start (one per agent started), by host name."""
    calls: list[str] = []
    real = LocalConnection.start

    def start(self: LocalConnection, init: Any) -> Any:
        calls.append(self.host)
        return real(self, init)

    monkeypatch.setattr(LocalConnection, "start", start)
    return calls


def test_open_fleet_runs_50_commands_on_one_agent_per_host(tmp_path: Path, starts: list[str],
                                                           new_agents: Callable[[], list[int]]) -> None:
    job = make_job(tmp_path, gone=False)
    assert new_agents() == []
    seen_agents = []
    with sandfleet.open_fleet(job.inventory, allow_unsandboxed=True) as fleet:
        assert fleet.hosts == ("alpha", "beta")
        assert new_agents() == [] and starts == []  # agents start on a host's first command
        for i in range(50):
            result = fleet.run(["echo", f"run {i} on {{{{ inventory_hostname }}}}"])
            assert result.exit_code == 0, result
            for name in fleet.hosts:
                [task] = result.hosts[name].tasks
                assert task.stdout == f"run {i} on {name}\n"
                # From its second task on, a host runs the same policy in the persistent sandbox its
                # agent keeps: a fresh agent per command would start a fresh sandbox every time.
                assert (ENTRY_NAME in task.to_json()["wrapper_files"]) == (i > 0), (i, task.to_json())
            seen_agents.append(new_agents())
        agents = seen_agents[0]
        assert len(agents) == 2 and all(a == agents for a in seen_agents)
        assert sorted(starts) == ["alpha", "beta"]

        # An unsandboxed command's parent is the agent itself: the same processes found above.
        ppid = fleet.run(["sh", "-c", "echo $PPID"], sandbox=False)
        assert sorted(int(h.tasks[0].stdout) for h in ppid.hosts.values()) == agents

        only_beta = fleet.run(["echo", "x"], hosts="beta")
        assert list(only_beta.hosts) == ["beta"]
        with pytest.raises(sandfleet.InputError, match="not one string"):
            fleet.run("echo x")  # a str is a Sequence[str] to a type checker: refused at run time
        assert sorted(starts) == ["alpha", "beta"] and new_agents() == agents
    assert wait_until(lambda: not survivors(snapshot(agents)))


def test_open_fleet_closes_every_agent_and_sandbox_when_the_block_raises(
        tmp_path: Path, new_agents: Callable[[], list[int]]) -> None:
    job = make_job(tmp_path, gone=False)
    with pytest.raises(RuntimeError, match="stop here"), sandfleet.open_fleet(job.inventory) as fleet:
        for _ in range(2):  # the second runs in (and leaves up) each host's persistent sandbox
            assert fleet.run(["true"]).ok
        agents = new_agents()
        procs = snapshot(agents)
        assert len(agents) == 2
        assert any(b"bwrap" in line for line in survivors(procs).values()), "no persistent sandbox to clean up"
        raise RuntimeError("stop here")
    assert wait_until(lambda: not survivors(procs)), survivors(procs)
    assert new_agents() == []
    pgrep = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "sandfleet_agent.agent"], capture_output=True,
                           text=True)
    assert not set(map(int, pgrep.stdout.split())) & set(agents), pgrep.stdout


def test_a_raising_on_event_stops_the_run_and_leaves_no_agent(job: Job, new_agents: Callable[[], list[int]]
                                                              ) -> None:
    def boom(result: sandfleet.TaskResult) -> None:
        raise LookupError("from on_event")

    with pytest.raises(LookupError, match="from on_event"):
        sandfleet.run_command(["true"], inventory=job.inventory, hosts="alpha:beta", on_event=boom)
    assert wait_until(lambda: not new_agents())


# --- 4: mistakes are InputErrors that say what is allowed ----------------------------------------


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"profile": "nope"}, "workspace"),
    ({"network": "some"}, "full"),
    ({"network": 42}, "full"),
    ({"network": None}, "full"),
    ({"limits": {"memory": "lots"}}, "512M"),
    ({"limits": {"bogus": 1}}, "pids"),
    ({"limits": {"pids": 0}}, "positive"),
    ({"filesystem": {"relative/path": "read"}}, "/absolute/path"),
    ({"filesystem": {"/x": "execute"}}, "deny"),
    ({"filesystem": {"C:foo": "read"}}, "C:\\windows\\path"),  # drive-relative: not a path of any host
    ({"filesystem": {"\\\\server": "read"}}, "\\\\server\\share\\path"),  # UNC without its share
    ({"workspace_roots": ["rel"]}, "/absolute/path"),
])
def test_a_wrong_sandbox_is_an_input_error_saying_what_is_allowed(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(sandfleet.InputError) as caught:
        sandfleet.Sandbox(**kwargs)
    err = caught.value
    assert isinstance(err, sandfleet.SandfleetError) and err.exit_code == 65
    assert err.message.startswith("Sandbox(...): ")
    assert says in err.allowed or says in err.message, (str(err), err.allowed)


def test_a_right_sandbox_is_the_playbook_block() -> None:
    assert sandfleet.Sandbox(network=["pypi.org"]).as_block()["network"] == {"allow": ["pypi.org"]}
    # The playbook's {allow, deny} form (not in the annotation): passed as written, not read as a list of its keys.
    mapping = sandfleet.Sandbox(network={"allow": ["pypi.org"], "deny": ["evil.pypi.org"]})  # type: ignore[arg-type]
    assert mapping.as_block()["network"] == {"allow": ["pypi.org"], "deny": ["evil.pypi.org"]}
    windows = sandfleet.Sandbox(filesystem={"C:\\Users\\ci": "read"})  # portable: a Windows host may bind it
    assert windows.as_block()["filesystem"] == {"C:\\Users\\ci": "read"}


@pytest.mark.parametrize(("argv", "says"), [
    ("echo hi", "not one string"),
    (b"echo hi", "not one string"),
    (["echo", 1], "argv item 2 must be a string, got int 1"),
    (["echo", True], "argv item 2 must be a string, got bool"),  # YAML would make it 'true'
    (["echo", b"x"], "argv item 2 must be a string, got bytes"),  # YAML would make it base64 'eA=='
    (["echo", None], "argv item 2 must be a string, got NoneType"),
    (["echo", ["x"]], "argv item 2"),
    ([], "argv is empty"),
])
def test_a_wrong_command_is_refused_before_anything_runs(job: Job, starts: list[str], argv: Any, says: str) -> None:
    with pytest.raises(sandfleet.InputError) as caught:
        sandfleet.run_command(argv, inventory=job.inventory, ssh_config=str(job.ssh_config))
    assert says in str(caught.value)
    assert starts == []


def test_env_values_must_be_strings(job: Job) -> None:
    with pytest.raises(sandfleet.InputError, match="env 'N' must map a string to a string"):
        sandfleet.run_command(["env"], env={"N": 1}, inventory=job.inventory, dry_run=True)  # type: ignore[dict-item]


def test_forks_must_be_positive(job: Job) -> None:
    with pytest.raises(sandfleet.UsageError, match="forks"):
        sandfleet.run_command(["true"], inventory=job.inventory, forks=0)


# --- 5: what the policy or the host refuses is a result ------------------------------------------

POLICY = """\
sandfleet_policy:
  filesystem: {":workspace_roots": write, ":tmpdir": write, ":root": read}
"""


@pytest.fixture
def policed(tmp_path: Path) -> Job:
    return make_job(tmp_path, policy=POLICY, gone=False)


def test_a_sandbox_beyond_the_policy_is_denied_as_a_result(policed: Job, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    result = sandfleet.run_command(["touch", str(outside)], inventory=policed.inventory, hosts="alpha",
                                   sandbox=sandfleet.Sandbox(filesystem={"/": "write"}))
    assert result.exit_code == 16
    [task] = result.hosts["alpha"].tasks
    assert (task.status, task.rc, task.backend) == ("denied", None, None)
    assert task.status.refused and not result.hosts["alpha"].ok
    assert "inventory sandfleet_policy" in (task.message or "") and task.to_json()["policy_sources"] == [
        "inventory sandfleet_policy"]
    assert not outside.exists()


def test_unsandboxed_needs_consent(policed: Job, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    argv = ["touch", str(outside)]
    refused = sandfleet.run_command(argv, inventory=policed.inventory, hosts="alpha", sandbox=False)
    [task] = refused.hosts["alpha"].tasks
    assert refused.exit_code == 16 and task.status == "denied" and "unsandboxed" in (task.message or "")
    assert not outside.exists()

    allowed = sandfleet.run_command(argv, inventory=policed.inventory, hosts="alpha", sandbox=False,
                                    allow_unsandboxed=True)
    [task] = allowed.hosts["alpha"].tasks
    assert allowed.exit_code == 0 and task.status == "ok"
    assert task.to_json()["request"]["sandbox"] is None
    assert outside.exists()  # outside the workspace: only a task without a sandbox could write it


def test_a_windows_path_on_a_linux_host_is_a_result(job: Job) -> None:
    result = sandfleet.run_command(["true"], inventory=job.inventory, hosts="alpha",
                                   sandbox=sandfleet.Sandbox(filesystem={"C:\\Users\\ci": "read"}))
    [task] = result.hosts["alpha"].tasks
    assert result.exit_code == 8 and task.status == "sandbox_unavailable"
    assert "is a Windows path and this host runs linux" in (task.message or ""), task.message


# --- 6: a dry-run touches no host ---------------------------------------------------------------


def test_dry_run_renders_every_host_without_reaching_any(tmp_path: Path, starts: list[str],
                                                         new_agents: Callable[[], list[int]]) -> None:
    job = make_job(tmp_path)
    with job.inventory.open("a") as f:
        f.write("    nowhere: {ansible_host: no-such-host.invalid, ansible_user: x}\n")
    seen: list[sandfleet.TaskResult] = []
    result = sandfleet.run_command(["echo", "hi"], inventory=job.inventory, ssh_config=str(job.ssh_config),
                                   dry_run=True, on_event=seen.append)
    assert result.exit_code == 0
    assert list(result.hosts) == ["alpha", "beta", "gone", "nowhere"] == [r.host for r in seen]
    for host in result.hosts.values():
        assert host.unreachable is None
        [task] = host.tasks
        record = task.to_json()
        assert record["dry_run"] is True and task.message == "dry-run: not executed"
        assert (task.status, task.rc, task.backend) == ("ok", None, "bwrap")
        wrapper = record["wrapper"]
        assert os.path.basename(wrapper[0]) == "bwrap" and wrapper[-2:] == ["echo", "hi"]
        assert ["--bind", str(job.workspace), str(job.workspace)] == wrapper[wrapper.index("--bind"):][:3]
    assert starts == [] and new_agents() == []


def test_dry_run_shows_the_same_refusals(policed: Job, starts: list[str]) -> None:
    result = sandfleet.run_command(["true"], inventory=policed.inventory, dry_run=True,
                                   sandbox=sandfleet.Sandbox(filesystem={"/": "write"}))
    assert result.exit_code == 16 and {t.status for h in result.hosts.values() for t in h.tasks} == {"denied"}
    assert starts == []
