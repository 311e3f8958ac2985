"""What a task may read of its play and of the other hosts: ``hostvars``, ``ansible_play_hosts``,
``ansible_play_hosts_all``, ``ansible_play_batch`` and ``play_hosts``, as Ansible defines them.

- ``ansible_play_hosts_all``: the hosts the play targets (after ``--limit``, without the hosts
  that failed an earlier play); ``ansible_play_hosts`` (and its old name ``play_hosts``): those of
  them that have not failed nor become unreachable; ``ansible_play_batch``: the same, within the
  current ``serial`` batch.
- ``hostvars[name]``: that host's variables as its own templates see them: the inventory's (with
  the playbook's ``group_vars/``/``host_vars/``), the play's ``vars`` when it is in the play, ``-e``,
  its facts (``sandfleet_facts``) once it has started and its registered results so far. A host
  in the inventory that takes no part in the run shows its inventory variables, as in Ansible.
  Connection secrets are never shown (:class:`sandfleet.inventory.inventory.TaggedRenderer`).

Under the linear strategy these are taken once per task, when the first host of the batch starts
it: every host then sees the same values whatever order the threads run in (the results of the
tasks before, never a neighbour's result of the task running now), as Ansible's lock-step makes
them. Under ``free`` each host reads them live as it starts a task. Each host's ``hostvars``
renders other hosts' variables in renderers of its own, made on first use within a task, so no
two threads ever share one.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from sandfleet.inventory import Inventory
from sandfleet.load.playbook import Play
from sandfleet.templating import HostVars, VarRenderer

if TYPE_CHECKING:  # the host loop holds a view; the view reads the host loops' state
    from sandfleet.run.hostloop import HostRun

#: The names this module defines, each set on every task's variables. A task that reads one of
#: them depends on the other hosts (see docs/variables.md).
FLEET_NAMES = ("hostvars", "ansible_play_hosts", "ansible_play_hosts_all", "ansible_play_batch", "play_hosts")


@dataclass
class _Moment:
    """The play and the hosts as one task sees them."""

    play: Optional[Play]
    hosts_all: list[str]
    hosts: list[str]
    batch: list[str]
    runtime: Mapping[str, Mapping[str, Any]]  # each host's facts and registered results
    hostvars: dict[str, HostVars] = field(default_factory=dict)  # per reading host

    def same_as(self, other: _Moment) -> bool:
        return (self.play is other.play and self.hosts_all == other.hosts_all and self.hosts == other.hosts
                and self.batch == other.batch and self.runtime.keys() == other.runtime.keys()
                and all(_same(self.runtime[h], other.runtime[h]) for h in self.runtime))


def _play_lists(moment: _Moment) -> dict[str, list[str]]:
    return {"ansible_play_hosts_all": moment.hosts_all, "ansible_play_hosts": moment.hosts, "play_hosts": moment.hosts,
            "ansible_play_batch": moment.batch}


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.keys() == b.keys() and all(a[k] is b[k] for k in a)


class _Live(Mapping[str, Mapping[str, Any]]):
    """Each host's facts and results as they are when first read (the free strategy)."""

    def __init__(self, runs: Mapping[str, HostRun]) -> None:
        self._runs = runs

    def __getitem__(self, host: str) -> Mapping[str, Any]:
        return dict(self._runs[host].runtime)  # one C-level copy: atomic against the host's thread

    def __iter__(self) -> Iterator[str]:
        return iter(self._runs)

    def __len__(self) -> int:
        return len(self._runs)


class FleetVars:
    """The fleet-wide variables of one :class:`~sandfleet.run.scheduler.HostSet`."""

    def __init__(self, inventory: Inventory, runs: Mapping[str, HostRun], extra_vars: Mapping[str, Any],
                 playbook_dir: str) -> None:
        self._inventory, self._runs = inventory, runs
        self._extra_vars = dict(extra_vars)
        self._playbook_dir = playbook_dir
        self._hosts = tuple(dict.fromkeys([*inventory.hosts, *runs]))
        self._known = frozenset(self._hosts)
        self._lock = threading.Lock()
        self._play: Optional[Play] = None
        self._hosts_all: list[str] = []
        self._batch: list[str] = []
        self._linear = True
        self._step: Optional[tuple[int, int]] = None
        self._moment: Optional[_Moment] = None
        self._registered: dict[str, tuple[str, str]] = {}

    # --- the scheduler says where the run is --------------------------------------------------

    def batch(self, play: Play, hosts_all: list[str], members: list[str]) -> None:
        """A batch of ``play`` starts: ``hosts_all`` are the play's hosts, ``members`` the batch's."""
        with self._lock:
            self._play, self._hosts_all, self._batch = play, list(hosts_all), list(members)
            self._linear = play.strategy != "free"
            self._step = None

    # --- a host starts a task -----------------------------------------------------------------

    def for_task(self, host: str, play_index: int, task_index: int) -> dict[str, Any]:
        """The values ``host`` sees for this task (same objects for every task that sees the same)."""
        with self._lock:
            if self._linear and self._step == (play_index, task_index) and self._moment is not None:
                moment = self._moment  # taken when the first host of the batch started this task
            else:
                moment = self._now()
                if self._linear and self._moment is not None and moment.same_as(self._moment):
                    moment = self._moment  # nothing changed: what was rendered from it stands
                self._moment, self._step = moment, (play_index, task_index)
            hostvars = moment.hostvars.get(host)
            if hostvars is None:
                hostvars = moment.hostvars[host] = HostVars(self._hosts, functools.partial(self._renderer, moment),
                                                              self._known)
        return {"hostvars": hostvars, **_play_lists(moment)}

    def note_registered(self, name: str, host: str, task: str) -> None:
        with self._lock:
            self._registered.setdefault(name, (host, task))

    def registered(self) -> dict[str, tuple[str, str]]:
        """Every name registered on any host so far, with the first host and task that did (a
        dry-run shows a task reading one through ``hostvars`` as depending on a result)."""
        with self._lock:
            return dict(self._registered)

    # --- inside ----------------------------------------------------------------------------------

    def _now(self) -> _Moment:
        failed = {h for h, run in self._runs.items() if run.done}
        runtime: Mapping[str, Mapping[str, Any]] = (
            {h: dict(run.runtime) for h, run in self._runs.items()} if self._linear else _Live(self._runs))
        return _Moment(play=self._play, hosts_all=list(self._hosts_all),
                       hosts=[h for h in self._hosts_all if h not in failed],
                       batch=[h for h in self._batch if h not in failed], runtime=runtime)

    def _renderer(self, moment: _Moment, target: str, hostvars: HostVars) -> VarRenderer:
        """``target``'s variables as its own templates see them at ``moment``."""
        in_play = moment.play is not None and target in moment.hosts_all
        play_vars: Mapping[str, Any] = moment.play.vars if in_play and moment.play is not None else {}
        renderer = self._inventory.renderer(target, {**play_vars, **self._extra_vars})
        runtime = moment.runtime.get(target, {"playbook_dir": self._playbook_dir})
        for name, value in runtime.items():
            if name not in self._extra_vars:
                renderer.set_fixed(name, value)
        if in_play:
            for name, value in _play_lists(moment).items():
                renderer.set_fixed(name, value)
        renderer.set_fixed("hostvars", hostvars)
        return renderer


__all__ = ["FLEET_NAMES", "FleetVars"]
