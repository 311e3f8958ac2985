"""The INI and YAML spellings of one inventory mean the same thing, down to ordering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from inventory_files import write_files

from sandfleet.inventory import Inventory, load_inventory

GOLDEN = Path(__file__).parent / "golden"
CASES: dict[str, Any] = yaml.safe_load((GOLDEN / "cases.yml").read_text(encoding="utf-8"))
FAMILIES = [family for family, case in CASES.items() if len(case["variants"]) > 1]
EXTRA_PATTERNS = ["all", "*", "ungrouped", "!ungrouped", "*[0]", "all[-1]", "all[1:3]", "~.*[0-9]$", "&all:!*a*"]


def variants(family: str) -> list[Inventory]:
    return [load_inventory([str(GOLDEN / "inventories" / s) for s in sources])
            for sources in CASES[family]["variants"].values()]


def test_there_are_several_families_to_compare() -> None:
    assert len(FAMILIES) >= 4


@pytest.mark.parametrize("family", FAMILIES)
def test_list_graph_and_order_agree(family: str) -> None:
    first, *others = variants(family)
    for other in others:
        assert json.dumps(other.to_list_json()) == json.dumps(first.to_list_json())
        assert other.graph() == first.graph()
        assert other.hosts == first.hosts
        assert list(other.groups) == list(first.groups)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_host_has_the_same_vars_and_config(family: str) -> None:
    first, *others = variants(family)
    for other in others:
        for host in first.hosts:
            assert other.host_vars(host) == first.host_vars(host)
            assert other.host_config(host) == first.host_config(host)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_pattern_selects_the_same_hosts(family: str) -> None:
    first, *others = variants(family)
    patterns = [p for p, _ in CASES[family]["patterns"] if p is not None] + EXTRA_PATTERNS
    for other in others:
        for pattern in patterns:
            assert other.select(pattern) == first.select(pattern), pattern


def test_ranges_children_and_vars_at_every_level(tmp_path: Path) -> None:
    root = write_files(tmp_path, {
        "hosts.ini": (
            "solo x=1\n"
            "[app]\napp[01:03]:2200 role=\"app server\" weight=2\n"
            "[db]\ndb-[a:c] replica=True\ndb[0:8:4]\n"
            "[dc:children]\napp\ndb\n"
            "[app:vars]\nx=app\n"
            "[dc:vars]\nx=dc\ny=[1, 2]\n"
            "[all:vars]\nx=all\nz={'k': 'v'}\n"
        ),
        "hosts.yaml": (
            "all:\n  hosts: {solo: {x: 1}}\n  vars: {x: all, z: {k: v}}\n  children:\n"
            "    dc:\n      vars: {x: dc, y: [1, 2]}\n      children:\n"
            "        app:\n          hosts:\n            app[01:03]:2200: {role: app server, weight: 2}\n"
            "          vars: {x: app}\n"
            "        db:\n          hosts:\n            db-[a:c]: {replica: true}\n            db[0:8:4]:\n"
        ),
    })
    ini, yml = load_inventory([str(root / "hosts.ini")]), load_inventory([str(root / "hosts.yaml")])
    assert ini.to_list_json() == yml.to_list_json()
    assert ini.graph() == yml.graph()
    for pattern in ("all", "dc", "app[1:]", "db:!db-b", "*a*:&dc", "~db[0-9]"):
        assert ini.select(pattern) == yml.select(pattern), pattern
    assert ini.select("db") == ["db-a", "db-b", "db-c", "db0", "db4", "db8"]
    assert ini.host("app02") == {"ansible_port": 2200, "role": "app server", "weight": 2, "x": "app",
                                 "y": [1, 2], "z": {"k": "v"}}
    assert ini.host("solo") == {"x": 1, "z": {"k": "v"}}
