"""Windows: golden cases (``cases/windows/*.json``); every rendered launcher read back with a
PowerShell reader, its policy with an XML parser and its command line with ``CommandLineToArgvW``
(hostile paths and arguments included); the fixed launcher code pinned by one golden; selection and
the probe. There is no Windows machine here: this proves the wrapper is exactly what a Windows host
would run and that each layer hands the next one exactly what it was given."""

from __future__ import annotations

import ntpath
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from native_cases import (
    COMMAND_MARK,
    LAUNCHER_GOLDEN,
    POLICY_MARK,
    case_files,
    launcher_golden,
    load,
    observed,
    render,
    request_of,
)
from native_readers import command_line_to_argv, ps_assignment

import sandfleet_agent
from sandfleet_agent.backends import wrap
from sandfleet_agent.backends.base import Refused, Wrapper
from sandfleet_agent.backends.windows import (
    LAUNCHER_FILE,
    NETWORK_CAPABILITIES,
    POLICY_FILE,
    POWERSHELL,
    WindowsSandbox,
    policy_sid,
)
from sandfleet_agent.binding.bind import BoundPolicy, Rule, bind
from sandfleet_agent.binding.facts import assumed_facts, probe_windows
from sandfleet_agent.portable.intent import PROFILES, Access, NetworkMode, NetworkPolicy, SandboxIntent, Special

CASES = case_files("windows")
TEMPLATES = Path(sandfleet_agent.__file__).parent / "backends" / "templates"


def read_back(wrapper: Wrapper) -> tuple[ET.Element, list[str]]:
    """What the launcher will see: the policy document and the argv its command line splits into,
    each read by a reader of its language from the exact argv word PowerShell gets."""
    script = wrapper.argv[-1]
    assert list(wrapper.argv[:-1]) == [POWERSHELL, "-NoLogo", "-NoProfile", "-NonInteractive", "-Command"]
    assert command_line_to_argv(subprocess.list2cmdline(list(wrapper.argv)))[-1] == script
    assert script == wrapper.files[LAUNCHER_FILE]
    policy_xml = ps_assignment(script, "PolicyXml")
    assert policy_xml == wrapper.files[POLICY_FILE]
    assert launcher_golden(script, policy_xml, ps_assignment(script, "CommandLine")) \
        == LAUNCHER_GOLDEN.read_text(encoding="utf-8")
    return ET.fromstring(policy_xml), command_line_to_argv(ps_assignment(script, "CommandLine"))


@pytest.mark.parametrize("case_file", CASES, ids=[c.stem for c in CASES])
def test_golden_case(case_file: Path) -> None:
    case = load(case_file)
    got = observed(case, "windows")
    assert got == {k: case[k] for k in ("expected", "refused") if k in case}
    if "refused" in case:
        return
    wrapper = render(case, "windows")
    doc, argv = read_back(wrapper)
    assert argv == list(request_of(case).argv)
    assert doc.tag == "sandfleet-windows" and re.fullmatch(r"S-1-15-3-1024(-\d+){8}", doc.get("sid", ""))
    assert {e.get("access") for e in doc.iter("path")} <= {"write", "read", "read-only", "deny"}
    assert wrapper.cwd == doc.find("cwd").get("path")  # type: ignore[union-attr]
    # Network capabilities only for network full; none (loopback included) for network none.
    network = request_of(case).sandbox.network.mode  # type: ignore[union-attr]
    granted = [(c.get("name"), c.get("sid")) for c in doc.iter("capability")]
    assert granted == (list(NETWORK_CAPABILITIES) if network is NetworkMode.FULL else [])


def test_there_are_enough_golden_cases() -> None:
    assert len(CASES) >= 20


def test_the_fixed_launcher_code() -> None:
    """The part of the launcher no value ever reaches: no template syntax in it, the C# here-string
    closed once, braces balanced, and the command started suspended, jobbed, then resumed."""
    body = (TEMPLATES / "windows_launcher.ps1").read_text(encoding="utf-8")
    assert not re.search(r"\{[{%#]", body)
    assert body.count("\n'@\n") == 1 and body.count("@'\n") == 1
    csharp = body[body.index("@'\n") + 3:body.index("\n'@\n")]
    assert csharp.count("{") == csharp.count("}") and csharp.count("(") == csharp.count(")")
    steps = ("CreateProcessAsUserW(token", "AssignProcessToJobObject(job", "ResumeThread(info")
    order = [csharp.index(s) for s in steps]
    assert order == sorted(order)
    golden = LAUNCHER_GOLDEN.read_text(encoding="utf-8")
    assert golden.endswith(body) and POLICY_MARK in golden and COMMAND_MARK in golden
    # Network capabilities come only from the policy's <capability> elements (none for network
    # none); no SID is written into the code, and the command starts only inside the try, whose
    # catch exits 125 without running it.
    assert not re.search(r"S-1-15-3-[123]\b|S-1-15-2-1\b", body)
    assert body.count("SelectNodes('capability')") == 1
    assert body.index("[SandfleetLauncher]::Run(") < body.index("} catch {")
    assert body.count("[Environment]::Exit(") == 2 and "[Environment]::Exit(125)" in body.split("} catch {")[1]


# -- hostile values through every layer -------------------------------------------------------------

#: What NTFS allows in a name: anything but NUL, controls, and <>:"/\|?*.
name_chars = st.characters(blacklist_characters='<>:"/\\|?*', blacklist_categories=("Cc", "Cs", "Cn"))
names = st.text(name_chars, min_size=1, max_size=12).filter(lambda n: n.strip(" .") == n and n not in (".", ".."))
args = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=16)


