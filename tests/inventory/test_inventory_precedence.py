"""Variable precedence, as Ansible resolves it (each case was checked with ansible-inventory 2.19)."""

from __future__ import annotations

import os
from pathlib import Path

from inventory_files import inventory_from, write_files

from sandfleet.inventory import load_inventory


def test_child_group_beats_parent_and_all_and_host_beats_groups(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": (
        "[top:children]\nmid\n[mid:children]\nleaf\n[leaf]\nh1\nh2 v=host\n"
        "[all:vars]\nv=all\n[top:vars]\nv=top\n[mid:vars]\nv=mid\n[leaf:vars]\nv=leaf\n"
    )})
    assert inv.host_vars("h1")["v"] == "leaf"
    assert inv.host_vars("h2")["v"] == "host"
    assert [inv.groups[g].depth for g in ("all", "top", "mid", "leaf")] == [0, 1, 2, 3]


def test_depth_beats_priority_which_beats_name(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": (
        "[parent:children]\ndeep\n[deep]\nh1\n[aaa]\nh1\n[zzz]\nh1\n[mmm]\nh1\n"
        "[parent:vars]\nansible_group_priority=100\nv=parent\n"
        "[deep:vars]\nv=deep\nw=deep\n"
        "[aaa:vars]\nw=aaa\nx=aaa\nansible_group_priority=5\n"
        "[zzz:vars]\nw=zzz\nx=zzz\ny=zzz\n"
        "[mmm:vars]\nw=mmm\nx=mmm\ny=mmm\n"
    )})
    got = inv.host_vars("h1")
    assert got["v"] == "deep"  # depth 2 beats depth 1, whatever its priority
    assert got["w"] == "deep"
    assert got["x"] == "aaa"  # priority 5 beats priority 1 at the same depth
    assert got["y"] == "zzz"  # equal depth and priority: the name sorting last wins
    assert "ansible_group_priority" not in got  # a property of the group, not a variable
    assert inv.groups["aaa"].priority == 5


def test_priority_in_group_vars_file_is_only_a_variable(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {
        "hosts.ini": "[aaa]\nh1\n[bbb]\nh1\n[aaa:vars]\nv=aaa\n[bbb:vars]\nv=bbb\n",
        "group_vars/aaa.yml": "ansible_group_priority: 10\n",
    }, "hosts.ini")
    assert inv.host_vars("h1")["v"] == "bbb"
    assert inv.host_vars("h1")["ansible_group_priority"] == 10
    assert inv.groups["aaa"].priority == 1


def test_group_vars_files_beat_inventory_vars_even_all_over_children(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {
        "hosts.ini": "[web]\nw1 v_host=inventory\n[web:vars]\nv=inventory-web\nv_web=inventory-web\n",
        "group_vars/all.yml": "v: file-all\n",
        "group_vars/web.yml": "v_web: file-web\n",
        "host_vars/w1.yml": "v_host: file-host\n",
    }, "hosts.ini")
    assert inv.host_vars("w1") == {"v": "file-all", "v_web": "file-web", "v_host": "file-host"}


def test_group_vars_directory_merges_sorted_and_shadows_the_yml_file(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {
        "hosts.yml": "web:\n  hosts:\n    w1:\n",
        "group_vars/web/b.yaml": "order: b\nb: 1\n",
        "group_vars/web/a.json": '{"order": "a", "a": 1}',
        "group_vars/web/sub/c": "order: c\n",
        "group_vars/web/skip.txt": "order: txt\n",
        "group_vars/web/.hidden.yml": "order: hidden\n",
        "group_vars/web.yml": "shadowed: true\n",
    }, "hosts.yml")
    assert inv.host_vars("w1") == {"order": "c", "a": 1, "b": 1}


def test_yml_file_shadows_yaml_and_json_files(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {
        "hosts.yml": "web:\n  hosts:\n    w1:\n",
        "group_vars/web.yml": "from: yml\n",
        "group_vars/web.yaml": "from: yaml\n",
        "group_vars/web.json": '{"from": "json"}',
        "host_vars/w1": "from_host: no-extension\n",
    }, "hosts.yml")
    assert inv.host_vars("w1") == {"from": "yml", "from_host": "no-extension"}


