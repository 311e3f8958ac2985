"""Wire v1: golden messages in data/wire/*.json, compatibility rules, and hostile round trips.

Each fixture holds a ``message`` as it travels and either what it ``decoded`` to (the Python model,
tagged with class names) plus the exact canonical line it re-``encoded`` to, or the ``error`` it
raises. Adding a case is adding a file.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandfleet_agent.portable import wire
from sandfleet_agent.portable.intent import (
    Access,
    FilePath,
    Glob,
    NetworkMode,
    NetworkPolicy,
    Permission,
    SandboxIntent,
    Special,
)
from sandfleet_agent.portable.limits import TaskLimits
from sandfleet_agent.portable.pathuri import PathUri
from sandfleet_agent.portable.policy import Effective, effective_from_json
from sandfleet_agent.portable.wire import (
    AgentHello,
    AgentInit,
    ExecRequest,
    ExecResult,
    Status,
    UnenforceableRequest,
    WireError,
    decode_hello,
    decode_init,
    decode_request,
    decode_result,
    encode_hello,
    encode_init,
    encode_init_error,
    encode_request,
    encode_result,
)
from support.policies import WIDE

FIXTURES = sorted((Path(__file__).parent / "data" / "wire").glob("*.json"))


def plain(value: Any) -> Any:
    """The decoded model as JSON-comparable data, tagged with class names. A request's policy and
    an intent's limits are left out when they are the defaults (what a message without them gets)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                  if not (f.name == "policy" and getattr(value, f.name) == Effective())
                  and not (f.name == "limits" and getattr(value, f.name) == TaskLimits())}
        return {"__class__": type(value).__name__, **fields}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    return value


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="ascii"))
    return data


def test_fixture_set_is_complete() -> None:
    names = {p.stem for p in FIXTURES}
    for required in [
        "request_minimal",
        "request_design_example",
        "request_unsandboxed",
        "request_unknown_fields",
        "request_unknown_special",
        "request_non_utf8_argv",
        "result_ok",
        "result_failed",
        "result_sandbox_unavailable",
        "result_truncated",
        "result_network_decisions",
    ]:
        assert required in names


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture(path: Path) -> None:
    case = load(path)
    decode, encode = (decode_request, encode_request) if case["kind"] == "request" else (decode_result, encode_result)
    line = json.dumps(case["message"], ensure_ascii=True)
    if "error" in case:
        with pytest.raises(WireError) as info:
            decode(line)
        assert type(info.value).__name__ == case["error"]["type"]
        assert str(info.value) == case["error"]["message"]
        if "request_id" in case["error"]:
            assert isinstance(info.value, UnenforceableRequest)
            assert info.value.request_id == case["error"]["request_id"]
        return
    decoded = decode(line)
    assert plain(decoded) == case["decoded"]
    assert decode(line.encode("utf-8")) == decoded  # bytes in, same message
    encoded = encode(decoded)  # type: ignore[arg-type]
    assert encoded == case["encoded"]
    assert encode(decode(encoded)) == encoded  # stable
    if isinstance(decoded, ExecRequest):  # request warnings are the reader's notes, never sent
        decoded = dataclasses.replace(decoded, warnings=())
    assert decode(encoded) == decoded


# -- compatibility ------------------------------------------------------------------------------------------


def _design_example() -> dict[str, Any]:
    message: dict[str, Any] = load(Path(__file__).parent / "data" / "wire" / "request_design_example.json")["message"]
    return message


def test_older_reader_ignores_unknown_fields_everywhere() -> None:
    message = _design_example()
    baseline = decode_request(json.dumps(message))
    grown = json.loads(json.dumps(message))
    grown["new_top"] = {"nested": [1, 2]}
    grown["cwd"]["new_cwd"] = True
    grown["sandbox"]["new_sandbox"] = "x"
    grown["sandbox"]["network"]["new_network"] = 1
    for entry in grown["sandbox"]["permissions"]:
        entry["new_entry"] = None
        entry["path"]["new_path"] = []
    grown["sandbox"]["per_os"]["linux"]["new_hint"] = "y"  # hints are carried as-is
    decoded = decode_request(json.dumps(grown))
    assert dataclasses.replace(decoded, sandbox=baseline.sandbox) == baseline
    assert decoded.sandbox is not None and baseline.sandbox is not None
    assert decoded.sandbox.permissions == baseline.sandbox.permissions
    assert decoded.sandbox.network == baseline.sandbox.network


