"""The command line over every broken input: exit 65, `file:line:col`, never a traceback."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import pytest
import yaml

from sandfleet.cli import main

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
LOCALHOST = str(ROOT / "inventory" / "localhost.yml")
EXAMPLE = str(ROOT / "playbooks" / "example.yml")


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", sorted((CORPUS / "playbook").glob("*.yml")), ids=lambda p: p.stem)
def test_broken_playbook_exits_65_with_its_position(case: Path) -> None:
    expect = re.match(r"# expect: (\d+):(\d+): ", case.read_text())
    assert expect, f"{case} has no '# expect: LINE:COL: ...' header"
    for command in (["check", str(case), "-i", LOCALHOST], ["run", str(case), "-i", LOCALHOST, "--dry-run"]):
        code, out, err = cli(*command)
        assert code == 65, err
        assert f"{case}:{expect.group(1)}:{expect.group(2)}: error:" in err
        assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("case", sorted(p for p in (CORPUS / "inventory").iterdir() if p.is_dir()),
                         ids=lambda p: p.name)
def test_broken_inventory_exits_65_with_its_position(case: Path) -> None:
    expect = yaml.safe_load((case / "expect.yml").read_text())
    code, _, err = cli("check", EXAMPLE, "-i", str(case / expect["source"]))
    assert code == 65, err
    assert re.search(rf"{re.escape(expect['file'])}:{expect['line']}:\d+: error:", err), err
    assert "Traceback" not in err


def test_check_names_the_targets() -> None:
    code, out, _ = cli("check", EXAMPLE, "-i", LOCALHOST)
    assert code == 0 and "6 task(s) on 1 host(s): localhost" in out


def test_inventory_commands_print_ansible_shapes() -> None:
    code, out, _ = cli("inventory", "-i", LOCALHOST, "--graph")
    assert code == 0 and out == "@all:\n  |--@ungrouped:\n  |  |--localhost\n"
    code, out, _ = cli("inventory", "-i", LOCALHOST, "--list")
    assert code == 0 and '"ungrouped": {\n        "hosts": [\n            "localhost"' in out
    code, _, err = cli("inventory", "-i", LOCALHOST, "--host", "nosuch")
    assert code == 65 and "nosuch" in err


@pytest.mark.parametrize("argv", [["run"], ["inventory", "-i", LOCALHOST], ["bogus"], ["run", EXAMPLE, "-i", LOCALHOST,
                                                                                      "-f", "0"]])
def test_bad_command_lines_exit_64(argv: list[str]) -> None:
    code, _, err = cli(*argv)
    assert code == 64 and "Traceback" not in err


def test_internal_errors_exit_70_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sandfleet.cli

    def boom(*_: object) -> int:
        raise RuntimeError("kaput")

    monkeypatch.setattr(sandfleet.cli, "cmd_check", boom)
    code, _, err = cli("check", EXAMPLE, "-i", LOCALHOST)
    assert code == 70 and err.count("\n") == 1 and "internal error: RuntimeError: kaput" in err
    code, _, err = cli("--debug", "check", EXAMPLE, "-i", LOCALHOST)
    assert code == 70 and "Traceback" in err


def test_the_command_lines_choices_are_the_typed_ones() -> None:
    """The command line spells its choices out (it imports nothing heavy before parsing); they must
    be exactly the values the code is typed for."""
    from sandfleet.cli import build_parser
    from sandfleet.report.outputs import FORMATS
    from sandfleet.transports.hostkeys import POLICIES

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = {a.dest: tuple(a.choices) for a in subcommands.choices["run"]._actions if a.choices}
    assert choices["format"] == FORMATS and choices["host_key_policy"] == POLICIES


def test_the_command_lines_exit_bits_are_the_recaps() -> None:
    from sandfleet import cli
    from sandfleet.report import recap

    assert (cli.EXIT_NO_SANDBOX, cli.EXIT_DENIED) == (recap.EXIT_NO_SANDBOX, recap.EXIT_DENIED)
