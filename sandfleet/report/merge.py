"""``sandfleet merge``: every slice's results directory, as the run over all hosts would have
reported it (docs/slicing.md).

A sliced run's ``--results-dir`` holds a file per host and the summary ``@run.json``
(:mod:`.results_dir`). Nothing is written until the slices are known to make one whole run: one
summary for each slice 1..N (a slice missing or given twice, another N, another run's fingerprint
are errors naming the directories), every host in exactly one slice, every host's file there and
well formed. Then, from what the slices stored:

- the recap: each host's tally as its slice counted it, the hosts in the order the unsliced run
  lists them (each play's hosts keep their places among all slices' hosts), the failures, and the
  first slice's abort, named ``slice K/N: reason`` (it stopped that slice only);
- the exit code: the recap's, OR-ed with every slice's own (bits 2, 4, 8, 16; 1 when no play
  matched any host); the command line exits 130 when a slice was interrupted, as that run would;
- ``--junit``: the run's own writer (:mod:`.junit`) fed the stored results play by play;
- ``--format json``: ``run_start``, then per play ``play_start``, the stored ``task_result``
  records and ``host_unreachable``, and the ``recap`` (``task_start`` is progress, not kept);
- ``--results-dir``: one directory for every host, as an unsliced run writes it.

Timings (durations, timestamps, the order hosts finished in) are the slices', not one run's.

The directories may be CI artifacts other jobs wrote: no path is read from them (file names are
recomputed from the host names, as the run made them), symbolic links are not followed, and every
value is checked before use; a bad one is an :class:`InputError` naming its file.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any, Optional, TextIO, Union

from sandfleet.errors import InputError, UsageError
from sandfleet.report.atomic import write_atomic
from sandfleet.report.events import TaskEvent, TaskStatus
from sandfleet.report.jsonl import dumps, recap_object, run_start, tally_object
from sandfleet.report.junit import JUnitReporter, _Suite, render
from sandfleet.report.outputs import check_file_target
from sandfleet.report.recap import Abort, Failure, HostTally, Recap, verdict
from sandfleet.report.results_dir import SUMMARY, SUMMARY_VERSION, file_names, prepare
from sandfleet.report.terminal import printable
from sandfleet.report.text import TextReporter
from sandfleet_agent.portable.wire import Status, WireError, result_from_json

MAX_FILE = 1 << 30  # bytes: a results file bigger than this is not one sandfleet wrote


@dataclass(frozen=True)
class Started:
    """A host a play started on in one slice: its place among the play's hosts in all slices,
    and how many of its results belong to the play."""

    host: str
    place: int
    results: int


@dataclass(frozen=True)
class PlaySummary:
    name: str
    targets: int
    started: Optional[tuple[Started, ...]]  # None: the play never started in that slice


@dataclass(frozen=True)
class SliceSummary:
    """One slice's ``@run.json``, checked."""

    path: str
    index: int
    count: int
    source: str
    fingerprint: str
    targeted: int
    assigned: tuple[str, ...]
    hosts: tuple[str, ...]  # those with a file
    plays: tuple[PlaySummary, ...]
    exit_code: int
    no_hosts: bool
    interrupted: bool
    seconds: float
    aborted: Optional[Abort]

    @property
    def label(self) -> str:
        return f"slice {self.index}/{self.count} ({self.path})"


@dataclass(frozen=True)
class HostDoc:
    """One host's file: its results (each the stored record and the event it stands for)."""

    host: str
    results: tuple[tuple[TaskEvent, Mapping[str, Any]], ...]
    unreachable: Optional[str]
    tally: HostTally


@dataclass(frozen=True)
class MergedPlay:
    name: str
    hosts: tuple[str, ...]  # its play_start hosts, in the unsliced run's order
    results: Mapping[str, tuple[tuple[TaskEvent, Mapping[str, Any]], ...]]
    unreachable: tuple[str, ...]  # hosts given up during this play


@dataclass(frozen=True)
class Merged:
    slices: tuple[SliceSummary, ...]
    plays: tuple[MergedPlay, ...]
    hosts: Mapping[str, HostDoc]  # in the recap's order
    recap: Recap
    exit_code: int

    @property
    def interrupted(self) -> tuple[SliceSummary, ...]:
        return tuple(s for s in self.slices if s.interrupted)