def test_newer_reader_fills_defaults() -> None:
    req = decode_request('{"id":"a","argv":["x"],"sandbox":{}}')
    assert req == ExecRequest(id="a", argv=("x",), sandbox=SandboxIntent(permissions=()))
    assert req.sandbox is not None and req.sandbox.network == NetworkPolicy(NetworkMode.NONE)
    res = decode_result('{"id":"a","status":"ok"}')
    assert res == ExecResult(id="a", status=Status.OK)
    # null in an optional field means its default
    req = decode_request('{"id":"a","argv":["x"],"cwd":null,"env":null,"timeout_s":null,"sandbox":null}')
    assert req == ExecRequest(id="a", argv=("x",))


def test_sandbox_null_is_explicit_and_missing_is_refused() -> None:
    assert decode_request('{"id":"a","argv":["x"],"sandbox":null}').sandbox is None
    assert '"sandbox":null' in encode_request(ExecRequest(id="a", argv=("x",)))
    with pytest.raises(WireError, match="missing 'sandbox'"):
        decode_request('{"id":"a","argv":["x"]}')


def test_unknown_write_kind_is_dropped_with_warning() -> None:
    req = decode_request(
        '{"id":"a","argv":["x"],"sandbox":{"permissions":['
        '{"path":{"registry":"HKCU"},"access":"write"},{"path":{"special":"root"},"access":"read"}]}}'
    )
    assert req.sandbox is not None
    assert req.sandbox.permissions == (Permission(Special("root"), Access.READ),)
    assert len(req.warnings) == 1 and "registry" in req.warnings[0]


@pytest.mark.parametrize("access", ["read", "deny", "some-future-access"])
def test_unknown_kind_that_could_widen_is_refused_with_its_id(access: str) -> None:
    line = (
        '{"id":"p1/t1/h","argv":["x"],"sandbox":{"permissions":['
        f'{{"path":{{"registry":"HKLM"}},"access":"{access}"}}]}}}}'
    )
    with pytest.raises(UnenforceableRequest) as info:
        decode_request(line)
    assert info.value.request_id == "p1/t1/h"
    assert "sandbox.permissions[0]" in str(info.value)
    assert isinstance(info.value, WireError)  # callers that only know WireError fail closed


def test_intent_from_json_refuses_what_it_cannot_enforce() -> None:
    with pytest.raises(WireError, match="loopback"):
        wire.intent_from_json({"permissions": [], "network": {"mode": "loopback"}})
    intent = wire.intent_from_json({"permissions": [{"path": {"glob": "**/*.pem"}, "access": "deny"}]})
    assert wire.intent_to_json(intent)["permissions"] == [{"path": {"glob": "**/*.pem"}, "access": "deny"}]


