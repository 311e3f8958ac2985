"""``sandfleet serve``: an open fleet behind JSON-RPC 2.0 on stdin/stdout, for a harness in any language.

The operator starts it (``sandfleet serve -i INVENTORY [--policy FILE] [--allow-unsandboxed]
[--host-key-policy ...] [--ssh-config FILE] [-f N] [-l PATTERN]``); a harness then keeps the
fleet open and sends commands: argv plus a portable sandbox intent, one JSON object per line
each way (UTF-8 in, ASCII out). One fleet (:func:`sandfleet.api.open_fleet`) serves the process's
whole life: each host's connection and agent start on its first command and stay up, persistent
sandboxes with them. The caller is as untrusted as a playbook author: everything the operator
decides (inventory, ``-l`` limit, policy, consent to unsandboxed tasks, host keys, ssh_config,
extra vars) is fixed on the command line and cannot be sent; every command is checked exactly as
a one-task playbook and bounded by the operator's policy, and what the policy refuses is a
result (status ``denied``), never an error.

Methods (``params`` is always an object; unknown keys are refused):

``hosts`` ``{"hosts": PATTERN = "all"}``
    → ``{"hosts": [{"name": "web01", "os": "linux"}, ...]}``: the hosts of this server the
    pattern selects (never outside ``-l``), in inventory order; ``os`` is what the host's agent
    reported once a command ran there, else the inventory's ``sandfleet_os``, else null.
``run`` ``{"argv": [str, ...], "hosts": PATTERN = "all", "sandbox": true | false | {...},
"cwd": str, "env": {str: str}, "timeout": seconds, "name": str}`` (argv required; ``id`` required)
    One command on every host the pattern selects. ``sandbox`` is a playbook's ``sandbox:``
    block (docs/sandbox.md: ``profile``, ``filesystem``, ``network``, ``workspace_roots``,
    ``limits``, ``linux``/``macos``/``windows``), ``true`` for the default (workspace profile,
    network none) or ``false`` for none (denied unless the operator gave ``--allow-unsandboxed``).
    argv, cwd and env are templates, as in a playbook. While it runs, each host's result arrives
    as a notification ``{"method": "result", "params": {"id": RUN_ID, "result": RECORD}}``, RECORD
    being the ``task_result`` record of ``--format json`` (docs/events.md); then the response:
    ``{"exit_code": N, "ok": bool, "aborted": null, "hosts": [{"host": "web01", "ok": bool,
    "unreachable": null | "why", "tasks": [RECORD]}, ...]}`` (``exit_code`` is the command line's:
    bits 2 failed, 4 unreachable, 8 no sandbox, 16 denied). Runs go one at a time, in the order
    they arrived; the others wait their turn (at most :data:`MAX_QUEUED`).
``cancel`` ``{"id": RUN_ID}`` → ``{"cancelled": bool}``
    Stops that run as Ctrl-C stops ``sandfleet run``: each host's connection is closed, so its
    agent kills the running command's process group (its sandbox and everything in it) and
    exits; the next command starts a new agent. The cancelled run is answered with error
    -32800 whose ``data`` is the result so far (a run cancelled before it started: no data).
    ``false``: no such run is waiting or running (it may have just finished).
``close`` ``{}`` → ``{"closed": true}``
    Cancels what is running or waiting, closes every connection (each agent exits) and ends
    the server (exit 0), after answering. End of input does the same without the answer.

Errors (``{"code", "message", "data"?}``, ``message`` one line, never a traceback):

- -32700 parse error: not JSON, not UTF-8, NaN/Infinity, a number out of range, a duplicate key.
- -32600 not a request: not an object, a batch (unsupported: one request per line), ``jsonrpc``
  not "2.0", an ``id`` that is not a string, a number or null, an unknown member, a line over
  :data:`MAX_LINE` bytes, params nested deeper than :data:`MAX_DEPTH` or holding more than
  :data:`MAX_VALUES` values, a ``run`` without an id or with the id of one not yet answered.
- -32601 unknown method (``data.allowed``).
- -32602 bad params: a wrong type, an unknown key, a string that is not text (a lone surrogate),
  a host pattern that is wrong or selects nothing here, anything the playbook loader refuses
  (``data``: ``message``, ``allowed``, and ``param`` when one param is to blame).
- -32603 internal error; -32800 cancelled; -32001 too many runs waiting (:data:`MAX_QUEUED`).

An error is answered even for a notification (no ``id``), with id null, so no mistake is silent.

Nothing but protocol lines reaches stdout: the server keeps private copies of its stdin and
stdout and points descriptors 0 and 1 at /dev/null and stderr, so neither its own code nor a
process it starts can read requests or write into the stream. Requests are read on one thread
(so ``cancel`` and ``hosts`` are answered while a command runs) and commands run on another;
every line is written whole, under one lock.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Optional, Union

from sandfleet.api import Fleet, RunResult, TaskResult, command_playbook, load_inventory, open_fleet
from sandfleet.errors import InputError
from sandfleet.inventory import Inventory
from sandfleet.report.jsonl import dumps
from sandfleet.transports.hostkeys import HostKeyPolicy
from sandfleet_agent.portable.wire import no_constant, unique_keys

#: The longest request line read (newline excluded); a longer one is skipped unread and refused.
#: Four times the policy's default ``limits.request_bytes`` and twice what Linux can exec (ARG_MAX).
MAX_LINE = 4 << 20
#: How deep arrays and objects may nest in a request's params (a sandbox block needs four levels).
MAX_DEPTH = 32
#: How many values (strings, numbers, arrays, objects...) a request's params may hold: the
#: loader's cost grows with each (65,536 argv words: ~1 s and ~40 MiB; a million: 12 s, 570 MiB).
MAX_VALUES = 1 << 16
#: Runs that may wait behind the running one.
MAX_QUEUED = 64

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
CANCELLED = -32800  # LSP's RequestCancelled
BUSY = -32001

METHODS = ("hosts", "run", "cancel", "close")
MEMBERS = ("jsonrpc", "id", "method", "params")
RUN_PARAMS = ("argv", "hosts", "sandbox", "cwd", "env", "timeout", "name")

RequestId = Union[str, int, float, None]


class RpcError(Exception):
    """A request answered with an error instead of a result."""

    def __init__(self, code: int, message: str, data: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


@dataclass
class _Run:
    """A ``run`` request, its shape checked, waiting or running."""

    id: Union[str, int, float]
    argv: list[str]
    hosts: str
    sandbox: Union[bool, dict[str, Any]]
    cwd: Optional[str]
    env: Optional[dict[str, str]]
    timeout: Optional[float]
    name: Optional[str]
    cancelled: bool = field(default=False)


class Server:
    """Answers the requests read from ``reader`` on ``writer`` with ``fleet``'s hosts, until
    ``close`` or end of input; then every connection is closed."""

    def __init__(self, fleet: Fleet, inventory: Inventory, reader: IO[bytes], writer: IO[bytes], *,
                 debug: bool = False) -> None:
        self.fleet, self.inventory = fleet, inventory
        self._reader, self._writer, self._debug = reader, writer, debug
        self._served = frozenset(fleet.hosts)
        self._os: dict[str, Optional[str]] = {h: inventory.host_config(h).os for h in fleet.hosts}
        self._write_lock = threading.Lock()
        self._broken = False  # the reader of our output went away: nothing more is written
        self._lock = threading.Condition()  # the queue, the current run, cancelling
        self._queue: deque[_Run] = deque()
        self._current: Optional[_Run] = None
        self._stopping = False

    # --- the reading thread ---------------------------------------------------------------------

    def serve(self) -> None:
        worker = threading.Thread(target=self._work, name="serve-run", daemon=True)
        worker.start()
        closing: Optional[tuple[bool, RequestId]] = None
        try:
            for line in self._lines():
                closing = self._handle(line)
                if closing is not None:
                    break
        finally:
            self._shut_down(worker)
        if closing is not None and closing[0]:
            self._respond(closing[1], {"closed": True})

    def _lines(self) -> Iterator[Optional[bytes]]:
        """Each line read; None for one longer than :data:`MAX_LINE`, skipped without keeping it."""
        while True:
            line = self._reader.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) <= MAX_LINE or line.endswith(b"\n"):
                yield line
                continue
            while line and not line.endswith(b"\n"):
                line = self._reader.readline(1 << 20)
            yield None

    def _handle(self, line: Optional[bytes]) -> Optional[tuple[bool, RequestId]]:
        """Answer one line (or queue its run); ``(has_id, id)`` of a ``close`` request."""
        rid: RequestId = None
        try:
            if line is None:
                raise RpcError(INVALID_REQUEST, f"request line longer than {MAX_LINE} bytes; it was skipped")
            if not line.strip():
                return None
            message = _parse(line)
            if isinstance(message, list):
                raise RpcError(INVALID_REQUEST, "batches are not supported: send one request per line")
            if not isinstance(message, dict):
                raise RpcError(INVALID_REQUEST, f"a request is a JSON object, got {_kind(message)}")
            has_id = "id" in message
            if has_id and not _is_id(message["id"]):
                raise RpcError(INVALID_REQUEST, f"id must be a string, a number or null, got {_kind(message['id'])}")
            rid = message.get("id")
            return self._dispatch(message, has_id, rid)
        except RpcError as exc:
            self._error(rid, exc.code, exc.message, exc.data)
        except Exception as exc:  # a bug: said in one line, the server goes on
            self._internal(rid, exc)
        return None

    def _dispatch(self, message: dict[str, Any], has_id: bool, rid: RequestId) -> Optional[tuple[bool, RequestId]]:
        unknown = [k for k in message if k not in MEMBERS]
        if unknown:
            raise RpcError(INVALID_REQUEST, f"unknown member(s) {', '.join(map(repr, unknown))}",
                           {"allowed": list(MEMBERS)})
        if message.get("jsonrpc") != "2.0":
            raise RpcError(INVALID_REQUEST, 'jsonrpc must be "2.0"')
        method = message.get("method")
        if not isinstance(method, str):
            raise RpcError(INVALID_REQUEST, f"method must be a string, got {_kind(method)}")
        params = message.get("params", {})
        if isinstance(params, list):
            raise RpcError(INVALID_PARAMS, "params must be an object (by name); positional params are not supported")
        if not isinstance(params, dict):
            raise RpcError(INVALID_REQUEST, f"params must be an object, got {_kind(params)}")
        depth, values = _size(params)
        if depth > MAX_DEPTH:
            raise RpcError(INVALID_REQUEST, f"params nest deeper than {MAX_DEPTH} levels")
        if values > MAX_VALUES:
            raise RpcError(INVALID_REQUEST, f"params hold more than {MAX_VALUES} values")
        _check_text(params)
        if method == "hosts":
            result: Any = self._hosts(params)
        elif method == "run":
            self._queue_run(params, has_id, rid)
            return None
        elif method == "cancel":
            result = self._cancel(params)
        elif method == "close":
            _check_keys(params, (), "close")
            return has_id, rid
        else:
            raise RpcError(METHOD_NOT_FOUND, f"unknown method {method!r}", {"allowed": list(METHODS)})
        if has_id:
            self._respond(rid, result)
        return None

    def _hosts(self, params: dict[str, Any]) -> dict[str, Any]:
        _check_keys(params, ("hosts",), "hosts")
        pattern = _pattern(params)
        return {"hosts": [{"name": h, "os": self._os.get(h)} for h in self._select(pattern)]}

    def _queue_run(self, params: dict[str, Any], has_id: bool, rid: RequestId) -> None:
        if not has_id or rid is None:
            raise RpcError(INVALID_REQUEST, "run needs an id (a string or a number): its results and cancel "
                                            "refer to it")
        run = _run_of(rid, params)
        try:  # what a playbook's loader refuses is refused now, not when the run's turn comes
            command_playbook(run.argv, "all", sandbox=run.sandbox, cwd=run.cwd, env=run.env,
                             timeout=run.timeout, name=run.name, source="run")
        except InputError as exc:
            raise _invalid(exc) from None
        if not self._select(run.hosts):
            raise RpcError(INVALID_PARAMS, f"hosts {run.hosts!r} selects no host this server serves (its "
                                           "inventory and -l limit; the hosts method lists them)",
                           {"param": "hosts", "message": "selects no host"})
        with self._lock:
            if self._stopping:
                raise RpcError(INVALID_REQUEST, "the server is closing")
            if any(r.id == rid for r in self._active()):
                raise RpcError(INVALID_REQUEST, f"id {rid!r} is already used by a run that has not finished")
            if len(self._queue) >= MAX_QUEUED:
                raise RpcError(BUSY, f"{MAX_QUEUED} runs are already waiting; send more when some have finished")
            self._queue.append(run)
            self._lock.notify_all()

    def _cancel(self, params: dict[str, Any]) -> dict[str, bool]:
        _check_keys(params, ("id",), "cancel")
        if "id" not in params or params["id"] is None or not _is_id(params["id"]):
            raise RpcError(INVALID_PARAMS, "cancel needs the id of a run (a string or a number)",
                           {"param": "id", "message": "a string or a number"})
        target = params["id"]
        with self._lock:
            waiting = next((r for r in self._queue if r.id == target), None)
            if waiting is not None:
                self._queue.remove(waiting)
                waiting.cancelled = True
        if waiting is not None:
            self._error(waiting.id, CANCELLED, "run cancelled before it started")
            return {"cancelled": True}
        return {"cancelled": self._cancel_running(target)}

    def _cancel_running(self, target: RequestId) -> bool:
        """Cancel the run with id ``target`` if it is the one running. The worker makes a run
        current just before the fleet starts it: until then the fleet has nothing to cancel, so
        this waits (a few ms at most) for one or the other."""
        while True:
            with self._lock:
                run = self._current
                if run is None or run.id != target or run.cancelled:
                    return False
                if self.fleet.cancel():
                    run.cancelled = True
                    return True
            time.sleep(0.002)

    def _active(self) -> list[_Run]:
        return [*self._queue, *([self._current] if self._current is not None else [])]

    def _select(self, pattern: str) -> list[str]:
        try:
            return [h for h in self.inventory.select(pattern) if h in self._served]
        except InputError as exc:
            raise _invalid(exc, "hosts") from None

    def _shut_down(self, worker: threading.Thread) -> None:
        """Cancel what waits and what runs, let the worker end, close every connection."""
        with self._lock:
            self._stopping = True
            waiting, self._queue = list(self._queue), deque()
            current = self._current
            self._lock.notify_all()
        for run in waiting:
            self._error(run.id, CANCELLED, "run cancelled: the server is closing")
        if current is not None:
            self._cancel_running(current.id)
        worker.join()
        self.fleet.close()

    # --- the running thread ---------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if not self._queue:
                    return
                run = self._current = self._queue.popleft()
            reply = self._execute(run)
            with self._lock:  # read under the lock: a cancel sets it there, after the fleet stopped
                self._current = None
                cancelled = run.cancelled
            if isinstance(reply, RpcError):
                self._error(run.id, reply.code, reply.message, reply.data)
            elif cancelled:
                self._error(run.id, CANCELLED, "run cancelled; the running commands were killed", reply)
            else:
                self._respond(run.id, reply)

    def _execute(self, run: _Run) -> Union[dict[str, Any], RpcError]:
        try:
            result = self.fleet.run(run.argv, hosts=run.hosts, sandbox=run.sandbox,
                                    cwd=run.cwd, env=run.env, timeout=run.timeout, name=run.name,
                                    on_event=lambda task: self._stream(run, task))
            return _result_json(result)
        except InputError as exc:
            return _invalid(exc)
        except Exception as exc:
            return self._internal_error(exc)

    def _stream(self, run: _Run, task: TaskResult) -> None:
        record = task.to_json()
        if isinstance(record.get("os"), str):
            self._os[task.host] = record["os"]
        self._send({"jsonrpc": "2.0", "method": "result", "params": {"id": run.id, "result": record}})

    # --- writing --------------------------------------------------------------------------------

    def _respond(self, rid: RequestId, result: Any) -> None:
        self._send({"jsonrpc": "2.0", "id": rid, "result": result})

    def _error(self, rid: RequestId, code: int, message: str, data: Optional[Mapping[str, Any]] = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        self._send({"jsonrpc": "2.0", "id": rid, "error": error})

    def _internal(self, rid: RequestId, exc: Exception) -> None:
        error = self._internal_error(exc)
        self._error(rid, error.code, error.message)

    def _internal_error(self, exc: Exception) -> RpcError:
        if self._debug:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        return RpcError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}")

    def _send(self, message: Mapping[str, Any]) -> None:
        data = (dumps(message) + "\n").encode("ascii")
        with self._write_lock:
            if self._broken:
                return
            try:
                self._writer.write(data)
                self._writer.flush()
            except (OSError, ValueError):
                self._broken = True


# --- checking a request ---------------------------------------------------------------------------

def _parse(line: bytes) -> Any:
    try:
        return json.loads(line.decode("utf-8"), parse_constant=no_constant, parse_float=_finite,
                          object_pairs_hook=unique_keys)  # the wire's rules: no NaN, no duplicate keys
    except UnicodeDecodeError as exc:
        raise RpcError(PARSE_ERROR, f"parse error: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise RpcError(PARSE_ERROR, "parse error: nested too deeply") from None
    except ValueError as exc:
        raise RpcError(PARSE_ERROR, f"parse error: {str(exc)[:200]}") from None



def _finite(text: str) -> float:
    """``1e400`` reads as infinity, which has no JSON spelling to answer with."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range")
    return value



