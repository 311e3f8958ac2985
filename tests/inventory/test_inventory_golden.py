"""sandfleet's inventory output against real ansible-inventory output (see golden/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandfleet.errors import InputError
from sandfleet.inventory import Inventory, dumps, load_inventory

GOLDEN = Path(__file__).parent / "golden"
CASES: dict[str, Any] = yaml.safe_load((GOLDEN / "cases.yml").read_text(encoding="utf-8"))
VARIANTS = [(family, variant) for family, case in CASES.items() for variant in case["variants"]]


def load(family: str, variant: str) -> Inventory:
    sources = CASES[family]["variants"][variant]
    return load_inventory([str(GOLDEN / "inventories" / s) for s in sources])


def expected(family: str, name: str) -> str:
    return (GOLDEN / "expected" / family / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(("family", "variant"), VARIANTS)
def test_list_matches_ansible_inventory_byte_for_byte(family: str, variant: str) -> None:
    assert dumps(load(family, variant).to_list_json()) + "\n" == expected(family, "list.json")


@pytest.mark.parametrize(("family", "variant"), VARIANTS)
def test_graph_matches_ansible_inventory(family: str, variant: str) -> None:
    assert load(family, variant).graph() + "\n" == expected(family, "graph.txt")


@pytest.mark.parametrize(("family", "variant"), VARIANTS)
def test_host_matches_ansible_inventory(family: str, variant: str) -> None:
    inventory = load(family, variant)
    golden = json.loads(expected(family, "hosts.json"))
    assert {name: inventory.host(name) for name in golden} == golden


@pytest.mark.parametrize(("family", "variant"), VARIANTS)
def test_patterns_match_ansible(family: str, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN)  # `@limits/...` files are relative to the golden folder
    inventory = load(family, variant)
    for case in json.loads(expected(family, "patterns.json")):
        pattern, limit = case["pattern"], case["limit"]
        if case.get("error"):
            with pytest.raises(InputError):
                inventory.select(pattern, limit)
            continue
        got = inventory.select(pattern, limit)
        if case.get("unordered"):
            got = sorted(got)
        assert got == case["hosts"], (pattern, limit)
