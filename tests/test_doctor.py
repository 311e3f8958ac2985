"""``sandfleet doctor`` and ``sandfleet facts`` (sandfleet/doctor.py, api.doctor, api.facts).

Real parts: this machine through its local agent, a local-connection inventory, an SSH host on a
closed port (unreachable, the others still reported), bwrap's version as ``bwrap --version``
says it, Landlock's ABI as the kernel says it. The "why not" branches are fabricated facts: each
reason and its exact fix."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sandfleet import api
from sandfleet.cli import main
from sandfleet.doctor import (
    BWRAP_PACKAGE,
    CONTAINER_SECCOMP_FIX,
    Check,
    DoctorResult,
    HostFactsResult,
    HostReport,
    Trial,
    diagnose,
    doctor_text,
    facts_text,
)
from sandfleet.transports.base import AgentInit
from sandfleet_agent.binding.facts import (
    BackendStatus,
    HostFacts,
    classify_bwrap_failure,
    probe_bwrap,
    probe_landlock,
)
from support.ci import need
from support.sshd import free_port

BWRAP = shutil.which("bwrap")


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def _inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  hosts:\n"
                    "    here: {ansible_connection: local}\n"
                    "    pinned: {ansible_connection: local, sandfleet_sandbox: landlock}\n"
                    f"    gone: {{ansible_host: 127.0.0.1, ansible_port: {free_port('127.0.0.1')}, ansible_user: x}}\n")
    return path


# -- real: this machine, an inventory, an unreachable host ----------------------------------------


def test_this_machine_bwrap_works_and_its_version_is_read() -> None:
    need(BWRAP is not None and probe_bwrap().available, "bwrap works here")
    result = api.doctor()
    assert list(result.hosts) == ["localhost"] and result.exit_code == 0
    report = result.hosts["localhost"]
    assert report.enforced and report.trial is not None and report.trial.backend == "bwrap"
    version = subprocess.run(["/usr/bin/bwrap", "--version"], capture_output=True, text=True).stdout.strip()
    checks = {c.name: c for c in report.checks}
    assert checks["bwrap"].state == "ok" and version in checks["bwrap"].detail
    assert report.facts is not None and report.facts.backend("bwrap").version == version  # type: ignore[union-attr]
    assert checks["default intent"].state == "ok" and "built-in default" in checks["policy"].detail


def test_this_machine_landlock_abi_is_the_kernels() -> None:
    status, abi = probe_landlock()
    need(status.available, "Landlock is enabled here")
    report = api.doctor().hosts["localhost"]
    landlock = next(c for c in report.checks if c.name == "landlock")
    assert f"ABI {abi}" in landlock.detail and "pins it" in landlock.detail
    if os.geteuid() == 0:  # never for a root agent, and doctor says so
        assert landlock.state == "info" and "runs as root, so not here" in landlock.detail


def test_cli_doctor_text_and_json_for_this_machine() -> None:
    need(BWRAP is not None and probe_bwrap().available, "bwrap works here")
    code, out, _ = _run("doctor")
    assert code == 0 and out.startswith("localhost | OK | the default sandbox can be enforced\n")
    for name in ("agent", "bwrap", "userns", "landlock", "seccomp", "limits", "policy", "default intent"):
        assert f" {name} " in out, name
    code, out, _ = _run("doctor", "--format", "json")
    (line,) = out.splitlines()
    obj = json.loads(line)
    assert code == 0 and obj["host"] == "localhost" and obj["enforced"] is True and obj["backend"] == "bwrap"
    assert obj["facts"]["os"] == "linux" and {c["name"] for c in obj["checks"]} >= {"bwrap", "landlock"}


def test_inventory_with_an_unreachable_host_reports_the_others(tmp_path: Path) -> None:
    need(BWRAP is not None and probe_bwrap().available, "bwrap works here")
    result = api.doctor(_inventory(tmp_path))
    here, pinned, gone = (result.hosts[h] for h in ("here", "pinned", "gone"))
    assert list(result.hosts) == ["here", "pinned", "gone"]
    assert here.enforced and here.exit_bits == 0
    assert gone.unreachable is not None and "refused" in gone.unreachable.lower() and gone.exit_bits == 4
    assert pinned.pin == "landlock"
    if os.geteuid() == 0:  # a root agent pinned to Landlock: refused, with the fix
        assert not pinned.enforced and pinned.exit_bits == 8 and result.exit_code == 12
        landlock = next(c for c in pinned.checks if c.name == "landlock")
        assert landlock.state == "fail" and "drop sandfleet_sandbox: landlock" in landlock.fix
    code, out, _ = _run("doctor", "-i", str(tmp_path / "inv.yml"), "-l", "here:gone")
    assert code == 4 and "here | OK" in out and "gone | UNREACHABLE | " in out


def test_cli_facts_one_block_or_object_per_host(tmp_path: Path) -> None:
    inv = str(_inventory(tmp_path))
    code, out, _ = _run("facts", "-i", inv, "here:gone", "--format", "json")
    objs = [json.loads(line) for line in out.splitlines()]
    assert code == 4 and [o["host"] for o in objs] == ["here", "gone"]
    assert HostFacts.from_dict(objs[0]["facts"]).os == "linux" and "unreachable" in objs[1]
    code, out, _ = _run("facts", "-i", inv, "here")
    assert code == 0 and out.startswith("here | OK | linux") and "\n  python: " in out and "\n  euid: " in out
    code, out, err = _run("facts", "-i", inv, "nosuchgroup")
    assert code == 1 and out == "" and "the pattern 'nosuchgroup' matches no host" in err


def test_doctor_and_facts_ask_for_fresh_facts_and_a_run_does_not(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent may keep a working bwrap's verdict for minutes (binding/facts.py ``kept_bwrap``);
    doctor and facts are about the host as it is now, so their init line says ``fresh_facts``."""
    from sandfleet.transports.local import LocalConnection

    sent: list[tuple[str, bool]] = []
    real_start = LocalConnection.start

    def start(self: LocalConnection, init: AgentInit) -> HostFacts:
        sent.append((self.host, init.fresh_facts))
        return real_start(self, init)

    monkeypatch.setattr(LocalConnection, "start", start)
    inv = _inventory(tmp_path)
    api.doctor(inv, "here")
    api.facts(inv, "here")
    api.run_command(["true"], hosts="here", inventory=inv, sandbox=False, allow_unsandboxed=True)
    assert sent == [("here", True), ("here", True), ("here", False)]


