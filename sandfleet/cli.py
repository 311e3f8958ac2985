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
from typing import TYPE_CHECKING, NoReturn, Optional, TextIO, Union, cast

from sandfleet import __version__
from sandfleet.errors import InputError, SandfleetError, UsageError

if TYPE_CHECKING:  # the command line imports nothing heavy before parsing
    from sandfleet.api import Sandbox

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
    _run_options(run, verbose="show every task's output, not only failures",
                 unsandboxed="consent to running tasks marked 'sandbox: false' without a sandbox")
    run.add_argument("-t", "--tags", action="append", metavar="TAGS",
                     help="run only tasks with these tags (comma-separated, repeatable)")
    run.add_argument("--skip-tags", action="append", metavar="TAGS",
                     help="skip tasks with these tags (comma-separated, repeatable)")
    run.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report (one testcase per host x task)")
    run.add_argument("--results-dir", metavar="DIR", help="also write DIR/<host>.json with every result of each host")

    _exec_parser(sub)

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

    serve = sub.add_parser("serve", help="keep a fleet open and run the commands sent as JSON-RPC 2.0 on stdin "
                                         "(methods hosts, run, cancel, close: sandfleet/serve.py)")
    _inventory_arg(serve)
    serve.add_argument("-l", "--limit", metavar="PATTERN", help="the only hosts a caller may reach (pattern grammar)")
    serve.add_argument("-f", "--forks", type=_positive_int, default=None, metavar="N", help="hosts to run at once")
    serve.add_argument("--policy", metavar="FILE", help="an operator policy for every command; it can only narrow "
                                                        "the inventory's sandfleet_policy")
    serve.add_argument("--allow-unsandboxed", action="store_true",
                       help="consent to commands sent with 'sandbox: false' (the caller cannot give it)")
    serve.add_argument("--host-key-policy", choices=("reject", "accept-new"), default="reject",  # = POLICIES
                       help="unknown SSH host keys: refuse (default) or record them")
    serve.add_argument("--ssh-config", metavar="FILE", help="ssh_config to read (default ~/.ssh/config)")
    return parser


EXEC_USAGE = "sandfleet exec PATTERN -i INVENTORY [options] -- PROGRAM [ARG ...]"


def _exec_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``exec``: one command, ad hoc (Ansible's ``ansible PATTERN -a``). Everything after ``--``
    is the command's argv, split off before parsing (see :func:`_split_exec`)."""
    ex = sub.add_parser(
        "exec", help="run one command on every host a pattern selects (ad hoc, as 'ansible PATTERN -a')",
        usage=EXEC_USAGE,
        description="Run one command on every host PATTERN selects, in each host's sandbox. The words after "
                    "'--' are its argv, passed as a list (never through a shell); argv, --cwd and --env values "
                    "are templates, as in a playbook ({{ inventory_hostname }}).")
    ex.add_argument("pattern", metavar="PATTERN", help="the hosts, in the pattern grammar ('web:&linux:!db', all)")
    _inventory_arg(ex)
    box = ex.add_argument_group("sandbox (default: the workspace profile, network none; docs/sandbox.md)")
    box.add_argument("--profile", metavar="NAME", help="read-only, workspace (default) or full-access")
    for access, what in (("read", "readable"), ("write", "writable"), ("deny", "hidden (a path or a glob)")):
        box.add_argument(f"--{access}", action="append", default=[], metavar="PATH",
                         help=f"also make PATH {what}: /abs, ~/sub, :workspace_roots[/sub], :tmpdir ... (repeatable)")
    box.add_argument("--network", action="append", default=[], metavar="none|full|DOMAIN[,DOMAIN...]",
                     help="no network (default), the host's, or only these names through the host's proxy")
    box.add_argument("--no-sandbox", action="store_true",
                     help="run without any sandbox (the policy must allow it: --allow-unsandboxed)")
    cmd = ex.add_argument_group("the command")
    cmd.add_argument("--cwd", metavar="DIR", help="its working directory (absolute, ~/sub or :workspace_roots[/sub])")
    cmd.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                     help="an environment variable (repeatable)")
    cmd.add_argument("--timeout", type=_positive_number, metavar="SECONDS", help="kill it after SECONDS")
    _run_options(ex, verbose="also show stderr when the command succeeded, the argv as sent, the wrapper and "
                             "the policy", unsandboxed="consent to --no-sandbox")