# -- rejections ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"argv":["x"],"sandbox":null}', "'id'"),
        ('{"id":"a","sandbox":null}', "'argv'"),
        ('{"id":"","argv":["x"],"sandbox":null}', "id must be a non-empty string"),
        ('{"id":7,"argv":["x"],"sandbox":null}', "id must be a non-empty string, not a number"),
        ('{"id":"a","argv":[],"sandbox":null}', "argv must not be empty"),
        ('{"id":"a","argv":"ls -l","sandbox":null}', "argv must be a list"),
        ('{"id":"a","argv":["x",null],"sandbox":null}', r"argv\[1\] must be a string, not null"),
        ('{"id":"a","argv":{"0":"x"},"sandbox":null}', "argv must be an array, not an object"),
        ('{"id":"a","argv":["x"],"env":{"A":1},"sandbox":null}', r"env\['A'\] must be a string"),
        ('{"id":"a","argv":["x"],"env":["A=1"],"sandbox":null}', "env must be an object"),
        ('{"id":"a","argv":["x"],"timeout_s":"60","sandbox":null}', "timeout_s must be a number"),
        ('{"id":"a","argv":["x"],"timeout_s":true,"sandbox":null}', "timeout_s must be a number"),
        ('{"id":"a","argv":["x"],"timeout_s":-1,"sandbox":null}', "timeout_s must be a positive"),
        ('{"id":"a","argv":["x"],"timeout_s":1' + "0" * 400 + ',"sandbox":null}', "finite number of seconds"),
        ('{"id":"a","argv":["x"],"timeout_s":1' + "0" * 5000 + ',"sandbox":null}', "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"id":"a","argv":["x"],"timeout_s":Infinity,"sandbox":null}', "Infinity is not valid JSON"),
        ('{"id":"a","argv":["x"],"cwd":"/tmp","sandbox":null}', "cwd must be an object"),
        ('{"id":"a","argv":["x"],"cwd":{},"sandbox":null}', "cwd must have exactly one"),
        ('{"id":"a","argv":["x"],"cwd":{"symbol":"workspace_roots"},"sandbox":null}', "cwd.symbol must look"),
        ('{"id":"a","argv":["x"],"cwd":{"uri":"/tmp"},"sandbox":null}', "cwd.uri: '/tmp' is a native path"),
        ('{"id":"a","argv":["x"],"sandbox":[]}', "sandbox must be an object"),
        ('{"id":"a","argv":["x"],"sandbox":{"permissions":[{"access":"read"}]}}', r"permissions\[0\] is missing"),
        (
            '{"id":"a","argv":["x"],"sandbox":{"permissions":[{"path":{"special":"root"}}]}}',
            "missing the required field 'access'",
        ),
        (
            '{"id":"a","argv":["x"],"sandbox":{"permissions":[{"path":{"special":"root","glob":"*"},'
            '"access":"read"}]}}',
            "several kinds",
        ),
        (
            '{"id":"a","argv":["x"],"sandbox":{"permissions":[{"path":{"uri":"http://x/y"},"access":"read"}]}}',
            r"sandbox.permissions\[0\].path.uri: .*unsupported scheme",
        ),
        ('{"id":"a","argv":["x"],"sandbox":{"workspace_roots":["C:\\\\ws"]}}', r"workspace_roots\[0\]"),
        ('{"id":"a","argv":["x"],"sandbox":{"network":{"allow":"pypi.org"}}}', "network.allow must be an array"),
        ('{"id":"a","argv":["x"],"sandbox":{"per_os":{"linux":"landlock"}}}', "per_os.linux must be an object"),
        ('{"v":2,"id":"a","argv":["x"],"sandbox":null}', "unsupported wire version 2.*only v1"),
        ('{"v":"1","id":"a","argv":["x"],"sandbox":null}', "unsupported wire version '1'"),
        ('{"v":true,"id":"a","argv":["x"],"sandbox":null}', "unsupported wire version True"),
        ('{"id":"a","id":"b","argv":["x"],"sandbox":null}', "duplicate key 'id'"),
        ('["a"]', "request must be an object, not an array"),
        ("not json", "request line is not JSON"),
        (b'{"id":"\xff"}', "not UTF-8"),
    ],
)
def test_request_rejections_name_the_field(line: str | bytes, field: str) -> None:
    with pytest.raises(WireError, match=field):
        decode_request(line)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"status":"ok"}', "'id'"),
        ('{"id":"a"}', "'status'"),
        ('{"id":"a","status":3}', "status must be a string"),
        ('{"id":"a","status":"ok","rc":"0"}', "rc must be an integer"),
        ('{"id":"a","status":"ok","rc":1.5}', "rc must be an integer"),
        ('{"id":"a","status":"ok","duration_ms":-1}', "duration_ms must be a non-negative integer"),
        ('{"id":"a","status":"ok","stdout_truncated":"yes"}', "stdout_truncated must be true or false"),
        ('{"id":"a","status":"ok","wrapper":"bwrap --"}', "wrapper must be an array"),
        ('{"v":3,"id":"a","status":"ok"}', "unsupported wire version 3"),
        ('{"id":"a","status":"ok","network_decisions":{}}', "network_decisions must be an array"),
        ('{"id":"a","status":"ok","network_decisions":[{"host":"x","port":70000,"decision":"allow"}]}',
         r"network_decisions\[0\].port must be a port number"),
        ('{"id":"a","status":"ok","network_decisions":[{"port":1,"decision":"allow"}]}', "'host'"),
        ('{"id":"a","status":"ok","network_decisions":[{"host":"x","port":1,"decision":"deny","count":0}]}',
         "count must be a positive integer"),
    ],
)
def test_result_rejections_name_the_field(line: str, field: str) -> None:
    with pytest.raises(WireError, match=field):
        decode_result(line)


