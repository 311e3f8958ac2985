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
    from sandfleet.load.config import Settings

EXIT_OK = 0
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_NO_SANDBOX, EXIT_DENIED = 8, 16  # = report.recap's bits (tests/test_cli.py checks)
EXIT_NO_HOSTS = 1  # = report.recap.EXIT_NO_HOSTS: no play matched any host


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
    run.add_argument("--report", metavar="FILE.html",
                     help="also write a self-contained HTML report (timeline per host, recap, failures, policy)")
    run.add_argument("--results-dir", metavar="DIR", help="also write DIR/<host>.json with every result of each host")
    run.add_argument("--start-at-task", metavar="NAME",
                     help="skip every task before the first one named NAME (or matching it as a glob), across plays")
    run.add_argument("--list-hosts", action="store_true",
                     help="list each play's hosts (after --limit) and run nothing, as ansible-playbook does; "
                          "--dry-run previews each host's exact wrapper")
    run.add_argument("--list-tasks", action="store_true",
                     help="list each play's tasks with their tags (after --tags/--skip-tags/--start-at-task) and "
                          "run nothing; --dry-run previews each host's exact wrapper")

    _exec_parser(sub)

    merge = sub.add_parser("merge", help="combine every slice's --results-dir (run --slice K/N) into one recap, one "
                                         "JUnit file and one exit code, as one run over all hosts",
                           description="Combine the --results-dir of every slice of one sliced run (sandfleet run "
                                       "--slice K/N --results-dir DIR) as one run over all hosts would have "
                                       "reported it: the recap, --junit, --format json, --results-dir, and its "
                                       "exit code (the OR of the slices' bits). A slice missing or given twice, "
                                       "or slices of another run, are refused with exit 65 (docs/slicing.md).")
    merge.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR", help="each slice's --results-dir")
    merge.add_argument("--format", choices=("text", "json"), default=None)
    merge.add_argument("--junit", metavar="FILE", help="also write one JUnit XML report for every host")
    merge.add_argument("--results-dir", metavar="DIR", help="also write DIR/<host>.json for every host, as one run")

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
    serve.add_argument("--host-key-policy", choices=("reject", "accept-new"), default=None,  # = POLICIES; config
                       help="unknown SSH host keys: refuse (default) or record them")
    serve.add_argument("--ssh-config", metavar="FILE", help="ssh_config to read (default ~/.ssh/config)")

    config = sub.add_parser("config", help="show the effective defaults (SANDFLEET_* variables, the config file) "
                                           "and where each comes from")
    config.add_argument("--format", choices=("text", "json"), default=None)
    _doctor_parsers(sub)
    _agent_parser(sub)
    completion = sub.add_parser("completion", help="print a shell completion script: "
                                                   "source <(sandfleet completion bash)")
    completion.add_argument("shell", choices=("bash", "zsh"))
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
    parser.add_argument("--slice", metavar="K/N|auto|auto/N",
                        help="run only the K-th of N slices of the hosts, the same split in every process "
                             "(docs/slicing.md); auto: K and N from GitLab, Buildkite or CircleCI; auto/N: K from "
                             "Kubernetes' JOB_COMPLETION_INDEX")
    parser.add_argument("--dry-run", action="store_true",
                        help="render every host's exact wrapper without touching any host")
    parser.add_argument("--format", choices=("text", "json"), default=None)  # = report.outputs.FORMATS; None: config
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose)
    parser.add_argument("-e", "--extra-vars", action="append", default=[], metavar="VARS",
                        help="variables that win over all others: k=v ..., YAML/JSON, or @file (repeatable)")
    parser.add_argument("--host-key-policy", choices=("reject", "accept-new"), default=None,  # = POLICIES; config
                        help="unknown SSH host keys: refuse (default) or record them")
    _become_pass_arg(parser)
    parser.add_argument("--allow-unsandboxed", action="store_true", help=unsandboxed)
    parser.add_argument("--ssh-config", metavar="FILE", help="ssh_config to read (default ~/.ssh/config)")
    parser.add_argument("--policy", metavar="FILE",
                        help="an operator policy for every host; it can only narrow the inventory's sandfleet_policy")


