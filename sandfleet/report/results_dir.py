"""``--results-dir DIR``: one JSON file per host with every result of that host, for CI artifacts.

``DIR/<name>.json`` holds ``{"host", "tasks": [task_result objects, as in --format json],
"unreachable": message or null, "recap": {ok, changed, ...}}`` (plus ``"aborted"`` when a play
was aborted). Every host a play targeted gets a file, even one with no result.

File names: the host name with every byte outside ``[A-Za-z0-9._-]`` percent-encoded (``%`` too,
and a leading dot, so no name is hidden, ``.`` or ``..``): distinct hosts get distinct names.
Two hosts whose names differ only in case would share a file on a case-insensitive filesystem
(macOS, Windows), so both get ``~`` and a hash of the exact name appended; so does a name too
long for a file system. ``~`` never comes out of the encoding, so a suffixed name cannot clash.
Files are written atomically at ``finish`` (also on Ctrl-C); other files in DIR are left alone.

A sliced run (``--slice K/N``, docs/slicing.md) also writes ``DIR/@run.json`` (:data:`SUMMARY`;
``@`` never comes out of the encoding, so no host's file can take the name), last: which slice
it was, the fingerprint every slice of one run shares, the hosts this slice was given and those
with a file, each play's hosts with their places among the play's hosts in all slices, the exit
code, and whether it was interrupted. ``sandfleet merge`` reads it; a slice without one did not
finish, and a slice with no host writes only it. Any run removes one left in DIR when it starts;
an unsliced run writes none, its DIR otherwise as it always was.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

from sandfleet import __version__
from sandfleet.errors import UsageError
from sandfleet.load.playbook import Play
from sandfleet.report.atomic import write_atomic
from sandfleet.report.events import Reporter, TaskEvent
from sandfleet.report.jsonl import dumps, tally_object, task_result
from sandfleet.report.recap import Recap

MAX_STEM = 200  # bytes; most file systems allow 255 for a whole name
_SAFE = re.compile(rb"[A-Za-z0-9._-]")
SUMMARY = "@run.json"  # a sliced run's summary; never a host's file name
SUMMARY_VERSION = 1  # bumped only on a change an older ``sandfleet merge`` would misread


@dataclass(frozen=True)
class PlayTargets:
    """A play's name and the hosts it targets in the whole run (every slice's)."""

    name: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class RunShape:
    """What a sliced run's summary says of the run beyond its results (made by run/slicing.py)."""

    index: int  # this slice, from 1
    count: int
    source: str  # where K and N came from: "--slice 2/4", "Kubernetes Indexed Job: JOB_COMPLETION_INDEX=1"
    fingerprint: str
    targeted: int  # hosts the whole run targets
    assigned: tuple[str, ...]  # this slice's
    plays: tuple[PlayTargets, ...]


def encode_host(host: str) -> str:
    """The host as a file-name stem: injective, never hidden, never ``.`` or ``..``."""
    raw = host.encode("utf-8", "surrogatepass")
    out = [chr(b) if _SAFE.fullmatch(bytes([b])) and not (i == 0 and b == 0x2E) else f"%{b:02X}"
           for i, b in enumerate(raw)]
    return "".join(out) or "%"  # the empty host name


def file_names(hosts: Iterable[str]) -> dict[str, str]:
    """``{host: file name}`` for every host, collision-free even on case-insensitive file systems."""
    stems = {h: encode_host(h) for h in dict.fromkeys(hosts)}
    folded: dict[str, int] = {}
    for stem in stems.values():
        folded[stem.casefold()] = folded.get(stem.casefold(), 0) + 1
    names = {}
    for host, stem in stems.items():
        if folded[stem.casefold()] > 1 or len(stem) > MAX_STEM:
            digest = hashlib.sha256(host.encode("utf-8", "surrogatepass")).hexdigest()[:16]
            stem = f"{stem[:MAX_STEM - 17]}~{digest}"
        names[host] = stem + ".json"
    return names