def test_encode_refuses_what_decode_would_reject() -> None:
    with pytest.raises(WireError, match="argv must not be empty"):
        encode_request(ExecRequest(id="a", argv=()))
    with pytest.raises(WireError, match="version 2"):
        encode_request(ExecRequest(id="a", argv=("x",), v=2))
    with pytest.raises(WireError, match="not canonical"):
        encode_request(ExecRequest(id="a", argv=("x",), cwd=FilePath("FILE:///x")))
    with pytest.raises(WireError, match="native path"):
        encode_request(
            ExecRequest(id="a", argv=("x",), sandbox=SandboxIntent((Permission(FilePath("/etc"), Access.READ),)))
        )
    with pytest.raises(WireError, match="keys must be strings"):
        encode_request(ExecRequest(id="a", argv=("x",), env={1: "x"}))  # type: ignore[dict-item]
    with pytest.raises(WireError, match="cannot encode as JSON"):
        intent = SandboxIntent((), per_os={"linux": {"prefer": object()}})
        encode_request(ExecRequest(id="a", argv=("x",), sandbox=intent))
    with pytest.raises(WireError, match="duration_ms"):
        encode_result(ExecResult(id="a", status=Status.OK, duration_ms=-5))


def test_the_check_once_cache_keeps_each_request_its_own() -> None:
    """One task sent to many hosts is checked once (the intent by identity); each encoding still
    carries its own id, a bad id is refused every time, and equal content in another intent
    object, or another argv, encodes from its own fields."""
    intent = SandboxIntent((Permission(Special("root"), Access.READ),), per_os={"linux": {"prefer": "landlock"}})
    first = json.loads(encode_request(ExecRequest(id="p1/t1/a", argv=("x",), sandbox=intent)))
    second = json.loads(encode_request(ExecRequest(id="p1/t1/b", argv=("x",), sandbox=intent)))
    assert first == {**second, "id": "p1/t1/a"} and list(first) == list(second)
    for _ in range(2):
        with pytest.raises(WireError, match="id must be a non-empty string"):
            encode_request(ExecRequest(id="", argv=("x",), sandbox=intent))
        with pytest.raises(WireError, match="surrogate pair"):
            encode_request(ExecRequest(id="h\ud800\udce9", argv=("x",), sandbox=intent))
    other = SandboxIntent((Permission(Special("root"), Access.WRITE),))
    assert json.loads(encode_request(ExecRequest(id="c", argv=("x",), sandbox=other)))["sandbox"]["permissions"] == [
        {"path": {"special": "root"}, "access": "write"}]
    assert json.loads(encode_request(ExecRequest(id="d", argv=("y",), sandbox=intent)))["argv"] == ["y"]


def test_split_surrogate_pairs() -> None:
    """JSON spells two lone code points high+low exactly like the character they encode."""
    with pytest.raises(WireError, match="surrogate pair"):
        encode_request(ExecRequest(id="a", argv=("x\ud800\udce9",)))
    with pytest.raises(WireError, match="surrogate pair"):
        encode_request(ExecRequest(id="a", argv=("x",), env={"\udbff\udfff": ""}))
    # lone surrogates on their own, including surrogateescape'd bytes, are exact
    req = ExecRequest(id="a", argv=("\udce9\ud800", "\ud800x\udce9"))
    assert decode_request(encode_request(req)) == req
    # a result is display data: the pair reads back as its character
    res = decode_result(encode_result(ExecResult(id="a", status=Status.OK, stdout="\ud83d\ude00")))
    assert res.stdout == "\U0001f600"


def test_status_is_a_str_enum() -> None:
    assert Status.SANDBOX_UNAVAILABLE == "sandbox_unavailable"
    assert [s.value for s in Status] == ["ok", "failed", "timeout", "sandbox_unavailable", "denied", "error"]


# -- hostile round trips ------------------------------------------------------------------------------------

HOSTILE = [
    '"',
    "'",
    "\\",
    "\n",
    "\r",
    "\0",
    "\t",
    "$(id)",
    "`id`",
    "\udce9",
    "\udcff",
    "\ud800",
    "\u2028",
    "\u00e9",
    "\U0001f600",
    "%00",
    "}",
    "{",
    ",",
    ":",
    "\x7f",
    "\ufeff",
]
SPLIT_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
hostile_text = (
    st.lists(st.one_of(st.text(st.characters(exclude_categories=()), max_size=5), st.sampled_from(HOSTILE)), max_size=6)
    .map("".join)
    # keep lone surrogates but part high+low neighbours: JSON cannot carry that pair exactly (tested below)
    .map(lambda s: SPLIT_PAIR.sub(lambda m: m.group(0)[0] + "x" + m.group(0)[1], s))
)
nonempty_text = hostile_text.filter(bool)

