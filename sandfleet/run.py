"""``sandfleet run``: load, select, run (or dry-run) and report."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Callable, TextIO

from sandfleet.errors import UsageError
from sandfleet.inventory import HostConfig, Inventory, load_inventory
from sandfleet.playbook import Playbook, load_playbook
from sandfleet.report import final_exit, make_reporter
from sandfleet.runner.base import Connection
from sandfleet.runner.dry import DryConnection, dry_execute
from sandfleet.runner.hostloop import Reporter, run_on_connection
from sandfleet.runner.local import LocalConnection
from sandfleet.runner.scheduler import run_playbook

if TYPE_CHECKING:
    from sandfleet.runner.ssh import SshConnector

EXIT_INTERRUPTED = 130


def connect_for_run(args: argparse.Namespace) -> Callable[[HostConfig], Connection]:
    """The connection factory of a real run. The SSH side (paramiko, ssh_config, known_hosts) is
    imported and set up once, on the first ssh host: local-only runs never pay for it."""
    ssh: list[SshConnector] = []

    def connect(config: HostConfig) -> Connection:
        if config.connection == "local":
            return LocalConnection(config.name)
        if not ssh:
            from sandfleet.runner.ssh import SshConnector

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
    if args.junit:
        raise UsageError("--junit is not built yet")
    connect = connect_for_run(args)
    reporter = make_reporter(args.format, out, args.dry_run, args.verbose)
    try:
        _run(args, playbook, inventory, reporter, connect)
    except KeyboardInterrupt:
        err.write("sandfleet: interrupted; the running tasks were killed\n")
        reporter.finish()
        return EXIT_INTERRUPTED
    return final_exit(reporter, args.dry_run)


def _run(args: argparse.Namespace, playbook: Playbook, inventory: Inventory, reporter: Reporter,
         connect: Callable[[HostConfig], Connection]) -> None:
    if args.dry_run:
        run_playbook(playbook, inventory, reporter, DryConnection, limit=args.limit, forks=args.forks,
                     consent=args.allow_unsandboxed, executor=dry_execute)
    else:
        run_playbook(playbook, inventory, reporter, connect, limit=args.limit, forks=args.forks,
                     consent=args.allow_unsandboxed, executor=run_on_connection)