# -- HostFacts stays readable from older agents ---------------------------------------------------


def test_facts_from_an_older_agent_get_defaults_and_round_trip() -> None:
    old = {"os": "linux", "home": "/home/u", "tmpdir": "/tmp", "backends": [{"name": "bwrap", "available": True}],
           "unknown_future_field": 1}
    facts = HostFacts.from_dict(old)
    assert facts.machine == "" and facts.sysctls == () and facts.seccomp_mode == -1
    assert facts.backend("bwrap") == BackendStatus("bwrap", True)
    new = dataclasses.replace(facts, sysctls=(("user.max_user_namespaces", "0"),), machine="x86_64")
    assert HostFacts.from_dict(json.loads(json.dumps(new.to_dict()))) == new
    report = diagnose("old", facts, trial=Trial("ok", "bwrap"))
    assert report.enforced and next(c for c in report.checks if c.name == "seccomp").state == "info"


# -- the reasons and their fixes, from fabricated facts -------------------------------------------


def _facts(bwrap: BackendStatus, **kw: object) -> HostFacts:
    base = dict(os="linux", home="/home/u", tmpdir="/tmp", user="u", euid=1000, machine="x86_64", kernel="6.8.0",
                backends=(bwrap, BackendStatus("landlock", True, "ABI 4")), landlock_abi=4, limits="cgroup2",
                seccomp_mode=0)
    base.update(kw)
    return HostFacts(**base)  # type: ignore[arg-type]


BROKEN = BackendStatus("bwrap", False, "; ".join(classify_bwrap_failure(
    "bwrap: Creating new namespace failed: Operation not permitted")), "/usr/bin/bwrap", version="bubblewrap 0.9.0")
FAILED = Trial("sandbox_unavailable", None, "no sandbox can enforce this task's intent")


def _check(report: HostReport, name: str) -> Check:
    return next(c for c in report.checks if c.name == name)


@pytest.mark.parametrize(("sysctls", "cause", "fix"), [
    ((("kernel.unprivileged_userns_clone", "0"),), "kernel.unprivileged_userns_clone=0",
     "sysctl -w kernel.unprivileged_userns_clone=1"),
    ((("user.max_user_namespaces", "0"),), "user.max_user_namespaces=0", "sysctl -w user.max_user_namespaces=15000"),
    ((("kernel.apparmor_restrict_unprivileged_userns", "1"),), "AppArmor refuses user namespaces",
     "profile bwrap /usr/bin/bwrap flags=(unconfined) { userns,"),
])
def test_userns_sysctl_reasons_and_fixes(sysctls: tuple[tuple[str, str], ...], cause: str, fix: str) -> None:
    report = diagnose("h", _facts(BROKEN, sysctls=sysctls), trial=FAILED)
    userns, bwrap, intent = (_check(report, n) for n in ("userns", "bwrap", "default intent"))
    assert userns.state == "fail" and cause in userns.detail and fix in userns.fix
    assert bwrap.state == "fail" and "bubblewrap 0.9.0" in bwrap.detail and fix in bwrap.fix
    assert "/etc/sysctl.d/" in userns.fix or "apparmor_parser -r" in userns.fix
    assert intent.state == "fail" and fix in intent.fix and report.exit_bits == 8


def test_a_root_agent_is_not_held_to_the_unprivileged_sysctl() -> None:
    report = diagnose("h", _facts(BROKEN, euid=0, sysctls=(("kernel.unprivileged_userns_clone", "0"),)))
    assert "unprivileged_userns_clone" not in _check(report, "userns").detail


