"""``loop_control: {extended: true}``: ``ansible_loop`` with Ansible's fields and edges (``previtem``
undefined on the first item, ``nextitem`` on the last; ``extended_allitems: false`` drops
``allitems``), plus ``ansible_loop_var`` / ``ansible_index_var``, which Ansible sets on every loop."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

import sandfleet
from sandfleet.errors import InputError
from sandfleet.load.keywords import LoopControl
from sandfleet.load.playbook import load_playbook


def rendered(tmp: Path, playbook: str) -> list[Any]:
    """Each item's argv[1], parsed as JSON (a dry-run renders every item's request)."""
    inv = tmp / "hosts.yml"
    inv.write_text(json.dumps({"all": {"hosts": {"h1": {"ansible_connection": "local"}}}}))
    path = tmp / "pb.yml"
    path.write_text(textwrap.dedent(playbook))
    results: list[Any] = []
    code = sandfleet.run_playbook(str(path), str(inv), dry_run=True, on_event=results.append).exit_code
    assert code == 0, [r.message for r in results]
    return [json.loads(r.record["request"]["argv"][1]) for r in results]


def test_ansible_loop_has_ansible_fields_on_every_item(tmp_path: Path) -> None:
    shown = "{{ ansible_loop | to_json }}"
    items = rendered(tmp_path, f"""
        - hosts: h1
          tasks:
            - exec: {{argv: [echo, "{shown}"]}}
              loop: [a, b, c]
              loop_control: {{extended: true}}
        """)
    assert items == [
        {"index": 1, "index0": 0, "first": True, "last": False, "length": 3, "revindex": 3, "revindex0": 2,
         "allitems": ["a", "b", "c"], "nextitem": "b"},
        {"index": 2, "index0": 1, "first": False, "last": False, "length": 3, "revindex": 2, "revindex0": 1,
         "allitems": ["a", "b", "c"], "nextitem": "c", "previtem": "a"},
        {"index": 3, "index0": 2, "first": False, "last": True, "length": 3, "revindex": 1, "revindex0": 0,
         "allitems": ["a", "b", "c"], "previtem": "b"},
    ]


def test_previtem_and_nextitem_are_undefined_at_the_ends_and_allitems_can_be_dropped(tmp_path: Path) -> None:
    shown = ("[{{ ansible_loop.previtem is defined | to_json }}, {{ ansible_loop.nextitem | default('-') | to_json }}, "
             "{{ ansible_loop.allitems is defined | to_json }}, {{ ansible_loop_var | to_json }}, "
             "{{ ansible_index_var | to_json }}, {{ i }}, {{ (pkg ~ '@' ~ ansible_loop.index) | to_json }}]")
    items = rendered(tmp_path, f"""
        - hosts: h1
          tasks:
            - exec: {{argv: [echo, "{shown}"]}}
              loop: "{{{{ ['x', 'y'] }}}}"
              loop_control: {{extended: true, extended_allitems: false, loop_var: pkg, index_var: i}}
        """)
    assert items == [[False, "y", False, "pkg", "i", 0, "x@1"], [True, "-", False, "pkg", "i", 1, "y@2"]]


def test_without_extended_there_is_no_ansible_loop(tmp_path: Path) -> None:
    items = rendered(tmp_path, """
        - hosts: h1
          tasks:
            - exec: {argv: [echo, "[{{ (ansible_loop is defined) | to_json }}, {{ ansible_loop_var | to_json }}]"]}
              loop: [1]
        """)
    assert items == [[False, "item"]]


def test_item_vars_match_ansible_for_one_item_and_none() -> None:
    one = LoopControl(extended=True).item_vars(["only"], 0)
    assert one["ansible_loop"] == {"index": 1, "index0": 0, "first": True, "last": True, "length": 1, "revindex": 1,
                                   "revindex0": 0, "allitems": ["only"]}
    assert set(LoopControl(extended=True).item_vars([], 0)) == {"item", "ansible_loop_var", "ansible_loop"}


@pytest.mark.parametrize(("control", "fragment"), [
    ("{extended: yes please}", "extended must be true or false, got"),
    ("{extended_allitems: 0}", "extended_allitems must be true or false"),
    ("{extendd: true}", "did you mean 'extended'?"),
])
def test_bad_extended_values_are_errors_at_their_place(tmp_path: Path, control: str, fragment: str) -> None:
    path = tmp_path / "pb.yml"
    path.write_text(f"- hosts: all\n  tasks:\n    - exec: {{argv: [echo]}}\n      loop: [1]\n"
                    f"      loop_control: {control}\n")
    with pytest.raises(InputError) as info:
        load_playbook(str(path))
    assert fragment in str(info.value)
    assert info.value.mark is not None and info.value.mark.line == 5
