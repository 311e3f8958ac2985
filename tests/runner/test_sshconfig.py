"""Inventory over ssh_config: what is honoured, what wins, and what is refused."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import pytest

from sandfleet.errors import UsageError
from sandfleet.inventory import HostConfig
from sandfleet.transports.base import HostUnreachable
from sandfleet.transports.sshconfig import DEFAULT_TIMEOUT, SshConfig, parse_jump


def host(address: str, **kw: Any) -> HostConfig:
    variables = kw.pop("vars", {})
    if "port" in kw:
        variables["ansible_port"] = kw["port"]
    return HostConfig(name=kw.pop("name", address), address=address, vars=variables, **kw)


def config(tmp_path: Path, text: str) -> SshConfig:
    path = tmp_path / "ssh_config"
    path.write_text(text)
    return SshConfig.load(str(path))


CONFIG = """\
Host web*
    HostName %h.example.com
    User deploy
    Port 2200
    IdentityFile ~/.ssh/web_key
    UserKnownHostsFile /k/first /k/second
    ConnectTimeout 4
    ServerAliveInterval 7
Host *
    IdentityFile /keys/any
"""


class TestTarget:
    def test_ssh_config_fills_what_the_inventory_leaves_out(self, tmp_path: Path) -> None:
        target = config(tmp_path, CONFIG).route(host("web1")).target
        assert (target.hostname, target.port, target.user) == ("web1.example.com", 2200, "deploy")
        assert target.identity_files == (str(Path("~/.ssh/web_key").expanduser()), "/keys/any")
        assert target.known_hosts == ("/k/first", "/k/second")
        assert (target.timeout, target.keepalive) == (4.0, 7)

    def test_inventory_wins_where_both_say_something(self, tmp_path: Path) -> None:
        inv = host("web1", port=2222, user="ops", key_file="/inv/key", vars={"ansible_timeout": "3"})
        target = config(tmp_path, CONFIG).route(inv).target
        assert (target.port, target.user, target.timeout) == (2222, "ops", 3.0)
        assert target.identity_files[0] == "/inv/key"

    def test_defaults_without_any_config(self, tmp_path: Path) -> None:
        target = config(tmp_path, "").route(host("10.1.2.3")).target
        assert (target.hostname, target.port, target.user) == ("10.1.2.3", 22, getpass.getuser())
        assert target.timeout == DEFAULT_TIMEOUT and target.identity_files == ()
        assert target.known_hosts[0] == str(Path("~/.ssh/known_hosts").expanduser())
        assert target.global_known_hosts[0] == "/etc/ssh/ssh_known_hosts"

    def test_includes_are_expanded(self, tmp_path: Path) -> None:
        (tmp_path / "conf.d").mkdir()
        (tmp_path / "conf.d" / "10-web.conf").write_text("Host web1\n    User included\n")
        target = config(tmp_path, f"Include {tmp_path}/conf.d/*.conf\n").route(host("web1")).target
        assert target.user == "included"

    @pytest.mark.parametrize(("value", "strict"), [("yes", True), ("accept-new", False), ("no", False),
                                                   ("ask", False)])
    def test_strict_host_key_checking_can_only_tighten(self, tmp_path: Path, value: str, strict: bool) -> None:
        target = config(tmp_path, f"Host *\n    StrictHostKeyChecking {value}\n").route(host("h")).target
        assert target.strict is strict

    def test_proxy_command_is_refused_not_bypassed(self, tmp_path: Path) -> None:
        with pytest.raises(HostUnreachable, match="ProxyCommand"):
            config(tmp_path, "Host h\n    ProxyCommand nc %h %p\n").route(host("h"))

    def test_bad_values_say_where(self, tmp_path: Path) -> None:
        with pytest.raises(HostUnreachable, match="port"):
            config(tmp_path, "Host h\n    Port many\n").route(host("h"))
        with pytest.raises(HostUnreachable, match="ansible_timeout"):
            config(tmp_path, "").route(host("h", vars={"ansible_timeout": "soon"}))

    def test_a_missing_ssh_config_file_is_a_usage_error(self, tmp_path: Path) -> None:
        with pytest.raises(UsageError, match="no such file"):
            SshConfig.load(str(tmp_path / "nope"))


class TestProxyJump:
    def test_chain_follows_the_first_hops_own_jump(self, tmp_path: Path) -> None:
        text = ("Host target\n    ProxyJump a,ops@b:2201\nHost a\n    HostName a.example\n    ProxyJump x\n"
                "Host b\n    ProxyJump ignored\n")
        route = config(tmp_path, text).route(host("target"))
        assert [(j.alias, j.hostname, j.user, j.port) for j in route.jumps] == [
            ("x", "x", getpass.getuser(), 22), ("a", "a.example", getpass.getuser(), 22), ("b", "b", "ops", 2201)]

    def test_inventory_settings_do_not_leak_to_jumps(self, tmp_path: Path) -> None:
        route = config(tmp_path, "Host t\n    ProxyJump j\n").route(host("t", port=2222, user="u", key_file="/k"))
        assert (route.jumps[0].port, route.jumps[0].identity_files) == (22, ())

    def test_loops_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(HostUnreachable, match="loops"):
            config(tmp_path, "Host a\n    ProxyJump b\nHost b\n    ProxyJump a\n").route(host("a"))

    def test_none_means_direct(self, tmp_path: Path) -> None:
        assert config(tmp_path, "Host *\n    ProxyJump none\n").route(host("h")).jumps == ()

    @pytest.mark.parametrize(("spec", "parts"), [
        ("bastion", ("bastion", None, None)),
        ("ops@bastion:2022", ("bastion", "ops", 2022)),
        ("ssh://ops@bastion:2022", ("bastion", "ops", 2022)),
        ("[2001:db8::1]:2222", ("2001:db8::1", None, 2222)),
        ("2001:db8::1", ("2001:db8::1", None, None)),
    ])
    def test_jump_specs(self, spec: str, parts: tuple[str, str | None, int | None]) -> None:
        assert parse_jump(spec) == parts

    @pytest.mark.parametrize("spec", ["", "host:0", "host:http", "user@"])
    def test_bad_jump_specs(self, spec: str) -> None:
        with pytest.raises(HostUnreachable, match="ProxyJump"):
            parse_jump(spec)
