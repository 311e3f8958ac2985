"""User-facing messages: one program prefix, YAML errors with the source line and a plain hint,
did-you-mean for Ansible/sandfleet variable typos, explicit localhost stays SSH (as in Ansible),
accept-new says which host keys it recorded."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from sandfleet.cli import main
from sandfleet.errors import InputError
from sandfleet.inventory import hostconfig, load_inventory
from sandfleet.load.yamlsrc import load_yaml_file, source_excerpt
from sandfleet.transports.hostkeys import ACCEPT_NEW, KnownHosts, fingerprint


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


# 1. usage errors: the program is named once

@pytest.mark.parametrize(("argv", "first"), [
    (["bogus"], "sandfleet: argument COMMAND: invalid choice: 'bogus'"),
    (["run"], "sandfleet run: the following arguments are required: playbook"),
    (["inventory", "-i", "x"], "sandfleet inventory: one of the arguments --list --graph --host is required"),
])
def test_usage_error_names_the_program_once(argv: list[str], first: str) -> None:
    code, out, err = cli(*argv)
    assert code == 64 and out == ""
    assert err.startswith(first), err
    assert "sandfleet: sandfleet" not in err and err.count("\n") == 1


# 2. YAML syntax errors: the line, a caret under the column, and a hint for the common mistakes

BROKEN = {
    "tab": ("- hosts: all\n  tasks:\n\t- shell: echo\n", 3, 1, "a tab is not allowed for indentation",
            "  3 | \t- shell: echo\n    | ^"),
    "colon_without_space": ("- hosts:all\n  tasks:\n    - shell: echo\n", 2, 8,
                            "mapping values are not allowed here: is a ':' missing, or missing a space after it",
                            "  2 |   tasks:\n    |        ^"),
    "bad_indentation": ("- hosts: all\n  tasks:\n    - name: x\n      shell: echo\n     args: y\n", 5, 6,
                        "is the line indented wrongly?", "  5 |      args: y\n    |      ^"),
    "unclosed_quote": ('- hosts: all\n  tasks:\n    - name: "x\n', 4, 1, "a quote is never closed",
                       '  3 |     - name: "x\n    |             ^'),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_yaml_syntax_error_shows_line_caret_and_hint(name: str, tmp_path: Path) -> None:
    text, line, col, hint, excerpt = BROKEN[name]
    path = tmp_path / f"{name}.yml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_yaml_file(path)
    err = info.value
    assert err.mark is not None and (err.mark.line, err.mark.col) == (line, col)
    first, *rest = str(err).split("\n")
    assert first.startswith(f"{path}:{line}:{col}: error: invalid YAML: ") and hint in first, first
    assert "\n".join(rest) == excerpt


def test_yaml_error_reaches_the_command_line_with_its_excerpt(tmp_path: Path) -> None:
    book = tmp_path / "pb.yml"
    book.write_text("- hosts:all\n  tasks:\n    - shell: echo\n")
    inv = tmp_path / "hosts.ini"
    inv.write_text("h ansible_connection=local\n")
    code, _, err = cli("check", str(book), "-i", str(inv))
    assert code == 65
    lines = err.splitlines()
    assert lines[0].startswith(f"sandfleet: {book}:2:8: error: invalid YAML: mapping values") and lines[1:3] == [
        "  2 |   tasks:", "    |        ^"], err


def test_a_template_value_left_unquoted_says_to_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "pb.yml"
    path.write_text("- hosts: all\n  tasks:\n    - debug:\n        msg: {{ x }}\n")
    with pytest.raises(InputError, match=r"a value starting with '\{\{' must be quoted"):
        load_yaml_file(path)


def test_excerpt_past_the_end_is_empty() -> None:
    assert source_excerpt("a: 1\n", 2, 1) == "" and source_excerpt("a: [1\n", 1, 4) == "  1 | a: [1\n    |    ^"


# 3. variable typos

@pytest.fixture(autouse=True)
def fresh_warnings() -> None:
    hostconfig._warned.clear()


def test_ansible_variable_typo_warns_at_its_line_with_the_close_name(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    web1:\n      ansible_conection: local\n    web2:\n")
    inventory = load_inventory([str(inv)])
    assert inventory.host_config("web1").connection == "ssh"  # as in Ansible: the typo is ignored...
    inventory.host_config("web1")
    err = capsys.readouterr().err
    # ...but said, once, where it was written
    assert err == (f"sandfleet: {inv}:4:26: warning: unknown variable 'ansible_conection', did you mean "
                   "'ansible_connection'? (Ansible ignores it silently, and so does sandfleet)\n")


@pytest.mark.parametrize(("name", "close"), [
    ("ansible_hsot", "ansible_host"), ("ansible_usr", "ansible_user"), ("ansible_hosts", "ansible_host"),
    ("ansible_pyhton_interpreter", "ansible_python_interpreter"), ("ansible_become_methods", "ansible_become_method"),
    ("ansible_winrm_transport", None), ("ansible_os", None), ("ansible_user_dir", "ansible_user_dir"),
    ("sandfleet_sandbx", "sandfleet_sandbox"), ("sandfleet_foo", None),
])
def test_did_you_mean(name: str, close: str) -> None:
    known = hostconfig.SANDFLEET_VARS if name.startswith("sandfleet_") else hostconfig.ANSIBLE_VARS
    assert hostconfig.did_you_mean(name, known) == close


def test_unrelated_ansible_variables_stay_silent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("web1 ansible_winrm_transport=ntlm ansible_connection=local my_var=1\n")
    load_inventory([str(inv)]).host_config("web1")
    assert capsys.readouterr().err == ""


def test_sandfleet_variable_typo_is_an_error_that_names_the_close_one(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("web1 sandfleet_sandbox_resue=false\n")
    with pytest.raises(InputError) as info:
        load_inventory([str(inv)]).host_config("web1")
    assert "unknown sandfleet variable 'sandfleet_sandbox_resue' (did you mean 'sandfleet_sandbox_reuse'?)" \
        in info.value.message


# 4. -i localhost, : explicitly listed, so an ordinary SSH host, as in Ansible

@pytest.mark.parametrize("source", ["localhost,", "127.0.0.1,"])
def test_an_explicit_localhost_is_reached_over_ssh_as_in_ansible(source: str) -> None:
    inventory = load_inventory([source])
    name = source.rstrip(",")
    assert inventory.host_config(name).connection == "ssh"
    assert inventory.host_config(name, {"ansible_connection": "local"}).connection == "local"


# 5. accept-new says which keys it added, and creates a missing ~/.ssh private

def key(seed: int) -> bytes:
    return b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + bytes([seed]) * 32


def test_accept_new_says_which_keys_it_added(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    told: list[str] = []
    known = KnownHosts([str(path)], str(path), notice=told.append)
    assert known.verify("web1", "ssh-ed25519", key(1), ACCEPT_NEW, keyscan="ssh-keyscan web1") is True
    assert known.verify("[web2]:2222", "ssh-ed25519", key(2), ACCEPT_NEW, keyscan="ssh-keyscan web2") is True
    assert known.verify("web1", "ssh-ed25519", key(1), ACCEPT_NEW, keyscan="ssh-keyscan web1") is False
    assert told == [f"added web1's ssh-ed25519 key ({fingerprint(key(1))}) to {path}",
                    f"added [web2]:2222's ssh-ed25519 key ({fingerprint(key(2))}) to {path}"]


def test_the_default_notice_is_one_stderr_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "known_hosts"
    KnownHosts([str(path)], str(path)).verify("h", "ssh-ed25519", key(3), ACCEPT_NEW, keyscan="ssh-keyscan h")
    assert capsys.readouterr().err == f"sandfleet: added h's ssh-ed25519 key ({fingerprint(key(3))}) to {path}\n"


def test_a_missing_dot_ssh_is_created_0700(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = Path("~/.ssh/known_hosts").expanduser()
    assert not path.parent.exists()
    KnownHosts([str(path)], str(path), notice=lambda _: None).verify(
        "h", "ssh-ed25519", key(4), ACCEPT_NEW, keyscan="ssh-keyscan h")
    assert path.parent.stat().st_mode & 0o777 == 0o700 and path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == f"h ssh-ed25519 {base64.b64encode(key(4)).decode()}\n"


@pytest.mark.parametrize(("key", "line"), [("when", 5), ("failed_when", 6), ("loop", 7)])
def test_an_undefined_variable_in_a_condition_or_loop_points_at_its_own_line(tmp_path: Path, key: str,
                                                                             line: int) -> None:
    """Rendered on the host's turn, such an error used to point at the task's first line."""
    values = {"when": "true", "failed_when": "false", "loop": "[1]"}
    values[key] = "nosuchvar" if key != "loop" else '"{{ nosuchvar }}"'
    (tmp_path / "pb.yml").write_text(
        "- hosts: all\n  tasks:\n    - name: t\n      exec: {argv: [\"true\"]}\n"
        f"      when: {values['when']}\n      failed_when: {values['failed_when']}\n      loop: {values['loop']}\n")
    (tmp_path / "inv.yml").write_text("all:\n  hosts:\n    here: {ansible_connection: local}\n")
    out, err = io.StringIO(), io.StringIO()
    main(["run", str(tmp_path / "pb.yml"), "-i", str(tmp_path / "inv.yml")], out, err)
    assert f"pb.yml:{line}:" in out.getvalue() + err.getvalue() and "nosuchvar" in out.getvalue() + err.getvalue()