def _become_pass_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-K", "--ask-become-pass", action="store_true",
                        help="ask once for the password sudo wants on ansible_become hosts (an inventory's "
                             "ansible_become_password wins); sent only to sudo's prompt")


def _become_password(args: argparse.Namespace, err: TextIO) -> Optional[str]:
    """``--ask-become-pass``: the password, asked once on the terminal (stdin when there is none,
    as getpass does), before any host is reached; None without the flag."""
    if not getattr(args, "ask_become_pass", False):
        return None
    import getpass

    return getpass.getpass("BECOME password: ", stream=err)


def _inventory_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--inventory", action="append", metavar="INVENTORY",  # else the config's
                        help="inventory file or directory (repeat to merge, in order; default: SANDFLEET_INVENTORY, "
                             "then the config file's inventory)")


def _apply_settings(args: argparse.Namespace) -> Settings:
    """Each of the command's options not given on the command line takes its value from the
    environment, then the config file, then the default (sandfleet/load/config.py); ``config``
    itself takes none from its own command line (its --format is its own output's)."""
    import os
    from pathlib import Path

    from sandfleet.load.config import KEYS, resolve

    flags = {} if args.command == "config" else {key: getattr(args, key) for key in KEYS if hasattr(args, key)}
    settings = resolve(flags, os.environ, Path.cwd(), Path.home())
    for key in flags:
        setattr(args, key, settings[key])
    if "inventory" in flags and not args.inventory:
        raise UsageError(f"sandfleet {args.command}: the following arguments are required: -i/--inventory, or "
                         f"SANDFLEET_INVENTORY=PATH[,PATH...], or 'inventory:' in a config file (the first of "
                         f"$SANDFLEET_CONFIG, ./sandfleet.yml, ~/.config/sandfleet/config.yml)")
    return settings


def cmd_config(settings: Settings, format: Optional[str], out: TextIO) -> int:
    """The effective settings, each with where it came from (``forks = 10  (SANDFLEET_FORKS)``)."""
    import dataclasses
    import json

    from sandfleet.load.config import Setting
    from sandfleet.run.scheduler import DEFAULT_FORKS

    if settings.values["forks"].value is None:  # the run's own default, shown as the number it is
        settings = dataclasses.replace(settings, values={**settings.values, "forks": Setting(DEFAULT_FORKS, "default")})
    if (format or settings["format"]) == "json":
        out.write(json.dumps(settings.to_json(), indent=2) + "\n")
    else:
        out.write(settings.text())
    return EXIT_OK


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


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _options(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, list[str]]]:
    """A parser's option strings, and the choices of those that take one of a few words."""
    words: list[str] = []
    choices: dict[str, list[str]] = {}
    for action in parser._actions:
        words += action.option_strings
        if action.option_strings and action.choices and not isinstance(action.choices, dict):
            for option in action.option_strings:
                choices[option] = [str(c) for c in action.choices]
    return words, choices


