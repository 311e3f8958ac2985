"""``group_vars/`` and ``host_vars/`` beside the playbook, as Ansible loads them, and what they may
not do: the playbook's folder is the playbook author's, so nothing in it (nor in a play's
``vars:``) may set how a host is reached, as whom, or under which walls, directly or through a
variable an inventory template reads."""

from __future__ import annotations

import io
import json
import os
import textwrap
from pathlib import Path
from typing import Any, Optional

import pytest

import sandfleet
from sandfleet.api import TaskResult
from sandfleet.cli import main
from sandfleet.inventory import load_inventory


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def layout(tmp: Path, host_extra: Optional[dict[str, Any]] = None) -> tuple[Path, Path]:
    """An inventory in inv/ and a playbook folder in play/, each with its own vars directories."""
    hosts = {"web1": {"ansible_connection": "local", "d": "inv-host", **(host_extra or {})},
             "db1": {"ansible_connection": "local"}}
    inv = write(tmp / "inv" / "hosts.yml", json.dumps({"all": {"children": {
        "web": {"hosts": {"web1": hosts["web1"]}}, "db": {"hosts": {"db1": hosts["db1"]}}}}}))
    write(tmp / "inv" / "group_vars" / "all.yml", "a: inv-all\n")
    write(tmp / "inv" / "group_vars" / "web.yml", "b: inv-web\nc: inv-web\n")
    write(tmp / "inv" / "host_vars" / "web1.yml", "e: inv-hv\n")
    return inv, tmp / "play"


def run(playbook: Path, inv: Path, **kw: Any) -> tuple[int, list[TaskResult]]:
    results: list[TaskResult] = []
    code = sandfleet.run_playbook(str(playbook), str(inv), dry_run=True, on_event=results.append, **kw).exit_code
    return code, results


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(args), out, err), out.getvalue(), err.getvalue()


SHOW = 'exec: {argv: [echo, "{{ a }} {{ b }} {{ c }} {{ d }} {{ e }} {{ f }} {{ g }} {{ h }}"]}'


def test_the_playbooks_vars_sit_just_above_the_inventorys_at_each_level(tmp_path: Path) -> None:
    inv, play = layout(tmp_path)
    write(play / "group_vars" / "all.yml", "a: pb-all\nb: pb-all\nf: pb-all\ng: pb-all\nh: pb-all\n")
    write(play / "group_vars" / "web" / "10-main.yml", "c: pb-web\nd: pb-web\n")
    write(play / "group_vars" / "web" / "20-more.json", '{"h": "pb-web-json"}')
    write(play / "group_vars" / "nosuchgroup.yml", "a: never\n")
    write(play / "host_vars" / "web1.yml", "e: pb-hv\nf: pb-hv\n")
    pb = write(play / "site.yml", f"""
        - hosts: web1
          vars: {{g: play}}
          tasks:
            - {SHOW}
        """)
    code, results = run(pb, inv, extra_vars={"h": "extra"})
    assert code == 0, [r.message for r in results]
    # a: playbook all > inventory all; b: inventory group > playbook all; c: playbook group > inventory
    # group; d: the inventory's own host var > any group's; e: playbook host_vars > inventory host_vars;
    # f: host_vars > group_vars; g: play vars > all of them; h: -e over everything
    assert results[0].record["request"]["argv"] == ["echo", "pb-all inv-web pb-web inv-host pb-hv pb-hv play extra"]
    code, results = run(pb, inv)
    assert results[0].record["request"]["argv"][1].endswith(" pb-web-json")


def test_another_hosts_hostvars_include_the_playbooks_vars(tmp_path: Path) -> None:
    inv, play = layout(tmp_path)
    write(play / "group_vars" / "db.yml", "port: 5432\n")
    pb = write(play / "site.yml", """
        - hosts: web1
          tasks:
            - exec: {argv: [echo, "{{ hostvars['db1'].port }}"]}
        """)
    code, results = run(pb, inv)
    assert code == 0 and results[0].record["request"]["argv"] == ["echo", "5432"]


