"""Host patterns and --limit: every operator, odd written orders, and malformed patterns.

The expected host lists (and their order) were checked against ansible-core 2.19's
InventoryManager on the same inventory; the malformed-pattern cases are where sandfleet
deliberately refuses what Ansible would guess at.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from inventory_files import write_files

from sandfleet.errors import InputError
from sandfleet.inventory import Inventory, load_inventory

HOSTS = """\
[web]
web[1:4]

[db]
db[1:2]
web1

[eu]
web1
web3
db1

[canary]
web4

[lb:children]
web

[v6]
fe80::1
2001:db8::5
"""


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return load_inventory([str(write_files(tmp_path, {"hosts.ini": HOSTS}) / "hosts.ini")])


@pytest.mark.parametrize(("pattern", "hosts"), [
    ("web", ["web1", "web2", "web3", "web4"]),
    ("db", ["db1", "db2", "web1"]),
    ("web:db", ["web1", "web2", "web3", "web4", "db1", "db2"]),
    ("web,db", ["web1", "web2", "web3", "web4", "db1", "db2"]),
    ("web, db", ["web1", "web2", "web3", "web4", "db1", "db2"]),
    ("db:web", ["db1", "db2", "web1", "web2", "web3", "web4"]),
    ("web:web:web1", ["web1", "web2", "web3", "web4"]),
    ("web:&eu", ["web1", "web3"]),
    ("&eu:web", ["web1", "web3"]),
    ("web:!eu", ["web2", "web4"]),
    ("!eu:web", ["web2", "web4"]),
    ("web,!eu,db", ["web2", "web4", "db2"]),
    ("!canary:&eu:web:db", ["web1", "web3", "db1"]),
    ("&eu:!canary:db:web", ["db1", "web1", "web3"]),
    ("db:!eu:&web", []),
    ("!web", ["db1", "db2", "fe80::1", "2001:db8::5"]),
    ("&eu", ["db1", "web1", "web3"]),  # starts from all, which lists db before eu, and web (under lb) last
    ("&eu:!db", ["web3"]),
    ("all", ["db1", "db2", "web1", "web3", "web4", "fe80::1", "2001:db8::5", "web2"]),
    ("*", ["db1", "db2", "web1", "web3", "web4", "fe80::1", "2001:db8::5", "web2"]),
    ("lb", ["web1", "web2", "web3", "web4"]),
    ("lb:!web", []),
    ("web1", ["web1"]),
    ("db2:web3", ["db2", "web3"]),
    ("web3:db2", ["web3", "db2"]),
    ("eu", ["web1", "web3", "db1"]),
    ("web*", ["web1", "web2", "web3", "web4"]),
    ("*2", ["web2", "db2"]),
    ("d?1", ["db1"]),
    ("[wd]*1", ["web1", "db1"]),
    ("~db[12]", ["db1", "db2"]),
    ("~^(web|db)1$", ["web1", "db1"]),
    ("~eb", []),  # a regex is anchored at the start, as Ansible's re.match
    ("~.*eb1", ["web1"]),
    ("web[0]", ["web1"]),
    ("web[-1]", ["web4"]),
    ("web[-4]", ["web1"]),
    ("web[1:2]", ["web2", "web3"]),  # the end index is inclusive
    ("web[1:]", ["web2", "web3", "web4"]),
    ("web[0-1]", ["web1", "web2"]),  # Ansible's old [x-y] spelling still works
    ("web[2:0]", ["web3"]),  # and so does its reading of [x:0] as [x]
    ("web[1:9]", ["web2", "web3", "web4"]),
    ("web[1:2]:db[0]:eu[-1]", ["web2", "web3", "db1"]),
    ("web[0]:!web[0]", []),
    ("all:!web[1:]", ["db1", "db2", "web1", "fe80::1", "2001:db8::5"]),
    ("fe80::1", ["fe80::1"]),
    ("2001:db8::5", ["2001:db8::5"]),
    ("fe80::1,2001:db8::5", ["fe80::1", "2001:db8::5"]),
    ("v6:!fe80::1", ["fe80::1", "2001:db8::5"]),  # colons split: ['v6', '!fe80', '1'], as in Ansible
    ("v6,!fe80::1", ["2001:db8::5"]),  # so use commas next to IPv6 addresses
    ("nosuchhost", []),
    ("nosuch*:~nomatch", []),
])
def test_pattern(inv: Inventory, pattern: str, hosts: list[str]) -> None:
    assert inv.select(pattern) == hosts


@pytest.mark.parametrize(("limit", "hosts"), [
    ("eu", ["web1", "web3", "db1"]),
    ("web:!eu", ["web2", "web4"]),
    ("db1,web4", ["web4", "db1"]),
    ("!web", ["db1", "db2"]),
    ("&eu", ["web1", "web3", "db1"]),
    ("web[0]", ["web1"]),
    ("nothing", []),
])
def test_limit_restricts_the_selection_keeping_pattern_order(inv: Inventory, limit: str, hosts: list[str]) -> None:
    assert inv.select("web:db", limit=limit) == hosts


def test_limit_file_lists_host_names_one_a_line(inv: Inventory, tmp_path: Path) -> None:
    limit = tmp_path / "retry.txt"
    limit.write_text("db2\n\n  web3  \nweb9\n", encoding="utf-8")
    assert inv.select("all", limit=f"@{limit}") == ["db2", "web3"]
    assert inv.select("all", limit=f"@{limit},web1") == ["db2", "web1", "web3"]


def test_limit_file_lines_may_exclude(inv: Inventory, tmp_path: Path) -> None:
    limit = tmp_path / "limit"
    limit.write_text("eu\n!db1\n", encoding="utf-8")
    assert inv.select("all", limit=f"@{limit}") == ["web1", "web3"]


def test_missing_limit_file_is_an_error(inv: Inventory, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"limit file .*nope\.txt.* not found"):
        inv.select("all", limit=f"@{tmp_path / 'nope.txt'}")
    with pytest.raises(InputError, match="is a directory"):
        inv.select("all", limit=f"@{tmp_path}")


@pytest.mark.parametrize(("pattern", "message"), [
    ("~web(", "invalid regular expression in host pattern '~web('"),
    ("~[", "unbalanced"),  # Ansible would drop the '[' and match every host
    ("web[1", "unbalanced"),
    ("web[4]", "subscript in host pattern 'web[4]' is out of range: 'web' matches 4 host(s)"),
    ("web[-5]", "out of range"),
    ("web[-2:]", "invalid subscript [-2:] in host pattern 'web[-2:]' (allowed: [N], [-N], [N:M], [N:])"),
    ("web[1:2:3]", "invalid subscript"),
    ("", "empty host pattern"),
    ("  ", "empty host pattern"),
])
def test_malformed_pattern_is_an_input_error(inv: Inventory, pattern: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        inv.select(pattern)
    assert message in str(info.value)
    assert info.value.mark is None


def test_empty_limit_is_an_error_not_every_host(inv: Inventory) -> None:
    with pytest.raises(InputError, match="empty --limit"):
        inv.select("all", limit="")


def test_glob_characters_in_a_regex_are_regex(inv: Inventory) -> None:
    assert inv.select("~web[0]") == []  # no subscript on a regex: '[0]' is a character class


def test_implicit_localhost(inv: Inventory) -> None:
    assert inv.select("localhost") == ["localhost"]
    assert inv.select("127.0.0.1:web1") == ["127.0.0.1", "web1"]
    assert "localhost" not in inv.hosts
    assert inv.select("all") == inv.select("*")  # the implicit host is in no group, not even all
    assert "localhost" not in inv.select("all")


def test_explicit_localhost_answers_for_every_localhost_name(tmp_path: Path) -> None:
    root = write_files(tmp_path, {"hosts.yml": "all:\n  hosts:\n    localhost:\n    web1:\n"})
    inv = load_inventory([str(root / "hosts.yml")])
    assert inv.select("127.0.0.1") == ["localhost"]
    assert inv.select("localhost:&ungrouped") == ["localhost"]


def test_group_glob_and_host_glob_both_count(tmp_path: Path) -> None:
    root = write_files(tmp_path, {"hosts.ini": "[webservers]\napp1\n\n[other]\nwebhost\n"})
    inv = load_inventory([str(root / "hosts.ini")])
    assert inv.select("web*") == ["app1", "webhost"]
    assert inv.select("webservers") == ["app1"]
    assert inv.select("*[0]") == ["app1"]  # subscript over everything the glob matched
