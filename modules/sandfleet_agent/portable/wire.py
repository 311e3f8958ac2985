"""Wire format v1: one JSON object per line between controller and agent (docs/architecture.md §3).

Compatibility rules, so old and new controllers and agents interoperate:

* Unknown fields are ignored; missing optional fields take their defaults. Encoding always writes
  every field, so a reader never has to guess.
* ``"sandbox"`` is the exception: it must be present. ``null`` means "explicitly unsandboxed";
  a request that merely omits it is refused, so a dropped field can never mean "run bare".
* Concrete paths travel as canonical ``file:`` URIs (:mod:`.pathuri`); a malformed URI makes the
  request undecodable rather than silently changing which path is meant.
* Unknown ``special`` names (``{"special": "future_thing"}``) decode into ``Special`` and re-encode
  identically; binding decides what to do with them.
* A permission whose path kind this version does not know (``{"registry": ...}``), or whose access
  is unknown, is never silently dropped in a way that widens access. Dropping a ``write`` entry can
  only narrow (write is the widest access), so it is dropped with a note in
  ``ExecRequest.warnings``. Dropping a ``read`` or ``deny`` entry could widen (a ``read`` can
  narrow a broader ``write``; a ``deny`` always narrows), and so could ignoring an unknown
  network mode: the line is still fully decoded and checked, then :class:`UnenforceableRequest`
  (a :class:`WireError`) is raised carrying the request id and the reasons, so the agent can
  answer ``sandbox_unavailable`` for that id. No widened ``ExecRequest`` is ever built, and a
  caller that only knows ``WireError`` still fails closed.
* Strings are written with ``ensure_ascii`` so lone surrogates (non-UTF-8 argv decoded with
  ``surrogateescape``) and NUL survive; validity for ``exec`` is the spawner's concern. The one
  thing JSON cannot carry exactly is a high+low surrogate held as two code points (it reads back
  as the character the pair encodes): a request holding one is refused when encoded; in a result
  (display data) it is left to read back as that character.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Optional, Union, cast

from sandfleet_agent.portable.intent import (
    Access,
    FilePath,
    Glob,
    NetworkMode,
    NetworkPolicy,
    PathSpec,
    Permission,
    SandboxIntent,
    Special,
)
from sandfleet_agent.portable.limits import TaskLimits, parse_limits
from sandfleet_agent.portable.pathuri import PathUri
from sandfleet_agent.portable.policy import Effective, effective_from_json

WIRE_VERSION = 1

#: Where a task runs: a symbol bound on the host (``:workspace_roots/svc``) or a ``file:`` URI.
Cwd = Union[Special, FilePath]


class WireError(ValueError):
    """A line that is not a valid v1 message; the text names the offending field."""


class UnenforceableRequest(WireError):
    """A well-formed request whose sandbox holds entries this version does not understand and
    cannot safely ignore; answer it with ``sandbox_unavailable`` for ``request_id``."""

    def __init__(self, request_id: str, reasons: tuple[str, ...]) -> None:
        super().__init__(f"request {request_id!r} asks for a sandbox this agent cannot enforce: " + "; ".join(reasons))
        self.request_id = request_id
        self.reasons = reasons


class Status(str, Enum):
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    SANDBOX_UNAVAILABLE = "sandbox_unavailable"
    #: The task asked for more than the host's effective policy allows; nothing ran.
    DENIED = "denied"
    ERROR = "error"


@dataclass(frozen=True)
class ExecRequest:
    """One command for one host. ``sandbox=None`` means explicitly unsandboxed.

    ``warnings`` is filled by the decoder and never sent: entries this version safely ignored.
    """

    id: str
    argv: tuple[str, ...]
    cwd: Optional[Cwd] = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: Optional[float] = None
    sandbox: Optional[SandboxIntent] = None
    v: int = WIRE_VERSION
    warnings: tuple[str, ...] = ()
    #: The operator's policy layers for this host (added after v1 shipped; an agent that predates
    #: it ignores it, and a request without it gets the built-in default). The agent adds the host
    #: owner's own layers, which no request can remove.
    policy: Effective = field(default_factory=Effective)


@dataclass(frozen=True)
class NetworkDecision:
    """One destination a managed-network task asked the proxy for: ``decision`` is ``allow`` or
    ``deny``; ``reason`` the rule that decided (or what went wrong reaching an allowed one);
    ``count`` how many times the same answer was given."""

    host: str
    port: int
    decision: str
    reason: str
    count: int = 1


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one request; ``wrapper`` is the exact argv that ran, ``message`` the clear
    reason when not ok, ``started`` an ISO-8601 UTC timestamp."""

    id: str
    status: Status
    rc: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    started: Optional[str] = None
    duration_ms: int = 0
    backend: Optional[str] = None
    wrapper: tuple[str, ...] = ()
    message: Optional[str] = None
    warnings: tuple[str, ...] = ()
    #: What the managed-network proxy decided, one entry per distinct (host, port, decision,
    #: reason); empty for tasks without a managed network. Added after v1 shipped: readers that
    #: predate it ignore it, and a result without it decodes with none.
    network_decisions: tuple[NetworkDecision, ...] = ()
    #: Which policy layers bounded the task and a digest of them all (empty from older agents).
    policy_sources: tuple[str, ...] = ()
    policy_digest: Optional[str] = None
    #: The wrapper's generated files: for a task run in a persistent sandbox, the task as it was
    #: sent into it (its argv, cwd, timeout); the Landlock ruleset; what the seccomp filter holds.
    #: With ``wrapper`` this is exactly what enforced the task. Added after v1 (older agents: none).
    wrapper_files: Mapping[str, str] = field(default_factory=dict)
    #: The resource limits the task ran under, how the host enforced them (``cgroup1``,
    #: ``cgroup2``, ``rlimit``), and the limit that stopped it (``memory``, ``pids``,
    #: ``cpu_seconds``, ``file_size``) when one did. Added after v1 (older agents: none).
    limits: Mapping[str, int] = field(default_factory=dict)
    limits_mechanism: Optional[str] = None
    limit: Optional[str] = None