def completion_script(shell: str) -> str:
    """A bash (or zsh, through bashcompinit) completion for ``sandfleet``, from the parser itself:
    subcommands, each one's options, and the words of options with choices; files otherwise."""
    parser = build_parser()
    commands = _subcommands(parser)
    top, _ = _options(parser)
    cases, prev_cases = [], []
    for name, sub in commands.items():
        words, choices = _options(sub)
        positional = [str(c) for a in sub._actions if not a.option_strings and a.choices
                      for c in a.choices]
        cases.append(f"        {name}) opts={' '.join([*words, *positional])!r} ;;")
        prev_cases += [f"        {name}:{option}) COMPREPLY=($(compgen -W {' '.join(words)!r} -- \"$cur\")); return ;;"
                       for option, words in choices.items()]
    lines = [
        "# sandfleet completion (generated by 'sandfleet completion " + shell + "')",
        "_sandfleet() {",
        "    local cur prev cmd opts i",
        "    cur=\"${COMP_WORDS[COMP_CWORD]}\"",
        "    prev=\"${COMP_WORDS[COMP_CWORD-1]}\"",
        "    cmd=\"\"",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        case \"${COMP_WORDS[i]}\" in -*) ;; *) cmd=\"${COMP_WORDS[i]}\"; break ;; esac",
        "    done",
        "    if [[ -z $cmd ]]; then",
        f"        COMPREPLY=($(compgen -W {' '.join([*commands, *top])!r} -- \"$cur\"))",
        "        return",
        "    fi",
        "    case \"$cmd:$prev\" in",
        *prev_cases,
        "    esac",
        "    case \"$cmd\" in",
        *cases,
        "        *) opts=\"\" ;;",
        "    esac",
        "    if [[ $cur == -* || $cmd == completion ]]; then",
        "        COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))",
        "    else",
        "        COMPREPLY=($(compgen -f -- \"$cur\"))",
        "    fi",
        "}",
        "complete -o default -F _sandfleet sandfleet",
    ]
    if shell == "zsh":
        lines[1:1] = ["autoload -U +X bashcompinit && bashcompinit"]
        lines.insert(0, "#compdef sandfleet")
    return "\n".join(lines) + "\n"


