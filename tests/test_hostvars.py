"""``hostvars`` and the play's host lists (``ansible_play_hosts``, ``ansible_play_hosts_all``,
``ansible_play_batch``, ``play_hosts``), end to end through the API on local-connection hosts.

What is pinned: Ansible's meaning (another host's inventory, play and registered variables,
rendered in that host's context; a host outside the play shows its inventory's); the same values
on every host under the linear strategy, whatever order the threads run in; connection secrets
never reach a template, a host's own nor another's; an unknown host is a clear undefined error;
a dry-run shows a task reading another host's result as depending on it.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any, Optional

import pytest

import sandfleet
from sandfleet.api import TaskResult
from sandfleet.inventory import load_inventory
from support.ci import need

LOCAL = {"ansible_connection": "local"}


def inventory(tmp: Path, hosts: dict[str, dict[str, Any]], group_vars: Optional[dict[str, Any]] = None) -> str:
    path = tmp / "inv" / "hosts.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"all": {"hosts": {h: {**LOCAL, **v} for h, v in hosts.items()},
                                       "vars": group_vars or {}}}))
    return str(path)


def run(tmp: Path, playbook: str, inv: str, *, dry_run: bool = False, **kw: Any) -> tuple[int, list[TaskResult]]:
    if not dry_run:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    path = tmp / "play" / "pb.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(playbook))
    results: list[TaskResult] = []
    code = sandfleet.run_playbook(str(path), inv, dry_run=dry_run, on_event=results.append, **kw).exit_code
    return code, results


def out(results: list[TaskResult], task: str) -> dict[str, str]:
    return {r.host: r.stdout.rstrip("\n") if r.stdout else (r.message or "") for r in results if r.task == task}


def argv(results: list[TaskResult], task: str) -> dict[str, list[str]]:
    return {r.host: r.record["request"]["argv"] for r in results if r.task == task and r.record.get("request")}


HOSTS = {"web1": {"ip": "10.0.0.1", "role": "{{ inventory_hostname }}-role"},
         "web2": {"ip": "10.0.0.2", "role": "{{ inventory_hostname }}-role"},
         "db1": {"ip": "10.0.0.9"}}


def test_another_hosts_inventory_play_and_registered_variables(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: web1:web2
          vars: {greeting: "hi from {{ inventory_hostname }}"}
          tasks:
            - name: who
              exec: {argv: [echo, "{{ inventory_hostname }}"]}
              register: who
            - name: peers
              exec: {argv: [echo, "{{ hostvars['web2'].ip }}|{{ hostvars.web1.role }}|{{ hostvars['web2'].greeting }}",
                            "{{ hostvars['web1'].who.stdout }}|{{ hostvars[inventory_hostname].who.stdout }}",
                            "{{ hostvars['web2'].sandfleet_facts.os }}"]}
        """, inventory(tmp_path, HOSTS))
    assert code == 0, results
    # each variable renders in its own host's context: web1's role is web1-role wherever it is read
    assert out(results, "peers") == {"web1": "10.0.0.2|web1-role|hi from web2 web1|web1 linux",
                                     "web2": "10.0.0.2|web1-role|hi from web2 web1|web2 linux"}


def test_a_host_outside_the_play_shows_its_inventory_variables(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: web1
          vars: {only_in_play: yes}
          tasks:
            - name: db
              exec: {argv: [echo, "{{ hostvars['db1'].ip }} {{ hostvars['db1'].inventory_hostname }}",
                            "{{ 'only_in_play' in hostvars['db1'] }} {{ 'db1' in hostvars }} {{ hostvars | length }}"]}
        """, inventory(tmp_path, HOSTS))
    assert code == 0, results
    assert out(results, "db") == {"web1": "10.0.0.9 db1 False True 3"}


def test_a_result_registered_by_an_earlier_play_is_still_a_host_variable(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: db1
          tasks:
            - {name: dump, exec: {argv: [echo, dumped]}, register: dump}
        - hosts: web1
          tasks:
            - name: read
              exec: {argv: [echo, "{{ hostvars['db1'].dump.stdout }} {{ hostvars['db1'].dump is succeeded }}"]}
        """, inventory(tmp_path, HOSTS))
    assert code == 0, results
    assert out(results, "read") == {"web1": "dumped True"}


def test_linear_every_host_sees_the_earlier_tasks_results_never_the_running_ones(tmp_path: Path) -> None:
    hosts = {f"h{i}": {} for i in range(5)}
    code, results = run(tmp_path, """
        - hosts: all
          tasks:
            - {name: one, exec: {argv: [echo, "1-{{ inventory_hostname }}"]}, register: r}
            - name: two
              exec: {argv: [echo, "{% for h in ansible_play_hosts %}{{ hostvars[h].r.stdout }},{% endfor %}"]}
              register: r
            - name: three
              exec: {argv: [echo, "{% for h in ansible_play_hosts %}{{ hostvars[h].r.stdout }};{% endfor %}"]}
        """, inventory(tmp_path, hosts), forks=5)
    assert code == 0, results
    ones = ",".join(f"1-h{i}" for i in range(5)) + ","
    # task two runs on all five at once and re-registers r; every host still reads task one's
    assert set(out(results, "two").values()) == {ones}
    assert set(out(results, "three").values()) == {";".join([ones] * 5) + ";"}


