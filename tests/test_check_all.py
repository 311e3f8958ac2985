"""Issue 19: what an Ansible user's existing files need.

1. Every mistake of a playbook in one pass: one :class:`InputError` whose ``.errors`` lists them
   in file order (the first is the one a single-error load reported), printed one per line by
   ``sandfleet check`` and ``run`` (exit 65) and raised by the API.
2. Ansible keys sandfleet does not have get the sandfleet way, or "not supported".
3. ``environment:`` (play and task) merged under ``exec.env``; the operator's ``env_passthrough``
   is the only way an agent variable beyond ``INHERITED_ENV`` reaches a task.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import sandfleet
from sandfleet.cli import main
from sandfleet.errors import InputError, Mark
from sandfleet.load.playbook import load_playbook, load_playbook_data
from sandfleet.load.policies import effective, load_policy_file, read_policy
from sandfleet_agent.portable.policy import DEFAULT, Effective, PolicyError, effective_from_json, parse
from sandfleet_agent.spawn import INHERITED_ENV, task_env

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = str(ROOT / "inventory" / "localhost.yml")

MANY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: build
      shell: make -j4
    - exec: {argv: [echo, hi], env: {A: 1, B: [x]}}
      register: 1bad
- name: second
  hosts: web
  strategy: sideways
  tasks:
    - exec: {argv: [true], cwd: relative/dir, timeout: -1}
    - exec: {argv: [true]}
      become: true
"""
#: (line, col, fragment) of each mistake in MANY, in file order.
MANY_ERRORS = [
    (2, 3, "unknown play key 'gather_facts'; facts are always there"),
    (5, 7, "unknown task key 'shell'"),
    (6, 47, "env B must be a plain value"),
    (7, 17, "register must be a variable name"),
    (10, 13, "unknown strategy 'sideways'"),
    (12, 33, "cwd 'relative/dir' must be absolute"),
    (12, 56, "exec timeout must be a positive number"),
    (14, 7, "unknown task key 'become'; privilege escalation is not supported"),
]


def _cli(*argv: str) -> tuple[int, list[str]]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, err.getvalue().splitlines()