def cmd_inventory(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from sandfleet.inventory import dumps, load_inventory

    def warn(message: str) -> None:
        err.write(f"[WARNING]: {message}\n")

    inventory = load_inventory(args.inventory)
    if args.list:
        out.write(dumps(inventory.to_list_json(), warn) + "\n")
    elif args.graph:
        out.write(inventory.graph().rstrip("\n") + "\n")
    else:
        out.write(dumps(inventory.host(args.host), warn) + "\n")
    return EXIT_OK


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Valid files exit 0; invalid ones exit 65 with every mistake of both files, one per line;
    tasks the operator's policy refuses (a dry-run's verdict: the host owner's own file is checked
    only when the task reaches the host) are listed and exit 16; a playbook none of whose plays
    matches any host would run nothing: it warns as ``run`` does and exits 1."""
    import os

    from sandfleet.api import TaskResult, load_inventory, run_playbook
    from sandfleet.load.playbook import load_playbook
    from sandfleet.report.terminal import printable

    errors: list[InputError] = []
    try:  # both files are checked, so one pass shows the mistakes of both
        playbook = load_playbook(args.playbook)
    except InputError as exc:
        errors.append(exc)
    try:  # with the group_vars/ and host_vars/ beside the playbook: their mistakes are the files'
        inventory = load_inventory(args.inventory).beside_playbook(os.path.dirname(os.path.abspath(args.playbook)))
    except InputError as exc:
        errors.append(exc)
    if errors:
        raise InputError.collect(errors)
    for play in playbook.plays:
        hosts = inventory.select(play.hosts, args.limit)
        for name in hosts:
            inventory.host_config(name)  # validates every sandfleet_*/ansible_* variable it reads
        out.write(f"play {play.name or play.hosts!r}: {len(play.tasks)} task(s) on {len(hosts)} host(s)"
                  f"{': ' + ', '.join(hosts) if hosts else ' (the pattern matches no host)'}\n")
    refused: list[TaskResult] = []
    result = run_playbook(playbook, inventory, limit=args.limit, policy=args.policy, dry_run=True,
                          allow_unsandboxed=args.allow_unsandboxed, on_warning=lambda w: print(w, file=err),
                          on_event=lambda r: refused.append(r) if r.status.refused else None)
    for r in sorted(refused, key=lambda r: list(result.hosts).index(r.host)):
        out.write(printable(f"{r.status}: [{r.host}] {r.task}: {r.message or ''}") + "\n")
    if result.exit_code == EXIT_NO_HOSTS:
        out.write(f"{args.playbook}: no play matches any host; nothing would run\n")
        return EXIT_NO_HOSTS
    out.write(f"{args.playbook}: OK{f' (the policy refuses {len(refused)} task(s))' if refused else ''}\n")
    return result.exit_code & (EXIT_DENIED | EXIT_NO_SANDBOX)


def cmd_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``run --list-hosts``/``--list-tasks``: ansible-playbook's listing, per play, of the hosts
    (after ``--limit``) and the task names with their tags (after ``--tags``, ``--skip-tags`` and
    ``--start-at-task``); nothing runs, and unmatched pattern terms are warned about as ``run`` does."""
    import os

    from sandfleet.api import load_inventory, start_position
    from sandfleet.load.keywords import TagFilter
    from sandfleet.load.playbook import load_playbook
    from sandfleet.report.terminal import printable
    from sandfleet.run.slicing import parse_slice, plan, run_once_warnings

    part = None if args.slice is None else parse_slice(args.slice, os.environ)
    playbook, inventory = load_playbook(args.playbook), load_inventory(args.inventory)
    start = None if args.start_at_task is None else start_position(playbook, args.start_at_task)
    tags = TagFilter.from_cli(args.tags, args.skip_tags)
    unmatched = [play.hosts for play in playbook.plays] + ([args.limit] if args.limit else [])
    for term in dict.fromkeys(t for p in unmatched for t in inventory.unmatched_terms(p) if not t.startswith("@")):
        err.write(f"[WARNING]: Could not match supplied host pattern, ignoring: {term}\n")
    lines = ["", f"playbook: {args.playbook}"]
    targets = [inventory.select(play.hosts, args.limit) for play in playbook.plays]
    if part is not None:  # the same split the run makes (run/slicing.py), shown before anything runs
        targets, shape = plan(playbook, targets, part, tags, start)
        err.write("".join(f"{w}\n" for w in run_once_warnings(playbook, part)))
        lines.append(f"slice {part} ({part.source}): {len(shape.assigned)} of the run's {shape.targeted} host(s)")
    for p, play in enumerate(playbook.plays):
        lines += ["", f"  play #{p + 1} ({play.hosts}): {play.name}\tTAGS: [{','.join(sorted(set(play.tags)))}]"]
        if args.list_hosts:
            hosts = targets[p]
            lines += [f"    pattern: {[play.hosts]}", f"    hosts ({len(hosts)}):"]
            lines += [f"      {host}" for host in hosts]
            if args.list_tasks:
                lines.append("")
        if args.list_tasks:
            lines.append("    tasks:")
            lines += [f"      {task.name}\tTAGS: [{', '.join(sorted(set(task.tags)))}]"
                      for t, task in enumerate(play.tasks)
                      if tags.selects(task.tags) and (start is None or (p, t) >= start)]
    out.write(printable("\n".join(lines)) + "\n")
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from sandfleet.api import run_playbook

    if args.list_hosts or args.list_tasks:
        return cmd_list(args, out, err)
    try:
        result = run_playbook(args.playbook, args.inventory, limit=args.limit, forks=args.forks,
                              extra_vars=args.extra_vars, tags=args.tags, skip_tags=args.skip_tags,
                              start_at_task=args.start_at_task, dry_run=args.dry_run, policy=args.policy,
                              allow_unsandboxed=args.allow_unsandboxed,
                              host_key_policy=args.host_key_policy, ssh_config=args.ssh_config,
                              become_password=None if args.dry_run else _become_password(args, err),
                              on_warning=lambda w: print(w, file=err), output=out, format=args.format,
                              verbose=args.verbose, junit=args.junit, results_dir=args.results_dir,
                              report=args.report, slice=args.slice)
    except KeyboardInterrupt:  # the outputs have written what they had (the partial recap, files)
        err.write("sandfleet: interrupted; the running tasks were killed\n")
        return EXIT_INTERRUPTED
    return result.exit_code