def test_free_strategy_reads_what_is_there(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: web1:web2
          strategy: free
          tasks:
            - {name: one, exec: {argv: [echo, "{{ inventory_hostname }}"]}, register: r}
            - name: two
              exec: {argv: [echo, "{{ hostvars[inventory_hostname].r.stdout }}",
                            "{{ hostvars['web1'].r | default('not yet') is string }}"]}
        """, inventory(tmp_path, HOSTS))
    assert code == 0, results
    assert {h: v.split()[0] for h, v in out(results, "two").items()} == {"web1": "web1", "web2": "web2"}


def test_an_unknown_host_is_a_clear_undefined_error(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: web1
          tasks:
            - name: typo
              exec: {argv: [echo, "{{ hostvars['web3'].ip }}"]}
        """, inventory(tmp_path, HOSTS), dry_run=True)
    assert code == 2
    message = out(results, "typo")["web1"]
    assert "pb.yml:5:" in message and "hostvars['web3'] is undefined: there is no host 'web3' in the inventory" \
        in message and "did you mean 'web2'?" in message
    code, results = run(tmp_path, """
        - hosts: web1
          tasks:
            - name: missing
              exec: {argv: [echo, "{{ hostvars['web2'].nope }}"]}
              ignore_errors: true
            - name: defined
              exec: {argv: [echo, "{{ hostvars['nohost'] is defined }} {{ hostvars['web2'].nope is defined }}"]}
        """, inventory(tmp_path, HOSTS), dry_run=True)
    assert "hostvars['web2'].nope is undefined: host 'web2' has no variable 'nope'" in out(results, "missing")["web1"]
    assert argv(results, "defined") == {"web1": ["echo", "False False"]}


SECRETS = {"ansible_password": "pw-web2", "ansible_ssh_pass": "ssh-web2", "ansible_become_password": "sudo-web2"}


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_connection_secrets_reach_no_template(tmp_path: Path, secret: str) -> None:
    inv = inventory(tmp_path, {"web1": {secret: "pw-web1"}, "web2": {secret: SECRETS[secret]}})
    code, results = run(tmp_path, f"""
        - hosts: web1
          vars: {{via_var: "{{{{ {secret} }}}}"}}
          tasks:
            - {{name: other, exec: {{argv: [echo, "{{{{ hostvars['web2'].{secret} }}}}"]}}, ignore_errors: true}}
            - {{name: own, exec: {{argv: [echo, "{{{{ {secret} }}}}"]}}, ignore_errors: true}}
            - {{name: own-through-hostvars, exec: {{argv: [echo, "{{{{ hostvars.web1.{secret} }}}}"]}},
               ignore_errors: true}}
            - {{name: through-a-variable, exec: {{argv: [echo, "{{{{ via_var }}}}"]}}, ignore_errors: true}}
            - {{name: whole, exec: {{argv: [echo, "{{{{ hostvars['web2'] | to_json }}}}",
                                          "{{{{ hostvars['web2'] | list }}}}"]}}}}
            - {{name: defined, exec: {{argv: [echo, "{{{{ {secret} is defined }}}}",
                                            "{{{{ '{secret}' in hostvars.web2 }}}}"]}}}}
        """, inv, dry_run=True)
    for task in ("other", "own", "own-through-hostvars", "through-a-variable"):
        message = out(results, task)["web1"]
        assert "cannot be read by a template: it is a connection secret" in message, (task, message)
        assert "pw-web" not in message and SECRETS[secret] not in message
    whole = " ".join(argv(results, "whole")["web1"])
    assert secret not in whole and "pw-web" not in whole and "10.0.0" not in whole and '"inventory_hostname": "web2"' \
        in whole
    assert argv(results, "defined") == {"web1": ["echo", "False", "False"]}
    assert code == 0, results


def test_an_inventory_secret_may_still_refer_to_another_secret(tmp_path: Path) -> None:
    # The common Ansible spelling: the become password is the login password.
    inv = load_inventory([inventory(tmp_path, {"web1": {"ansible_password": "pw",
                                                        "ansible_become_password": "{{ ansible_password }}"}})])
    assert inv.renderer("web1").get("ansible_become_password") == "pw"
    config = inv.host_config("web1")
    assert getattr(config, "become_password", "pw") == "pw"