@settings(max_examples=150, deadline=None)
@given(names, st.lists(args, max_size=5))
def test_hostile_paths_and_arguments_reach_the_launcher_exactly(name: str, argv: list[str]) -> None:
    root = ntpath.join("C:\\work", name)
    facts = assumed_facts("windows", "dev", (root,))
    policy = bind(SandboxIntent(PROFILES["workspace"]), facts, Special("workspace_roots"))
    wrapper = WindowsSandbox(facts).render(policy, ["prog.exe", *argv])
    doc, seen = read_back(wrapper)
    assert seen == ["prog.exe", *argv]
    assert doc.find("cwd").get("path") == root  # type: ignore[union-attr]
    entries = [(e.get("name"), e.get("access")) for e in doc.iter("path")]
    assert entries[0] == (root, "write") and (ntpath.join(root, ".git"), "read-only") in entries


# -- the plan's rules ------------------------------------------------------------------------------

def _policy(*rules: tuple[str, Access], cwd: str = "C:\\ws", minimal: bool = True) -> BoundPolicy:
    return BoundPolicy(os="windows", rules=tuple(Rule(p, a, "t") for p, a in rules), cwd=cwd,
                       network=NetworkPolicy(), minimal_read=minimal)


def test_equal_policies_share_a_sid_and_any_difference_changes_it() -> None:
    a = policy_sid([("C:\\ws", Access.WRITE)], [])
    assert a == policy_sid([("c:\\WS", Access.WRITE)], [])  # NTFS: the same path
    assert a != policy_sid([("C:\\ws", Access.READ)], [])
    assert a != policy_sid([("C:\\ws", Access.WRITE)], ["C:\\ws\\*.pem"])


def test_a_deny_below_a_write_below_a_deny_is_realised_in_order() -> None:
    facts = assumed_facts("windows", "dev")
    plan = WindowsSandbox(facts).plan(_policy(("C:\\a", Access.DENY), ("C:\\a\\ws", Access.WRITE),
                                              ("C:\\a\\ws\\s", Access.DENY), ("C:\\a\\ws\\s\\ok", Access.READ),
                                              cwd="C:\\a\\ws"))
    assert [(e.path, e.access, e.create) for e in plan.entries] == [
        ("C:\\a", "deny", None), ("C:\\a\\ws", "write", None), ("C:\\a\\ws\\s", "deny", "file"),
        ("C:\\a\\ws\\s\\ok", "read", None)]


def test_a_policy_bound_for_another_os_or_an_empty_argv_is_refused() -> None:
    facts = assumed_facts("windows", "dev")
    with pytest.raises(Refused, match="Windows policies only"):
        WindowsSandbox(facts).render(BoundPolicy(os="linux", rules=(), cwd="/", network=NetworkPolicy()), ["x"])
    with pytest.raises(ValueError, match="argv is empty"):
        WindowsSandbox(facts).render(_policy(("C:\\ws", Access.WRITE)), [])


# -- selection and the probe -----------------------------------------------------------------------

def test_windows_selects_its_backend_and_refuses_other_pins() -> None:
    facts = assumed_facts("windows", "dev")
    policy = _policy(("C:\\ws", Access.WRITE))
    assert wrap(policy, ["x"], facts).backend == "windows"
    with pytest.raises(Refused, match="sandfleet_sandbox=seatbelt cannot run on a windows host"):
        wrap(policy, ["x"], facts, pin="seatbelt")


def test_the_probe(tmp_path: Path) -> None:
    root = str(tmp_path / "Windows")
    old = probe_windows(root, build=9600)
    assert not old.available and "Windows 10 or later" in old.reason
    missing = probe_windows(root, build=19045)
    assert not missing.available and "powershell.exe is missing" in missing.reason
    assert missing.path == root + "\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    Path(missing.path).write_text("")  # on Linux that Windows path is one file with an odd name
    assert probe_windows(root, build=19045).available
    facts = assumed_facts("windows", "dev")
    facts = type(facts)(**{**facts.__dict__, "backends": (missing,)})
    with pytest.raises(Refused, match=r"windows: .*powershell\.exe is missing"):
        wrap(_policy(("C:\\ws", Access.WRITE)), ["x"], facts)


@pytest.mark.parametrize("argv", [["build.bat", "a&b"], ["x.CMD", "%PATH%"], ["C:\\a&b\\t.bat"], ["t.cmd.", "x|y"],
                                  ["t.bat", "say \"hi\""], ["t.bat", "a\nb"], ["t.bat", "(x)"], ["t.bat", "!v!"]])
def test_a_batch_file_never_gets_an_argument_cmd_would_act_on(argv: list[str]) -> None:
    facts = assumed_facts("windows", "dev")
    with pytest.raises(Refused, match=r"is a batch file, which cmd\.exe runs"):
        WindowsSandbox(facts).render(_policy(("C:\\ws", Access.WRITE)), argv)


@pytest.mark.parametrize(("argv", "command_line"), [
    (["prog.exe", "a&b", "%PATH%"], "prog.exe a&b %PATH%"),
    (["build.bat.exe", "a|b"], "build.bat.exe a|b"),
    (["build.bat", "--x=1", "a b", "C:\\d\\"], 'build.bat --x=1 "a b" C:\\d\\'),
])
def test_programs_and_plain_batch_arguments_are_not_refused(argv: list[str], command_line: str) -> None:
    """Rendered, not refused, and the launcher's command line holds exactly these arguments."""
    wrapper = WindowsSandbox(assumed_facts("windows", "dev")).render(_policy(("C:\\ws", Access.WRITE)), argv)
    assert ps_assignment(wrapper.argv[-1], "CommandLine") == command_line
    assert read_back(wrapper)[1] == argv