def cmd_merge(args: argparse.Namespace, out: TextIO) -> int:
    """The merged run's exit code: the OR of the slices' bits, 130 if one was interrupted; 65 when
    the directories are not every slice of one run (nothing is written then)."""
    from sandfleet.api import merge_results

    return merge_results(args.results_dirs, output=out, format=args.format, junit=args.junit,
                         results_dir=args.results_dir).exit_code


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
                             become_password=None if args.dry_run else _become_password(args, err),
                             format="json" if text else args.format, verbose=args.verbose,
                             on_warning=lambda w: print(w, file=err), slice=args.slice)
    except KeyboardInterrupt:
        err.write("sandfleet: interrupted; the running tasks were killed\n")
        return EXIT_INTERRUPTED
    if text and not result.hosts and args.slice is None:  # no recap in exec's text to say it; exit 1
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


EXIT_UNREACHABLE = 4  # = report.recap's bit


def _doctor_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``doctor`` (what sandboxing can work on each host, why not, the fix) and ``facts`` (what
    each host's agent reports, Ansible's ``-m setup``): thin layers over ``api.doctor``/``api.facts``."""
    doc = sub.add_parser(
        "doctor", help="what sandboxing can work on this machine or each host, why not, and the exact fix",
        description="Start each host's agent (this machine's when no -i is given), read what it reports and run "
                    "one trial command (/bin/sh -c 'exit 0') under the default sandbox (workspace profile, network "
                    "none) and the operator's policy. Exit 0 when every host can enforce it; bits 4 a host is "
                    "unreachable, 8 a host cannot enforce it, 16 a policy refuses it; 1 when the pattern matches no "
                    "host.")
    # Its own dest: without -i, doctor looks at this machine (no inventory from the environment or config).
    doc.add_argument("-i", "--inventory", dest="doctor_inventory", action="append", metavar="INVENTORY",
                     help="inventory file or directory (repeatable); default: this machine only")
    doc.add_argument("-l", "--limit", metavar="PATTERN", help="only these hosts (pattern grammar)")
    facts = sub.add_parser("facts", help="the facts each host's agent reports (as 'ansible PATTERN -m setup')")
    facts.add_argument("pattern", metavar="PATTERN", help="the hosts, in the pattern grammar (all, web:&linux)")
    _inventory_arg(facts)
    facts.add_argument("-l", "--limit", metavar="PATTERN", help="further limit the hosts (pattern grammar)")
    for parser in (doc, facts):
        parser.add_argument("-f", "--forks", type=_positive_int, default=None, metavar="N",
                            help="hosts to reach at once")
        parser.add_argument("--format", choices=("text", "json"), default=None,
                            help="text (default) or JSON, one object per host")
        parser.add_argument("--host-key-policy", choices=("reject", "accept-new"), default=None,  # = POLICIES
                            help="unknown SSH host keys: refuse (default) or record them")
        parser.add_argument("--ssh-config", metavar="FILE", help="ssh_config to read (default ~/.ssh/config)")
        _become_pass_arg(parser)
    doc.add_argument("--policy", metavar="FILE", help="an operator policy the trial command runs under, as for run")


def _agent_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``agent stop``: a thin layer over ``api.stop_agents`` (docs/resident-agent.md)."""
    agent = sub.add_parser(
        "agent", help="manage the resident agents that sandfleet_agent_persist keeps on hosts: 'agent stop'",
        description="stop: ask every resident agent of each host's user (all versions) to exit. Runs they serve "
                    "finish; the next run starts a fresh agent. Exit 0, or 4 when a host could not be reached.")
    agent.add_argument("action", choices=("stop",))
    _inventory_arg(agent)
    agent.add_argument("-l", "--limit", metavar="PATTERN", help="only these hosts (pattern grammar)")
    agent.add_argument("-f", "--forks", type=_positive_int, default=None, metavar="N", help="hosts to reach at once")
    agent.add_argument("--host-key-policy", choices=("reject", "accept-new"), default=None,  # = POLICIES
                       help="unknown SSH host keys: refuse (default) or record them")
    agent.add_argument("--ssh-config", metavar="FILE", help="ssh_config to read (default ~/.ssh/config)")