posix_uris = st.binary(max_size=12).map(lambda b: str(PathUri.from_native(b"/" + b)))
windows_uris = st.text(st.characters(exclude_characters="\\/\0", exclude_categories=("Cs",)), max_size=8).map(
    lambda name: str(PathUri.from_native("C:\\" + name))
)
uris = st.one_of(posix_uris, windows_uris)
specials = st.builds(Special, nonempty_text, st.none() | hostile_text)
path_specs = st.one_of(specials, st.builds(FilePath, uris), st.builds(Glob, nonempty_text))
json_scalars = st.none() | st.booleans() | st.integers() | hostile_text
intents = st.builds(
    SandboxIntent,
    permissions=st.lists(st.builds(Permission, path_specs, st.sampled_from(Access)), max_size=5).map(tuple),
    network=st.builds(
        NetworkPolicy,
        st.sampled_from(NetworkMode),
        st.lists(hostile_text, max_size=3).map(tuple),
        st.lists(hostile_text, max_size=3).map(tuple),
    ),
    workspace_roots=st.lists(uris, max_size=3).map(tuple),
    per_os=st.dictionaries(hostile_text, st.dictionaries(hostile_text, json_scalars, max_size=3), max_size=2),
)
requests = st.builds(
    ExecRequest,
    id=nonempty_text,
    argv=st.lists(hostile_text, min_size=1, max_size=6).map(tuple),
    cwd=st.none() | specials | st.builds(FilePath, uris),
    env=st.dictionaries(hostile_text, hostile_text, max_size=4),
    timeout_s=st.none()
    | st.floats(min_value=1e-3, max_value=1e9, allow_nan=False)
    | st.integers(min_value=1, max_value=10**9),
    sandbox=st.none() | intents,
)
results = st.builds(
    ExecResult,
    id=hostile_text,
    status=st.sampled_from(Status),
    rc=st.none() | st.integers(min_value=-(2**31), max_value=2**32),
    stdout=hostile_text,
    stderr=hostile_text,
    stdout_truncated=st.booleans(),
    stderr_truncated=st.booleans(),
    started=st.none() | hostile_text,
    duration_ms=st.integers(min_value=0, max_value=10**12),
    backend=st.none() | hostile_text,
    wrapper=st.lists(hostile_text, max_size=5).map(tuple),
    message=st.none() | hostile_text,
    warnings=st.lists(hostile_text, max_size=3).map(tuple),
    network_decisions=st.lists(st.builds(
        wire.NetworkDecision, host=hostile_text, port=st.integers(0, 65535), decision=hostile_text,
        reason=hostile_text, count=st.integers(1, 10**9)), max_size=3).map(tuple),
)


@given(requests)
def test_any_request_round_trips_exactly(req: ExecRequest) -> None:
    line = encode_request(req)
    assert "\n" not in line and line.isascii()
    assert decode_request(line) == req
    assert decode_request(line.encode("ascii")) == req
    assert encode_request(decode_request(line)) == line


@given(results)
def test_any_result_round_trips_exactly(res: ExecResult) -> None:
    line = encode_result(res)
    assert "\n" not in line and line.isascii()
    assert decode_result(line) == res
    assert encode_result(decode_result(line)) == line


class TestInitAndHello:
    """The two handshake lines live here too: one encoder and one decoder each."""

    def test_the_init_line_round_trips(self) -> None:
        init = AgentInit(workspace_roots=("/w", "/x y"), sandbox_pin="landlock",
                         network_resolve=(("mirror.test", "10.0.0.5"),), sandbox_reuse=False, protect=("/opt/sf",))
        assert decode_init(encode_init(init)) == init

    def test_an_older_controllers_line_takes_the_defaults(self) -> None:
        assert decode_init('{"v": 1, "init": {}}') == AgentInit()
        assert decode_init('{"v": 1}') == AgentInit()

    def test_protect_only_ever_adds_absolute_paths(self) -> None:
        """Whoever writes the init line can add walls, never remove or bend one: relative paths
        and non-strings are dropped, a non-list is nothing."""
        line = json.dumps({"v": 1, "init": {"protect": ["/opt/sf", "rel", 7, None, ""]}})
        assert decode_init(line).protect == ("/opt/sf",)
        assert decode_init(json.dumps({"v": 1, "init": {"protect": "/etc"}})).protect == ()

    @pytest.mark.parametrize("bad", ['{"v": 1, "init": {"network_resolve": ["x"]}}', "not json",
                                     '{"v": 1, "init": {"sandbox_pin": "a", "sandbox_pin": "b"}}'])
    def test_a_bad_init_line_is_a_wire_error(self, bad: str) -> None:
        with pytest.raises(WireError):
            decode_init(bad)

    def test_hello_round_trips_and_an_agents_refusal_is_its_reason(self) -> None:
        hello = AgentHello("9.9.9", {"os": "linux"}, ("cannot become a child subreaper: EPERM",))
        assert decode_hello(encode_hello(hello)) == hello
        with pytest.raises(WireError, match="bad init line: nope"):
            decode_hello(encode_init_error("bad init line: nope"))