@dataclass(frozen=True)
class AgentInit:
    """The controller's first line to an agent: what it needs from the inventory before its first
    task. Every field has a default, so an agent reads an older controller's line (and ignores
    what a newer one adds)."""

    workspace_roots: tuple[str, ...] = ()
    sandbox_pin: Optional[str] = None
    #: The operator's name → address map for managed-network proxies (``sandfleet_network_resolve``),
    #: checked by the agent (:func:`sandfleet_agent.network.netpolicy.parse_resolve`).
    network_resolve: tuple[tuple[str, Any], ...] = ()
    #: One persistent sandbox per sandbox command on the host, or a fresh one per task
    #: (``sandfleet_sandbox_reuse``).
    sandbox_reuse: bool = True
    #: More paths no task may write, on top of what the agent protects itself (its code, its
    #: interpreter, its PATH): a local agent is given the controller's own installation. It only
    #: ever adds walls, so whoever sends the line cannot remove any.
    protect: tuple[str, ...] = ()
    #: Probe every backend anew, never from the agent's cache of a working bwrap
    #: (:func:`sandfleet_agent.binding.facts.probe_bwrap`): for ``sandfleet doctor``.
    fresh_facts: bool = False


@dataclass(frozen=True)
class AgentHello:
    """The agent's answer to the init line: its version, the facts it probed once, and what the
    controller should be told (hardening that failed)."""

    version: str
    facts: Mapping[str, Any]
    warnings: tuple[str, ...] = ()
    #: What this agent understands beyond one request per line (:data:`FEATURES`); a controller
    #: sends a batch only to an agent that names ``"batch"`` here. Absent (older agents): none.
    features: tuple[str, ...] = ()


# -- lines ---------------------------------------------------------------------------------------


def encode_request(req: ExecRequest) -> str:
    """One line (no trailing newline) holding ``req``."""
    return _dumps(request_to_json(req))


def decode_request(line: Union[str, bytes]) -> ExecRequest:
    return request_from_json(_loads(line, "request"))


def encode_result(res: ExecResult) -> str:
    return _dumps(result_to_json(res))


def decode_result(line: Union[str, bytes]) -> ExecResult:
    return result_from_json(_loads(line, "result"))


def encode_init(init: AgentInit) -> str:
    return _dumps({"v": WIRE_VERSION, "init": {"workspace_roots": list(init.workspace_roots),
                                               "sandbox_pin": init.sandbox_pin,
                                               "network_resolve": dict(init.network_resolve),
                                               "sandbox_reuse": init.sandbox_reuse,
                                               "protect": list(init.protect),
                                               **({"fresh_facts": True} if init.fresh_facts else {})}})


def decode_init(line: Union[str, bytes]) -> AgentInit:
    """The init line, leniently (a missing or odd field takes its default) except where leniency
    would hide the operator's mistake: a ``network_resolve`` that is not an object."""
    data = _loads(line, "init")
    init = data.get("init") if isinstance(data, dict) else None
    if not isinstance(init, dict):
        init = {}
    pin, resolve, protect = init.get("sandbox_pin"), init.get("network_resolve"), init.get("protect")
    if resolve is not None and not isinstance(resolve, dict):
        raise WireError("network_resolve: must be a mapping of host name to IP address")
    return AgentInit(
        workspace_roots=tuple(str(r) for r in init.get("workspace_roots") or ()),
        sandbox_pin=pin if isinstance(pin, str) and pin else None,
        network_resolve=tuple((resolve or {}).items()),
        sandbox_reuse=init.get("sandbox_reuse") is not False,
        protect=tuple(p for p in protect if isinstance(p, str) and os.path.isabs(p))
        if isinstance(protect, list) else (),
        fresh_facts=init.get("fresh_facts") is True,
    )


