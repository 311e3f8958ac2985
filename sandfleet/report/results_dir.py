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
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterable
from typing import Any

from sandfleet.errors import UsageError
from sandfleet.load.playbook import Play
from sandfleet.report.atomic import write_atomic
from sandfleet.report.events import Reporter, TaskEvent
from sandfleet.report.jsonl import dumps, tally_object, task_result
from sandfleet.report.recap import Recap

MAX_STEM = 200  # bytes; most file systems allow 255 for a whole name
_SAFE = re.compile(rb"[A-Za-z0-9._-]")


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
    """Create DIR before the run, so a path that cannot be one fails before any host is touched."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--results-dir {directory}: {exc.strerror or exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--results-dir {directory}: not writable")


class ResultsDirReporter(Reporter):
    def __init__(self, directory: str, recap: Recap) -> None:
        self.directory, self.recap = directory, recap
        self._tasks: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def play_start(self, play: Play, hosts: list[str]) -> None:
        with self._lock:
            for host in hosts:
                self._tasks.setdefault(host, [])

    def task_event(self, event: TaskEvent) -> None:
        obj = task_result(event)
        with self._lock:
            self._tasks.setdefault(event.host, []).append(obj)

    def host_unreachable(self, host: str, message: str) -> None:
        with self._lock:
            self._tasks.setdefault(host, [])

    def finish(self) -> None:
        with self._lock:
            hosts = list(self._tasks)
            names = file_names(hosts)
            docs = {h: self._document(h) for h in hosts}
        for host, doc in docs.items():
            write_atomic(os.path.join(self.directory, names[host]), (dumps(doc, indent=2) + "\n").encode("ascii"))

    def _document(self, host: str) -> dict[str, Any]:
        tally = self.recap.tally(host)
        doc: dict[str, Any] = {"host": host, "tasks": self._tasks[host],
                               "unreachable": self.recap.unreachable_messages.get(host),
                               "recap": tally_object(tally)}
        if self.recap.aborted is not None:
            doc["aborted"] = {"play": self.recap.aborted.play, "reason": self.recap.aborted.reason}
        return doc


__all__ = ["ResultsDirReporter", "encode_host", "file_names", "prepare"]