def prepare(directory: str) -> None:
    """Create DIR before the run, so a path that cannot be one fails before any host is touched.
    A slice's summary left in DIR by an earlier run goes now: it would vouch for this run's files
    (a run that dies before its end then leaves none, and ``sandfleet merge`` says so)."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--results-dir {directory}: {exc.strerror or exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--results-dir {directory}: not writable")
    try:
        os.unlink(os.path.join(directory, SUMMARY))
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UsageError(f"--results-dir {directory}: cannot remove the old {SUMMARY}: {exc.strerror or exc}") from None


class ResultsDirReporter(Reporter):
    def __init__(self, directory: str, recap: Recap) -> None:
        self.directory, self.recap = directory, recap
        self._tasks: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        #: Set for a sliced run (then the summary is written), and when it was interrupted.
        self.shape: Optional[RunShape] = None
        self.interrupted = False
        self._t0 = time.monotonic()
        self._plays: list[tuple[list[str], dict[str, int]]] = []  # per started play: hosts, results per host

    def sliced(self, shape: RunShape) -> None:
        """This run is one slice: write the summary at the end."""
        self.shape = shape

    def play_start(self, play: Play, hosts: list[str]) -> None:
        with self._lock:
            self._plays.append((list(hosts), {}))
            for host in hosts:
                self._tasks.setdefault(host, [])

    def task_event(self, event: TaskEvent) -> None:
        obj = task_result(event)
        with self._lock:
            self._tasks.setdefault(event.host, []).append(obj)
            if self._plays:  # plays run one after another: a result belongs to the last started
                counts = self._plays[-1][1]
                counts[event.host] = counts.get(event.host, 0) + 1

    def host_unreachable(self, host: str, message: str) -> None:
        with self._lock:
            self._tasks.setdefault(host, [])

    def finish(self) -> None:
        with self._lock:
            hosts = list(self._tasks)
            names = file_names(hosts)
            docs = {h: self._document(h) for h in hosts}
            summary = self._summary(hosts) if self.shape is not None else None
        for host, doc in docs.items():
            write_atomic(os.path.join(self.directory, names[host]), (dumps(doc, indent=2) + "\n").encode("ascii"))
        if summary is not None:  # last: a summary means every host's file is there
            write_atomic(os.path.join(self.directory, SUMMARY), (dumps(summary, indent=2) + "\n").encode("ascii"))

    def _summary(self, hosts: list[str]) -> dict[str, Any]:
        """The sliced run's ``@run.json`` (module doc); ``started`` is each play's ``play_start``
        hosts as ``[host, place among the play's hosts in all slices, results in this play]``."""
        shape = self.shape
        assert shape is not None
        plays: list[dict[str, Any]] = []
        for p, play in enumerate(shape.plays):
            started = None
            if p < len(self._plays):
                place = {h: i for i, h in enumerate(play.hosts)}
                names, counts = self._plays[p]
                started = [[h, place.get(h, len(place)), counts.get(h, 0)] for h in names]
            plays.append({"name": play.name, "targets": len(play.hosts), "started": started})
        aborted = self.recap.aborted
        return {"sandfleet": __version__, "summary": SUMMARY_VERSION,
                "slice": {"index": shape.index, "count": shape.count, "source": shape.source},
                "fingerprint": shape.fingerprint, "targeted": shape.targeted, "assigned": list(shape.assigned),
                "hosts": hosts, "plays": plays, "exit_code": self.recap.exit_code(), "no_hosts": self.recap.no_hosts,
                "interrupted": self.interrupted, "seconds": round(time.monotonic() - self._t0, 3),
                "aborted": None if aborted is None else {"play": aborted.play, "reason": aborted.reason}}

    def _document(self, host: str) -> dict[str, Any]:
        tally = self.recap.tally(host)
        doc: dict[str, Any] = {"host": host, "tasks": self._tasks[host],
                               "unreachable": self.recap.unreachable_messages.get(host),
                               "recap": tally_object(tally)}
        if self.recap.aborted is not None:
            doc["aborted"] = {"play": self.recap.aborted.play, "reason": self.recap.aborted.reason}
        return doc


__all__ = ["SUMMARY", "SUMMARY_VERSION", "PlayTargets", "ResultsDirReporter", "RunShape", "encode_host", "file_names",
           "prepare"]
