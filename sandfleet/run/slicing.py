"""``--slice K/N``: one controller's share of a run's hosts, the same in every process (docs/slicing.md).

A run too big for one controller, or one that must fit a CI job's time budget, is run as N
processes (a Kubernetes Indexed Job, a CI matrix), each given K and N. Each computes the same split
from the same inventory, playbook and ``--limit``, with nothing shared but those files, and runs
only its own hosts; ``sandfleet merge`` then combines their results directories.

The split is rendezvous (highest-random-weight) hashing with a bounded load:

- every host has a weight for every slice, the k-th 64-bit word of SHAKE-256 of its name (an
  extendable-output hash, so a host's weights do not depend on N and one call gives all N);
- hosts are taken in an order fixed by a hash of their own name (not by the inventory's order,
  so adding a host elsewhere in the inventory does not reorder the others), and each goes to
  its highest-weight slice that still has room. Room: ``M // N`` hosts per slice, and ``M % N``
  of the slices (whichever fill first) one more, so slice sizes differ by at most one.

Plain rendezvous hashing moves only the hosts that prefer a new slice when something changes, but
balances only statistically (±√(M/N)); "every N-th host of the sorted list" balances exactly but
moves almost every host when one is inserted (it shifts all that sort after it). The bounded load
keeps both: exact ±1 balance, and adding one host moves a handful of others
(tests/test_slicing.py measures it: at most 6 of 1,000 with N = 8, where "every N-th" moves
most of those sorting after the new one).
Python's ``hash()`` is never used: it is salted per process, and every process must agree.

The split is made on the hosts the whole run targets (the union of every play's hosts after
``--limit``) before any play runs, so a host belongs to one slice for the whole run.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

from sandfleet.errors import UsageError
from sandfleet.load.keywords import TagFilter
from sandfleet.load.playbook import Playbook
from sandfleet.report.results_dir import PlayTargets, RunShape

#: The most slices a run may be cut into: each process computes a weight per host and slice, so
#: the split costs M x N hashes (10,000 hosts x 1,000 slices: about 1 s).
MAX_SLICES = 1000
#: Named in the results directory's summary, so a future change of the split cannot be merged with
#: slices cut the old way (the fingerprint includes it).
METHOD = "rendezvous-bounded/1"
_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII digits only: \d would take other scripts' digits too
USAGE = "K/N (the K-th of N slices, from 1), auto, or auto/N"


@dataclass(frozen=True)
class Slice:
    """Slice ``index`` (from 1) of ``count``, and where it was read (for messages and the summary)."""

    index: int
    count: int
    source: str = "--slice"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Engine:
    """A job engine that runs N copies of one job and tells each which it is."""

    name: str
    index_var: str
    count_var: Optional[str]  # None: the engine does not say how many (--slice auto/N)
    first: int  # the index of the first copy: 0 or 1


ENGINES = (
    Engine("Kubernetes Indexed Job", "JOB_COMPLETION_INDEX", None, 0),
    Engine("GitLab CI parallel", "CI_NODE_INDEX", "CI_NODE_TOTAL", 1),
    Engine("Buildkite parallelism", "BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT", 0),
    Engine("CircleCI parallelism", "CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", 0),
)


def parse_slice(value: Union[str, tuple[int, int]], environ: Mapping[str, str]) -> Slice:
    """``K/N``, ``auto`` (K and N from the engine's variables) or ``auto/N`` (K from the engine,
    N given: Kubernetes says only the index), or a ``(K, N)`` pair; a mistake is a
    :class:`UsageError` naming the value (or the variable) and what is allowed."""
    if isinstance(value, tuple):
        if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise UsageError(f"slice {value!r}: expected a pair of integers (K, N), or the text {USAGE}")
        return _checked(value[0], value[1], f"slice=({value[0]}, {value[1]})")
    if not isinstance(value, str):
        raise UsageError(f"slice must be text ({USAGE}) or a pair (K, N), got {type(value).__name__}")
    text = value.strip()
    word, sep, count_text = text.partition("/")
    count = None
    if sep:
        if not _NUMBER.fullmatch(count_text):
            raise UsageError(f"--slice {value!r}: N must be a whole number from 1 to {MAX_SLICES}; expected {USAGE}")
        count = int(count_text)
        _check_count(count, f"--slice {text}")
    if word == "auto":
        return from_engine(environ, count, f"--slice {text}")
    if not sep or not _NUMBER.fullmatch(word):
        raise UsageError(f"--slice {value!r}: expected {USAGE}")
    assert count is not None
    return _checked(int(word), count, f"--slice {text}")


def _check_count(count: int, what: str) -> None:
    if not 1 <= count <= MAX_SLICES:
        raise UsageError(f"{what}: N must be from 1 to {MAX_SLICES} (the number of slices), got {count}")


def _checked(index: int, count: int, source: str) -> Slice:
    _check_count(count, source)
    if not 1 <= index <= count:
        raise UsageError(f"{source}: K must be from 1 to {count} (slices count from 1), got {index}")
    return Slice(index, count, source)


def engine_help() -> str:
    return ("Kubernetes' JOB_COMPLETION_INDEX (with auto/N), GitLab's CI_NODE_INDEX/CI_NODE_TOTAL, "
            "Buildkite's BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT, CircleCI's "
            "CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL")


def from_engine(environ: Mapping[str, str], count: Optional[int], what: str) -> Slice:
    """K (and N unless given) from the one engine whose index variable is set."""
    found = [e for e in ENGINES if environ.get(e.index_var, "").strip()]
    if not found:
        raise UsageError(f"{what}: no job engine's slice variable is set (read: {engine_help()}); on GitHub "
                         f"Actions, or anywhere else, give the slice itself: --slice K/N "
                         f"(--slice ${{{{ matrix.slice }}}}/N)")
    if len(found) > 1:
        shown = ", ".join(f"{e.index_var}={environ[e.index_var]!r}" for e in found)
        raise UsageError(f"{what}: several job engines' variables are set ({shown}), so which slice this is "
                         f"is unclear; give --slice K/N")
    engine = found[0]
    raw = environ[engine.index_var]
    if not _NUMBER.fullmatch(raw.strip()):
        raise UsageError(f"{what}: {engine.index_var}={raw!r} ({engine.name}) is not a job index: expected a whole "
                         f"number counting from {engine.first}")
    index = int(raw.strip()) - engine.first + 1
    source = f"{engine.index_var}={raw.strip()}"
    raw_count = environ.get(engine.count_var, "").strip() if engine.count_var else ""
    if engine.count_var is None and count is None:
        raise UsageError(f"{what}: {engine.name}s set {engine.index_var} but not how many there are: give "
                         f"--slice auto/N, N being the Job's .spec.completions")
    if engine.count_var is not None and raw_count:
        if not _NUMBER.fullmatch(raw_count):
            raise UsageError(f"{what}: {engine.count_var}={environ[engine.count_var]!r} ({engine.name}) is not a "
                             f"number of jobs")
        if count is not None and int(raw_count) != count:
            raise UsageError(f"{what}: {engine.count_var}={raw_count} ({engine.name}) says there are {raw_count} "
                             f"jobs, not {count}; give --slice auto to use it")
        count = int(raw_count)
        source += f", {engine.count_var}={raw_count}"
    elif count is None:
        raise UsageError(f"{what}: {engine.index_var} is set but {engine.count_var} is not; give --slice auto/N")
    _check_count(count, f"{what} ({engine.name}: {source})")
    if not 1 <= index <= count:
        last = engine.first + count - 1
        raise UsageError(f"{what}: {engine.index_var}={raw.strip()} ({engine.name}, counting from {engine.first}) "
                         f"is not one of {count} jobs: expected {engine.first} to {last}")
    return Slice(index, count, f"{engine.name}: {source}")


# -- the split ---------------------------------------------------------------------------------


def _name(host: str) -> bytes:
    return host.encode("utf-8", "surrogatepass")


def _order(host: str) -> tuple[bytes, str]:
    """Where a host comes in the assignment: a hash of its own name, so no other host moves it."""
    return hashlib.blake2b(_name(host), digest_size=8, person=b"sandfleet-order").digest(), host


def weights(host: str, count: int) -> tuple[int, ...]:
    """The host's weight for each slice: word k of SHAKE-256(name), the same whatever N is."""
    digest = hashlib.shake_256(b"sandfleet-slice\0" + _name(host)).digest(8 * count)
    return struct.unpack(f">{count}Q", digest)