def encode_hello(hello: AgentHello) -> str:
    body: dict[str, Any] = {"version": hello.version, "facts": dict(hello.facts)}
    if hello.warnings:
        body["warnings"] = list(hello.warnings)
    if hello.features:
        body["features"] = list(hello.features)
    return _dumps({"v": WIRE_VERSION, "hello": body})


def encode_init_error(message: str) -> str:
    """What an agent answers instead of hello when it cannot start (a bad init line)."""
    return _dumps({"v": WIRE_VERSION, "error": message})


def decode_hello(line: Union[str, bytes]) -> AgentHello:
    """The agent's hello; a WireError carries the agent's own reason when it sent one instead."""
    data = _loads(line, "hello")
    hello = data.get("hello") if isinstance(data, dict) else None
    if not isinstance(hello, dict) or not isinstance(hello.get("facts"), dict):
        detail = data.get("error") if isinstance(data, dict) and "error" in data else data
        raise WireError(str(detail))
    warnings, features = hello.get("warnings"), hello.get("features")
    return AgentHello(str(hello.get("version", "")), hello["facts"],
                      tuple(str(w) for w in warnings) if isinstance(warnings, list) else (),
                      tuple(f for f in features if isinstance(f, str)) if isinstance(features, list) else ())


# -- batches: pipelining (docs/architecture.md §3) ------------------------------------------------

#: What this version's agent announces in its hello. ``batch``: it runs a batch line (below).
BATCH_FEATURE = "batch"
FEATURES = (BATCH_FEATURE,)
#: The most requests one batch carries; both sides hold to it, so one line bounds the agent's work.
MAX_BATCH_REQUESTS = 1024


@dataclass(frozen=True)
class BatchStep:
    """One task of a batch: its requests (a loop's items, or the one), run in order, every one of
    them, as a loop's items are; the batch then goes on only if :func:`goes_on` holds for each
    result. ``continue_on_failure``: the controller passes over this task's failures
    (``ignore_errors``), so a ``failed`` or ``error`` result need not stop the batch."""

    requests: tuple[ExecRequest, ...]
    continue_on_failure: bool = False


@dataclass(frozen=True)
class RawStep:
    """A step as the agent reads it: each request still a JSON object, decoded on its own when its
    turn comes (so a bad one gets its own result, and cannot change how the others are read),
    with its size as a line of its own, which the policy's ``request_bytes`` bounds."""

    requests: tuple[tuple[object, int], ...]
    continue_on_failure: bool


@dataclass(frozen=True)
class BatchEnd:
    """The agent's last line for a batch: how many results it wrote. Fewer than the batch held
    means it stopped (a failure, a bad request, the controller gone): the rest did not run.
    ``error``: the batch line itself could not be read (then ``ran`` is 0)."""

    ran: int
    error: Optional[str] = None


def goes_on(status: Status, continue_on_failure: bool) -> bool:
    """Whether a batch may run past a result: ok, or a failure the controller passes over.

    Never past ``timeout``, ``denied`` or ``sandbox_unavailable``: this is narrower than what
    ``ignore_errors`` covers (a timeout), never wider, so an agent never runs a task the
    controller would not have sent; the controller sends the rest itself when it goes on anyway.
    """
    return status is Status.OK or (continue_on_failure and status in (Status.FAILED, Status.ERROR))


def encode_batch(steps: Sequence[BatchStep]) -> str:
    """One line holding ``steps``; every request encoded (and checked) as :func:`encode_request` does."""
    count = sum(len(step.requests) for step in steps)
    if not steps or any(not step.requests for step in steps) or count > MAX_BATCH_REQUESTS:
        raise WireError(f"cannot encode a batch of {len(steps)} step(s) and {count} request(s): every step needs a "
                        f"request, and a batch holds 1 to {MAX_BATCH_REQUESTS}")
    return _dumps({"v": WIRE_VERSION, "batch": [
        {"requests": [request_to_json(r) for r in step.requests], "continue_on_failure": step.continue_on_failure}
        for step in steps]})


def read_line(line: Union[str, bytes]) -> object:
    """Any line from the controller, parsed as strict JSON (unique keys, no NaN)."""
    return _loads(line, "request")


def is_batch(message: object) -> bool:
    return isinstance(message, dict) and "batch" in message


_BATCH_KEYS = frozenset({"v", "batch"})
_STEP_KEYS = frozenset({"requests", "continue_on_failure"})


