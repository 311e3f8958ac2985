"""A deny glob the glob engine cannot compile (``[z-a]``) fails closed on the host.

The controller refuses such a glob at load, but a newer or older controller may still send one:
then every backend that renders globs answers ``sandbox_unavailable`` naming the glob (through
the binding, and again in each renderer when handed a bound policy directly), never an agent
error, and Seatbelt never puts the invalid regex into a profile.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import pytest

from sandfleet_agent import agent
from sandfleet_agent.backends.base import Backend, ProxyEndpoint, Refused
from sandfleet_agent.backends.bwrap import Bwrap
from sandfleet_agent.backends.landlock import Landlock
from sandfleet_agent.backends.seatbelt import Seatbelt
from sandfleet_agent.backends.windows import WindowsSandbox
from sandfleet_agent.binding.bind import BoundPolicy, Rule
from sandfleet_agent.binding.facts import BackendStatus, HostFacts, assumed_facts
from sandfleet_agent.binding.hostfs import AssumedFs, LocalFs
from sandfleet_agent.executor import execute, prepare
from sandfleet_agent.portable import globs, wire
from sandfleet_agent.portable.intent import PROFILES, Access, Glob, NetworkPolicy, Permission, SandboxIntent
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status
from support.policies import WIDE

BAD = "**/[z-a]"
INTENT = SandboxIntent(permissions=(*PROFILES["workspace"], Permission(Glob(BAD), Access.DENY)),
                       network=NetworkPolicy())


def _request() -> ExecRequest:
    return ExecRequest(policy=WIDE, id="g", argv=("true",), sandbox=INTENT)


def _assert_refused_naming_the_glob(result: object) -> None:
    assert isinstance(result, ExecResult), result
    assert result.status is Status.SANDBOX_UNAVAILABLE, result
    assert BAD in (result.message or "") and "agent error" not in (result.message or "")


# -- through the executor, as the agent and a dry-run call it ---------------------------------------

@pytest.mark.parametrize(("system", "root", "pin"), [
    ("linux", "/srv/ws", "bwrap"),
    ("linux", "/srv/ws", "landlock"),
    ("macos", "/Users/dev/ws", "seatbelt"),
    ("windows", "C:\\ws", "windows"),
])
def test_assumed_facts_refuse_the_glob(system: str, root: str, pin: str) -> None:
    facts = assumed_facts(system, "dev", workspace_roots=(root,))
    _assert_refused_naming_the_glob(prepare(_request(), facts, AssumedFs(system), pin))


@pytest.mark.parametrize("pin", ["bwrap", "landlock"])
def test_local_facts_refuse_the_glob_before_anything_runs(pin: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    facts = HostFacts(os="linux", home=os.path.expanduser("~"), tmpdir=tempfile.gettempdir(),
                      workspace_roots=(str(tmp_path),), landlock_abi=7,
                      backends=(BackendStatus("bwrap", True, "", "/usr/bin/bwrap"), BackendStatus("landlock", True)))
    request = ExecRequest(policy=WIDE, id="g", argv=("touch", str(marker)), sandbox=INTENT)
    _assert_refused_naming_the_glob(execute(request, facts, pin=pin, fs=LocalFs()))
    assert not marker.exists()


def test_the_agent_answers_sandbox_unavailable_not_an_agent_error() -> None:
    init = json.dumps({"v": 1, "init": {"workspace_roots": [tempfile.gettempdir()], "sandbox_pin": None}})
    out = io.StringIO()
    agent.serve(io.StringIO(init + "\n" + wire.encode_request(_request()) + "\n"), out)
    result = wire.decode_result(out.getvalue().splitlines()[1])
    _assert_refused_naming_the_glob(result)


# -- each renderer on its own, handed a bound policy that skipped the binding's check ---------------

def _bound(system: str, root: str, pattern: str) -> BoundPolicy:
    return BoundPolicy(os=system, rules=(Rule(root, Access.WRITE, "t"),), cwd=root, network=NetworkPolicy(),
                       minimal_read=True, deny_globs=(pattern,))


@pytest.mark.parametrize(("backend", "system", "root", "pattern"), [
    (Bwrap(HostFacts(os="linux", home="/home/u", tmpdir="/tmp", assumed=True,
                     backends=(BackendStatus("bwrap", True, "", "/usr/bin/bwrap"),))), "linux", "/srv/ws",
     "/srv/ws/**/[z-a]"),
    (Bwrap(HostFacts(os="linux", home="/home/u", tmpdir="/tmp",
                     backends=(BackendStatus("bwrap", True, "", "/usr/bin/bwrap"),)), paths=LocalFs()), "linux", "/",
     "/tmp/**/[z-a]"),
    (Landlock(HostFacts(os="linux", home="/home/u", tmpdir="/tmp", landlock_abi=7,
                        backends=(BackendStatus("landlock", True),)), fs=LocalFs()), "linux", "/", "/tmp/**/[z-a]"),
    (Seatbelt(assumed_facts("macos", "dev"), ProxyEndpoint(3128)), "macos", "/Users/dev/ws", "/Users/dev/ws/**/[z-a]"),
    (WindowsSandbox(assumed_facts("windows", "dev")), "windows", "C:\\ws", "C:\\ws\\**\\[z-a]"),
], ids=["bwrap-assumed", "bwrap-local", "landlock-local", "seatbelt", "windows"])
def test_every_renderer_refuses_a_glob_it_cannot_compile(backend: Backend, system: str, root: str,
                                                          pattern: str) -> None:
    with pytest.raises(Refused, match=r"\[z-a\]"):
        backend.render(_bound(system, root, pattern), ["true"])


def test_seatbelt_never_renders_a_reversed_range() -> None:
    """Even where its own bracket translation is reached first, a reversed range is refused."""
    from sandfleet_agent.backends.seatbelt import glob_regex

    with pytest.raises(Refused, match="reversed"):
        glob_regex("/Users/dev/[c-a]")


# -- the engine itself ---------------------------------------------------------------------------------

def test_expand_raises_glob_error_not_re_error(tmp_path: Path) -> None:
    with pytest.raises(globs.GlobError, match=r"\[z-a\]"):
        globs.expand(f"{tmp_path}/**/[z-a]", LocalFs())


@pytest.mark.parametrize(("pattern", "strict_only"), [
    ("**/[z-a]", False),
    ("/x/[c-a-z]", False),
    ("/x/a\0b*", False),
    ("/x/[abc", True),  # hosts read an unclosed '[' literally, as Codex does; a playbook may not
    ("/x/[]", True),
    ("/x/[!]", True),
    ("/x/[é]*", True),  # Seatbelt cannot hold it; bwrap, Landlock and Windows could
    ("/x/[\\]", True),
    ("/x/[[]", True),
    ("/x/*\\", True),
])
def test_validate_refuses(pattern: str, strict_only: bool) -> None:
    with pytest.raises(globs.GlobError):
        globs.validate(pattern, strict=True)
    if strict_only:
        globs.validate(pattern)
    else:
        with pytest.raises(globs.GlobError):
            globs.validate(pattern)


@pytest.mark.parametrize("pattern", ["**/*.pem", "/x/[a-c]?[!z]", "/x/[]]", "/x/[!]a]", "/x/[a-c-a]", "~/.aws/*",
                                     ":workspace_roots/**/.env*", "/x/[-a]", "/x/[a-]"])
def test_validate_accepts(pattern: str) -> None:
    globs.validate(pattern, strict=True)
