"""``sandfleet run``: load, select, run (or dry-run) and report."""

from __future__ import annotations

import argparse
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional, TextIO

from sandfleet.inventory import HostConfig, Inventory, load_inventory
from sandfleet.load.extra_vars import parse_extra_vars
from sandfleet.load.keywords import TagFilter
from sandfleet.load.playbook import Playbook, load_playbook
from sandfleet.load.policies import load_policy_file
from sandfleet.report.events import TaskEvent
from sandfleet.report.outputs import OutputOptions, final_exit, make_reporter
from sandfleet.run.dry import DryConnection
from sandfleet.run.hostloop import Reporter
from sandfleet.run.scheduler import run_playbook
from sandfleet.transports.base import Connection
from sandfleet.transports.local import LocalConnection

if TYPE_CHECKING:
    from sandfleet.transports.ssh import SshConnector

EXIT_INTERRUPTED = 130


def connect_for_run(args: argparse.Namespace) -> Callable[[HostConfig], Connection]:
    """The connection factory of a real run. The SSH side (paramiko, ssh_config, known_hosts) is
    imported and set up once, on the first ssh host: local-only runs never pay for it."""
    ssh: list[SshConnector] = []

    def connect(config: HostConfig) -> Connection:
        if config.connection == "local":
            return LocalConnection(config.name)
        if not ssh:
            from sandfleet.transports.ssh import SshConnector

            ssh.append(SshConnector(args.host_key_policy, args.ssh_config))
        return ssh[0](config)

    return connect


def load_job(playbook_path: str, inventory_paths: list[str], err: TextIO) -> tuple[Playbook, Inventory]:
    """Both input files, validated (an InputError stops everything before a host is touched)."""
    playbook = load_playbook(playbook_path)
    inventory = load_inventory(inventory_paths)
    for warning in playbook.warnings:
        err.write(f"{warning}\n")
    return playbook, inventory


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    playbook, inventory = load_job(args.playbook, args.inventory, err)
    args.parsed_extra_vars = parse_extra_vars(args.extra_vars)
    args.tag_filter = TagFilter.from_cli(args.tags, args.skip_tags)
    for play in playbook.plays:
        for task in play.tasks:
            if task.register in args.parsed_extra_vars:
                err.write(f"{task.mark}: warning: register: {task.register} is also given with -e; extra vars win, "
                          "so later tasks see the -e value, not this task's result\n")
    connect = connect_for_run(args)
    reporter = make_reporter(OutputOptions(args.format, args.dry_run, args.verbose, args.junit, args.results_dir), out)
    try:
        _run(args, playbook, inventory, reporter, connect)
    except KeyboardInterrupt:
        reporter.stop_live()  # so the message below gets a line of its own on a terminal
        err.write("sandfleet: interrupted; the running tasks were killed\n")
        reporter.finish()  # the partial recap, JUnit file and results directory
        return EXIT_INTERRUPTED
    except BaseException:
        reporter.stop_live()
        raise
    return final_exit(reporter)


def _run(args: argparse.Namespace, playbook: Playbook, inventory: Inventory, reporter: Reporter,
         connect: Callable[[HostConfig], Connection]) -> None:
    common: dict[str, Any] = {"limit": args.limit, "forks": args.forks, "consent": args.allow_unsandboxed,
                              "extra_vars": args.parsed_extra_vars, "tags": args.tag_filter,
                              "policy": load_policy_file(args.policy) if args.policy else None}
    if args.dry_run:
        # One worker: rendering is pure CPU under the GIL, so host threads only add switching
        # (1,000 hosts x 10 tasks: 2.2 s with 20, 1.7 s with one), and the output comes in
        # inventory order, the same every time.
        run_playbook(playbook, inventory, reporter, DryConnection, **{**common, "forks": 1})
    else:
        run_playbook(playbook, inventory, reporter, connect, **common)


class _Refusals(Reporter):
    """Collects the tasks a dry-run found denied or without a sandbox (for ``sandfleet check``)."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self._lock = threading.Lock()

    def task_event(self, event: TaskEvent) -> None:
        if event.status.refused:
            with self._lock:
                self.events.append(event)


def refusals(playbook: Playbook, inventory: Inventory, *, limit: Optional[str], policy: Optional[str],
             consent: bool) -> list[TaskEvent]:
    """What a dry-run of the job refuses, per host and task: the policy's verdicts (and missing
    sandboxes) known before anything runs. Hosts a dry-run cannot render are left out."""
    reporter = _Refusals()
    run_playbook(playbook, inventory, reporter, DryConnection, limit=limit, forks=1,
                 consent=consent, policy=load_policy_file(policy) if policy else None)
    return reporter.events
