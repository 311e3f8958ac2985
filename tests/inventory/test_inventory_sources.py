"""Reading sources: INI values, format detection, directories, host lists, ranges, refusals."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from inventory_files import inventory_from, write_files

from sandfleet.errors import InputError
from sandfleet.inventory import load_inventory
from sandfleet.inventory.ini_values import parse_ini_value


# Each pair was checked with ansible-inventory 2.19 (inline host vars and [group:vars] alike).
@pytest.mark.parametrize(("text", "value"), [
    ("5", 5), ("-3", -3), ("1.5", 1.5), ("1e3", 1000.0), ("0x10", 16), ("010", "010"),
    ("True", True), ("False", False), ("true", "true"), ("yes", "yes"), ("None", None),
    ("[1,2]", [1, 2]), ("(1,2)", [1, 2]), ("{'k': 1}", {"k": 1}), ("'7'", "7"), ('"a b"', "a b"),
    ("1+2j", "(1+2j)"), ("...", "..."), ("b'x'", "x"), ("hello world", "hello world"),
    ("5 # trailing", 5), ("{{ x }}", "{{ x }}"), ("", ""), ("'\\d'", "\\d"), ("1+2", "1+2"),
])
def test_ini_value(text: str, value: Any) -> None:
    assert parse_ini_value(text) == value
    assert type(parse_ini_value(text)) is type(value)


def test_inline_pairs_are_split_like_a_shell(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": (
        "[web]\nweb1 motd=\"hello world\" quoted='\"7\"' n=\"7\" path=/a=b  # comment\n"
        "[web:vars]\nspaced = a b c \nqv = \"x y\"\n"
    )})
    assert inv.host_vars("web1") == {"motd": "hello world", "quoted": "7", "n": 7, "path": "/a=b",
                                     "spaced": "a b c", "qv": "x y"}


def test_ini_sections(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": (
        "; comment\nfree1\n# another\n[web:hosts]\nweb1\n[web:children]  # trailing comment\nedge\n"
        "[edge]\nedge1\n[all]\nroot1\n[ungrouped]\nfree2\n"
    )})
    assert inv.groups["web"].children == ("edge",)
    assert inv.groups["web"].hosts == ("web1",)
    assert inv.groups["ungrouped"].hosts == ("free1", "free2", "root1")
    assert inv.select("web") == ["web1", "edge1"]


def test_host_port_counts_only_where_the_host_is_new(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": "[a]\nweb1:2201\n[b]\nweb1:2202\n"})
    assert inv.host_vars("web1") == {"ansible_port": 2201}
    assert inv.groups["b"].hosts == ("web1",)


@pytest.mark.parametrize(("entry", "hosts"), [
    ("web[01:03]", ["web01", "web02", "web03"]),
    ("web[1:10:4]", ["web1", "web5", "web9"]),
    ("web[08:10]", ["web08", "web09", "web10"]),
    ("db-[a:c]", ["db-a", "db-b", "db-c"]),
    ("x[y:B]", ["xy", "xz", "xA", "xB"]),
    ("r[1:2]-[a:b].dc", ["r1-a.dc", "r1-b.dc", "r2-a.dc", "r2-b.dc"]),
    ("10.0.[1:2].5", ["10.0.1.5", "10.0.2.5"]),
    ("2001:db8::[a:b]", ["2001:db8::a", "2001:db8::b"]),
])
def test_ranges(tmp_path: Path, entry: str, hosts: list[str]) -> None:
    assert inventory_from(tmp_path, {"hosts.ini": f"[g]\n{entry}\n"}).select("g") == hosts


@pytest.mark.parametrize(("name", "text"), [
    ("hosts", "all:\n  hosts:\n    web1:\n"),
    ("hosts", "---\nweb:\n  hosts: {web1: }\n"),
    ("hosts", "# comment\nweb:  # trailing\n  hosts: web1\n"),
    ("hosts.json", '{"all": {"hosts": {"web1": null}}}'),
    ("hosts.yaml", "all:\n  hosts:\n    web1:\n"),
    ("hosts", "[web]\nweb1\n"),
    ("hosts", "web1:22\n"),
    ("hosts", "web1 a=b:c\n"),
    ("hosts.cfg-like", "web1\n"),
])
def test_format_detection(tmp_path: Path, name: str, text: str) -> None:
    assert inventory_from(tmp_path, {name: text}).hosts == ("web1",)


def test_empty_files_are_empty_inventories(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"a.yml": "", "b.ini": "# nothing\n", "c": ""})
    assert inv.hosts == ()
    assert inv.graph() == "@all:\n  |--@ungrouped:"
    assert inv.to_list_json() == {"_meta": {"hostvars": {}, "profile": "inventory_legacy"},
                                  "all": {"children": ["ungrouped"]}}


def test_host_list_source(tmp_path: Path) -> None:
    inv = load_inventory(["web1, web2:2222,[::1]:2200,web[1:2],"])
    assert inv.hosts == ("web1", "web2", "::1", "web[1:2]")  # ranges stay literal, as in Ansible
    assert inv.host_vars("web2") == {"ansible_port": 2222}
    assert inv.host_vars("::1") == {"ansible_port": 2200}
    assert inv.magic_vars("web1")["inventory_file"] is None


def test_directory_source_skips_what_ansible_skips(tmp_path: Path) -> None:
    root = write_files(tmp_path, {
        "inv/10-web.ini": "[web]\nweb1\n", "inv/20-db.yml": "db:\n  hosts:\n    db1:\n",
        "inv/sub/30-cache": "[cache]\ncache1\n", "inv/.hidden": "[x]\nhidden1\n", "inv/README.md": "[x]\n",
        "inv/old.retry": "web9\n", "inv/ansible.cfg": "[defaults]\n", "inv/hosts.bak": "bak1\n",
        "inv/hosts~": "tilde1\n", "inv/notes.txt": "[x]\n", "inv/host_vars/web1.yml": "hv: 1\n",
        "inv/group_vars/all.yml": "gv: 1\n",
    })
    inv = load_inventory([str(root / "inv")])
    assert inv.hosts == ("web1", "db1", "cache1")
    assert inv.host_vars("web1") == {"gv": 1, "hv": 1}


def test_inventory_file_is_the_file_inside_a_directory_source(tmp_path: Path) -> None:
    root = write_files(tmp_path, {"inv/web.ini": "web1\n"})
    magic = load_inventory([str(root / "inv")]).magic_vars("web1")
    assert magic["inventory_file"] == os.path.join(str(root), "inv", "web.ini")
    assert magic["inventory_dir"] == os.path.join(str(root), "inv")


def test_non_utf8_bytes_are_tolerated_in_ini_comments_only(tmp_path: Path) -> None:
    root = write_files(tmp_path, {})
    (root / "ok.ini").write_bytes(b"# caf\xe9\n[web]\nweb1\n")
    assert load_inventory([str(root / "ok.ini")]).hosts == ("web1",)
    (root / "bad.ini").write_bytes(b"[web]\nweb1\ncaf\xe9\n")
    with pytest.raises(InputError, match="not UTF-8") as info:
        load_inventory([str(root / "bad.ini")])
    assert info.value.mark is not None and info.value.mark.line == 3


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="inventory source not found") as info:
        load_inventory([str(tmp_path / "nope.yml")])
    assert info.value.mark is not None and info.value.mark.file.endswith("nope.yml")
    with pytest.raises(InputError, match="no inventory given"):
        load_inventory([])


def test_inventory_scripts_are_not_run(tmp_path: Path) -> None:
    root = write_files(tmp_path, {"ec2.py": "#!/usr/bin/env python3\nprint('{}')\n"})
    os.chmod(root / "ec2.py", 0o755)
    with pytest.raises(InputError, match="inventory scripts are not run"):
        load_inventory([str(root / "ec2.py")])


def test_groups_are_frozen_values(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": "[a:children]\nb\n[b]\nh1\n[a:vars]\nx=1\n"})
    a, b = inv.groups["a"], inv.groups["b"]
    assert (a.children, a.parents, a.depth, a.hosts) == (("b",), ("all",), 1, ())
    assert (b.children, b.parents, b.depth, b.hosts) == ((), ("a",), 2, ("h1",))
    assert a.vars["x"].value == 1 and a.vars["x"].mark is not None and a.vars["x"].mark.line == 6
    assert list(inv.groups) == ["all", "ungrouped", "a", "b"]
    assert inv.group_hosts("a") == ["h1"]
    assert inv.graph("a") == "@a:\n  |--@b:\n  |  |--h1"
    with pytest.raises(InputError, match="unknown group 'c'"):
        inv.graph("c")