# -- reading -----------------------------------------------------------------------------------


def read_json(path: str) -> Any:
    """A JSON file of a results directory: a regular file, not through a symbolic link."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except OSError as exc:
        why = "a symbolic link (not followed)" if os.path.islink(path) else exc.strerror or str(exc)
        raise InputError(f"{path}: cannot read it: {why}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE:
            raise InputError(f"{path}: not a results file (a regular file of at most {MAX_FILE} bytes)")
        data = fh.read()
    try:
        return json.loads(data.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path}: not valid JSON ({str(exc)[:120]}); it was not written by sandfleet, or was "
                         f"changed since") from None


class _Fields:
    """Typed access to one JSON object of a file, each mistake named with the file and key."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object")
        self.obj, self.where = obj, where

    def get(self, key: str, kind: Union[type, tuple[type, ...]], optional: bool = False) -> Any:
        value = self.obj.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
            raise InputError(f"{self.where}: {key!r} is missing or not the right type; the file was not written by "
                             f"this sandfleet, or was changed since")
        return value

    def count(self, key: str) -> int:
        value: int = self.get(key, int)
        if value < 0:
            raise InputError(f"{self.where}: {key!r} must not be negative")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        items = self.get(key, list)
        if not all(isinstance(i, str) for i in items):
            raise InputError(f"{self.where}: {key!r} must be a list of host names")
        return tuple(items)


def read_summary(directory: str) -> SliceSummary:
    """The summary of one slice's results directory, checked."""
    if not os.path.isdir(directory):
        raise InputError(f"{directory}: no such directory (give each slice's --results-dir)")
    path = os.path.join(directory, SUMMARY)
    if not os.path.lexists(path):
        raise InputError(f"{directory}: no {SUMMARY}, so this is not the --results-dir of a finished sliced run: "
                         f"'sandfleet run --slice K/N --results-dir DIR' writes it last, when the run ends")
    doc = _Fields(read_json(path), path)
    version = doc.get("summary", int)
    if version != SUMMARY_VERSION:
        raise InputError(f"{path}: summary version {version}; this sandfleet reads version {SUMMARY_VERSION}")
    part = _Fields(doc.get("slice", dict), f"{path}: slice")
    count, index = part.count("count"), part.count("index")
    if not 1 <= index <= count:
        raise InputError(f"{path}: slice {index}/{count} is not a slice (K from 1 to N)")
    plays = []
    for p, raw in enumerate(doc.get("plays", list)):
        play = _Fields(raw, f"{path}: play {p + 1}")
        started = play.get("started", list, optional=True)
        entries = None
        if started is not None:
            entries = []
            for item in started:
                if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in item[1:])):
                    raise InputError(f"{path}: play {p + 1}: each started host must be [name, place, results]")
                entries.append(Started(item[0], item[1], item[2]))
        plays.append(PlaySummary(play.get("name", str), play.count("targets"),
                                 None if entries is None else tuple(entries)))
    aborted_raw = doc.get("aborted", dict, optional=True)
    aborted = None
    if aborted_raw is not None:
        ab = _Fields(aborted_raw, f"{path}: aborted")
        aborted = Abort(ab.get("play", str), ab.get("reason", str))
    exit_code = doc.count("exit_code")
    if exit_code > 255:
        raise InputError(f"{path}: exit_code {exit_code} is not an exit code")
    return SliceSummary(directory, index, count, part.get("source", str), doc.get("fingerprint", str),
                        doc.count("targeted"), doc.strings("assigned"), doc.strings("hosts"), tuple(plays), exit_code,
                        doc.get("no_hosts", bool), doc.get("interrupted", bool),
                        float(doc.get("seconds", (int, float))), aborted)


