"""Defaults without repeating flags (sandfleet/load/config.py): the config file, the SANDFLEET_*
variables, their precedence (command line > environment > file > default) on every command that
has the option, errors at file:line:col (65) and in the environment (64), ``sandfleet config``, and
what a config file read without being asked for may not loosen."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

import sandfleet.api
import sandfleet.serve
from sandfleet.cli import main
from sandfleet.load.config import KEYS, env_var
from sandfleet.report.adhoc import AdhocText

ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = ROOT / "inventory" / "localhost.yml"


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A clean world: cwd ``proj/``, HOME ``home/``, no SANDFLEET_* variable set."""
    paths = {name: tmp_path / name for name in ("proj", "home", "conf")}
    for path in paths.values():
        path.mkdir()
    monkeypatch.chdir(paths["proj"])
    monkeypatch.setenv("HOME", str(paths["home"]))
    for name in [env_var(key) for key in KEYS] + ["SANDFLEET_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    return paths


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


class Spy:
    """Stands in for what the commands call, recording the arguments the command line built."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[str, Any]] = {}

    def record(self, name: str) -> Any:
        def fake(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = {"args": args, **kwargs}
            return 0 if name == "serve_stdio" else type("R", (), {"exit_code": 0, "hosts": {"h": None}})()
        return fake


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy()
    monkeypatch.setattr(sandfleet.api, "run_playbook", spy.record("run_playbook"))
    monkeypatch.setattr(sandfleet.api, "run_command", spy.record("run_command"))
    monkeypatch.setattr(sandfleet.serve, "serve_stdio", spy.record("serve_stdio"))
    return spy


# -- precedence: command line > environment > file > default, for each setting --------------------

#: key -> (the file's value, the environment's, the command line's): YAML text, variable, flags
LEVELS: dict[str, tuple[str, str, list[str]]] = {
    "inventory": ("[f1.yml, sub/f2.yml]", "e1.yml,e2.yml", ["-i", "c.yml"]),
    "forks": ("3", "4", ["-f", "5"]),
    "host_key_policy": ("accept-new", "reject", ["--host-key-policy", "accept-new"]),
    "policy": ("p-file.yml", "p-env.yml", ["--policy", "p-flag.yml"]),
    "format": ("json", "text", ["--format", "json"]),
    "ssh_config": ("s-file", "s-env", ["--ssh-config", "s-flag"]),
}


def expected(key: str, level: str, where: dict[str, Path]) -> Any:
    conf, proj = where["conf"], where["proj"]
    return {
        "inventory": {"file": [str(conf / "f1.yml"), str(conf / "sub" / "f2.yml")],
                      "env": [str(proj / "e1.yml"), str(proj / "e2.yml")], "flag": ["c.yml"]},
        "forks": {"file": 3, "env": 4, "flag": 5, "default": None},
        "host_key_policy": {"file": "accept-new", "env": "reject", "flag": "accept-new", "default": "reject"},
        "policy": {"file": str(conf / "p-file.yml"), "env": str(proj / "p-env.yml"), "flag": "p-flag.yml",
                   "default": None},
        "format": {"file": "json", "env": "text", "flag": "json", "default": "text"},
        "ssh_config": {"file": str(conf / "s-file"), "env": str(proj / "s-env"), "flag": "s-flag", "default": None},
    }[key][level]


@pytest.mark.parametrize("level", ["default", "file", "env", "flag"])
@pytest.mark.parametrize("key", KEYS)
def test_each_setting_takes_the_first_of_flag_env_file_default(key: str, level: str, where: dict[str, Path],
                                                                spy: Spy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is the user's own (SANDFLEET_CONFIG, mode 0600) in another folder than the cwd;
    each level is set together with every level below it, so the test shows it wins over them."""
    file_value, env_value, flags = LEVELS[key]
    rank = ["default", "file", "env", "flag"].index(level)
    base = [] if key == "inventory" else ["-i", str(LOCALHOST)]
    if rank >= 1:
        monkeypatch.setenv("SANDFLEET_CONFIG", str(write(where["conf"] / "c.yml", f"{key}: {file_value}\n")))
    if rank >= 2:
        monkeypatch.setenv(env_var(key), env_value)
    argv = ["run", "pb.yml", *base, *(flags if rank >= 3 else [])]
    if key == "inventory" and level == "default":
        assert cli(*argv)[0] == 64
        return
    code, _, err = cli(*argv)
    assert code == 0, err
    call = spy.calls["run_playbook"]
    got = call["args"][1] if key == "inventory" else call[key]
    assert got == expected(key, level, where)


@pytest.mark.parametrize("command", ["exec", "serve", "inventory"])
def test_every_command_with_the_option_takes_it(command: str, where: dict[str, Path], spy: Spy,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    proj = where["proj"]
    write(proj / "inv" / "hosts.yml", LOCALHOST.read_text())
    write(proj / "sandfleet.yml", "inventory: inv/hosts.yml\nforks: 7\npolicy: ro.yml\nformat: json\n"
                                  "ssh_config: ssh/config\n")
    monkeypatch.setenv("SANDFLEET_HOST_KEY_POLICY", "accept-new")
    want = ([str(proj / "inv" / "hosts.yml")], 7, str(proj / "ro.yml"), "accept-new", str(proj / "ssh" / "config"))
    if command == "exec":
        assert cli("exec", "all", "--", "true")[0] == 0
        call = spy.calls["run_command"]
        assert (call["inventory"], call["forks"], call["policy"], call["host_key_policy"], call["ssh_config"]) == want
        assert not isinstance(call["output"], AdhocText)  # json: the run's events, not the ad-hoc blocks
    elif command == "serve":
        assert cli("serve")[0] == 0
        call = spy.calls["serve_stdio"]
        assert (call["args"][0], call["forks"], call["policy"], call["host_key_policy"], call["ssh_config"]) == want
    else:
        code, out, err = cli("inventory", "--graph")
        assert code == 0 and "localhost" in out, err


def test_check_takes_the_inventory_and_policy_for_real(where: dict[str, Path]) -> None:
    """No stand-in: the config's policy narrows the run, and the task it refuses is listed."""
    proj = where["proj"]
    write(proj / "inv" / "hosts.yml", LOCALHOST.read_text())
    write(proj / "ro.yml", 'filesystem: {":root": read}\n')
    write(proj / "same.yml", "network: none\n")
    write(proj / "pb.yml", '- hosts: all\n  tasks:\n    - exec: {argv: [touch, x], cwd: ":workspace_roots"}\n')
    write(proj / "sandfleet.yml", "inventory: inv/hosts.yml\npolicy: ro.yml\n")
    code, out, err = cli("check", "pb.yml")
    assert code == 16 and "the policy refuses 1 task(s)" in out, out + err
    code, out, err = cli("check", "pb.yml", "--policy", "same.yml")  # the flag wins
    assert code == 0, out + err


def test_a_real_dry_run_from_the_config_alone(where: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write(where["proj"] / "inv" / "hosts.yml", LOCALHOST.read_text())
    write(where["proj"] / "sandfleet.yml", "inventory: inv/hosts.yml\n")
    monkeypatch.setenv("SANDFLEET_FORMAT", "json")
    code, out, err = cli("exec", "all", "--dry-run", "--", "true")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert any(e.get("host") == "localhost" for e in events)


def test_no_inventory_anywhere_names_the_three_ways(where: dict[str, Path]) -> None:
    for argv in (["run", "pb.yml"], ["exec", "all", "--", "true"], ["inventory", "--list"], ["serve"],
                 ["check", "pb.yml"]):
        code, _, err = cli(*argv)
        assert code == 64, err
        assert "required: -i/--inventory" in err and "SANDFLEET_INVENTORY" in err and "./sandfleet.yml" in err


# -- which file -------------------------------------------------------------------------------------


def test_the_first_file_found_is_read_and_the_others_ignored(where: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    user = write(where["home"] / ".config" / "sandfleet" / "config.yml", "forks: 2\nformat: json\n")
    assert json.loads(cli("config")[1])["settings"]["forks"] == {"value": 2, "source": f"{user}:1"}
    project = write(where["proj"] / "sandfleet.yml", "forks: 3\n", 0o644)
    _, out, _ = cli("config")
    assert out.splitlines()[1].split() == ["forks", "=", "3", f"({project}:1)"]
    assert "format = text" in out  # not merged: the user file's format is ignored with it
    assert f"# ignored: {user} (only the first config file found is read)" in out
    named = write(where["conf"] / "mine.yml", "forks: 4\n")
    monkeypatch.setenv("SANDFLEET_CONFIG", str(named))
    _, out, _ = cli("config")
    assert "forks = 4" in out and f"# config file: {named} (SANDFLEET_CONFIG)" in out
    assert f"# ignored: {project}" in out and f"# ignored: {user}" in out


def test_config_output(where: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    project = write(where["proj"] / "sandfleet.yml", "# mine\ninventory: [a.yml, b/c.yml]\npolicy: ~/p.yml\n")
    monkeypatch.setenv("SANDFLEET_FORKS", "10")
    code, out, _ = cli("config")
    proj, home = where["proj"], where["home"]
    assert code == 0
    assert out.splitlines() == [
        f'inventory = ["{proj}/a.yml", "{proj}/b/c.yml"]  ({project}:2)',
        "forks = 10                        (SANDFLEET_FORKS)",
        "host_key_policy = reject          (default)",
        f"policy = {home}/p.yml".ljust(32) + f"  ({project}:3)",
        "format = text                     (default)",
        "ssh_config = (none)               (default)",
        f"# config file: {project} (current directory)",
    ]
    code, out, _ = cli("config", "--format", "json")
    assert code == 0 and json.loads(out) == {
        "config_file": str(project), "ignored": [], "settings": {
            "inventory": {"value": [f"{proj}/a.yml", f"{proj}/b/c.yml"], "source": f"{project}:2"},
            "forks": {"value": 10, "source": "SANDFLEET_FORKS"},
            "host_key_policy": {"value": "reject", "source": "default"},
            "policy": {"value": f"{home}/p.yml", "source": f"{project}:3"},
            "format": {"value": "text", "source": "default"},
            "ssh_config": {"value": None, "source": "default"}}}


def test_config_without_any_file_shows_the_defaults(where: dict[str, Path]) -> None:
    code, out, _ = cli("config")
    assert code == 0 and "forks = 20" in out and "(default)" in out and out.endswith("# config file: none\n")


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "at", "says"), [
    ("frks: 3\n", "1:1", "unknown config key 'frks'; did you mean 'forks'? (allowed: inventory, forks,"),
    ("forks: 3\nhost-key-policy: reject\n", "2:1", "did you mean 'host_key_policy'?"),
    ("limit: web\n", "1:1", "a standing limit would silently skip hosts"),
    ("forks: ten\n", "1:8", "forks must be a positive integer, got 'ten'"),
    ("forks: 0\n", "1:8", "forks must be a positive integer, got 0"),
    ("forks: true\n", "1:8", "forks must be a positive integer, got a boolean"),
    ("format: yaml\n", "1:9", "unknown format 'yaml' (allowed: text, json)"),
    ("host_key_policy: yes\n", "1:18", "unknown host_key_policy a boolean (allowed: reject, accept-new)"),
    ("inventory: 3\n", "1:12", "inventory must be a path or a non-empty list of paths, got a number"),
    ("inventory: []\n", "1:12", "got an empty list"),
    ("inventory:\n  - a.yml\n  - {x: 1}\n", "3:5", "inventory must be a path (relative to this file's folder), "
                                                   "got a mapping"),
    ("policy:\n", "1:8", "policy must be a path (relative to this file's folder), got null"),
    ("ssh_config: ''\n", "1:13", "got an empty string"),
    ("- forks: 3\n", "1:1", "a config file is a mapping of settings"),
    ("forks: 3\nforks: 4\n", "2:1", "duplicate key 'forks'"),
    ("forks: [3\n", "2:1", "invalid YAML"),
])
def test_a_bad_file_exits_65_at_its_position(text: str, at: str, says: str, where: dict[str, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(where["conf"] / "c.yml", text)
    monkeypatch.setenv("SANDFLEET_CONFIG", str(path))
    for argv in (["config"], ["run", "pb.yml", "-i", "x", "-f", "2"]):  # checked even when flags give all
        code, out, err = cli(*argv)
        assert code == 65 and out == "", err
        assert f"sandfleet: {path}:{at}: error: " in err and says in err, err


@pytest.mark.parametrize(("name", "value", "says"), [
    ("SANDFLEET_FORKS", "ten", "SANDFLEET_FORKS='ten': expected a positive integer"),
    ("SANDFLEET_FORKS", "-1", "SANDFLEET_FORKS='-1': expected a positive integer"),
    ("SANDFLEET_FORMAT", "yaml", "SANDFLEET_FORMAT='yaml': expected one of text, json"),
    ("SANDFLEET_HOST_KEY_POLICY", "yes", "SANDFLEET_HOST_KEY_POLICY='yes': expected one of reject, accept-new"),
    ("SANDFLEET_INVENTORY", " , ", "SANDFLEET_INVENTORY=' , ': expected inventory paths, separated by commas"),
    ("SANDFLEET_CONFIG", "nosuch.yml", "SANDFLEET_CONFIG='nosuch.yml': no such file"),
    ("SANDFLEET_CONFIG", ".", "SANDFLEET_CONFIG='.': is a directory"),
])
def test_a_bad_variable_exits_64_naming_it(name: str, value: str, says: str, where: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    for argv in (["config"], ["inventory", "-i", str(LOCALHOST), "--graph"]):
        code, _, err = cli(*argv)
        assert code == 64 and says in err, err


def test_an_empty_variable_is_unset(where: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write(where["proj"] / "sandfleet.yml", "forks: 3\n")
    for key in KEYS:
        monkeypatch.setenv(env_var(key), "")
    monkeypatch.setenv("SANDFLEET_CONFIG", "")
    assert "forks = 3 " in cli("config")[1]


# -- what a config file may not loosen --------------------------------------------------------------


def test_a_project_file_cannot_accept_new_host_keys(where: dict[str, Path], spy: Spy,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(where["proj"] / "sandfleet.yml", f"inventory: {where['proj']}/i.yml\nhost_key_policy: accept-new\n",
                 0o600)  # even owned by you and private: whoever writes the checkout wrote it
    code, _, err = cli("run", "pb.yml", "--host-key-policy", "reject")
    assert code == 65 and f"{path}:2:18: error: host_key_policy: accept-new" in err
    assert "--host-key-policy accept-new" in err and "SANDFLEET_HOST_KEY_POLICY" in err
    write(path, "host_key_policy: reject\n")
    assert cli("run", "pb.yml", "-i", "x")[0] == 0 and spy.calls["run_playbook"]["host_key_policy"] == "reject"
    monkeypatch.setenv("SANDFLEET_HOST_KEY_POLICY", "accept-new")  # the user's own choice is theirs
    assert cli("run", "pb.yml", "-i", "x")[0] == 0 and spy.calls["run_playbook"]["host_key_policy"] == "accept-new"


@pytest.mark.parametrize("key", ["inventory", "ssh_config"])
@pytest.mark.parametrize("target", ["../elsewhere.yml", "/etc/hosts", "~/prod.yml", "link/x.yml"])
def test_a_project_file_names_only_its_own_projects_hosts(key: str, target: str, where: dict[str, Path]) -> None:
    (where["proj"] / "link").symlink_to(where["home"])  # inside by name, outside in fact
    path = write(where["proj"] / "sandfleet.yml", f"forks: 2\n{key}: {target}\n", 0o644)
    code, _, err = cli("config")
    assert code == 65, err
    assert f"{path}:2:{len(key) + 3}: error: {key} {target!r} is outside this file's folder" in err
    assert f"{env_var(key)}" in err and "~/.config/sandfleet/config.yml" in err


def test_what_a_project_file_may_set(where: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    proj = where["proj"]
    write(proj / "sandfleet.yml", "inventory: [inv/a.yml, ./b.yml]\nssh_config: ssh/config\nforks: 50\n"
                                  "format: json\nhost_key_policy: reject\npolicy: /etc/anywhere.yml\n", 0o664)
    code, out, err = cli("config", "--format", "json")
    assert code == 0, err
    got = {k: v["value"] for k, v in json.loads(out)["settings"].items()}
    assert got == {"inventory": [f"{proj}/inv/a.yml", f"{proj}/b.yml"], "ssh_config": f"{proj}/ssh/config",
                   "forks": 50, "format": "json", "host_key_policy": "reject", "policy": "/etc/anywhere.yml"}


def test_the_users_own_file_may_loosen(where: dict[str, Path]) -> None:
    write(where["home"] / ".config" / "sandfleet" / "config.yml",
          "host_key_policy: accept-new\ninventory: /srv/fleet/hosts.yml\nssh_config: ~/.ssh/fleet\n", 0o600)
    code, out, err = cli("config")
    assert code == 0, err
    assert "host_key_policy = accept-new" in out and "inventory = [\"/srv/fleet/hosts.yml\"]" in out
    assert f"ssh_config = {where['home']}/.ssh/fleet" in out


@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_a_file_others_can_write_is_untrusted(mode: int, where: dict[str, Path]) -> None:
    path = write(where["home"] / ".config" / "sandfleet" / "config.yml", "host_key_policy: accept-new\n", mode)
    code, _, err = cli("config")
    assert code == 65 and f"{path}:1:18: error: host_key_policy: accept-new" in err
    assert f"others can write {path} (mode {mode:04o}; chmod go-w it)" in err
    write(path, "inventory: /srv/fleet/hosts.yml\n", mode)
    code, _, err = cli("config")
    assert code == 65 and "is outside this file's folder" in err
    write(path, "forks: 3\nformat: json\n", mode)  # what cannot loosen still applies
    assert cli("config")[0] == 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_a_file_someone_else_owns_is_untrusted(where: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(where["conf"] / "c.yml", "host_key_policy: accept-new\n")
    os.chown(path, 12345, 12345)
    monkeypatch.setenv("SANDFLEET_CONFIG", str(path))
    code, _, err = cli("config")
    assert code == 65 and f"{path} is owned by uid 12345, not by you" in err
    os.chown(path, 0, 0)
    assert cli("config")[0] == 0
