"""The ``sandfleet`` command line (docs/architecture.md §6).

Every user mistake reaches the user as one line naming file, line and column with exit 65 (or 64
for the command line itself); a bug in sandfleet exits 70 with a one-line message, and the
traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn, Optional, TextIO

from sandfleet import __version__
from sandfleet.errors import SandfleetError, UsageError

EXIT_OK = 0
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_NO_SANDBOX, EXIT_DENIED = 8, 16  # = report.recap's bits (tests/test_cli.py checks)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a bad command line; docs/architecture.md §6 says 64."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sandfleet", description="Run commands across a fleet, each in its host's OS sandbox.")
    parser.add_argument("--version", action="version", version=f"sandfleet {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run a playbook (or --dry-run it)")
    run.add_argument("playbook")
    _inventory_arg(run)
    run.add_argument("-l", "--limit", metavar="PATTERN", help="further limit the hosts (pattern grammar)")
    run.add_argument("-f", "--forks", type=_positive_int, default=None, metavar="N",
                     help="hosts to run at once")
    run.add_argument("--dry-run", action="store_true",
                     help="render every host's exact wrapper without touching any host")
    run.add_argument("--format", choices=("text", "json"), default="text")  # = report.outputs.FORMATS
    run.add_argument("-v", "--verbose", action="store_true", help="show every task's output, not only failures")
    run.add_argument("-e", "--extra-vars", action="append", default=[], metavar="VARS",
                     help="variables that win over all others: k=v ..., YAML/JSON, or @file (repeatable)")
    run.add_argument("-t", "--tags", action="append", metavar="TAGS",
                     help="run only tasks with these tags (comma-separated, repeatable)")
    run.add_argument("--skip-tags", action="append", metavar="TAGS",
                     help="skip tasks with these tags (comma-separated, repeatable)")
    run.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report (one testcase per host x task)")
    run.add_argument("--results-dir", metavar="DIR", help="also write DIR/<host>.json with every result of each host")
    run.add_argument("--host-key-policy", choices=("reject", "accept-new"), default="reject",  # = POLICIES
                     help="unknown SSH host keys: refuse (default) or record them")
    run.add_argument("--allow-unsandboxed", action="store_true",
                     help="consent to running tasks marked 'sandbox: false' without a sandbox")
    run.add_argument("--ssh-config", metavar="FILE", help="ssh_config to read (default ~/.ssh/config)")
    run.add_argument("--policy", metavar="FILE",
                     help="an operator policy for every host; it can only narrow the inventory's sandfleet_policy")

    inv = sub.add_parser("inventory", help="show an inventory as ansible-inventory does")
    _inventory_arg(inv)
    what = inv.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="all groups and hosts as JSON")
    what.add_argument("--graph", action="store_true", help="the group tree")
    what.add_argument("--host", metavar="HOST", help="one host's merged variables as JSON")

    check = sub.add_parser("check", help="validate a playbook and inventory, show the targets and what the "
                                         "policy refuses")
    check.add_argument("playbook")
    _inventory_arg(check)
    check.add_argument("-l", "--limit", metavar="PATTERN")
    check.add_argument("--policy", metavar="FILE", help="the operator policy the run would use")
    check.add_argument("--allow-unsandboxed", action="store_true", help="as for run")
    return parser


def _inventory_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--inventory", action="append", required=True, metavar="INVENTORY",
                        help="inventory file or directory (repeat to merge, in order)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def cmd_inventory(args: argparse.Namespace, out: TextIO) -> int:
    from sandfleet.inventory import dumps, load_inventory

    inventory = load_inventory(args.inventory)
    if args.list:
        out.write(dumps(inventory.to_list_json()) + "\n")
    elif args.graph:
        out.write(inventory.graph().rstrip("\n") + "\n")
    else:
        out.write(dumps(inventory.host(args.host)) + "\n")
    return EXIT_OK


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Valid files exit 0; tasks the operator's policy refuses (a dry-run's verdict: the host
    owner's own file is checked only when the task reaches the host) are listed and exit 16."""
    from sandfleet.api import TaskResult, load_inventory, run_playbook
    from sandfleet.load.playbook import load_playbook
    from sandfleet.report.terminal import printable

    playbook, inventory = load_playbook(args.playbook), load_inventory(args.inventory)
    for warning in playbook.warnings:
        err.write(f"{warning}\n")
    for play in playbook.plays:
        hosts = inventory.select(play.hosts, args.limit)
        for name in hosts:
            inventory.host_config(name)  # validates every sandfleet_*/ansible_* variable it reads
        out.write(f"play {play.name or play.hosts!r}: {len(play.tasks)} task(s) on {len(hosts)} host(s)"
                  f"{': ' + ', '.join(hosts) if hosts else ' (the pattern matches no host)'}\n")
    refused: list[TaskResult] = []
    result = run_playbook(playbook, inventory, limit=args.limit, policy=args.policy, dry_run=True,
                          allow_unsandboxed=args.allow_unsandboxed,
                          on_event=lambda r: refused.append(r) if r.status.refused else None)
    for r in sorted(refused, key=lambda r: list(result.hosts).index(r.host)):
        out.write(printable(f"{r.status}: [{r.host}] {r.task}: {r.message or ''}") + "\n")
    out.write(f"{args.playbook}: OK{f' (the policy refuses {len(refused)} task(s))' if refused else ''}\n")
    return result.exit_code & (EXIT_DENIED | EXIT_NO_SANDBOX)


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from sandfleet.api import run_playbook

    try:
        result = run_playbook(args.playbook, args.inventory, limit=args.limit, forks=args.forks,
                              extra_vars=args.extra_vars, tags=args.tags, skip_tags=args.skip_tags,
                              dry_run=args.dry_run, policy=args.policy, allow_unsandboxed=args.allow_unsandboxed,
                              host_key_policy=args.host_key_policy, ssh_config=args.ssh_config,
                              on_warning=lambda w: print(w, file=err), output=out, format=args.format,
                              verbose=args.verbose, junit=args.junit, results_dir=args.results_dir)
    except KeyboardInterrupt:  # the outputs have written what they had (the partial recap, files)
        err.write("sandfleet: interrupted; the running tasks were killed\n")
        return EXIT_INTERRUPTED
    return result.exit_code


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "inventory":
            return cmd_inventory(args, out)
        if args.command == "check":
            return cmd_check(args, out, err)
        return cmd_run(args, out, err)
    except SandfleetError as exc:
        err.write(f"sandfleet: {exc}\n")
        if debug and exc.exit_code == EXIT_INTERNAL:
            traceback.print_exc(file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        err.write("sandfleet: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug in sandfleet, not a user mistake
        err.write(f"sandfleet: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)\n")
        if debug:
            traceback.print_exc(file=err)
        return EXIT_INTERNAL