def check_whole(summaries: Sequence[SliceSummary]) -> tuple[SliceSummary, ...]:
    """The slices in order, once each, all of one run; else an error saying what is wrong."""
    if not summaries:
        raise UsageError("merge: give every slice's results directory")
    first = summaries[0]
    for s in summaries[1:]:
        if s.count != first.count:
            raise InputError(f"{s.path} is slice {s.index}/{s.count} but {first.path} is slice "
                             f"{first.index}/{first.count}: the slices of one run all have the same N")
        if s.fingerprint != first.fingerprint:
            raise InputError(f"{s.path} ({s.label}) is from another run than {first.path}: fingerprint "
                             f"{s.fingerprint} vs {first.fingerprint} (another playbook, inventory, --limit, "
                             f"--tags or --start-at-task)")
    by_index: dict[int, SliceSummary] = {}
    for s in summaries:
        if s.index in by_index:
            raise InputError(f"slice {s.index}/{s.count} is given twice: {by_index[s.index].path} and {s.path}")
        by_index[s.index] = s
    missing = [k for k in range(1, first.count + 1) if k not in by_index]
    if missing:
        have = ", ".join(f"{k}/{first.count} ({by_index[k].path})" for k in sorted(by_index))
        names = ", ".join(f"{k}/{first.count}" for k in missing)
        raise InputError(f"slice{'s' if len(missing) > 1 else ''} {names} {'are' if len(missing) > 1 else 'is'} "
                         f"missing (given: {have}): a merge needs the results directory of every slice, and a slice "
                         f"with no host writes one too; did that job fail before its end?")
    ordered = tuple(by_index[k] for k in range(1, first.count + 1))
    owner: dict[str, SliceSummary] = {}
    for s in ordered:
        if len(s.plays) != len(first.plays) or [p.name for p in s.plays] != [p.name for p in first.plays]:
            raise InputError(f"{s.path}: its plays differ from {first.path}'s although the fingerprints match; "
                             f"was {SUMMARY} changed?")
        if s.targeted != first.targeted:
            raise InputError(f"{s.path}: says the run targets {s.targeted} hosts, {first.path} says {first.targeted}")
        for host in s.assigned:
            if host in owner:
                raise InputError(f"host {host!r} is in {owner[host].label} and in {s.label}: each host belongs to "
                                 f"one slice; were these written by different versions of sandfleet?")
            owner[host] = s
        stray = [h for h in s.hosts if h not in set(s.assigned)]
        if stray:
            raise InputError(f"{s.path}: has results for {stray[0]!r}, which is not one of its hosts")
    if len(owner) != first.targeted:
        raise InputError(f"the slices hold {len(owner)} hosts but the run targets {first.targeted}")
    return ordered


def read_host(summary: SliceSummary, host: str, name: str) -> HostDoc:
    path = os.path.join(summary.path, name)
    doc = _Fields(read_json(path), path)
    if doc.get("host", str) != host:
        raise InputError(f"{path}: holds the results of {doc.obj.get('host')!r}, not of {host!r}")
    results = tuple((_event(host, _Fields(t, f"{path}: task {i + 1}")), t)
                    for i, t in enumerate(doc.get("tasks", list)))
    tally_doc = _Fields(doc.get("recap", dict), f"{path}: recap")
    known = {f.name for f in fields(HostTally)}
    tally = HostTally(**{k: tally_doc.count(k) for k in known if k in tally_doc.obj})
    return HostDoc(host, results, doc.get("unreachable", str, optional=True), tally)


def _event(host: str, record: _Fields) -> TaskEvent:
    """The event a stored ``task_result`` record was made from (what JUnit and the recap read)."""
    if record.get("host", str) != host:
        raise InputError(f"{record.where}: is a result of {record.obj.get('host')!r}, not of {host!r}")
    try:
        status = TaskStatus(record.get("status", str))
    except ValueError:
        raise InputError(f"{record.where}: unknown status {record.obj.get('status')!r}") from None
    result = None
    if "id" in record.obj:
        wire = dict(record.obj)  # the wire's statuses only; the event's status stays the record's
        wire["status"] = status.value if status.value in {s.value for s in Status} else Status.ERROR.value
        try:
            result = result_from_json(wire)
        except WireError as exc:
            raise InputError(f"{record.where}: {exc}") from None
    return TaskEvent(host, record.get("play", str), record.get("task", str), status, result,
                     os=record.get("os", str, optional=True), ignored=bool(record.obj.get("ignored")),
                     item=record.obj.get("item"), label=record.get("label", str, optional=True),
                     changed=bool(record.obj.get("changed")), run_once=bool(record.obj.get("run_once")))