def _run_options(parser: argparse.ArgumentParser, *, verbose: str, unsandboxed: str) -> None:
    """The options ``run`` and ``exec`` share: which hosts, how, what is printed, whose policy."""
    parser.add_argument("-l", "--limit", metavar="PATTERN", help="further limit the hosts (pattern grammar)")
    parser.add_argument("-f", "--forks", type=_positive_int, default=None, metavar="N",
                        help="hosts to run at once")
    parser.add_argument("--dry-run", action="store_true",
                        help="render every host's exact wrapper without touching any host")
    parser.add_argument("--format", choices=("text", "json"), default="text")  # = report.outputs.FORMATS
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose)
    parser.add_argument("-e", "--extra-vars", action="append", default=[], metavar="VARS",
                        help="variables that win over all others: k=v ..., YAML/JSON, or @file (repeatable)")
    parser.add_argument("--host-key-policy", choices=("reject", "accept-new"), default="reject",  # = POLICIES
                        help="unknown SSH host keys: refuse (default) or record them")
    parser.add_argument("--allow-unsandboxed", action="store_true", help=unsandboxed)
    parser.add_argument("--ssh-config", metavar="FILE", help="ssh_config to read (default ~/.ssh/config)")
    parser.add_argument("--policy", metavar="FILE",
                        help="an operator policy for every host; it can only narrow the inventory's sandfleet_policy")


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


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
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


def cmd_serve(args: argparse.Namespace, debug: bool) -> int:
    """JSON-RPC on the process's own stdin and stdout (never ``out``/``err``): 0 after ``close``
    or end of input."""
    from sandfleet.serve import serve_stdio

    return serve_stdio(args.inventory, limit=args.limit, forks=args.forks, policy=args.policy,
                       allow_unsandboxed=args.allow_unsandboxed, host_key_policy=args.host_key_policy,
                       ssh_config=args.ssh_config, debug=debug)


def cmd_exec(args: argparse.Namespace, words: list[str], command: Optional[list[str]], out: TextIO,
             err: TextIO) -> int:
    """One command on every host the pattern selects: ``run_command`` with the options as its
    arguments. Text is the ad-hoc blocks (:mod:`sandfleet.report.adhoc`); ``--format json`` and
    ``--dry-run`` print exactly what ``run`` prints; the exit code is the run's."""
    import os

    from sandfleet.api import command_playbook, run_command
    from sandfleet.report.adhoc import AdhocText

    _check_exec_words(args.pattern, words, command)
    assert command is not None
    sandbox, env = _exec_sandbox(args), _exec_env(args.env)
    try:  # checked here so a mistake in the command line is one (64), not an invalid inventory (65)
        command_playbook(command, args.pattern, sandbox=sandbox, cwd=args.cwd, env=env, timeout=args.timeout,
                         source="exec")
    except InputError as exc:
        raise _usage(exc, "exec: ") from None
    text = args.format == "text" and not args.dry_run
    output = AdhocText(out, err, args.verbose, os.environ) if text else out
    try:
        result = run_command(command, hosts=args.pattern, inventory=args.inventory, sandbox=sandbox, cwd=args.cwd,
                             env=env, timeout=args.timeout, limit=args.limit, forks=args.forks,
                             extra_vars=args.extra_vars, dry_run=args.dry_run, policy=args.policy,
                             allow_unsandboxed=args.allow_unsandboxed, host_key_policy=args.host_key_policy,
                             ssh_config=args.ssh_config, output=cast(TextIO, output),
                             format="json" if text else args.format, verbose=args.verbose)
    except KeyboardInterrupt:
        err.write("sandfleet: interrupted; the running tasks were killed\n")
        return EXIT_INTERRUPTED
    if text and not result.hosts:
        limit = f" with --limit {args.limit!r}" if args.limit else ""
        err.write(f"sandfleet: warning: the pattern {args.pattern!r}{limit} matches no host; nothing ran\n")
    return result.exit_code