def cmd_agent(args: argparse.Namespace, out: TextIO) -> int:
    """One line per host: what was stopped, found dead, or why the host could not be asked."""
    from sandfleet.api import stop_agents
    from sandfleet.report.terminal import printable

    results = stop_agents(args.inventory, limit=args.limit, forks=args.forks,
                          host_key_policy=args.host_key_policy or "reject", ssh_config=args.ssh_config)
    for r in results:
        if r.unreachable is not None:
            said = f"unreachable: {r.unreachable}"
        elif r.skipped is not None:
            said = f"skipped: {r.skipped}"
        elif not r.residents:
            said = "no resident agent"
        else:
            said = "; ".join(f"{state} {name}" for state, name in r.residents)
        out.write(f"{printable(r.host)}: {printable(said)}\n")
    if not results:
        out.write("sandfleet agent stop: the pattern matches no host\n")
    return EXIT_UNREACHABLE if any(r.unreachable is not None for r in results) else EXIT_OK


def cmd_doctor(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The exit code is the doctor's verdict (sandfleet/doctor.py: DoctorResult.exit_code)."""
    from sandfleet.api import doctor
    from sandfleet.doctor import doctor_json, doctor_text

    result = doctor(args.doctor_inventory, limit=args.limit, forks=args.forks, policy=args.policy,
                    host_key_policy=args.host_key_policy or "reject", ssh_config=args.ssh_config,
                    become_password=_become_password(args, err))
    out.write(doctor_json(result) if args.format == "json" else doctor_text(result))
    if not result.hosts and args.format != "json":
        out.write("sandfleet doctor: the pattern matches no host\n")
    return result.exit_code


def cmd_facts(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """0 when every host answered, 4 when one could not be reached, 1 when none is selected."""
    from sandfleet.api import facts
    from sandfleet.doctor import facts_json, facts_text

    results = facts(args.inventory, args.pattern, limit=args.limit, forks=args.forks,
                    host_key_policy=args.host_key_policy or "reject", ssh_config=args.ssh_config,
                    become_password=_become_password(args, err))
    out.write(facts_json(results) if args.format == "json" else facts_text(results))
    if not results:  # as doctor, exec and run: a pattern that selects nothing is not a success
        err.write(f"sandfleet facts: the pattern {args.pattern!r} matches no host\n")
        return EXIT_NO_HOSTS
    return EXIT_UNREACHABLE if any(r.unreachable is not None for r in results) else EXIT_OK


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if argv is None:  # the sandfleet process itself, not a caller of main([...]): sandfleet/startup.py
        from sandfleet.startup import keep_dataclass_code

        keep_dataclass_code()
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
        settings = _apply_settings(args)
        if args.command == "exec":
            return cmd_exec(args, unknown, command, out, err)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        if args.command == "completion":
            out.write(completion_script(args.shell))
            return EXIT_OK
        if args.command == "config":
            return cmd_config(settings, args.format, out)
        if args.command == "doctor":
            return cmd_doctor(args, out, err)
        if args.command == "facts":
            return cmd_facts(args, out, err)
        if args.command == "agent":
            return cmd_agent(args, out)
        if args.command == "inventory":
            return cmd_inventory(args, out, err)
        if args.command == "check":
            return cmd_check(args, out, err)
        if args.command == "serve":
            return cmd_serve(args, debug)
        if args.command == "merge":
            return cmd_merge(args, out)
        return cmd_run(args, out, err)
    except InputError as exc:  # every mistake found in the files, one per line, in file order
        err.write("".join(f"sandfleet: {e.line()}\n" for e in exc.errors))
        if len(exc.errors) > 1:
            err.write(f"sandfleet: {len(exc.errors)} errors\n")
        return exc.exit_code
    except SandfleetError as exc:  # argparse's messages already start with the program ("sandfleet run: ...")
        message = str(exc)
        err.write(f"{message}\n" if message.startswith(("sandfleet: ", "sandfleet ")) else f"sandfleet: {message}\n")
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
