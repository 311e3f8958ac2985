"""HostConfig: defaults, Ansible's spellings, templates, path rules per OS, and refusals."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
from inventory_files import inventory_from

from sandfleet.errors import InputError
from sandfleet.inventory import HostConfig
from sandfleet.transports.base import AgentInit
from sandfleet_agent.agent import read_resolve
from sandfleet_agent.portable.wire import decode_init, encode_init


def test_defaults(tmp_path: Path) -> None:
    cfg = inventory_from(tmp_path, {"hosts.ini": "web1\n"}).host_config("web1")
    assert cfg == HostConfig(name="web1", connection="ssh", address="web1", port=22, user=None,
                             key_file=None, os=None, workspace_roots=(), sandbox_pin=None,
                             python="python3", allow_unsandboxed=False, home=None, tmpdir=None)
    assert cfg.vars["inventory_hostname"] == "web1"


def test_every_field_from_yaml(tmp_path: Path) -> None:
    cfg = inventory_from(tmp_path, {"hosts.yml": (
        "all:\n  hosts:\n    web1:\n"
        "      ansible_host: 10.0.0.5\n      ansible_port: 2222\n      ansible_user: deploy\n"
        "      ansible_ssh_private_key_file: ~/.ssh/fleet\n      sandfleet_os: linux\n"
        "      sandfleet_workspace_roots: [/srv/work, ~/scratch]\n      sandfleet_sandbox: landlock\n"
        "      sandfleet_python: /usr/bin/python3.11\n      sandfleet_allow_unsandboxed: true\n"
        "      sandfleet_home: /home/deploy\n      sandfleet_tmpdir: /var/tmp\n      app: demo\n"
    )}).host_config("web1")
    assert (cfg.address, cfg.port, cfg.user, cfg.key_file) == ("10.0.0.5", 2222, "deploy", "~/.ssh/fleet")
    assert (cfg.os, cfg.workspace_roots, cfg.sandbox_pin) == ("linux", ("/srv/work", "~/scratch"), "landlock")
    assert (cfg.python, cfg.allow_unsandboxed, cfg.home, cfg.tmpdir) == (
        "/usr/bin/python3.11", True, "/home/deploy", "/var/tmp")
    assert cfg.vars["app"] == "demo"
    assert cfg.vars["group_names"] == ["ungrouped"]


def test_host_config_is_frozen(tmp_path: Path) -> None:
    cfg = inventory_from(tmp_path, {"hosts.ini": "web1\n"}).host_config("web1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.port = 23  # type: ignore[misc]


def test_ssh_spellings_win_over_plain_ones_like_ansible(tmp_path: Path) -> None:
    cfg = inventory_from(tmp_path, {"hosts.ini": (
        "web1 ansible_host=a ansible_ssh_host=b ansible_port=1 ansible_ssh_port=2 ansible_user=u "
        "ansible_ssh_user=v ansible_private_key_file=/k1\n"
    )}).host_config("web1")
    assert (cfg.address, cfg.port, cfg.user, cfg.key_file) == ("b", 2, "v", "/k1")


def test_port_from_host_pattern_and_from_strings(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.yml": "all:\n  hosts:\n    a:2201:\n    b: {ansible_port: '2202'}\n"})
    assert inv.host_config("a").port == 2201
    assert inv.host_config("b").port == 2202


def test_templates_render_against_host_vars(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.yml": (
        "all:\n  vars:\n    net: 10.1.2\n    base_port: 2200\n    roots: ['/srv/a', '/srv/b']\n"
        "  hosts:\n    web1:\n      n: 7\n      ansible_host: '{{ net }}.{{ n }}'\n"
        "      ansible_port: '{{ base_port + n }}'\n      ansible_user: '{{ inventory_hostname }}-svc'\n"
        "      sandfleet_workspace_roots: ['{{ inventory_dir }}/work', '{{ roots[1] }}']\n"
        "    web2:\n      sandfleet_workspace_roots: '{{ roots }}'\n"
    )})
    web1 = inv.host_config("web1")
    assert (web1.address, web1.port, web1.user) == ("10.1.2.7", 2207, "web1-svc")
    assert web1.workspace_roots == (f"{tmp_path}/work", "/srv/b")
    assert inv.host_config("web2").workspace_roots == ("/srv/a", "/srv/b")  # one expression keeps its list
    assert inv.host_vars("web1")["ansible_host"] == "{{ net }}.{{ n }}"  # host_vars stay as written


def test_extra_vars_override_and_complete_inventory_vars(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": "web1 ansible_user='{{ deploy_user }}' ansible_port=22\n"})
    with pytest.raises(InputError, match="undefined variable 'deploy_user'"):
        inv.host_config("web1")
    cfg = inv.host_config("web1", extra_vars={"deploy_user": "ci", "ansible_port": 2022})
    assert (cfg.user, cfg.port) == ("ci", 2022)


def test_jinja_is_sandboxed(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.yml": (
        "all:\n  hosts:\n    web1:\n      ansible_user: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"\n"
    )})
    with pytest.raises(InputError, match=r"unsafe template in the value of .ansible_user.") as info:
        inv.host_config("web1")
    assert info.value.mark is not None and info.value.mark.line == 4


@pytest.mark.parametrize(("os_name", "root"), [
    ("linux", "/srv/work"), ("macos", "/Users/ci/work"), ("linux", "~"), ("linux", "~/work"),
    ("windows", "C:\\work"), ("windows", "c:/work"), ("windows", "\\\\server\\share\\ci"), ("windows", "~\\work"),
    (None, "/srv/work"), (None, "D:\\work"),
])
def test_accepted_workspace_roots(tmp_path: Path, os_name: Any, root: str) -> None:
    os_line = f"      sandfleet_os: {os_name}\n" if os_name else ""
    inv = inventory_from(tmp_path, {"hosts.yml": (
        f"all:\n  hosts:\n    h:\n{os_line}      sandfleet_workspace_roots: '{root}'\n")})
    assert inv.host_config("h").workspace_roots == (root,)


@pytest.mark.parametrize(("os_name", "root", "message"), [
    ("linux", "work", "'work' is not an absolute path"),
    ("linux", "C:\\work", "'C:\\work' is a Windows path, but sandfleet_os is linux"),
    ("macos", "\\\\server\\share", "is a Windows path, but sandfleet_os is macos"),
    ("windows", "/srv/work", "'/srv/work' is a POSIX path, but sandfleet_os is windows"),
    ("windows", "work\\dir", "is not an absolute path (use a path like C:\\work or \\\\server\\share or ~/...)"),
    (None, "./work", "is not an absolute path (use a path like /srv/work or C:\\work or ~/...)"),
])
def test_refused_workspace_roots(tmp_path: Path, os_name: Any, root: str, message: str) -> None:
    os_line = f"      sandfleet_os: {os_name}\n" if os_name else ""
    fine = "C:\\ok" if os_name == "windows" else "/ok"
    inv = inventory_from(tmp_path, {"hosts.yml": (
        f"all:\n  hosts:\n    h:\n{os_line}      sandfleet_workspace_roots:\n        - {fine}\n        - '{root}'\n")})
    with pytest.raises(InputError) as info:
        inv.host_config("h")
    assert message in str(info.value)
    assert info.value.mark is not None and info.value.mark.line == (7 if os_name else 6)  # the bad item


@pytest.mark.parametrize(("os_name", "pin", "ok"), [
    ("linux", "bwrap", True), ("linux", "landlock", True), ("linux", "seatbelt", False),
    ("macos", "seatbelt", True), ("macos", "bwrap", False), ("windows", "windows", True),
    ("windows", "landlock", False), (None, "seatbelt", True),
])
def test_sandbox_pin_must_fit_the_os(tmp_path: Path, os_name: Any, pin: str, ok: bool) -> None:
    os_part = f" sandfleet_os={os_name}" if os_name else ""
    inv = inventory_from(tmp_path, {"hosts.ini": f"h{os_part} sandfleet_sandbox={pin}\n"})
    if ok:
        assert inv.host_config("h").sandbox_pin == pin
    else:
        with pytest.raises(InputError, match=f"'{pin}' cannot run on a {os_name} host") as info:
            inv.host_config("h")
        assert info.value.allowed


@pytest.mark.parametrize(("value", "expected"), [
    ("True", True), ("False", False), ("yes", True), ("no", False), ("true", True), ("off", False),
    ("1", True), ("0", False),
])
def test_allow_unsandboxed_reads_ansible_booleans(tmp_path: Path, value: str, expected: bool) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": f"h sandfleet_allow_unsandboxed={value}\n"})
    assert inv.host_config("h").allow_unsandboxed is expected


@pytest.mark.parametrize("value", ["2", "maybe", "[true]", "{'a': 1}"])
def test_allow_unsandboxed_refuses_other_values(tmp_path: Path, value: str) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": f"h sandfleet_allow_unsandboxed=\"{value}\"\n"})
    with pytest.raises(InputError, match="must be a boolean") as info:
        inv.host_config("h")
    assert info.value.allowed == ("true", "false")


def test_python_falls_back_to_ansible_python_interpreter(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": (
        "a ansible_python_interpreter=/opt/py/bin/python3\n"
        "b ansible_python_interpreter=auto_silent\n"
        "c ansible_python_interpreter=/opt/py sandfleet_python=/usr/bin/python3\n"
    )})
    assert [inv.host_config(h).python for h in "abc"] == ["/opt/py/bin/python3", "python3", "/usr/bin/python3"]


def test_connection_values(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": "a ansible_connection=local\nb ansible_connection=smart\nc\n"})
    assert [inv.host_config(h).connection for h in "abc"] == ["local", "ssh", "ssh"]


def test_implicit_localhost_runs_locally(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": "web1\n[all:vars]\nsandfleet_os=linux\n"})
    cfg = inv.host_config("localhost")
    assert (cfg.connection, cfg.os, cfg.python) == ("local", "linux", sys.executable)
    assert inv.host("localhost") == {"ansible_connection": "local",
                                     "ansible_python_interpreter": sys.executable, "sandfleet_os": "linux"}


def test_explicit_localhost_is_an_ordinary_host(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": "localhost\nlocal2 ansible_host=127.0.0.1 ansible_connection=local\n"})
    assert inv.host_config("localhost").connection == "ssh"  # as in Ansible: only the implicit one is local
    assert inv.host_config("local2").connection == "local"


def test_unknown_host_is_an_input_error_with_suggestions(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": "web01\nweb02\n"})
    for call in (inv.host_config, inv.host, inv.host_vars):
        with pytest.raises(InputError, match=r"unknown host 'web1'.*did you mean 'web01'"):
            call("web1")


def test_undefined_variable_names_where_it_was_used(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": "web1\n\n[all:vars]\nansible_host=\"{{ addr }}\"\n"})
    with pytest.raises(InputError) as info:
        inv.host_config("web1")
    assert "undefined variable 'addr' in the value of 'ansible_host'" in str(info.value)
    assert info.value.mark is not None and info.value.mark.line == 4


def test_unrelated_broken_templates_do_not_block_host_config(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.ini": "web1 later=\"{{ set_by_the_play }}\"\n"})
    assert inv.host_config("web1").vars["later"] == "{{ set_by_the_play }}"


def test_renderer_renders_nested_values_for_the_playbook(tmp_path: Path) -> None:
    inv = inventory_from(tmp_path, {"hosts.yml": (
        "all:\n  vars:\n    base: /srv\n    app_dir: '{{ base }}/app'\n  hosts:\n    web1:\n")})
    renderer = inv.renderer("web1", {"suite": "unit"})
    assert renderer.render(["{{ app_dir }}/tests/{{ suite }}", "{{ groups['all'] | length }}"], "argv",
                           None) == ["/srv/app/tests/unit", 1]


def test_network_resolve_is_checked_and_reaches_the_agent(tmp_path: Path) -> None:
    cfg = inventory_from(tmp_path, {"hosts.yml": (
        "all:\n  vars:\n    mirror_ip: 10.0.0.5\n  hosts:\n    web1:\n"
        "      sandfleet_network_resolve: {Mirror.Internal: '{{ mirror_ip }}', v6.internal: '::1'}\n"
    )}).host_config("web1")
    assert cfg.network_resolve == (("mirror.internal", "10.0.0.5"), ("v6.internal", "::1"))
    line = encode_init(AgentInit(network_resolve=cfg.network_resolve))
    assert read_resolve(decode_init(line), {}) == {"mirror.internal": "10.0.0.5", "v6.internal": "::1"}


@pytest.mark.parametrize(("value", "message"), [
    ("[10.0.0.5]", "must be a mapping of host name to IP address"),
    ("{mirror.internal: mirror.example}", "maps to 'mirror.example', which is not an IPv4 or IPv6 address"),
    ("{10.0.0.1: 10.0.0.2}", "is an IP address; map host names only"),
    ("{'*.internal': 10.0.0.2}", "not a valid host name"),
])
def test_network_resolve_refusals_name_the_variable_and_line(tmp_path: Path, value: str, message: str) -> None:
    body = f"all:\n  hosts:\n    web1:\n      sandfleet_network_resolve: {value}\n"
    inv = inventory_from(tmp_path, {"hosts.yml": body})
    with pytest.raises(InputError, match="sandfleet_network_resolve") as info:
        inv.host_config("web1")
    assert message in str(info.value) and "hosts.yml:4" in str(info.value)