def merge(directories: Sequence[str]) -> Merged:
    """Read, check and combine the slices (module doc); an InputError when they are not one run."""
    slices = check_whole([read_summary(d) for d in directories])
    docs: dict[str, HostDoc] = {}
    for s in slices:
        for host, name in file_names(s.hosts).items():
            docs[host] = read_host(s, host, name)
    plays: list[MergedPlay] = []
    taken = dict.fromkeys(docs, 0)  # per host, results given to a play so far
    last_play: dict[str, int] = {}
    for p, first in enumerate(slices[0].plays):
        started = [e for s in slices for e in (s.plays[p].started or ())]
        if all(s.plays[p].started is None for s in slices):
            continue
        started.sort(key=lambda e: e.place)
        results: dict[str, tuple[tuple[TaskEvent, Mapping[str, Any]], ...]] = {}
        for entry in started:
            doc = docs.get(entry.host)
            if doc is None or entry.host in results:
                raise InputError(f"play {first.name!r}: {entry.host!r} is started twice or has no results file")
            begin = taken[entry.host]
            if begin + entry.results > len(doc.results):
                raise InputError(f"{entry.host!r}: its results file holds fewer results than its slice's "
                                 f"{SUMMARY} counts")
            results[entry.host] = doc.results[begin:begin + entry.results]
            taken[entry.host] = begin + entry.results
            last_play[entry.host] = len(plays)
        plays.append(MergedPlay(first.name, tuple(e.host for e in started), results, ()))
    for host, doc in docs.items():
        if taken[host] != len(doc.results):
            raise InputError(f"{host!r}: its results file holds {len(doc.results)} results, its slice's {SUMMARY} "
                             f"counts {taken[host]}")
    dropped: dict[int, list[str]] = {}
    for host, doc in docs.items():
        if doc.unreachable is not None:
            dropped.setdefault(last_play.get(host, len(plays) - 1), []).append(host)
    plays = [MergedPlay(play.name, play.hosts, play.results, tuple(dropped.get(i, ()))) for i, play in enumerate(plays)]
    order = list(dict.fromkeys([h for play in plays for h in play.hosts] + list(docs)))
    hosts = {h: docs[h] for h in order}
    recap = _recap(slices, plays, hosts)
    code = recap.exit_code()
    for s in slices:
        code |= s.exit_code
    return Merged(slices, tuple(plays), hosts, recap, code)


def _abort(s: SliceSummary) -> Abort:
    """A slice's abort stopped that slice only (docs/slicing.md): the merged run says which."""
    assert s.aborted is not None
    return Abort(s.aborted.play, f"slice {s.index}/{s.count}: {s.aborted.reason}")


def _recap(slices: Sequence[SliceSummary], plays: Sequence[MergedPlay], hosts: Mapping[str, HostDoc]) -> Recap:
    recap = Recap()
    for host, doc in hosts.items():
        recap.hosts[host] = doc.tally
        if doc.unreachable is not None:
            recap.unreachable_messages[host] = doc.unreachable
    for play in plays:
        for host in play.hosts:
            for event, _ in play.results[host]:
                if verdict(event) not in ("ok", "skipped", "ignored"):
                    recap.failures.append(Failure(host, event.play, event.display_name, event.status))
    recap.aborted = next((_abort(s) for s in slices if s.aborted is not None), None)
    recap.no_hosts = all(s.no_hosts for s in slices)
    return recap


# -- writing -----------------------------------------------------------------------------------


class _MergedJUnit(JUnitReporter):
    """The run's JUnit writer, fed stored results: suites opened by name, records as stored."""

    def open_suite(self, name: str, hosts: Sequence[str]) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        with self._lock:
            self._suites.append(_Suite(name, list(hosts), stamp))

    def add(self, event: TaskEvent, record: Mapping[str, Any]) -> None:
        self.task_event(event)  # the testcase and the policy property; the record below, as stored
        request = record.get("request")
        if event.result is not None and isinstance(request, dict) and isinstance(request.get("id"), str):
            with self._lock:
                self._suite(event.play).records[request["id"]] = json.dumps(
                    {"request": request, "backend": record.get("backend"), "wrapper": record.get("wrapper"),
                     "wrapper_files": record.get("wrapper_files")}, ensure_ascii=True, sort_keys=True)

    def abort(self, play: str, reason: str) -> None:
        with self._lock:
            suite = self._suite(play)
            suite.aborted = suite.aborted or reason

    def rendered(self) -> bytes:
        with self._lock:
            return render(self._suites)