def test_container_seccomp_forbids_unshare() -> None:
    report = diagnose("h", _facts(BROKEN, seccomp_mode=2, container="docker"), trial=FAILED)
    userns = _check(report, "userns")
    assert "docker container" in userns.detail and "seccomp" in userns.detail
    assert userns.fix == CONTAINER_SECCOMP_FIX and "--security-opt seccomp=" in userns.fix


def test_bwrap_missing_names_the_package_and_landlock_as_a_way_out() -> None:
    missing = BackendStatus("bwrap", False, "bwrap is not installed (looked in /usr/bin); install the distribution's "
                            "bubblewrap package (apt-get install bubblewrap, ...)")
    report = diagnose("h", _facts(missing), trial=FAILED)
    bwrap, landlock, intent = (_check(report, n) for n in ("bwrap", "landlock", "default intent"))
    assert bwrap.state == "fail" and bwrap.fix == BWRAP_PACKAGE and "install the" not in bwrap.detail
    assert "sandfleet_sandbox: landlock" in landlock.fix and intent.fix == BWRAP_PACKAGE


def test_landlock_pinned_without_landlock_or_network_abi() -> None:
    off = _facts(BackendStatus("bwrap", True, "", "/usr/bin/bwrap"), landlock_abi=0,
                 backends=(BackendStatus("bwrap", True), BackendStatus("landlock", False, "Landlock is not enabled")))
    landlock = _check(diagnose("h", off, pin="landlock"), "landlock")
    assert landlock.state == "fail" and "lsm=" in landlock.fix
    old = _facts(BackendStatus("bwrap", True), landlock_abi=3)
    assert _check(diagnose("h", old, pin="landlock"), "landlock").state == "warn"
    assert _check(diagnose("h", old, linux_backends=("landlock",)), "landlock").state == "warn"
    capable = _facts(BackendStatus("bwrap", True), cap_eff=1 << 21)
    assert _check(diagnose("h", capable, pin="landlock"), "landlock").state == "fail"


def test_seccomp_architecture_and_limits_and_proc() -> None:
    risc = diagnose("h", _facts(BackendStatus("bwrap", True), machine="riscv64"))
    assert _check(risc, "seccomp").state == "fail"
    rl = _check(diagnose("h", _facts(BackendStatus("bwrap", True), limits="rlimit", limits_reason="no cgroup")),
                "limits")
    assert rl.state == "warn" and "Delegate=yes" in rl.fix
    noproc = BackendStatus("bwrap", True, "", "/usr/bin/bwrap", proc=False, proc_reason="can't mount proc")
    assert _check(diagnose("h", _facts(noproc)), "bwrap").state == "warn"


def test_policy_sources_and_a_refusal() -> None:
    facts = _facts(BackendStatus("bwrap", True))
    trial = Trial("ok", "bwrap", None, ("built-in default", "/etc/sandfleet/policy.yml",
                                        "/home/u/.config/sandfleet/policy.yml"))
    policy = _check(diagnose("h", facts, trial=trial), "policy")
    assert "host owner's files: /etc/sandfleet/policy.yml, /home/u/.config/sandfleet/policy.yml" in policy.detail
    denied = diagnose("a", facts, trial=Trial("denied", None, "the host's own policy is invalid, so nothing runs"))
    assert denied.exit_bits == 16 and _check(denied, "policy").state == "fail"
    result = DoctorResult({"a": denied, "b": diagnose("b", None, unreachable="refused")})
    assert result.exit_code == 20
    text = doctor_text(result)
    assert "a | PROBLEM | the default sandbox is refused by a policy" in text and "b | UNREACHABLE | refused" in text


def test_facts_text_is_printable() -> None:
    facts = _facts(BackendStatus("bwrap", True, "", "/usr/bin/bwrap", version="bubblewrap 0.9.0"), user="u\x1b[31m")
    text = facts_text([HostFactsResult("h", facts), HostFactsResult("g", None, "down")])
    assert "\x1b" not in text and "backend bwrap: available (bubblewrap 0.9.0; /usr/bin/bwrap)" in text
    assert "g | UNREACHABLE | down" in text


@pytest.mark.parametrize(("stderr", "userns_state", "fix"), [
    ("bwrap: loopback: Failed RTM_NEWADDR: Operation not permitted", "info", "configure its own 'lo'"),
    ("bwrap: Creating new namespace failed: No space left on device", "fail", "user.max_user_namespaces=15000"),
    ("bwrap: setting up uid map: Permission denied", "fail", "kernel.apparmor_restrict_unprivileged_userns=0"),
])
def test_bwraps_own_reason_is_split_into_cause_and_fix(stderr: str, userns_state: str, fix: str) -> None:
    cause, how = classify_bwrap_failure(stderr)
    status = BackendStatus("bwrap", False, f"{cause}; {how}", "/usr/bin/bwrap")
    report = diagnose("h", _facts(status, seccomp_mode=2, container="docker"))
    bwrap, userns = _check(report, "bwrap"), _check(report, "userns")
    assert bwrap.state == "fail" and fix in bwrap.fix and bwrap.fix not in bwrap.detail
    assert userns.state == userns_state and "seccomp" not in bwrap.detail  # EPERM on unshare only