def batch_from_json(message: object) -> tuple[RawStep, ...]:
    """A batch's steps, strictly: unknown keys, empty steps or too many requests are refused, as a
    batch is what this version invented (nothing older can have sent a field it lacks)."""
    o = _object(message, "batch")
    _check_version(o, "batch")
    _only(o, _BATCH_KEYS, "batch")
    raw_steps = _list(_required(o, "batch", "batch"), "batch")
    if not raw_steps:
        raise WireError("batch must hold at least one step")
    steps: list[RawStep] = []
    count = 0
    for i, item in enumerate(raw_steps):
        step = _object(item, f"batch[{i}]")
        _only(step, _STEP_KEYS, f"batch[{i}]")
        requests = _list(_required(step, "requests", f"batch[{i}]"), f"batch[{i}].requests")
        if not requests:
            raise WireError(f"batch[{i}].requests must hold at least one request")
        count += len(requests)
        if count > MAX_BATCH_REQUESTS:
            raise WireError(f"batch holds more than {MAX_BATCH_REQUESTS} requests")
        steps.append(RawStep(tuple((r, len(_dumps(_object(r, f"batch[{i}].requests[{j}]"))) + 1)
                                   for j, r in enumerate(requests)),
                             _bool(step.get("continue_on_failure", False), f"batch[{i}].continue_on_failure")))
    return tuple(steps)


def encode_batch_end(end: BatchEnd) -> str:
    body: dict[str, Any] = {"ran": end.ran}
    if end.error is not None:
        body["error"] = end.error
    return _dumps({"v": WIRE_VERSION, "batch_end": body})


def reply_from_json(obj: object) -> Union[ExecResult, BatchEnd]:
    """A line the agent writes while a batch runs: a result, or the batch's end."""
    if not (isinstance(obj, dict) and "batch_end" in obj):
        return result_from_json(obj)
    _check_version(obj, "batch_end")
    _only(obj, frozenset({"v", "batch_end"}), "batch_end")
    body = _object(obj["batch_end"], "batch_end")
    _only(body, frozenset({"ran", "error"}), "batch_end")
    ran = _required(body, "ran", "batch_end")
    if isinstance(ran, bool) or not isinstance(ran, int) or ran < 0:
        raise WireError(f"batch_end.ran must be a non-negative integer, not {_describe(ran)}")
    return BatchEnd(ran, _opt_string(body.get("error"), "batch_end.error"))


def _only(o: Mapping[str, object], keys: frozenset[str], where: str) -> None:
    unknown = sorted(set(o) - keys)
    if unknown:
        raise WireError(f"{where} has unknown field(s) {unknown}; allowed: {sorted(keys)}")


def _dumps(obj: Mapping[str, Any]) -> str:
    try:
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:  # e.g. a per_os hint holding a non-JSON value
        raise WireError(f"cannot encode as JSON: {exc}") from None


def _loads(line: Union[str, bytes], what: str) -> object:
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"{what} line is not UTF-8: {exc}") from None
    try:
        return json.loads(line, object_pairs_hook=unique_keys, parse_constant=no_constant)
    except WireError:
        raise
    except ValueError as exc:  # JSONDecodeError, or an integer beyond Python's digit limit
        raise WireError(f"{what} line is not JSON: {exc}") from None
    except RecursionError:
        raise WireError(f"{what} line is nested too deeply") from None


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Duplicate keys would let two readers see two different messages; refuse them."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise WireError(f"duplicate key {key!r} in a JSON object")
        out[key] = value
    return out


def no_constant(name: str) -> object:
    raise WireError(f"{name} is not valid JSON")


# -- requests ------------------------------------------------------------------------------------


class _Same:
    """Hashes and compares a value by identity, and keeps it alive (so its id is never reused)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.value is self.value


def request_key(req: ExecRequest) -> Hashable:
    """Everything of ``req`` but its id and warnings, cheap to hash: the intent by identity.
    Why: one task goes to every host with the same (frozen) intent object, and hashing the
    intent's contents would cost more than the work a cache keyed on it saves. Equal intents in
    different objects only miss the cache."""
    return (req.v, req.argv, req.cwd, tuple(req.env.items()), req.timeout_s, _Same(req.sandbox), _Same(req.policy))


#: Checked wire objects by :func:`request_key`, so the same task sent to many hosts is checked
#: once: the check below is ~0.2 ms a request. Bounded: emptied when full.
_checked: dict[Hashable, dict[str, Any]] = {}
_CHECKED_MAX = 1024


def request_to_json(req: ExecRequest) -> dict[str, Any]:
    """The wire object for ``req`` (also what ``--dry-run --format json`` shows as ``request``).
    Its nested values may be shared with other calls' results: serialise it, do not change it."""
    if req.v != WIRE_VERSION:
        raise WireError(f"cannot encode wire version {req.v!r}; this version speaks v{WIRE_VERSION}")
    if not isinstance(req.id, str) or not req.id:
        raise WireError(f"cannot encode request: id must be a non-empty string, not {_describe(req.id)}")
    key = request_key(req)
    checked = _checked.get(key)
    if checked is None:
        checked = _request_to_checked_json(replace(req, id="-"))
        if len(_checked) >= _CHECKED_MAX:
            _checked.clear()
        _checked[key] = checked
    _check_no_split_pairs(req.id)
    obj = dict(checked)
    obj["id"] = req.id  # keeps its place, second
    return obj