def test_the_inventory_listing_never_shows_them(tmp_path: Path) -> None:
    inv, play = layout(tmp_path)
    write(play / "group_vars" / "all.yml", "a: pb-all\n")
    code, out, _ = cli("inventory", "-i", str(inv), "--host", "web1")
    assert code == 0 and json.loads(out)["a"] == "inv-all"


OPERATOR_KEYS = [
    ("sandfleet_allow_unsandboxed", "true"),
    ("ansible_connection", "local"),
    ("ansible_host", "evil.example"),
    ("ansible_port", "2222"),
    ("ansible_user", "root"),
    ("ansible_become", "true"),
    ("ansible_become_user", "root"),
    ("ansible_python_interpreter", "/tmp/evil/python"),
    ("ansible_ssh_common_args", "-o ProxyCommand=evil"),
    ("sandfleet_policy", "{unsandboxed: true}"),
    ("sandfleet_workspace_roots", "[/]"),
    ("sandfleet_network_resolve", "{pypi.org: 10.0.0.66}"),
    ("sandfleet_sandbox", "landlock"),
]


@pytest.mark.parametrize(("key", "value"), OPERATOR_KEYS)
@pytest.mark.parametrize("where", ["group_vars/all.yml", "group_vars/web.yml", "host_vars/web1.yml",
                                   "group_vars/all/10-x.yml"])
def test_the_playbooks_folder_may_not_set_what_the_operator_decides(tmp_path: Path, where: str, key: str,
                                                                     value: str) -> None:
    inv, play = layout(tmp_path)
    bad = write(play / where, f"fine: 1\n{key}: {value}\n")
    pb = write(play / "site.yml", "- hosts: all\n  tasks:\n    - exec: {argv: [touch, ran]}\n      sandbox: false\n")
    for command in (["run", str(pb), "-i", str(inv), "--allow-unsandboxed"], ["check", str(pb), "-i", str(inv)]):
        code, out, err = cli(*command)
        assert code == 65, (out, err)
        assert f"{bad}:2:1: error: {key!r} is a " in err
        assert "which only the operator decides: set it in the inventory or with -e" in err
        assert "ok" not in out and "changed" not in out  # nothing ran
        assert "play " not in out  # check stops before its play lines, as for any invalid file
    assert not (tmp_path / "ran").exists()


def test_all_the_refused_keys_of_a_file_are_listed_at_once(tmp_path: Path) -> None:
    inv, play = layout(tmp_path)
    bad = write(play / "group_vars" / "all.yml", "sandfleet_allow_unsandboxed: true\nok: 1\nansible_connection: ssh\n"
                                                   "ansible_host: evil\n")
    pb = write(play / "site.yml", "- hosts: all\n  tasks:\n    - exec: {argv: [echo]}\n")
    code, _, err = cli("run", str(pb), "-i", str(inv))
    assert code == 65
    assert [line.split(": error:")[0] for line in err.splitlines() if "error:" in line] == [
        f"sandfleet: {bad}:1:1", f"sandfleet: {bad}:3:1", f"sandfleet: {bad}:4:1"]


def test_a_template_in_the_inventory_never_reads_the_playbooks_vars_for_a_host_setting(tmp_path: Path) -> None:
    # The inventory computes a setting from a variable the playbook's folder could also set:
    # the host's settings come from the inventory alone, so the playbook cannot flip it.
    inv, play = layout(tmp_path, {"sandfleet_allow_unsandboxed": "{{ allow_bare }}", "ansible_host": "{{ addr }}"})
    write(tmp_path / "inv" / "group_vars" / "all.yml", "allow_bare: false\naddr: 10.0.0.1\n")
    write(play / "group_vars" / "all.yml", "allow_bare: true\naddr: evil.example\n")
    pb = write(play / "site.yml", """
        - hosts: web1
          tasks:
            - name: shows
              exec: {argv: [echo, "{{ allow_bare }} {{ ansible_host }}"]}
            - name: bare
              exec: {argv: [touch, ran]}
              sandbox: false
        """)
    code, results = run(pb, inv)
    assert [r.status.value for r in results] == ["ok", "denied"], [r.message for r in results]
    assert code == 16
    assert results[0].record["request"]["argv"] == ["echo", "True evil.example"]  # templates see it, the host does not
    beside = load_inventory([str(inv)]).beside_playbook(str(play))
    config = beside.host_config("web1")
    assert (config.allow_unsandboxed, config.address) == (False, "10.0.0.1")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("key", ["sandfleet_allow_unsandboxed", "ansible_connection", "ansible_host",
                                 "ansible_become_password", "sandfleet_pipelining"])