def junit(merged: Merged) -> bytes:
    """The JUnit file the unsliced run would have written (its mapping: :mod:`.junit`)."""
    writer = _MergedJUnit(os.devnull)
    for play in merged.plays:
        writer.open_suite(play.name, play.hosts)
        for host in play.hosts:
            for event, record in play.results[host]:
                writer.add(event, record)
        for host in play.unreachable:
            writer.host_unreachable(host, merged.hosts[host].unreachable or "")
    for s in merged.slices:
        if s.aborted is not None:
            writer.abort(s.aborted.play, _abort(s).reason)
    return writer.rendered()


def events(merged: Merged) -> Iterator[dict[str, Any]]:
    """The ``--format json`` events of the merged run (module doc)."""
    yield run_start(False)
    for play in merged.plays:
        yield {"event": "play_start", "play": play.name, "hosts": list(play.hosts)}
        for host in play.hosts:
            yield from (dict(record) for _, record in play.results[host])
        for host in play.unreachable:
            yield {"event": "host_unreachable", "host": host, "message": merged.hosts[host].unreachable}
    yield recap_object(merged.recap)


class _RecapText(TextReporter):
    """The run's recap, its clock showing the longest slice (the sliced run's wall time)."""

    def __init__(self, out: TextIO, recap: Recap, environ: Mapping[str, str], seconds: float) -> None:
        super().__init__(out, recap, environ=environ)
        self._t0 = time.monotonic() - seconds


def text(merged: Merged, out: TextIO, environ: Mapping[str, str]) -> None:
    """One line per slice, then the recap as the run prints it."""
    first = merged.slices[0]
    out.write(f"MERGE of {len(merged.slices)} slice(s), fingerprint {first.fingerprint}, "
              f"{first.targeted} host(s)\n")
    for s in merged.slices:
        state = "; interrupted" if s.interrupted else ""
        out.write(printable(f"  slice {s.index}/{s.count}: {s.path}: {len(s.assigned)} host(s), exit {s.exit_code}, "
                            f"{s.seconds:.2f} s ({s.source}){state}") + "\n")
    _RecapText(out, merged.recap, environ, max(s.seconds for s in merged.slices)).finish()
    if merged.interrupted:
        out.write(f"sandfleet merge: {', '.join(s.label for s in merged.interrupted)} was interrupted: its "
                  f"results are partial\n")


def check_targets(merged: Merged, junit_path: Optional[str], results_dir: Optional[str]) -> None:
    """Where the merge writes, checked before it writes anything: never into a slice's directory."""
    if results_dir is not None:
        real = os.path.realpath(results_dir)
        for s in merged.slices:
            if os.path.realpath(s.path) == real:
                raise UsageError(f"--results-dir {results_dir}: is {s.label}'s own directory; give a new one")
        prepare(results_dir)
    if junit_path is not None:
        check_file_target(junit_path)


def write_results_dir(merged: Merged, directory: str) -> None:
    """One file per host, as an unsliced run writes them (no summary: it is not a slice; any old
    one went when :func:`check_targets` prepared the directory)."""
    names = file_names(merged.hosts)
    aborted = merged.recap.aborted
    for host, doc in merged.hosts.items():
        obj: dict[str, Any] = {"host": host, "tasks": [dict(r) for _, r in doc.results],
                               "unreachable": doc.unreachable, "recap": tally_object(doc.tally)}
        if aborted is not None:
            obj["aborted"] = {"play": aborted.play, "reason": aborted.reason}
        write_atomic(os.path.join(directory, names[host]), (dumps(obj, indent=2) + "\n").encode("ascii"))


__all__ = ["HostDoc", "Merged", "MergedPlay", "SliceSummary", "check_targets", "check_whole", "events", "junit",
           "merge", "read_summary", "text", "write_results_dir"]