def _write(tmp_path: Path, text: str, name: str = "site.yml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- 1. every error in one pass --------------------------------------------------------------------


def test_every_mistake_of_a_file_is_reported_in_file_order(tmp_path: Path) -> None:
    path = _write(tmp_path, MANY)
    with pytest.raises(InputError) as info:
        load_playbook(path)
    err = info.value
    got = [(e.mark.line, e.mark.col) if e.mark else None for e in err.errors]
    assert got == [(line, col) for line, col, _ in MANY_ERRORS], str(err)
    for e, (_, _, fragment) in zip(err.errors, MANY_ERRORS):
        assert fragment in e.message
        assert e.mark is not None and e.mark.file == path
    # the error itself is the first mistake; str() has one line per mistake
    assert (err.message, err.mark) == (err.errors[0].message, err.errors[0].mark)
    assert str(err).splitlines() == [e.line() for e in err.errors]
    assert err.errors[4].allowed == ("linear", "free")  # each keeps its allowed values
    assert err.exit_code == 65


def test_a_single_mistake_is_still_one_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_playbook(_write(tmp_path, "- hosts: all\n  tasks:\n    - exec: {argv: []}\n"))
    assert info.value.errors == (info.value,)
    assert "\n" not in str(info.value)


def test_a_branch_whose_shape_is_broken_stops_but_the_next_play_is_checked(tmp_path: Path) -> None:
    text = ("- hosts: all\n  tasks: make test\n"              # tasks is not a list: its branch stops
            "- hosts: all\n  tasks:\n    - exec: make test\n"  # exec is a string: that task stops
            "    - exec: {argv: [true]}\n      when: []\n"
            "- just a string\n")
    with pytest.raises(InputError) as info:
        load_playbook(_write(tmp_path, text))
    lines = [(e.mark.line if e.mark else 0, e.message) for e in info.value.errors]
    assert [line for line, _ in lines] == [2, 5, 7, 8], lines
    assert "tasks must be a list" in lines[0][1]
    assert "a shell string would be parsed by a shell" in lines[1][1]
    assert "when is an empty list" in lines[2][1]
    assert "a play must be a mapping" in lines[3][1]


def test_a_misspelled_required_key_is_one_error_not_two(tmp_path: Path) -> None:
    """``host:`` for ``hosts:``, ``shell:`` for ``exec:``, ``args:`` for ``argv:``: the unknown
    key's error says what to write; "has no 'hosts'" would only repeat it."""
    text = "- host: all\n  tasks:\n    - name: x\n      shell: make\n    - exec: {args: [echo]}\n"
    with pytest.raises(InputError) as info:
        load_playbook(_write(tmp_path, text))
    messages = [e.message for e in info.value.errors]
    assert len(messages) == 3, messages
    assert not any("has no" in m for m in messages)


def test_check_prints_every_mistake_one_per_line_and_exits_65(tmp_path: Path) -> None:
    path = _write(tmp_path, MANY)
    code, err = _cli("check", path, "-i", INVENTORY)
    assert code == 65
    assert err[:-1] == [f"sandfleet: {path}:{line}:{col}: error: " + err[i].split(": error: ", 1)[1]
                        for i, (line, col, _) in enumerate(MANY_ERRORS)]
    assert all(fragment in err[i] for i, (_, _, fragment) in enumerate(MANY_ERRORS))
    assert err[-1] == f"sandfleet: {len(MANY_ERRORS)} errors"


def test_check_reports_the_inventorys_mistakes_with_the_playbooks(tmp_path: Path) -> None:
    path = _write(tmp_path, "- hosts: all\n  become: true\n  tasks: []\n")
    inv = _write(tmp_path, "all:\n  hosts:\n    h1:\n      ansible_port: nope\n  childs: {}\n", "inv.yml")
    code, err = _cli("check", path, "-i", inv)
    assert code == 65
    assert err[0].startswith(f"sandfleet: {path}:2:3: error: unknown play key 'become'")
    assert any(line.startswith(f"sandfleet: {inv}:") for line in err[1:]), err


def test_run_prints_them_all_too(tmp_path: Path) -> None:
    path = _write(tmp_path, MANY)
    code, err = _cli("run", path, "-i", INVENTORY, "--dry-run")
    assert code == 65
    assert len(err) == len(MANY_ERRORS) + 1 and err[0].startswith(f"sandfleet: {path}:2:3: error: ")


def test_the_api_raises_the_same_error(tmp_path: Path) -> None:
    path = _write(tmp_path, MANY)
    with pytest.raises(sandfleet.InputError) as info:
        sandfleet.run_playbook(path, INVENTORY, dry_run=True)
    assert len(info.value.errors) == len(MANY_ERRORS)


def test_a_playbook_built_in_code_reports_all_without_positions() -> None:
    with pytest.raises(InputError) as info:
        load_playbook_data([{"hosts": "all", "become": True, "tasks": [{"exec": {"argv": []}}]}], "api")
    assert [e.mark for e in info.value.errors] == [None, None]
    assert all(e.message.startswith("api: ") for e in info.value.errors)


def test_collect_flattens_and_keeps_the_first() -> None:
    a, b, c = (InputError(m, Mark("f", i, 1)) for i, m in enumerate("abc", 1))
    both = InputError.collect([a, InputError.collect([b, c])])
    assert both.errors == (a, b, c) and both.message == "a" and both.mark == a.mark
    assert InputError.collect([a]) is a


# --- 2. hints for Ansible keys -----------------------------------------------------------------------


@pytest.mark.parametrize(("where", "key", "value", "fragment"), [
    ("play", "become", "true", "privilege escalation is not supported"),
    ("play", "become_user", "root", "privilege escalation is not supported"),
    ("task", "become", "true", "privilege escalation is not supported"),
    ("play", "handlers", "[]", "handlers are not supported; run the follow-up as a task with when:"),
    ("task", "notify", "restart", "handlers are not supported"),
    ("play", "gather_facts", "false", "facts are always there: tasks see them as sandfleet_facts"),
    ("task", "shell", "make test | tee log", "never a shell; here: exec: {argv: [make, test, '|', tee, log]} "
                                            "(for pipes, redirection or $(...), run a shell explicitly"),
    ("task", "command", "make test", "never a shell; here: exec: {argv: [make, test]}"),
    ("task", "ansible.builtin.shell", "make", "never a shell; here: exec: {argv: [make]}"),
    ("task", "ansible.builtin.copy", "{src: a, dest: b}", "sandfleet has no modules: every task runs one command"),
    ("task", "community.general.make", "{}", "sandfleet has no modules"),
    ("task", "copy", "{src: a, dest: b}", "sandfleet has no modules"),
    ("task", "delegate_to", "localhost", "every task runs on its own host"),
    ("task", "with_fileglob", "['*.txt']", "use loop: [...]"),
    ("task", "vars", "{a: 1}", "task-level vars are not supported"),
    ("task", "block", "[]", "blocks are not supported"),
    ("play", "pre_tasks", "[]", "put these tasks under tasks:"),
    ("play", "remote_user", "deploy", "set ansible_user in the inventory"),
])
def test_ansible_keys_get_the_sandfleet_way(tmp_path: Path, where: str, key: str, value: str,
                                            fragment: str) -> None:
    if where == "play":
        text = f"- hosts: all\n  {key}: {value}\n  tasks:\n    - exec: {{argv: [true]}}\n"
        mark = (2, 3)
    else:
        text = f"- hosts: all\n  tasks:\n    - name: t\n      {key}: {value}\n"
        if key not in ("shell", "command", "ansible.builtin.shell", "ansible.builtin.copy",
                       "community.general.make", "copy"):
            text += "      exec: {argv: [true]}\n"
        mark = (4, 7)
    with pytest.raises(InputError) as info:
        load_playbook(_write(tmp_path, text))
    err = info.value
    assert len(err.errors) == 1, str(err)
    assert err.mark is not None and (err.mark.line, err.mark.col) == mark
    assert err.message.startswith(f"unknown {where} key {key!r}; ") and fragment in err.message, err.message


# --- 3. environment: and env_passthrough ------------------------------------------------------------


def test_environment_is_merged_under_exec_env(tmp_path: Path) -> None:
    text = """\
- hosts: all
  environment: {A: play, B: play, C: play, P: "{{ inventory_hostname }}"}
  tasks:
    - exec: {argv: [env], env: {A: exec}}
      environment: {A: task, B: task}
    - exec: {argv: [env]}
"""
    book = load_playbook(_write(tmp_path, text))
    first, second = book.plays[0].tasks
    assert dict(first.exec.env) == {"A": "exec", "B": "task", "C": "play", "P": "{{ inventory_hostname }}"}
    assert dict(second.exec.env) == {"A": "play", "B": "play", "C": "play", "P": "{{ inventory_hostname }}"}
    assert first.exec.env_marks["B"].line == 5 and first.exec.env_marks["C"].line == 2


@pytest.mark.parametrize(("value", "fragment"), [
    ('"A=B"', "or one template giving such a mapping, got the text 'A=B'"),
    ("[a, b]", "environment must be a mapping, got a list"),
    ("{A: [x]}", "environment A must be a plain value"),
    ("{'A=B': x}", "environment name 'A=B' is invalid"),
    ('{A: "{{ x"}', "environment A"),
])
def test_bad_environment_is_an_error_at_its_value(tmp_path: Path, value: str, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        load_playbook(_write(tmp_path, f"- hosts: all\n  tasks:\n    - exec: {{argv: [true]}}\n"
                                       f"      environment: {value}\n"))
    assert fragment in str(info.value)
    assert info.value.mark is not None and info.value.mark.line == 4


def test_environment_is_rendered_per_host_and_exec_env_wins(tmp_path: Path) -> None:
    text = """\
- hosts: all
  environment: {SF_PLAY: "on {{ inventory_hostname }}", SF_BOTH: play}
  tasks:
    - exec:
        argv: [python3, -c, "import os; print(os.environ['SF_PLAY'], os.environ['SF_BOTH'])"]
        env: {SF_BOTH: exec}
"""
    results: list[Any] = []
    run = sandfleet.run_playbook(_write(tmp_path, text), INVENTORY, on_event=results.append)
    assert run.exit_code == 0, results
    assert results[0].stdout == "on localhost exec\n"


def test_policy_env_passthrough_is_parsed_checked_and_sent_only_when_set() -> None:
    layer = parse({"env_passthrough": ["KUBECONFIG", "http_proxy", "KUBECONFIG"]}, "op")
    assert layer.env_passthrough == ("KUBECONFIG", "http_proxy")
    assert layer.to_json() == {"env_passthrough": ["KUBECONFIG", "http_proxy"]}
    assert "env_passthrough" not in json.dumps(Effective((DEFAULT,)).to_json())  # the wire as before
    assert Effective((DEFAULT,)).digest() == Effective().digest()
    for bad in (["A=B"], ["1X"], [""], [3], "KUBECONFIG"):
        with pytest.raises(PolicyError) as info:
            parse({"env_passthrough": bad}, "op")
        assert info.value.path[0] == "env_passthrough"


def test_env_passthrough_is_the_operators_and_later_layers_only_narrow() -> None:
    op = parse({"env_passthrough": ["KUBECONFIG", "http_proxy"]}, "inventory sandfleet_policy")
    assert Effective((op,)).env_passthrough == ("KUBECONFIG", "http_proxy")
    narrower = parse({"env_passthrough": ["http_proxy", "AWS_SECRET_ACCESS_KEY"]}, "/etc/sandfleet/policy.yml")
    assert Effective((op, narrower)).env_passthrough == ("http_proxy",)  # cannot add a name
    silent = parse({"network": {"max": "none"}}, "--policy p.yml")
    assert Effective((op, silent)).env_passthrough == ("KUBECONFIG", "http_proxy")  # says nothing: no change
    host_only = parse({"env_passthrough": ["KUBECONFIG"]}, "/etc/sandfleet/policy.yml")
    assert Effective((DEFAULT, host_only)).env_passthrough == ()  # the host cannot widen the operator's


def test_task_env_passes_only_the_listed_names() -> None:
    agent = {"PATH": "/bin", "KUBECONFIG": "/k", "http_proxy": "http://p:3128", "SSH_AUTH_SOCK": "/s"}
    assert "KUBECONFIG" not in INHERITED_ENV
    assert task_env({}, agent) == {"PATH": "/bin"}
    assert task_env({}, agent, ["KUBECONFIG", "NOT_SET"]) == {"PATH": "/bin", "KUBECONFIG": "/k"}
    assert task_env({"KUBECONFIG": "/mine"}, agent, ["KUBECONFIG"])["KUBECONFIG"] == "/mine"  # the task's wins


PROBE = "import os; print(os.environ.get('KUBECONFIG', '-'), os.environ.get('http_proxy', '-'))"


def _run_on_host(policy_layers: list[dict[str, Any]], host_layers: tuple[Any, ...] = ()) -> str:
    """A task sent through the wire with these operator layers, run by this host's executor."""
    from sandfleet_agent.binding.facts import probe
    from sandfleet_agent.executor import execute
    from sandfleet_agent.portable import wire
    from sandfleet_agent.portable.intent import PROFILES, SandboxIntent
    from support.ci import need

    facts = probe()
    status = facts.backend("bwrap")
    need(status is not None and status.available, "bwrap unavailable")
    request = wire.ExecRequest(id="p", argv=("python3", "-c", PROBE), sandbox=SandboxIntent(PROFILES["read-only"]),
                               policy=effective_from_json(policy_layers))
    result = execute(wire.decode_request(wire.encode_request(request)), facts, pin="bwrap", host_layers=host_layers)
    assert result.status is wire.Status.OK, result
    return result.stdout.strip()


def test_a_passthrough_variable_reaches_the_task_only_when_the_operator_lists_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/etc/kube/config")
    monkeypatch.setenv("http_proxy", "http://proxy:3128")
    inventory_policy = read_policy({"env_passthrough": ["KUBECONFIG", "http_proxy"]}, None,
                                   "inventory sandfleet_policy")
    listed = effective(inventory_policy, None, unsandboxed=False, pin=None).to_json()
    assert _run_on_host(effective(None, None, unsandboxed=False, pin=None).to_json()) == "- -"
    assert _run_on_host(listed) == "/etc/kube/config http://proxy:3128"
    # --policy narrows it; the host owner's file narrows it; neither can widen it
    (tmp_path / "p.yml").write_text("env_passthrough: [http_proxy]\n", encoding="utf-8")
    narrowed = effective(inventory_policy, load_policy_file(str(tmp_path / "p.yml")), unsandboxed=False,
                         pin=None).to_json()
    assert _run_on_host(narrowed) == "- http://proxy:3128"
    owner = parse({"env_passthrough": ["KUBECONFIG"]}, "/etc/sandfleet/policy.yml")
    assert _run_on_host(listed, (owner,)) == "/etc/kube/config -"
    assert _run_on_host(effective(None, None, unsandboxed=False, pin=None).to_json(), (owner,)) == "- -"


def test_an_inventory_env_passthrough_mistake_is_reported_at_its_line(tmp_path: Path) -> None:
    inv = _write(tmp_path, "all:\n  hosts:\n    h1:\n      ansible_connection: local\n"
                           "      sandfleet_policy:\n        env_passthrough: [KUBECONFIG, 'A B']\n", "inv.yml")
    book = _write(tmp_path, "- hosts: all\n  tasks:\n    - exec: {argv: [true]}\n")
    code, err = _cli("check", book, "-i", inv)
    assert code == 65
    assert f"{inv}:6:" in err[0] and "env_passthrough" in err[0], err


def test_inherited_env_is_documented() -> None:
    doc = (ROOT / "docs" / "sandbox.md").read_text(encoding="utf-8")
    assert "env_passthrough" in doc and all(name in doc for name in INHERITED_ENV)


def test_a_local_host_passes_through_what_the_operator_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end on a local host: the local agent is started with the listed names (and only
    those beyond its own few), so a task sees KUBECONFIG only when the inventory's policy lists it."""
    monkeypatch.setenv("KUBECONFIG", "/etc/kube/config")
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    for listed, seen in (([], ""), (["KUBECONFIG"], "/etc/kube/config")):
        policy = {"env_passthrough": listed, "unsandboxed": True} if listed else {"unsandboxed": True}
        inv = tmp_path / f"inv{len(listed)}.yml"
        inv.write_text(yaml.safe_dump({"all": {"hosts": {"here": {
            "ansible_connection": "local", "sandfleet_workspace_roots": [str(tmp_path)],
            "sandfleet_policy": policy}}}}))
        result = sandfleet.run_command(["sh", "-c", 'echo "${KUBECONFIG:-}|${SECRET_TOKEN:-}"'], inventory=str(inv),
                                       cwd=str(tmp_path))
        assert result.hosts["here"].tasks[0].stdout.strip() == f"{seen}|", result.hosts["here"].tasks[0]
