"""Seatbelt: golden cases (``cases/seatbelt/*.json``), every rendered profile parsed by an SBPL
reader, random policies included, plus selection and the probe. There is no Mac here, so this
proves the wrapper is exactly what a Mac would be given and that sandbox-exec could read it."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from native_cases import BASE_FILE, SEATBELT_SPLIT, case_files, load, observed, render, request_of
from native_readers import SbplError, Str, Sym, check_profile, sbpl_walk

from sandfleet_agent.backends import wrap
from sandfleet_agent.backends.base import ProxyEndpoint, Refused
from sandfleet_agent.backends.seatbelt import PROFILE_FILE, SANDBOX_EXEC, Seatbelt
from sandfleet_agent.binding.bind import BoundPolicy, Rule
from sandfleet_agent.binding.facts import assumed_facts, probe_seatbelt
from sandfleet_agent.portable.intent import Access, NetworkMode, NetworkPolicy

CASES = case_files("seatbelt")


@pytest.mark.parametrize("case_file", CASES, ids=[c.stem for c in CASES])
def test_golden_case(case_file: Path) -> None:
    case = load(case_file)
    got = observed(case, "seatbelt")
    assert got == {k: case[k] for k in ("expected", "refused") if k in case}
    if "refused" in case:
        return
    wrapper = render(case, "seatbelt")
    profile = wrapper.files[PROFILE_FILE]
    assert profile == BASE_FILE.read_text(encoding="utf-8") + SEATBELT_SPLIT + "\n".join(case["expected"]["profile"]) \
        + "\n"
    argv = list(wrapper.argv)
    split = argv.index("--")
    assert argv[:3] == [SANDBOX_EXEC, "-p", profile]
    assert argv[split + 1:] == list(request_of(case).argv)
    check_profile(profile, argv[3:split])


def test_there_are_enough_golden_cases() -> None:
    assert len(CASES) >= 20


def test_the_base_is_closed_by_default_and_reads_preferences_only() -> None:
    """research §8 case 37: user preferences readable, never writable; nothing allowed before
    ``(deny default)``."""
    base = BASE_FILE.read_text(encoding="utf-8")
    assert "(allow user-preference-read)" in base and "user-preference-write" not in base
    assert base.index("(deny default)") < base.index("(allow")
    assert "process-exec" not in base, "exec is allowed only where reading is"
    assert "network" not in base.replace("; ", "")


def test_the_managed_network_allows_only_the_proxy_port() -> None:
    """research §8 cases 31, 40: no blanket outbound, no bind, no inbound, no DNS."""
    wrapper = render(load(BASE_FILE.parent / "managed_network_proxy.json"), "seatbelt")
    argv = list(wrapper.argv)
    forms = check_profile(argv[2], argv[3:argv.index("--")])
    network = [f for f in sbpl_walk(forms) if len(f) > 1 and f[0] in (Sym("allow"), Sym("deny"))
               and isinstance(f[1], Sym) and "network" in f[1].name]
    assert network == [[Sym("allow"), Sym("network-outbound"), [Sym("remote"), Sym("tcp"), Str("localhost:43128")]]]
    assert "trustd" not in argv[2] and "mDNSResponder" not in argv[2]


# -- the reader rejects what sandbox-exec would --------------------------------------------------

def _profile_and_defines(name: str) -> tuple[str, list[str]]:
    argv = list(render(load(BASE_FILE.parent / name), "seatbelt").argv)
    return argv[2], argv[3:argv.index("--")]


@pytest.mark.parametrize(("mutate", "error"), [
    (lambda p, d: (p, d[:-1]), "params used"),  # a (param "X") without its -D
    (lambda p, d: (p, [*d, "-DEXTRA=/x"]), "params used"),  # a -D nobody uses
    (lambda p, d: (p, [*d, d[0]]), "defined twice"),
    (lambda p, d: (p.replace("(allow file-write*", "(allow file-wirte*", 1), d), "unknown SBPL operation"),
    (lambda p, d: (p.replace("(subpath (param", "(subpth (param", 1), d), "unknown SBPL filter"),
    (lambda p, d: (p.replace("(regex \"^/dev/ttys", "(regex \"/dev/ttys", 1), d), "/dev/ttys"),  # unanchored
    (lambda p, d: (p.replace("(regex \"^/dev/ttys[0-9]+$\")", "(regex \"^/dev/ttys[0-9+$\")", 1), d), "unterminated"),
    (lambda p, d: (p.replace("(literal \"/dev/null\")", "(literal \"dev/null\")", 1), d), "absolute"),
    (lambda p, d: (p.replace("(deny default)", "(allow default)", 1), d), "(deny default)"),
    (lambda p, d: (p.replace("(target same-sandbox)", "(target anyone)", 1), d), "target"),
    (lambda p, d: (p + '(allow network-outbound (remote tcp "localhost:99999"))\n', d), "99999"),
    (lambda p, d: (p + '(allow network-outbound (remote tcp "example.com:443"))\n', d), "network address"),
    (lambda p, d: (p + "(allow file-read* (param \"WRITABLE_ROOT_1\"))\n", d), "filter 'param'"),
    (lambda p, d: (p + "(allow file-read*\n", d), "left open"),
    (lambda p, d: (p + '(allow file-read* (literal "/x))\n', d), "unterminated string"),
])
def test_the_sbpl_reader_rejects_what_sandbox_exec_would(mutate: Any, error: str) -> None:
    """The checks check_profile makes, each shown to bite on a profile that is otherwise right."""
    profile, defines = _profile_and_defines("workspace_git_exists.json")
    check_profile(profile, defines)
    bad_profile, bad_defines = mutate(profile, defines)
    assert (bad_profile, bad_defines) != (profile, defines), "the mutation did not apply"
    with pytest.raises((AssertionError, SbplError, re.error), match=re.escape(error)):
        check_profile(bad_profile, bad_defines)


def test_network_full_keeps_the_trust_services_and_no_cache_dir_write() -> None:
    """research §8 case 34: network full allows outbound and inbound and the services TLS needs
    (trustd), and no longer lets the command write DARWIN_USER_CACHE_DIR."""
    profile, defines = _profile_and_defines("network_full.json")
    check_profile(profile, defines)
    assert '(global-name "com.apple.trustd.agent")' in profile and "DARWIN_USER_CACHE_DIR" not in profile
    assert "(allow network-outbound)\n(allow network-inbound)\n" in profile
    for none in ("workspace_git_exists.json", "read_only_network_none.json"):
        assert "network" not in _profile_and_defines(none)[0].replace("; Network: none.", "")


#: research §8 cases 27-37 and the golden case that pins each one (None: does not apply, see why).
RESEARCH_CASES: dict[int, Optional[str]] = {
    27: "full_write_with_deny",  # no .codex/.agents: sandfleet protects .git only, and not at / itself
    28: "restricted_read_with_deny",
    29: "workspace_git_exists",
    30: "two_roots_gitdir_pointer",
    31: "managed_network_proxy",  # one proxy port: sandfleet runs one proxy per task
    32: None,  # allow_local_binding: the intent has no such setting (managed = the proxy port only)
    33: "managed_network_no_proxy",  # no endpoint: refused outright rather than a services-only profile
    34: "network_full",  # its unix-socket half does not apply: no unix-socket allowlist in the intent
    35: None,  # unix-socket allowlist: not part of the intent
    36: "deny_globs_codex",
    37: "read_only_network_none",
}


def test_every_applicable_research_case_has_a_golden_file() -> None:
    for number, stem in RESEARCH_CASES.items():
        if stem is not None:
            case = load(BASE_FILE.parent / f"{stem}.json")
            assert re.search(rf"research cases? (\d+, )*{number}\b", case["description"]), (number, stem)


# -- every profile parses, whatever the policy ---------------------------------------------------

PATHS = ["/", "/Users", "/Users/dev", "/Users/dev/ws", "/Users/dev/ws/.git", "/Users/dev/ws/sub", "/private/tmp",
         "/Users/dev/it's \"q\" (x)\n$y", "/Users/dev/ws/a\\b"]
rules = st.dictionaries(st.sampled_from(PATHS), st.sampled_from(list(Access)), min_size=1, max_size=6)
globs_ = st.lists(st.sampled_from(["/Users/dev/ws/**/*.pem", "/tmp/*.key", "/Users/dev/**", "/x/[a-c]?[!z]",
                                   "/q/\"*\"", "/r/(a)*"]), max_size=3)


@settings(max_examples=200, deadline=None)
@given(rules, globs_, st.sampled_from(list(NetworkMode)), st.booleans())
def test_any_policy_renders_a_profile_sandbox_exec_can_read(table: dict[str, Access], deny_globs: list[str],
                                                           mode: NetworkMode, minimal: bool) -> None:
    table.setdefault("/Users/dev/ws", Access.READ)
    if table["/Users/dev/ws"] is Access.DENY:
        table["/Users/dev/ws"] = Access.READ
    ordered = sorted(table.items(), key=lambda r: (len(r[0].split("/")), r[0]))
    policy = BoundPolicy(os="macos", rules=tuple(Rule(p, a, "t") for p, a in ordered), cwd="/Users/dev/ws",
                         network=NetworkPolicy(mode), minimal_read=minimal, deny_globs=tuple(deny_globs))
    facts = assumed_facts("macos", "dev")
    try:
        wrapper = Seatbelt(facts, ProxyEndpoint(3128)).render(policy, ["true"])
    except Refused as exc:
        assert "working directory" in str(exc)
        return
    argv = list(wrapper.argv)
    check_profile(argv[2], argv[3:argv.index("--")])


# -- selection, refusals, the probe --------------------------------------------------------------

def _ro(cwd: str = "/Users/dev", system: str = "macos") -> BoundPolicy:
    return BoundPolicy(os=system, rules=(Rule("/", Access.READ, "t"),), cwd=cwd, network=NetworkPolicy())


def test_macos_selects_seatbelt_and_honours_or_refuses_pins() -> None:
    facts = assumed_facts("macos", "dev")
    assert wrap(_ro(), ["true"], facts).backend == "seatbelt"
    assert wrap(_ro(), ["true"], facts, pin="seatbelt").backend == "seatbelt"
    with pytest.raises(Refused, match="sandfleet_sandbox=bwrap cannot run on a macos host"):
        wrap(_ro(), ["true"], facts, pin="bwrap")


def test_missing_sandbox_exec_is_refused_with_the_reason(tmp_path: Path) -> None:
    facts = assumed_facts("macos", "dev")
    missing = probe_seatbelt(str(tmp_path / "sandbox-exec"))
    facts = type(facts)(**{**facts.__dict__, "backends": (missing,)})
    with pytest.raises(Refused, match=r"seatbelt: .*missing or not executable"):
        wrap(_ro(), ["true"], facts)


def test_the_probe_looks_only_at_the_fixed_path(tmp_path: Path) -> None:
    exe = tmp_path / "sandbox-exec"
    assert not probe_seatbelt(str(exe)).available
    exe.write_text("#!/bin/sh\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    status = probe_seatbelt(str(exe))
    assert status.available and status.path == str(exe)
    assert os.access(exe, os.X_OK)


def test_a_policy_bound_for_another_os_or_an_empty_argv_is_refused() -> None:
    facts = assumed_facts("macos", "dev")
    with pytest.raises(Refused, match="macOS policies only"):
        Seatbelt(facts).render(_ro("/", "linux"), ["true"])
    with pytest.raises(ValueError, match="argv is empty"):
        Seatbelt(facts).render(_ro(), [])


def test_an_unavailable_seatbelt_is_a_sandbox_unavailable_result_and_nothing_runs() -> None:
    from sandfleet_agent.binding.facts import BackendStatus
    from sandfleet_agent.binding.hostfs import AssumedFs
    from sandfleet_agent.executor import prepare
    from sandfleet_agent.portable.intent import PROFILES, SandboxIntent
    from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status

    facts = assumed_facts("macos", "dev", ("/Users/dev/ws",))
    facts = type(facts)(**{**facts.__dict__, "backends": (BackendStatus("seatbelt", False, "not here"),)})
    result = prepare(ExecRequest(id="t", argv=("true",), sandbox=SandboxIntent(PROFILES["workspace"])), facts,
                     AssumedFs("macos"))
    assert isinstance(result, ExecResult) and result.status is Status.SANDBOX_UNAVAILABLE
    assert result.message == "no sandbox can enforce this task's intent on this macos host: seatbelt: not here"