def _request_to_checked_json(req: ExecRequest) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "v": WIRE_VERSION,
        "id": req.id,
        "argv": list(req.argv),
        "cwd": _cwd_to_json(req.cwd),
        "env": dict(req.env),
        "timeout_s": req.timeout_s,
        "sandbox": None if req.sandbox is None else intent_to_json(req.sandbox),
    }
    if req.policy != Effective():  # absent means the built-in default: the common case stays short
        obj["policy"] = req.policy.to_json()
    # Whatever we send must be readable by the same version: check types once, on the way out.
    try:
        request_from_json(obj)
    except WireError as exc:
        raise WireError(f"cannot encode request: {exc}") from None
    _check_no_split_pairs(obj)
    return obj


# A high surrogate followed by a low one, held as two separate code points: JSON spells it exactly
# like the one character the pair encodes, so it would come back changed. ``surrogateescape``
# (non-UTF-8 bytes) only yields low surrogates, so real argv never holds one.
_SPLIT_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _check_no_split_pairs(value: object) -> None:
    """Requests are executed, so they must arrive exactly; refuse what JSON cannot carry."""
    if isinstance(value, str):
        if _SPLIT_PAIR.search(value):
            raise WireError(
                f"cannot encode {value!r}: it holds a surrogate pair as two separate code points, "
                "which JSON cannot tell apart from the character they encode"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_no_split_pairs(key)
            _check_no_split_pairs(item)
    elif isinstance(value, list):
        for item in value:
            _check_no_split_pairs(item)


def request_from_json(obj: object) -> ExecRequest:
    o = _object(obj, "request")
    _check_version(o, "request")
    notes = _Notes()
    if "sandbox" not in o:
        raise WireError(
            "request is missing 'sandbox': send null to run explicitly unsandboxed; "
            "a missing sandbox is refused so it can never mean 'run bare'"
        )
    raw_sandbox = o["sandbox"]
    request = ExecRequest(
        id=_id(o),
        argv=_argv(_required(o, "argv", "request")),
        cwd=_cwd_from_json(o.get("cwd")),
        env=_str_map(o.get("env"), "env"),
        timeout_s=_timeout(o.get("timeout_s")),
        sandbox=None if raw_sandbox is None else _intent_from_json(raw_sandbox, "sandbox", notes),
        warnings=tuple(notes.warnings),
        policy=_policy(o.get("policy")),
    )
    if notes.unenforceable:
        raise UnenforceableRequest(request.id, tuple(notes.unenforceable))
    return request


def _policy(value: object) -> Effective:
    key = _json_key(value)
    known = _policies.get(key) if key is not None else None
    if known is not None:
        return known
    try:
        effective = effective_from_json(value)
    except ValueError as exc:
        raise WireError(str(exc)) from None
    if key is not None:
        if len(_policies) >= _POLICIES_MAX:
            _policies.clear()
        _policies[key] = effective
    return effective


#: Decoded policies by their JSON text (:func:`_json_key`): every request of a run carries the
#: same layers, and parsing them is ~0.08 ms a task in an agent (docs/performance.md "Host side:
#: each task"). Bounded: emptied when full. An Effective is immutable, so sharing one is safe.
_policies: dict[str, Effective] = {}
_POLICIES_MAX = 64
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _json_key(value: object) -> Optional[str]:
    """``value`` as compact JSON text when it is made of JSON's own types only (what
    ``json.loads`` gives): then equal texts are equal documents, so they decode alike. None for
    anything else (a tuple would read as a list; a subclass may behave otherwise)."""
    if not _plain_json(value):
        return None
    try:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError):  # NaN, infinity, a huge integer, too deep: decoded as it is
        return None