def test_later_source_wins_at_the_same_level(tmp_path: Path) -> None:
    files = {
        "a/hosts.ini": "[web]\nw1 h=a\nw2\n[web:vars]\ng=a\nonly_a=1\n",
        "b/hosts.yml": "web:\n  hosts:\n    w1: {h: b}\n    w3:\n  vars: {g: b}\n",
        "a/group_vars/web.yml": "f: a\n",
        "b/group_vars/web.yml": "f: b\n",
    }
    ab = inventory_from(tmp_path, files, "a/hosts.ini", "b/hosts.yml")
    ba = inventory_from(tmp_path, files, "b/hosts.yml", "a/hosts.ini")
    assert ab.host_vars("w1") == {"h": "b", "g": "b", "only_a": 1, "f": "b"}
    assert ba.host_vars("w1") == {"h": "a", "g": "a", "only_a": 1, "f": "a"}
    assert ab.hosts == ("w1", "w2", "w3")
    assert ba.hosts == ("w1", "w3", "w2")


def test_later_source_parent_file_beats_earlier_source_child_file(tmp_path: Path) -> None:
    # Ansible reads group_vars source by source, each in group order, so this surprise is real.
    inv = inventory_from(tmp_path, {
        "a/hosts.ini": "[parent:children]\nchild\n[child]\nh1\n",
        "a/group_vars/child.yml": "v: a-child\n",
        "b/hosts.ini": "[parent]\n",
        "b/group_vars/parent.yml": "v: b-parent\n",
    }, "a/hosts.ini", "b/hosts.ini")
    assert inv.host_vars("h1")["v"] == "b-parent"


def test_var_settings_point_at_the_winning_line(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {
        "hosts.ini": "[web]\nw1\n\n[web:vars]\nport=1\nuser=deploy\n",
        "host_vars/w1.yml": "# comment\nport: 2\n",
    }, "hosts.ini")
    settings = inv.var_settings("w1")
    assert settings["port"].value == 2
    assert settings["port"].mark is not None and settings["port"].mark.file.endswith("host_vars/w1.yml")
    assert (settings["port"].mark.line, settings["port"].mark.col) == (2, 7)
    assert settings["user"].mark is not None and settings["user"].mark.line == 6


def test_magic_vars(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {
        "hosts.ini": "[web]\nweb1.example.com\n[db]\n10.0.0.9\n[prod:children]\nweb\n",
        "more.yml": "db:\n  hosts:\n    web1.example.com:\n",
    }, "hosts.ini", "more.yml")
    magic = inv.magic_vars("web1.example.com")
    assert magic["inventory_hostname"] == "web1.example.com"
    assert magic["inventory_hostname_short"] == "web1"
    assert magic["group_names"] == ["db", "prod", "web"]
    assert magic["groups"]["all"] == ["10.0.0.9", "web1.example.com"]
    assert magic["groups"]["prod"] == ["web1.example.com"]
    assert magic["inventory_file"] == os.path.join(str(tmp_path), "hosts.ini")  # the first source naming it
    assert magic["inventory_dir"] == str(tmp_path)
    assert inv.magic_vars("10.0.0.9")["inventory_hostname_short"] == "10.0.0.9"
    assert "inventory_hostname" not in inv.host_vars("web1.example.com")


def test_dict_values_replace_rather_than_merge(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {
        "hosts.yml": "all:\n  vars: {conf: {a: 1, b: 2}}\n  hosts:\n    h1: {conf: {a: 9}}\n",
    })
    assert inv.host_vars("h1")["conf"] == {"a": 9}


def test_directory_source_reads_only_its_own_group_vars(tmp_path: Path) -> None:
    root = write_files(tmp_path, {
        "inv/a.ini": "[web]\nw1\n",
        "inv/nested/b.yml": "db:\n  hosts:\n    d1:\n",
        "inv/group_vars/all.yml": "top: yes\n",
        "inv/nested/group_vars/all.yml": "nested: yes\n",
    })
    inv = load_inventory([str(root / "inv")])
    assert inv.hosts == ("w1", "d1")
    assert inv.host_vars("d1") == {"top": True}