def _check_exec_words(pattern: str, words: list[str], command: Optional[list[str]]) -> None:
    """exec's words before ``--`` are its options and one pattern; its command comes after."""
    if command is None:
        got = f" (got {' '.join(words)!r} without it)" if words else ""
        raise UsageError(f"exec: the command goes after '--'{got}: {EXEC_USAGE}")
    unknown = [w for w in words if w.startswith("-")]
    if unknown:
        raise UsageError(f"exec: unrecognized arguments: {' '.join(unknown)} (see 'sandfleet exec --help')")
    if words:
        raise UsageError(f"exec: one PATTERN before '--', got {' '.join([pattern, *words])!r}; join patterns "
                         f"with ':' ({':'.join([pattern, *words])!r}): {EXEC_USAGE}")
    if not command:
        raise UsageError(f"exec: no command after '--': {EXEC_USAGE}")


def _exec_sandbox(args: argparse.Namespace) -> Union[Sandbox, bool]:
    """The options as a :class:`~sandfleet.api.Sandbox`: the profile (workspace unless given),
    then each ``--read``/``--write``/``--deny`` path; ``True`` (the default) when none is given."""
    from sandfleet.api import Sandbox

    asked = [option for option, value in (("--profile", args.profile), ("--read", args.read),
                                          ("--write", args.write), ("--deny", args.deny),
                                          ("--network", args.network)) if value]
    if args.no_sandbox:
        if asked:
            raise UsageError(f"exec: --no-sandbox runs the command without any sandbox; it cannot go with "
                             f"{', '.join(asked)}")
        return False
    if not asked:
        return True
    filesystem: dict[str, str] = {}
    for access, paths in (("read", args.read), ("write", args.write), ("deny", args.deny)):
        for path in paths:
            if filesystem.setdefault(path, access) != access:
                raise UsageError(f"exec: {path!r} is given as both --{filesystem[path]} and --{access}")
    try:
        return Sandbox(profile=args.profile or "workspace", filesystem=filesystem, network=_exec_network(args.network))
    except InputError as exc:
        raise _usage(exc, "Sandbox(...): ") from None


def _exec_network(values: list[str]) -> Union[str, list[str]]:
    """``--network``: none, full, or domains (comma-separated, repeatable) for a managed network."""
    if not values:
        return "none"
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        raise UsageError("exec: --network needs none, full or at least one domain")
    mode = [name for name in names if name in ("none", "full")]
    if mode and len(set(names)) > 1:
        raise UsageError(f"exec: --network is none, full or a list of domains, not a mix (got {', '.join(names)})")
    return mode[0] if mode else list(dict.fromkeys(names))


def _exec_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"exec: --env {pair!r}: expected NAME=VALUE")
        env[name] = value
    return env


def _usage(exc: InputError, prefix: str) -> UsageError:
    """A mistake in what the command line built (a sandbox, the command) as the command line's error."""
    message = exc.message[len(prefix):] if exc.message.startswith(prefix) else exc.message
    allowed = f" (allowed: {', '.join(exc.allowed)})" if exc.allowed else ""
    return UsageError(f"exec: {message}{allowed}")


def _split_exec(argv: list[str]) -> tuple[list[str], Optional[list[str]]]:
    """``exec``'s own words, and its command: everything after its first ``--``, taken as is
    (``None`` when there is no ``--``). Split before argparse sees it, so the command's words are
    never read as options (``-- ls -l``) and a ``--`` inside the command stays. Other commands
    keep argparse's own ``--``."""
    first = _command_index(argv)
    if first is None or argv[first] != "exec" or "--" not in argv[first:]:
        return argv, None
    cut = argv.index("--", first)
    return argv[:cut], argv[cut + 1:]


def _command_index(argv: list[str]) -> Optional[int]:
    """Where the command's name is: the first word that is not an option (``sandfleet`` itself
    takes no option with a value)."""
    return next((i for i, word in enumerate(argv) if not word.startswith("-")), None)


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    words, command = _split_exec(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in words
    try:
        parser = build_parser()
        try:
            args, unknown = parser.parse_known_args(words)
        except UsageError as exc:  # `exec all -i inv ls -l`: -l was read as --limit
            first = _command_index(words)
            if command is None and first is not None and words[first] == "exec":
                raise UsageError(f"{exc}; the command goes after '--': {EXEC_USAGE}") from None
            raise
        if args.command == "exec":
            return cmd_exec(args, unknown, command, out, err)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        if args.command == "inventory":
            return cmd_inventory(args, out)
        if args.command == "check":
            return cmd_check(args, out, err)
        if args.command == "serve":
            return cmd_serve(args, debug)
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