def _plain_json(value: object) -> bool:
    """Whether ``value`` holds only dicts with str keys, lists and JSON's scalars, exactly."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            if type(item) is not dict or not _all_str(item):
                return False
            todo.extend(item.values())
        elif isinstance(item, list):
            if type(item) is not list:
                return False
            todo.extend(item)
        elif type(item) not in _JSON_SCALARS:
            return False
    return True


def _id(o: Mapping[str, object]) -> str:
    value = _required(o, "id", "request")
    if not isinstance(value, str) or not value:
        raise WireError(f"id must be a non-empty string, not {_describe(value)}")
    return value


def _argv(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        raise WireError("argv must be a list of strings; a shell string would be parsed by a shell")
    items = _str_list(value, "argv")
    if not items:
        raise WireError("argv must not be empty")
    return items


def _timeout(value: object) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WireError(f"timeout_s must be a number of seconds or null, not {_describe(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite or value <= 0:
        raise WireError(f"timeout_s must be a positive, finite number of seconds, not {value!r}")
    return value


def _cwd_to_json(cwd: Optional[Cwd]) -> Optional[dict[str, Any]]:
    if cwd is None:
        return None
    if isinstance(cwd, Special):
        out: dict[str, Any] = {"symbol": ":" + cwd.name}
        if cwd.subpath is not None:
            out["subpath"] = cwd.subpath
        return out
    if isinstance(cwd, FilePath):
        return {"uri": _checked_uri(cwd.uri, "cwd.uri")}
    raise WireError(f"cwd must be a Special or a FilePath, not {type(cwd).__name__}")


def _cwd_from_json(value: object) -> Optional[Cwd]:
    if value is None:
        return None
    o = _object(value, "cwd")
    if ("symbol" in o) == ("uri" in o):
        raise WireError('cwd must have exactly one of "symbol" (":workspace_roots") or "uri" (file URI)')
    if "uri" in o:
        return FilePath(_uri(o["uri"], "cwd.uri"))
    symbol = _string(o["symbol"], "cwd.symbol")
    if not symbol.startswith(":") or len(symbol) == 1:
        raise WireError(f"cwd.symbol must look like ':workspace_roots', not {symbol!r}")
    return Special(symbol[1:], _opt_string(o.get("subpath"), "cwd.subpath"))


# -- intent --------------------------------------------------------------------------------------


class _Notes:
    """What the decoder safely ignored (warnings) and what it could not ignore (unenforceable)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.unenforceable: list[str] = []


def intent_to_json(intent: SandboxIntent) -> dict[str, Any]:
    net = intent.network
    return {
        "permissions": [
            {
                "path": _path_to_json(p.path, f"sandbox.permissions[{i}].path"),
                "access": Access(p.access).value,
            }
            for i, p in enumerate(intent.permissions)
        ],
        "network": {"mode": NetworkMode(net.mode).value, "allow": list(net.allow), "deny": list(net.deny)},
        "workspace_roots": [
            _checked_uri(root, f"sandbox.workspace_roots[{i}]") for i, root in enumerate(intent.workspace_roots)
        ],
        "per_os": {os_name: dict(hints) for os_name, hints in intent.per_os.items()},
        **({"limits": intent.limits.to_json()} if intent.limits.items() else {}),
    }


def intent_from_json(value: object, where: str = "sandbox") -> SandboxIntent:
    """Decode a standalone intent; anything this version cannot enforce raises :class:`WireError`."""
    notes = _Notes()
    intent = _intent_from_json(value, where, notes)
    if notes.unenforceable:
        raise WireError("; ".join(notes.unenforceable))
    return intent


def _intent_from_json(value: object, where: str, notes: _Notes) -> SandboxIntent:
    o = _object(value, where)
    return SandboxIntent(
        permissions=tuple(_permissions(o.get("permissions"), f"{where}.permissions", notes)),
        network=_network(o.get("network"), f"{where}.network", notes),
        workspace_roots=tuple(
            _uri(item, f"{where}.workspace_roots[{i}]")
            for i, item in enumerate(_list(o.get("workspace_roots"), f"{where}.workspace_roots"))
        ),
        per_os=_per_os(o.get("per_os"), f"{where}.per_os"),
        limits=_limits(o.get("limits"), f"{where}.limits"),
    )


def _limits(value: object, where: str) -> TaskLimits:
    if value is None:
        return TaskLimits()
    try:
        return parse_limits(value, where)
    except ValueError as exc:
        raise WireError(str(exc) if where in str(exc) else f"{where}: {exc}") from None


def _path_to_json(path: PathSpec, where: str) -> dict[str, Any]:
    if isinstance(path, Special):
        out: dict[str, Any] = {"special": path.name}
        if path.subpath is not None:
            out["subpath"] = path.subpath
        return out
    if isinstance(path, FilePath):
        return {"uri": _checked_uri(path.uri, f"{where}.uri")}
    if isinstance(path, Glob):
        return {"glob": path.pattern}
    raise WireError(f"{where} must be a Special, FilePath or Glob, not {type(path).__name__}")


_PATH_KINDS = ("special", "uri", "glob")