def test_the_sandbox_keeps_templates_away_from_the_renderer(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: web1
          tasks:
            - name: private
              exec: {argv: [echo, "{{ hostvars['web2']._renderer }}"]}
        """, inventory(tmp_path, HOSTS), dry_run=True)
    assert code == 2
    assert "unsafe" in out(results, "private")["web1"]


def test_play_host_lists_follow_failures_and_serial_batches(tmp_path: Path) -> None:
    hosts = {"a": {}, "b": {}, "c": {}, "d": {}, "e": {}}
    code, results = run(tmp_path, """
        - hosts: all
          serial: 2
          tasks:
            - name: lists
              exec: {argv: [echo, "{{ ansible_play_hosts_all | join(',') }}|{{ ansible_play_hosts | join(',') }}",
                            "{{ ansible_play_batch | join(',') }}|{{ play_hosts | join(',') }}"]}
            - name: fail b
              exec: {argv: ["false"]}
              when: inventory_hostname == 'b'
            - name: after
              exec: {argv: [echo, "{{ ansible_play_hosts | join(',') }}|{{ ansible_play_batch | join(',') }}"]}
        """, inventory(tmp_path, hosts))
    assert code == 2, results
    lists = out(results, "lists")
    assert lists["a"] == lists["b"] == "a,b,c,d,e|a,b,c,d,e a,b|a,b,c,d,e"
    assert lists["c"] == lists["d"] == "a,b,c,d,e|a,c,d,e c,d|a,c,d,e"  # b failed in the first batch
    assert lists["e"] == "a,b,c,d,e|a,c,d,e e|a,c,d,e"
    after = out(results, "after")
    assert after == {"a": "a,c,d,e|a", "c": "a,c,d,e|c,d", "d": "a,c,d,e|c,d", "e": "a,c,d,e|e"}


def test_limit_narrows_the_play_hosts(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: all
          tasks:
            - name: lists
              exec: {argv: [echo, "{{ ansible_play_hosts_all }} {{ ansible_play_batch }}"]}
        """, inventory(tmp_path, HOSTS), dry_run=True, limit="web*")
    assert code == 0
    assert argv(results, "lists")["web1"] == ["echo", "['web1', 'web2'] ['web1', 'web2']"]


def test_dry_run_shows_a_task_reading_another_hosts_result_as_depending_on_it(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: web1:web2
          vars: {leader_out: "{{ hostvars['web1'].r.stdout }}"}
          tasks:
            - {name: a, exec: {argv: [echo, x]}, register: r, when: inventory_hostname == 'web1'}
            - {name: inventory, exec: {argv: [echo, "{{ hostvars['web2'].ip }} {{ ansible_play_hosts | length }}"]}}
            - {name: direct, exec: {argv: [echo, "{{ hostvars['web1'].r.stdout }}"]}}
            - {name: through a var, exec: {argv: [echo, "{{ leader_out }}"]}}
            - {name: whole, exec: {argv: [echo, "{{ hostvars[inventory_hostname] | to_json }}"]}}
            - {name: a key, exec: {argv: [echo, "{{ hostvars['web1'][item] }}"]}, loop: [ip]}
        """, inventory(tmp_path, HOSTS), dry_run=True)
    assert code == 0, results
    assert argv(results, "inventory") == {"web1": ["echo", "10.0.0.2 2"], "web2": ["echo", "10.0.0.2 2"]}
    for task in ("direct", "through a var"):
        for message in out(results, task).values():
            assert message.startswith("depends on a result: argv reads hostvars[...].r (registered by 'a')"), message
    for task in ("whole", "a key"):
        assert all(m.startswith("depends on a result") and "reads hostvars (results registered so far: r)" in m
                   for m in out(results, task).values()), out(results, task)


def test_hostvars_without_any_registered_result_renders_in_a_dry_run(tmp_path: Path) -> None:
    code, results = run(tmp_path, """
        - hosts: all
          tasks:
            - {name: all ips, exec: {argv: [echo, "{% for h in groups['all'] %}{{ hostvars[h].ip }} {% endfor %}"]}}
        """, inventory(tmp_path, HOSTS), dry_run=True)
    assert code == 0
    assert set(map(tuple, argv(results, "all ips").values())) == {("echo", "10.0.0.1 10.0.0.2 10.0.0.9 ")}


def test_an_open_fleets_commands_see_no_other_host(tmp_path: Path) -> None:
    # sandfleet serve's caller is as untrusted as a playbook author and sends independent commands:
    # no play, no other host's variables. sandfleet exec (the operator's own command) is a play.
    inv = inventory(tmp_path, HOSTS)
    with sandfleet.open_fleet(inv, "web1", dry_run=True) as fleet:
        result = fleet.run(["echo", "{{ hostvars['db1'].ip }}"])
    assert "undefined variable 'hostvars'" in (result.hosts["web1"].tasks[0].message or "")
    result = sandfleet.run_command(["echo", "{{ hostvars['db1'].ip }} {{ ansible_play_hosts }}"], hosts="web*",
                                   inventory=inv, dry_run=True)
    assert result.hosts["web1"].tasks[0].record["request"]["argv"] == ["echo", "10.0.0.9 ['web1', 'web2']"]