def assign(hosts: Sequence[str], count: int) -> dict[str, int]:
    """Each host's slice (from 1): its highest-weight slice with room, hosts taken in hash order;
    every slice gets ``M // N`` or ``M // N + 1`` hosts."""
    unique = list(dict.fromkeys(hosts))
    quota, extra = divmod(len(unique), count)
    load = [0] * count
    out: dict[str, int] = {}
    for host in sorted(unique, key=_order):
        w = weights(host, count)
        k = w.index(max(w))
        if not (load[k] < quota or (load[k] == quota and extra)):
            k = next(c for c in sorted(range(count), key=w.__getitem__, reverse=True)
                     if load[c] < quota or (load[c] == quota and extra))
        if load[k] == quota:
            extra -= 1
        load[k] += 1
        out[host] = k + 1
    return out


def select(hosts: Sequence[str], part: Slice) -> list[str]:
    """The hosts of ``part``, in the order given."""
    mine = assign(hosts, part.count)
    return [h for h in hosts if mine[h] == part.index]


# -- a run's plan ------------------------------------------------------------------------------


def fingerprint(playbook: Playbook, targets: Sequence[Sequence[str]], tags: TagFilter,
                start: Optional[tuple[int, int]]) -> str:
    """What every slice of one run shares: each play's name, pattern and selected tasks (after
    ``--tags``/``--start-at-task``), each play's hosts (after ``--limit``) and the split method.
    ``sandfleet merge`` refuses slices whose fingerprints differ."""
    plays = [[play.name, play.hosts, [task.name for t, task in enumerate(play.tasks)
                                      if tags.selects(task.tags) and (start is None or (p, t) >= start)]]
             for p, play in enumerate(playbook.plays)]
    text = json.dumps({"method": METHOD, "plays": plays, "targets": [list(t) for t in targets]},
                      ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def plan(playbook: Playbook, targets: list[list[str]], part: Slice, tags: TagFilter,
         start: Optional[tuple[int, int]]) -> tuple[list[list[str]], RunShape]:
    """Each play's hosts in this slice, and what the results directory's summary records of it."""
    union = list(dict.fromkeys(h for t in targets for h in t))
    mine = set(select(union, part))
    shape = RunShape(part.index, part.count, part.source, fingerprint(playbook, targets, tags, start), len(union),
                     tuple(h for h in union if h in mine),
                     tuple(PlayTargets(play.name, tuple(t)) for play, t in zip(playbook.plays, targets)))
    return [[h for h in t if h in mine] for t in targets], shape


def run_once_warnings(playbook: Playbook, part: Slice) -> list[str]:
    """``run_once`` runs once per slice: said at load time, where the task is."""
    return [f"{task.mark}: warning: run_once with --slice {part}: this task runs once in each slice that has "
            f"hosts (up to {part.count} times in all), not once for the whole run (docs/slicing.md)"
            for play in playbook.plays for task in play.tasks if task.run_once]


__all__ = ["ENGINES", "MAX_SLICES", "METHOD", "Engine", "Slice", "assign", "fingerprint", "from_engine",
           "parse_slice", "plan", "run_once_warnings", "select", "weights"]
