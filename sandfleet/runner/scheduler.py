"""Hosts in parallel (up to ``forks``), tasks on a host in order, play after play.

One connection per host for the whole run. A host that fails or becomes unreachable drops out
of later plays; it never blocks or loses the results of the others.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from sandfleet.inventory import HostConfig, Inventory
from sandfleet.playbook import Playbook
from sandfleet.runner.base import Connection
from sandfleet.runner.hostloop import Executor, HostRun, Reporter, run_on_connection

#: Hosts at once. `python bench/fleet.py --hosts 40 --forks-sweep 5,10,20,40` on loopback (where the
#: hosts share the controller's 2 cores) is flat from 5 to 40 (5.6-6.8 s); on a real fleet each host
#: thread mostly waits on the network and the controller spends ~4 ms CPU per task, so 20 keeps 2
#: cores busy without the connect storm that hundreds of paramiko handshakes cause (paramiko#2250).
DEFAULT_FORKS = 20


def run_playbook(
    playbook: Playbook,
    inventory: Inventory,
    reporter: Reporter,
    connect: Callable[[HostConfig], Connection],
    *,
    limit: Optional[str] = None,
    forks: Optional[int] = None,
    consent: bool = False,
    executor: Executor = run_on_connection,
) -> dict[str, HostRun]:
    runs: dict[str, HostRun] = {}
    playbook_dir = os.path.dirname(os.path.abspath(playbook.path))
    stopping = threading.Event()
    targets = [inventory.select(play.hosts, limit) for play in playbook.plays]
    try:
        # Every targeted host's settings (inventory vars, ssh_config) are checked before the first
        # play starts, so a bad one stops the run before anything ran; connections open lazily.
        for host in dict.fromkeys(h for hosts in targets for h in hosts):
            config = inventory.host_config(host)
            runs[host] = HostRun(config, functools.partial(inventory.renderer, host), connect(config), reporter,
                                 consent=consent, playbook_dir=playbook_dir, executor=executor, stopping=stopping)
        for index, play in enumerate(playbook.plays):
            hosts = [h for h in targets[index] if not runs[h].done]
            reporter.play_start(play, hosts)
            if not hosts:
                continue
            workers = max(1, min(forks or DEFAULT_FORKS, len(hosts)))
            if workers == 1:
                for host in hosts:
                    runs[host].run_play(index, play)
                continue
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="host") as pool:
                futures = [pool.submit(runs[h].run_play, index, play) for h in hosts]
                try:
                    for future in futures:
                        future.result()
                except BaseException:
                    # Ctrl-C (or a bug): stop every host now. Closing a connection makes its agent
                    # kill the running task's process group; the pool can then drain.
                    stopping.set()
                    for future in futures:
                        future.cancel()
                    for run in runs.values():
                        run.connection.close()
                    raise
    finally:
        for run in runs.values():
            run.connection.close()
    return runs

