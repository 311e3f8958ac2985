"""Issue 19: every independent mistake of one ``sandbox:`` block in one pass (sandfleet/load/sandbox_spec.py).

The playbook loader reports each mistake of a file (tests/test_check_all.py); inside a task's
``sandbox:`` block it used to stop at the first. Now each part of the block (its keys, profile,
every filesystem entry's key and access, the network and each of its domains, each workspace root,
the OS hints, each limit) is checked on its own, and the errors come in file order, the first one
being what a single-mistake load reported. Through ``sandfleet check`` and through the API
(``InputError.errors``, also for :class:`sandfleet.Sandbox`).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import sandfleet
from sandfleet.cli import main
from sandfleet.errors import InputError
from sandfleet.load.playbook import load_playbook

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = str(ROOT / "inventory" / "localhost.yml")

BLOCK = """\
- hosts: all
  tasks:
    - name: three mistakes
      exec: {argv: ["true"]}
      sandbox:
        profil: workspace
        network: sometimes
        filesystem:
          "relative/dir": read
"""
#: (line, col, message start) of each mistake in BLOCK, in file order.
BLOCK_ERRORS = [
    (6, 9, "unknown sandbox key 'profil'; did you mean 'profile'?"),
    (7, 18, "unknown network 'sometimes'"),
    (9, 11, "relative path 'relative/dir': a path key must be absolute"),
]

EVERY_PART = """\
- hosts: all
  tasks:
    - exec: {argv: ["true"]}
      sandbox:
        profile: workspce
        filesystem:
          "/ok": read
          "/opt/x": wrte
          "**/*.pem": read
          "C:relative": deny
        workspace_roots: [rel, /abs, 3]
        linux: {prefer: firejail}
        limits: {memory: lots, bogus: 1}
    - exec: {argv: ["true"]}
      sandbox:
        network: {allow: ["http://x.org", ok.org, "*"], deny: [3], extra: 1}
"""
EVERY_PART_ERRORS = [
    (5, 18, "unknown profile 'workspce'"),
    (8, 21, "access for '/opt/x' must be read, write or deny, got 'wrte'"),
    (9, 23, "glob '**/*.pem' can only be used with deny, not read"),
    (10, 11, "relative path 'C:relative'"),
    (11, 27, "workspace root must be an absolute path: 'rel'"),
    (11, 38, "a workspace root must be a string, got a number"),
    (12, 25, "unknown linux.prefer 'firejail'"),
    (13, 26, "memory must be a positive size"),
    (13, 32, "unknown limit 'bogus'"),
    (16, 27, "'http://x.org' is a URL"),
    (16, 51, "'*' would allow every domain"),
    (16, 64, "a domain must be a string, got a number"),
    (16, 68, "unknown network key 'extra'"),
]


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "site.yml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _errors(path: str) -> InputError:
    with pytest.raises(InputError) as info:
        load_playbook(path)
    return info.value


def _check(path: str) -> tuple[int, list[str]]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["check", path, "-i", INVENTORY], out=out, err=err)
    return code, err.getvalue().splitlines()


def _positions(err: InputError) -> list[tuple[int, int]]:
    return [(e.mark.line, e.mark.col) if e.mark else (0, 0) for e in err.errors]


def test_three_independent_mistakes_in_one_block_are_three_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, BLOCK)
    err = _errors(path)
    assert _positions(err) == [(line, col) for line, col, _ in BLOCK_ERRORS], str(err)
    for e, (_, _, start) in zip(err.errors, BLOCK_ERRORS):
        assert e.message.startswith(start), e.message
    assert err.errors[1].allowed == ("none", "full", "{allow: [domains], deny: [domains]}")
    assert (err.message, err.mark) == (err.errors[0].message, err.errors[0].mark)

    code, lines = _check(path)
    assert code == 65
    assert lines == [f"sandfleet: {e.line()}" for e in err.errors] + ["sandfleet: 3 errors"]
    assert lines[0].startswith(f"sandfleet: {path}:6:9: error: unknown sandbox key 'profil'")


def test_the_first_mistake_alone_reads_as_it_did(tmp_path: Path) -> None:
    """With only the first mistake left, the error is exactly the collected one's first."""
    alone = _errors(_write(tmp_path, BLOCK.replace("        network: sometimes\n", "")
                           .replace("        filesystem:\n          \"relative/dir\": read\n", "")))
    both = _errors(_write(tmp_path, BLOCK))
    assert alone.errors == (alone,) and alone.line() == both.errors[0].line()


def test_every_part_of_a_block_is_checked_on_its_own(tmp_path: Path) -> None:
    err = _errors(_write(tmp_path, EVERY_PART))
    assert _positions(err) == [(line, col) for line, col, _ in EVERY_PART_ERRORS], str(err)
    for e, (_, _, fragment) in zip(err.errors, EVERY_PART_ERRORS):
        assert fragment in e.message, e.message


def test_an_entry_with_a_bad_key_and_a_bad_access_is_two_errors(tmp_path: Path) -> None:
    text = BLOCK.replace("        profil: workspace\n        network: sometimes\n", "").replace(
        '"relative/dir": read', '"relative/dir": none')
    err = _errors(_write(tmp_path, text))
    assert [e.message.split(":")[0] for e in err.errors] == ["relative path 'relative/dir'",
                                                              "access for 'relative/dir' must be read, write or deny, "
                                                              "got 'none'; 'none' is spelled 'deny'"]


def test_a_dependent_check_is_not_a_second_error(tmp_path: Path) -> None:
    """A filesystem whose only entry is wrong is not also "empty": one mistake, one error."""
    text = BLOCK.replace("        profil: workspace\n        network: sometimes\n", "")
    err = _errors(_write(tmp_path, text))
    assert err.errors == (err,) and "relative path" in err.message
    empty = _errors(_write(tmp_path, BLOCK.replace("        filesystem:\n          \"relative/dir\": read\n",
                                                   "        filesystem: {}\n")))
    assert [e.mark.line for e in empty.errors if e.mark] == [6, 7, 8]
    assert "filesystem is empty and no profile is given" in empty.errors[2].message


def test_the_api_raises_every_mistake_of_a_sandbox(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        sandfleet.run_command(["true"], inventory=INVENTORY, dry_run=True,
                              sandbox={"profil": "workspace", "network": "sometimes",
                                       "filesystem": {"relative/dir": "read"}})
    messages = [e.message for e in info.value.errors]
    assert len(messages) == 3 and all(m.startswith("run_command: ") for m in messages), messages
    assert "unknown sandbox key 'profil'" in messages[0] and "unknown network 'sometimes'" in messages[1]
    assert "relative path 'relative/dir'" in messages[2]

    with pytest.raises(InputError) as info:
        sandfleet.Sandbox(profile="workspce", filesystem={"rel": "read", "/x": "wrte"}, network="sometimes")
    assert [e.message.split(":")[1].split("'")[0].strip() for e in info.value.errors] == [
        "unknown profile", "relative path", "access for", "unknown network"]