def _policy_outcome(document: object) -> object:
    """What the wire makes of a request's policy: the Effective, or the message it is refused with."""
    try:
        return wire.request_from_json({"v": 1, "id": "p", "argv": ["true"], "sandbox": None, "policy": document}).policy
    except WireError as exc:
        return str(exc)


def _unmemoised(document: object) -> object:
    try:
        return effective_from_json(document)
    except ValueError as exc:
        return str(exc)


WIDE_DOC = WIDE.to_json()
# documents that print alike, or nearly, but are other values: none may be taken for another
LOOKALIKES = [
    [{"source": "s", "policy": {"unsandboxed": True}}],
    [{"source": "s", "policy": {"unsandboxed": 1}}],
    [{"source": "s", "policy": {"unsandboxed": 1.0}}],
    [{"source": "s", "policy": {"linux_backends": ["bwrap"]}}],
    [{"source": "s", "policy": {"linux_backends": ("bwrap",)}}],
    [{"source": "s", "policy": {"limits": {"argv_bytes": 1000}}}],
    [{"source": "s", "policy": {"limits": {"argv_bytes": 1000.0}}}],
    [{"source": "s", "policy": {"limits": {"argv_bytes": float("nan")}}}],
    [{"source": "s", "policy": {"deny": ["*.pem", "*.key"]}}],
    [{"source": "s", "policy": {"deny": ["*.key", "*.pem"]}}],
    [{"source": "s", "policy": {"filesystem": {":root": "read", ":workspace_roots": "write"}}}],
    [{"source": "s", "policy": {"filesystem": {":workspace_roots": "write", ":root": "read"}}}],
    ({"source": "s", "policy": {}},),
    [{"source": type("Text", (str,), {})("s"), "policy": {}}],
]


def test_a_repeated_policy_is_decoded_once_and_never_taken_for_another() -> None:
    """The wire keeps decoded policies by their JSON text (a run sends the same layers with every
    request): the same document gives the very same Effective, and any other value, however
    alike in print (1, 1.0 and true; a tuple; a str subclass; NaN), what a fresh decode gives."""
    first, again = _policy_outcome(WIDE_DOC), _policy_outcome(json.loads(json.dumps(WIDE_DOC)))
    assert first is again and first == WIDE
    for order in (LOOKALIKES, LOOKALIKES[::-1], LOOKALIKES + LOOKALIKES):
        wire._policies.clear()
        for document in order:
            assert _policy_outcome(document) == _unmemoised(document), document


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(["bwrap", "s"]),
                           lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
                           | st.dictionaries(st.sampled_from(["unsandboxed", "deny", "limits", "argv_bytes"]), inner,
                                             max_size=3), max_leaves=8)


@given(st.lists(st.lists(st.fixed_dictionaries({"source": st.just("s"), "policy": json_values}), max_size=2)
                | json_values, min_size=1, max_size=6))
def test_any_policy_decodes_as_a_fresh_decode_in_any_order(documents: list[object]) -> None:
    for document in documents:
        assert _policy_outcome(document) == _unmemoised(document)


def test_string_lists_and_maps_take_str_subclasses_and_name_the_first_offender() -> None:
    """The checks done in C (every item exactly a str) fall back to the item by item one."""
    text = type("Text", (str,), {})
    line = {"v": 1, "id": "s", "argv": ["a", text("b")], "env": {text("K"): text("v")}, "sandbox": None}
    request = wire.request_from_json(line)
    assert request.argv == ("a", "b") and type(request.argv[1]) is text and request.env == {"K": "v"}
    for field, value, message in (("argv", ["a", 1, None], "argv[1] must be a string, not a number"),
                                  ("env", {"A": "x", "B": None}, "env['B'] must be a string, not null")):
        with pytest.raises(WireError) as info:
            wire.request_from_json({**line, field: value})
        assert str(info.value) == message
    with pytest.raises(WireError, match=re.escape("wrapper[2] must be a string, not an array")):
        wire.result_from_json({"id": "r", "status": "ok", "wrapper": ["a", "b", []]})