def _is_id(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _size(value: Any) -> tuple[int, int]:
    """How deep arrays and objects nest in ``value``, and how many values it holds (counted
    without recursion, and only until a limit is passed)."""
    deepest, count, todo = 0, 0, [(value, 1)]
    while todo and deepest <= MAX_DEPTH and count <= MAX_VALUES:
        item, level = todo.pop()
        count += 1
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            todo.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest, count


def _check_text(params: dict[str, Any]) -> None:
    """Every string (and key) must be Unicode text: JSON's ``\\ud800`` escapes decode to lone
    surrogates, which no program can be given."""
    todo: list[tuple[str, Any]] = [(k, v) for k, v in params.items()]
    while todo:
        where, item = todo.pop()
        texts = [item] if isinstance(item, str) else list(item) if isinstance(item, dict) else []
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise RpcError(INVALID_PARAMS, f"{where} holds a lone surrogate (\\ud800-\\udfff): not text",
                               {"param": where.split("[")[0], "message": "not text"}) from None
        if isinstance(item, dict):
            todo.extend((f"{where}[{k!r}]", v) for k, v in item.items())
        elif isinstance(item, list):
            todo.extend((f"{where}[{i}]", v) for i, v in enumerate(item))


def _check_keys(params: Mapping[str, Any], allowed: Sequence[str], method: str) -> None:
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise RpcError(INVALID_PARAMS, f"{method}: unknown param(s) {', '.join(map(repr, unknown))}",
                       {"param": unknown[0], "message": "unknown param", "allowed": list(allowed)})


def _text(params: Mapping[str, Any], key: str) -> Optional[str]:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise _wrong(key, "a string", value)
    return value


def _pattern(params: Mapping[str, Any]) -> str:
    """``hosts``: all when absent or null; an empty pattern is the loader's error, not all."""
    pattern = _text(params, "hosts")
    return "all" if pattern is None else pattern


def _run_of(rid: Union[str, int, float], params: dict[str, Any]) -> _Run:
    """The params of ``run``, each of the JSON type it must have (the loader checks the rest)."""
    _check_keys(params, RUN_PARAMS, "run")
    argv = params.get("argv")
    if not isinstance(argv, list):
        raise _wrong("argv", "a list of strings (never one shell string)", argv, ["['python3', '-m', 'pytest']"])
    bad = next((i for i, word in enumerate(argv) if not isinstance(word, str)), None)
    if bad is not None:
        raise _wrong(f"argv[{bad}]", "a string", argv[bad])
    sandbox = params.get("sandbox", True)
    if not isinstance(sandbox, (bool, dict)):
        raise _wrong("sandbox", "true, false or a sandbox block", sandbox)
    env = params.get("env")
    if env is not None and not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise _wrong("env", "an object of strings", env, ["{'CI': '1'}"])
    timeout = params.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise _wrong("timeout", "a number of seconds", timeout)
        try:
            timeout = float(timeout)
        except OverflowError:
            raise RpcError(INVALID_PARAMS, "timeout is too large", {"param": "timeout", "message": "too large"}) \
                from None
    return _Run(rid, argv, _pattern(params), sandbox, _text(params, "cwd"), env, timeout,
                _text(params, "name"))


def _wrong(param: str, wanted: str, got: Any, allowed: Sequence[str] = ()) -> RpcError:
    return RpcError(INVALID_PARAMS, f"{param} must be {wanted}, got {_kind(got)}",
                    {"param": param, "message": f"must be {wanted}", "allowed": list(allowed)})


def _invalid(exc: InputError, param: Optional[str] = None) -> RpcError:
    """What the loader refused, as invalid params: its message and what is allowed."""
    data: dict[str, Any] = {"message": exc.message, "allowed": list(exc.allowed)}
    if len(exc.errors) > 1:  # every mistake of the request at once, as `sandfleet check` lists a file's
        data["errors"] = [{"message": e.message, "allowed": list(e.allowed)} for e in exc.errors]
    if param is not None:
        data["param"] = param
    return RpcError(INVALID_PARAMS, f"invalid params: {exc.message}", data)


def _result_json(result: RunResult) -> dict[str, Any]:
    return {"exit_code": result.exit_code, "ok": result.ok, "aborted": result.aborted,
            "hosts": [{"host": h.name, "ok": h.ok, "unreachable": h.unreachable,
                       "tasks": [t.to_json() for t in h.tasks]} for h in result.hosts.values()]}


# --- the process ----------------------------------------------------------------------------------

def claim_stdio() -> tuple[IO[bytes], IO[bytes]]:
    """Private copies of stdin and stdout for the protocol; descriptors 0 and 1 then point at
    /dev/null and stderr, so a stray print, a warning or a child process writing to its inherited
    stdout lands on stderr instead of in the stream, and nothing else can read the requests."""
    sys.stdout.flush()
    reader, writer = os.dup(0), os.dup(1)  # not inherited by children (PEP 446)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return os.fdopen(reader, "rb"), os.fdopen(writer, "wb")


def serve_stdio(inventory: Sequence[str], *, limit: Optional[str] = None, forks: Optional[int] = None,
                policy: Optional[str] = None, allow_unsandboxed: bool = False,
                host_key_policy: HostKeyPolicy = "reject", ssh_config: Optional[str] = None,
                debug: bool = False) -> int:
    """``sandfleet serve``: load the inventory and policy (a mistake there is the command line's
    exit 65, before anything is served), then answer requests until ``close`` or end of input."""
    reader, writer = claim_stdio()
    loaded = load_inventory(inventory)
    with open_fleet(loaded, "all", limit=limit, forks=forks, policy=policy, allow_unsandboxed=allow_unsandboxed,
                    host_key_policy=host_key_policy, ssh_config=ssh_config) as fleet:
        Server(fleet, loaded, reader, writer, debug=debug).serve()
    return 0


__all__ = ["MAX_DEPTH", "MAX_LINE", "MAX_QUEUED", "MAX_VALUES", "METHODS", "RpcError", "Server", "claim_stdio",
           "serve_stdio"]