def test_a_plays_vars_may_not_set_them_either(tmp_path: Path, key: str) -> None:
    inv, play = layout(tmp_path)
    pb = write(play / "site.yml", f"- hosts: all\n  vars:\n    ok: 1\n    {key}: x\n  tasks:\n"
                                  "    - exec: {argv: [echo]}\n")
    code, _, err = cli("check", str(pb), "-i", str(inv))
    assert code == 65
    assert f"{pb}:4:5: error: {key!r} is a " in err


def test_a_folder_that_is_also_the_inventorys_is_the_operators(tmp_path: Path) -> None:
    write(tmp_path / "hosts.yml", "all:\n  hosts:\n    web1:\n")
    write(tmp_path / "group_vars" / "all.yml", "ansible_connection: local\nwhere: here\n")
    pb = write(tmp_path / "site.yml", '- hosts: all\n  tasks:\n    - exec: {argv: [echo, "{{ where }}"]}\n')
    code, results = run(pb, tmp_path / "hosts.yml")
    assert code == 0 and results[0].record["request"]["argv"] == ["echo", "here"]


def test_a_broken_file_beside_the_playbook_stops_the_run_at_its_line(tmp_path: Path) -> None:
    inv, play = layout(tmp_path)
    bad = write(play / "host_vars" / "web1.yml", "a: [1\n")
    pb = write(play / "site.yml", "- hosts: all\n  tasks:\n    - exec: {argv: [echo]}\n")
    code, out, err = cli("run", str(pb), "-i", str(inv))
    assert code == 65 and f"{bad}:" in err and out == ""


@pytest.mark.parametrize("link", ["group_vars/all.yml", "group_vars/web/creds.yml", "group_vars"])
def test_a_vars_file_beside_the_playbook_may_not_lead_out_of_its_folder(tmp_path: Path, link: str) -> None:
    # The playbook author symlinks an operator's YAML file (~/.kube/config has tokens) into the
    # playbook's folder, to print it from a template: refused before anything is read.
    inv, play = layout(tmp_path)
    secret = write(tmp_path / "home" / ".kube" / "config", "users: [{token: s3cret}]\n")
    target = secret if link != "group_vars" else secret.parent
    if link == "group_vars":
        (secret.parent / "all.yml").symlink_to(secret)
    (play / link).parent.mkdir(parents=True, exist_ok=True)
    (play / link).symlink_to(target)
    pb = write(play / "site.yml", '- hosts: all\n  tasks:\n    - exec: {argv: [echo, "{{ users }}"]}\n')
    code, out, err = cli("run", str(pb), "-i", str(inv))
    assert code == 65, (out, err)
    assert "outside the playbook's folder" in err and "s3cret" not in out + err


def test_symlinks_inside_the_folder_and_loops_are_fine(tmp_path: Path) -> None:
    inv, play = layout(tmp_path)
    write(play / "shared" / "common.yml", "a: shared\n")
    (play / "group_vars" / "web").mkdir(parents=True)
    (play / "group_vars" / "web" / "common.yml").symlink_to(play / "shared" / "common.yml")
    (play / "group_vars" / "web" / "loop").symlink_to(play / "group_vars" / "web")
    pb = write(play / "site.yml", '- hosts: web1\n  tasks:\n    - exec: {argv: [echo, "{{ a }}"]}\n')
    code, results = run(pb, inv)
    assert code == 0 and results[0].record["request"]["argv"] == ["echo", "shared"]


def test_a_fifo_beside_the_playbook_is_refused_not_waited_on(tmp_path: Path) -> None:
    inv, play = layout(tmp_path)
    (play / "host_vars").mkdir(parents=True)
    os.mkfifo(play / "host_vars" / "web1.yml")
    pb = write(play / "site.yml", "- hosts: all\n  tasks:\n    - exec: {argv: [echo]}\n")
    code, _, err = cli("run", str(pb), "-i", str(inv))
    assert code == 65 and "not a regular file" in err