def _permissions(value: object, where: str, notes: _Notes) -> list[Permission]:
    out: list[Permission] = []
    for i, item in enumerate(_list(value, where)):
        at = f"{where}[{i}]"
        entry = _object(item, at)
        path = _object(_required(entry, "path", at), f"{at}.path")
        access_text = _string(_required(entry, "access", at), f"{at}.access")
        access = Access(access_text) if access_text in _ACCESS_VALUES else None
        kinds = [k for k in _PATH_KINDS if k in path]
        if len(kinds) > 1:
            raise WireError(f"{at}.path has several kinds {kinds}; exactly one is allowed")
        if not kinds:
            described = f"unknown path kind {sorted(path)} with access {access_text!r}"
            if access is Access.WRITE:
                notes.warnings.append(f"{at}: {described} ignored (dropping a write entry only narrows)")
            else:
                notes.unenforceable.append(
                    f"{at}: {described} is not understood by this agent, and ignoring it could widen access"
                )
            continue
        spec = _path_from_json(path, kinds[0], f"{at}.path")
        if access is None:
            notes.unenforceable.append(f"{at}: unknown access {access_text!r} for {spec}; allowed: read, write, deny")
            continue
        out.append(Permission(spec, access))
    return out


_ACCESS_VALUES = frozenset(a.value for a in Access)


def _path_from_json(path: Mapping[str, object], kind: str, where: str) -> PathSpec:
    if kind == "special":
        name = _string(path["special"], f"{where}.special")
        if not name:
            raise WireError(f"{where}.special must not be empty")
        return Special(name, _opt_string(path.get("subpath"), f"{where}.subpath"))
    if kind == "uri":
        return FilePath(_uri(path["uri"], f"{where}.uri"))
    pattern = _string(path["glob"], f"{where}.glob")
    if not pattern:
        raise WireError(f"{where}.glob must not be empty")
    return Glob(pattern)


def _network(value: object, where: str, notes: _Notes) -> NetworkPolicy:
    if value is None:
        return NetworkPolicy()
    o = _object(value, where)
    mode_text = _string(o.get("mode", NetworkMode.NONE.value), f"{where}.mode")
    try:
        mode = NetworkMode(mode_text)
    except ValueError:
        notes.unenforceable.append(
            f"{where}.mode {mode_text!r} is not understood by this agent; allowed: none, full, managed"
        )
        mode = NetworkMode.NONE
    return NetworkPolicy(
        mode=mode,
        allow=_str_list(o.get("allow"), f"{where}.allow"),
        deny=_str_list(o.get("deny"), f"{where}.deny"),
    )


def _per_os(value: object, where: str) -> dict[str, Mapping[str, Any]]:
    if value is None:
        return {}
    return {name: dict(_object(hints, f"{where}.{name}")) for name, hints in _object(value, where).items()}


def _uri(value: object, where: str) -> str:
    text = _string(value, where)
    try:
        return str(PathUri.parse(text))
    except ValueError as exc:
        raise WireError(f"{where}: {exc}") from None


def _checked_uri(uri: str, where: str) -> str:
    """Refuse to send a URI the reader would rewrite or reject."""
    if _uri(uri, where) != uri:
        raise WireError(f"{where}: {uri!r} is not canonical; build it with PathUri")
    return uri


# -- results -------------------------------------------------------------------------------------


def result_to_json(res: ExecResult) -> dict[str, Any]:
    """The wire object for ``res`` (the fields of a ``task_result`` event)."""
    obj: dict[str, Any] = {
        "id": res.id,
        "status": Status(res.status).value,
        "rc": res.rc,
        "stdout": res.stdout,
        "stderr": res.stderr,
        "stdout_truncated": res.stdout_truncated,
        "stderr_truncated": res.stderr_truncated,
        "started": res.started,
        "duration_ms": res.duration_ms,
        "backend": res.backend,
        "wrapper": list(res.wrapper),
        "message": res.message,
        "warnings": list(res.warnings),
        "network_decisions": [
            {"host": d.host, "port": d.port, "decision": d.decision, "reason": d.reason, "count": d.count}
            for d in res.network_decisions
        ],
        "policy_sources": list(res.policy_sources),
        "policy_digest": res.policy_digest,
        "wrapper_files": dict(res.wrapper_files),
        "limits": dict(res.limits),
        "limits_mechanism": res.limits_mechanism,
        "limit": res.limit,
    }
    try:
        result_from_json(obj)
    except WireError as exc:
        raise WireError(f"cannot encode result: {exc}") from None
    return obj


