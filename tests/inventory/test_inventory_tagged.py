"""Inventories real users have: integer keys, ``!vault`` and ``!unsafe`` values (issue 19).

Every case is real files on disk, loaded and printed through the command line, compared with
the shapes ``ansible-inventory`` prints.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from inventory_files import inventory_from, write_files

from sandfleet.cli import main
from sandfleet.errors import InputError
from sandfleet.load.yamlsrc import UnsafeText, VaultedValue

CIPHERTEXT = ("$ANSIBLE_VAULT;1.1;AES256\n"
              "62313365396662343061393464336163383764373764613633653634306231386433626436623361\n"
              "6134333665353966363534333632666535333761666131620a663537646436643839616531643561\n")


def vault(indent: int) -> str:
    """The ciphertext as a ``!vault |`` block scalar whose lines are indented ``indent`` spaces."""
    return "!vault |\n" + "".join(f"{' ' * indent}{line}\n" for line in CIPHERTEXT.splitlines())


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_integer_keys_print_as_ansible_inventory_does(tmp_path: Path) -> None:
    # Ansible's own test value. Keys that cannot be sorted together: ansible-inventory prints the
    # document unsorted with a warning; JSON keys are strings.
    write_files(tmp_path, {"hosts.yml": "all:\n  hosts:\n    web1:\n      mixed: {a: 1, 0: 2}\n      z: 1\n"})
    code, out, err = cli("inventory", "-i", str(tmp_path / "hosts.yml"), "--host", "web1")
    assert code == 0
    assert out == '{\n    "mixed": {\n        "a": 1,\n        "0": 2\n    },\n    "z": 1\n}\n'
    assert err == ("[WARNING]: Could not sort JSON output due to issues while sorting keys: '<' not supported "
                   "between instances of 'int' and 'str'\n")
    code, out, err = cli("inventory", "-i", str(tmp_path / "hosts.yml"), "--list")
    assert code == 0 and "Could not sort JSON output" in err
    assert json.loads(out)["_meta"]["hostvars"]["web1"] == {"mixed": {"a": 1, "0": 2}, "z": 1}
    assert list(json.loads(out)) == ["all", "ungrouped", "_meta"]  # inventory order, unsorted


def test_keys_of_one_kind_still_sort_and_become_strings(tmp_path: Path) -> None:
    write_files(tmp_path, {"hosts.yml": "all:\n  hosts:\n    web1:\n      ints: {10: a, 2: b}\n"
                                        "      dates: {2024-01-02: x}\n      b: {true: 1}\n"})
    code, out, err = cli("inventory", "-i", str(tmp_path / "hosts.yml"), "--host", "web1")
    assert (code, err) == (0, "")
    assert out == ('{\n    "b": {\n        "true": 1\n    },\n    "dates": {\n        "2024-01-02": "x"\n    },\n'
                   '    "ints": {\n        "2": "b",\n        "10": "a"\n    }\n}\n')


def test_vaulted_values_load_opaque_and_print_as_ansible_inventory(tmp_path: Path) -> None:
    files = {"hosts.yml": f"all:\n  hosts:\n    web1:\n      db_password: {vault(8)}  vars:\n      x: 1\n",
             "group_vars/all.yml": f"api_token: {vault(2)}",
             "host_vars/web1/secrets.yml": f"nested:\n  user: bob\n  pass: {vault(4)}"}
    inv = inventory_from(tmp_path, files, "hosts.yml")
    values = inv.host_vars("web1")
    assert values["db_password"] == VaultedValue(CIPHERTEXT)
    assert CIPHERTEXT not in repr(values["db_password"])
    code, out, err = cli("inventory", "-i", str(tmp_path / "hosts.yml"), "--host", "web1")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"api_token": {"__ansible_vault": CIPHERTEXT}, "db_password": {"__ansible_vault":
                               CIPHERTEXT}, "nested": {"pass": {"__ansible_vault": CIPHERTEXT}, "user": "bob"},
                               "x": 1}
    assert '        "__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\\n6231' in out
    code, out, _ = cli("inventory", "-i", str(tmp_path / "hosts.yml"), "--list")
    assert code == 0 and json.loads(out)["_meta"]["hostvars"]["web1"]["api_token"] == {"__ansible_vault": CIPHERTEXT}


def test_a_vaulted_variable_used_in_a_template_is_an_error_naming_it(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.yml": f"all:\n  hosts:\n    web1:\n      token: {vault(8)}"
                                                 "      header: 'Bearer {{ token }}'\n      plain: ok\n"})
    renderer = inv.renderer("web1")
    assert renderer.get("plain") == "ok"  # the rest of the host still works
    with pytest.raises(InputError) as exc:
        renderer.get("header")
    assert "variable 'token' is vaulted (!vault); sandfleet cannot decrypt it" in exc.value.message
    assert exc.value.mark is not None and exc.value.mark.line == 4  # where the vaulted value is


def test_vault_on_a_mapping_is_refused_with_its_position(tmp_path: Path) -> None:
    write_files(tmp_path, {"hosts.yml": "all:\n  vars:\n    x: !vault {a: 1}\n"})
    code, _, err = cli("inventory", "-i", str(tmp_path / "hosts.yml"), "--list")
    assert code == 65 and "hosts.yml:3:8" in err and "!vault must tag a string" in err


def test_unsafe_values_are_never_templated(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.yml": (
        "all:\n  hosts:\n    web1:\n      raw: !unsafe '{{ lookup(\"pipe\", \"id\") }}'\n"
        "      broken: !unsafe '{% oops'\n      num: !unsafe 010\n      uses: 'x{{ raw }}'\n"
        "      many: !unsafe ['{{ a }}', 2, {k: '{{ b }}'}]\n")})
    r = inv.renderer("web1")
    assert r.get("raw") == '{{ lookup("pipe", "id") }}'
    assert r.get("broken") == "{% oops" and r.get("num") == "010"
    assert r.get("uses") == 'x{{ lookup("pipe", "id") }}'
    assert r.get("many") == ["{{ a }}", 2, {"k": "{{ b }}"}]
    assert isinstance(inv.host_vars("web1")["raw"], UnsafeText)
    code, out, _ = cli("inventory", "-i", str(tmp_path / "hosts.yml"), "--host", "web1")
    assert code == 0 and json.loads(out)["raw"] == '{{ lookup("pipe", "id") }}' and json.loads(out)["num"] == "010"