def result_from_json(obj: object) -> ExecResult:
    o = _object(obj, "result")
    _check_version(o, "result")
    warnings = list(_str_list(o.get("warnings"), "warnings"))
    status_text = _string(_required(o, "status", "result"), "status")
    try:
        status = Status(status_text)
    except ValueError:  # a newer agent's status: never mistake it for success
        status = Status.ERROR
        warnings.append(f"unknown status {status_text!r} from a newer agent, reported as error")
    result_id = _required(o, "id", "result")
    if not isinstance(result_id, str):
        raise WireError(f"id must be a string, not {_describe(result_id)}")
    duration = o.get("duration_ms", 0)
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
        raise WireError(f"duration_ms must be a non-negative integer, not {_describe(duration)}")
    rc = o.get("rc")
    if rc is not None and (isinstance(rc, bool) or not isinstance(rc, int)):
        raise WireError(f"rc must be an integer or null, not {_describe(rc)}")
    return ExecResult(
        id=result_id,
        status=status,
        rc=rc,
        stdout=_string(o.get("stdout", ""), "stdout"),
        stderr=_string(o.get("stderr", ""), "stderr"),
        stdout_truncated=_bool(o.get("stdout_truncated", False), "stdout_truncated"),
        stderr_truncated=_bool(o.get("stderr_truncated", False), "stderr_truncated"),
        started=_opt_string(o.get("started"), "started"),
        duration_ms=duration,
        backend=_opt_string(o.get("backend"), "backend"),
        wrapper=_str_list(o.get("wrapper"), "wrapper"),
        message=_opt_string(o.get("message"), "message"),
        warnings=tuple(warnings),
        network_decisions=_decisions(o.get("network_decisions"), "network_decisions"),
        policy_sources=_str_list(o.get("policy_sources"), "policy_sources"),
        policy_digest=_opt_string(o.get("policy_digest"), "policy_digest"),
        wrapper_files=_str_map(o.get("wrapper_files"), "wrapper_files"),
        limits=_int_map(o.get("limits"), "limits"),
        limits_mechanism=_opt_string(o.get("limits_mechanism"), "limits_mechanism"),
        limit=_opt_string(o.get("limit"), "limit"),
    )


def _decisions(value: object, where: str) -> tuple[NetworkDecision, ...]:
    out: list[NetworkDecision] = []
    for i, item in enumerate(_list(value, where)):
        at = f"{where}[{i}]"
        entry = _object(item, at)
        port, count = entry.get("port"), entry.get("count", 1)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise WireError(f"{at}.port must be a port number from 0 to 65535, not {_describe(port)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise WireError(f"{at}.count must be a positive integer, not {_describe(count)}")
        out.append(NetworkDecision(
            host=_string(_required(entry, "host", at), f"{at}.host"),
            port=port,
            decision=_string(_required(entry, "decision", at), f"{at}.decision"),
            reason=_string(entry.get("reason", ""), f"{at}.reason"),
            count=count,
        ))
    return tuple(out)


# -- JSON shape checks ---------------------------------------------------------------------------


def _check_version(o: Mapping[str, object], what: str) -> None:
    version = o.get("v", WIRE_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version != WIRE_VERSION:
        raise WireError(f"{what} has unsupported wire version {version!r}; this version supports only v{WIRE_VERSION}")


def _describe(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _required(o: Mapping[str, object], key: str, where: str) -> object:
    if key not in o:
        raise WireError(f"{where} is missing the required field {key!r}")
    return o[key]


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise WireError(f"{where} must be an object, not {_describe(value)}")
    return value


def _list(value: object, where: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise WireError(f"{where} must be an array, not {_describe(value)}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise WireError(f"{where} must be a string, not {_describe(value)}")
    return value


def _opt_string(value: object, where: str) -> Optional[str]:
    return None if value is None else _string(value, where)


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise WireError(f"{where} must be true or false, not {_describe(value)}")
    return value


def _str_list(value: object, where: str) -> tuple[str, ...]:
    items = _list(value, where)
    if _all_str(items):
        return cast("tuple[str, ...]", tuple(items))
    return tuple(_string(item, f"{where}[{i}]") for i, item in enumerate(items))


_STR = frozenset({str})


def _all_str(items: Iterable[object]) -> bool:
    """Whether every item is exactly a ``str``, checked in C: a result's wrapper alone is ~80
    words (docs/performance.md "Host side: each task"). False sends the caller to the item by
    item check, which also takes ``str`` subclasses and names the first offender."""
    return set(map(type, items)) <= _STR


def _int_map(value: object, where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, item in _object(value if value is not None else {}, where).items():
        if isinstance(item, bool) or not isinstance(item, int):
            raise WireError(f"{where}.{key} must be an integer, not {_describe(item)}")
        out[key] = item
    return out


def _str_map(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    o = _object(value, where)
    if _all_str(o) and _all_str(o.values()):
        return cast("dict[str, str]", dict(o))
    out: dict[str, str] = {}
    for key, item in o.items():
        if not isinstance(key, str):  # only reachable when encoding; json.dumps would stringify it
            raise WireError(f"{where} keys must be strings, not {_describe(key)}")
        out[key] = _string(item, f"{where}[{key!r}]")
    return out
