"""``sandfleet doctor`` on this machine as it is, and with each capability really taken away.

tests/test_doctor.py judges fabricated facts; here the real agent probes a machine that lacks
something, the real trial command fails (or not), and the command line's verdict, fix and exit
code are read as a user reads them. Each capability is taken away the way the other tests do, or
closer to the real thing where this machine allows it:

- bwrap: the agent takes bwrap only from root-owned system directories, never from PATH (so
  taking it off PATH changes nothing, which is checked too); ``SANDFLEET_BWRAP_DIRS`` names the
  directories it looks in, here one without bwrap (tests/test_run_local.py, tests/test_exec.py).
- user namespaces, two ways: the doctor runs in a user namespace of its own whose
  ``user.max_user_namespaces`` is 0 (a per-namespace limit: the machine's own stays as it is),
  so the kernel refuses bwrap's namespaces exactly as a host with that sysctl does; or under a
  seccomp filter refusing ``unshare`` and ``clone(CLONE_NEWUSER)``, as Docker's default profile
  does. (``kernel.unprivileged_userns_clone`` and AppArmor's ``apparmor_restrict_unprivileged_userns``
  do not exist on this kernel, so those branches stay with tests/test_doctor.py's fabricated facts.)
- Landlock: a seccomp filter makes ``landlock_create_ruleset`` answer ``EOPNOTSUPP``, what a kernel
  built with Landlock but booted without it in ``lsm=`` answers; over SSH, the agent's login gets
  ``SANDFLEET_LANDLOCK_MAX_ABI=0`` (tests/test_run_local.py's switch) from its sshd's ``SetEnv``.

One test goes over real sshd hosts (tests/support/sshd.py), whose agents run as an unprivileged
user, so Landlock is used where it is pinned and bwrap's absence has Landlock as a way out. And
the trial command is judged for what it proves: it runs ``/bin/sh`` by its path (an agent's PATH
without ``true`` said "CANNOT be enforced"), and a command failing inside a sandbox that was set up
is a warning, not a missing sandbox.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sandfleet.doctor import BWRAP_PACKAGE, CONTAINER_SECCOMP_FIX, SUPERVISOR_SECCOMP_FIX, diagnose
from sandfleet_agent.binding.facts import (
    BackendStatus,
    HostFacts,
    classify_bwrap_failure,
    probe_bwrap,
    probe_landlock,
)
from sandfleet_agent.linux.seccomp import machine_name
from support.ci import need
from support.sshd import Fleet, SshHost, running

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120

SYSCTL_FIX = ("sysctl -w user.max_user_namespaces=15000, and to keep it after a reboot: "
              "echo 'user.max_user_namespaces = 15000' > /etc/sysctl.d/60-sandfleet-userns.conf")
LSM_FIX = ("add landlock to the lsm= kernel boot parameter and reboot (e.g. "
           "lsm=landlock,lockdown,yama,integrity,apparmor; >= 6.7 for network none)")
LANDLOCK_WAY_OUT = ("a way out while bwrap cannot run: sandfleet_sandbox: landlock for this host in the inventory "
                    "(Landlock has no managed network and hides no processes)")
ENV_FIX = ("remove SANDFLEET_LANDLOCK_MAX_ABI from the agent's environment (it caps the Landlock ABI, 0 turns "
           "Landlock off; over SSH the login's environment: sshd's SetEnv or ~/.ssh/environment)")
DROP_PIN = "; or drop sandfleet_sandbox: landlock to use bwrap"

#: Runs the rest of its argv with ``user.max_user_namespaces`` = 0 in a user namespace of its own.
NO_USERNS = ["unshare", "--user", "--map-root-user", "sh", "-c",
             'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "sh"]

#: Runs its argv after the first under a seccomp filter (``no_new_privs`` first, as any
#: unprivileged process must): argv[1] is JSON ``[[syscall number, errno, flag mask], ...]``; with
#: a mask, only calls whose first argument has one of those bits set are refused.
_FILTER = textwrap.dedent("""\
    import ctypes, json, os, struct, sys
    arch = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}[os.uname().machine]
    LD, JEQ, JSET, RET, ALLOW, ERRNO = 0x20, 0x15, 0x45, 0x06, 0x7FFF0000, 0x00050000
    body = []
    for nr, err, mask in json.loads(sys.argv[1]):
        refuse = (RET, 0, 0, ERRNO | err)
        block = [(LD, 0, 0, 16), (JSET, 0, 1, mask), refuse, (RET, 0, 0, ALLOW)] if mask else [refuse]
        body += [(JEQ, 0, len(block), nr), *block]
    body.append((RET, 0, 0, ALLOW))
    prog = [(LD, 0, 0, 4), (JEQ, 0, len(body), arch), (LD, 0, 0, 0), *body]
    code = b"".join(struct.pack("<HBBI", *insn) for insn in prog)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(buf)))
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if prctl(38, 1, None, 0, 0) or prctl(22, 2, ctypes.addressof(fprog), 0, 0):  # NO_NEW_PRIVS, SECCOMP
        sys.exit(f"seccomp: {os.strerror(ctypes.get_errno())}")
    os.execv(sys.argv[2], sys.argv[2:])
""")
#: (x86_64, aarch64) numbers of the calls the filters refuse.
_SYSCALLS = {"unshare": (272, 97), "clone": (56, 220), "clone3": (435, 435), "landlock_create_ruleset": (444, 444)}
CLONE_NEWUSER = 0x10000000


def under_filter(*rules: tuple[str, int, int]) -> list[str]:
    """A prefix running a command under a seccomp filter refusing ``(syscall, errno, flag mask)``."""
    index = 0 if os.uname().machine == "x86_64" else 1
    return [sys.executable, "-c", _FILTER, json.dumps([[_SYSCALLS[n][index], e, m] for n, e, m in rules])]


#: What a kernel built with Landlock but booted without it in ``lsm=`` answers.
NO_LANDLOCK = ("landlock_create_ruleset", errno.EOPNOTSUPP, 0)
#: What Docker's and podman's default seccomp profiles do to an unprivileged container: no new
#: user namespace (clone3 answers ENOSYS so libc falls back to clone, whose flags a filter can read).
NO_USERNS_SECCOMP = (("unshare", errno.EPERM, 0), ("clone", errno.EPERM, CLONE_NEWUSER),
                     ("clone3", errno.ENOSYS, 0))


def doctor(*args: str, prefix: Sequence[str] = (), env: dict[str, str] | None = None
           ) -> tuple[int, str, dict[str, dict[str, Any]]]:
    """``sandfleet doctor ARGS`` as a user runs it (under ``prefix``): its exit code, its text, and
    its JSON (a second run) as {host: {check name: check}}; the two runs must agree on the code."""
    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, sys.executable, "-m", "sandfleet", "doctor", *args, *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT,
                              env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)

    text, js = run(), run("--format", "json")
    assert text.returncode == js.returncode, (text.stdout, js.stdout)
    assert "Traceback" not in text.stderr + js.stderr, text.stderr + js.stderr
    hosts = {}
    for line in js.stdout.splitlines():
        obj = json.loads(line)
        obj["checks"] = {c["name"]: c for c in obj["checks"]}
        hosts[obj["host"]] = obj
    return text.returncode, text.stdout, hosts


def fix_line(text: str, check: str, fix: str) -> bool:
    """The text output shows ``check`` failing with exactly ``fix`` on the line under it."""
    lines = text.splitlines()
    return any(line.startswith(f"  fail  {check} ") and lines[i + 1].strip() == f"fix: {fix}"
               for i, line in enumerate(lines[:-1]))


@pytest.fixture(autouse=True)
def _bwrap_works() -> None:
    need(probe_bwrap().available, "bwrap works here (apt-get install bubblewrap): the baseline to take it from")


def test_this_machine_as_it_is() -> None:
    code, text, hosts = doctor()
    checks = hosts["localhost"]["checks"]
    assert code == 0 and text.startswith("localhost | OK | the default sandbox can be enforced\n")
    assert {checks[n]["state"] for n in ("bwrap", "userns", "default intent")} == {"ok"}
    assert not [c for c in checks.values() if c["state"] == "fail"] and "fix:" not in text


def test_bwrap_off_path_changes_nothing(tmp_path: Path) -> None:
    """PATH is never where the sandbox comes from: a PATH without bwrap (nor anything) is no problem."""
    (tmp_path / "empty").mkdir()
    code, _, hosts = doctor(env={"PATH": str(tmp_path / "empty")})
    assert code == 0 and hosts["localhost"]["checks"]["bwrap"]["detail"].endswith(" at /usr/bin/bwrap")


def test_a_trial_that_fails_inside_a_working_sandbox_is_not_a_missing_sandbox(tmp_path: Path) -> None:
    """The operator's policy denies the shell the trial runs: bwrap held the task, the command could
    not start in it. The verdict stays "can be enforced" (exit 0) with a warning, not "install bwrap"."""
    shell = os.path.realpath("/bin/sh")
    policy = tmp_path / "policy.yml"
    policy.write_text(f"deny: [{json.dumps(shell)}]\n")
    code, text, hosts = doctor("--policy", str(policy))
    intent = hosts["localhost"]["checks"]["default intent"]
    assert code == 0 and hosts["localhost"]["enforced"] and hosts["localhost"]["backend"] == "bwrap"
    assert intent["state"] == "warn" and intent["detail"] == (
        "enforced with bwrap, but the trial command failed inside the sandbox: cannot start '/bin/sh': "
        "Permission denied")
    assert text.startswith("localhost | OK | the default sandbox can be enforced\n") and "  fail  " not in text


def test_no_bwrap_names_the_package(tmp_path: Path) -> None:
    """Not in the directories the agent trusts, nor on PATH: not installed, and the package to install."""
    (tmp_path / "no-bwrap").mkdir()
    code, text, hosts = doctor(env={"SANDFLEET_BWRAP_DIRS": str(tmp_path / "no-bwrap"),
                                    "PATH": str(tmp_path / "no-bwrap")})
    checks = hosts["localhost"]["checks"]
    assert code == 8 and text.startswith("localhost | PROBLEM | the default sandbox CANNOT be enforced\n")
    assert checks["bwrap"]["state"] == "fail"
    assert checks["bwrap"]["detail"] == f"bwrap is not installed (looked in {tmp_path / 'no-bwrap'})"
    assert checks["bwrap"]["fix"] == BWRAP_PACKAGE and "apt-get install bubblewrap" in BWRAP_PACKAGE
    assert checks["userns"]["state"] == "info" and checks["userns"]["detail"].startswith("not tried without")
    assert checks["default intent"]["state"] == "fail" and checks["default intent"]["fix"] == BWRAP_PACKAGE
    assert fix_line(text, "bwrap", BWRAP_PACKAGE) and fix_line(text, "default intent", BWRAP_PACKAGE)


def test_user_namespaces_refused_names_the_sysctl() -> None:
    need(shutil.which("unshare") is not None, "unshare (util-linux)")
    probe = subprocess.run([*NO_USERNS, "cat", "/proc/sys/user/max_user_namespaces"], capture_output=True,
                           text=True, timeout=TIMEOUT)
    need(probe.stdout == "0\n", f"a user namespace with its own user.max_user_namespaces=0 ({probe.stderr.strip()})")
    code, text, hosts = doctor(prefix=NO_USERNS)
    checks = hosts["localhost"]["checks"]
    assert code == 8
    assert checks["userns"] == {"name": "userns", "state": "fail", "fix": SYSCTL_FIX, "detail": (
        "user namespaces are refused: user.max_user_namespaces=0: no user namespace may be created here")}
    assert checks["bwrap"]["state"] == "fail" and checks["bwrap"]["fix"] == SYSCTL_FIX
    assert "cannot start a sandbox: user.max_user_namespaces=0" in checks["bwrap"]["detail"]
    intent = checks["default intent"]
    assert intent["state"] == "fail" and intent["fix"] == SYSCTL_FIX
    # the trial's own message: bwrap's words, read by the agent as the namespace limit, with its fix
    assert "the user namespace limit is 0 or used up" in intent["detail"]
    assert "raise it: sysctl user.max_user_namespaces=15000" in intent["detail"]
    assert fix_line(text, "userns", SYSCTL_FIX) and fix_line(text, "default intent", SYSCTL_FIX)
    # the machine's own limit is untouched
    assert Path("/proc/sys/user/max_user_namespaces").read_text() != "0\n"


def test_user_namespaces_forbidden_by_a_seccomp_filter_names_the_filter() -> None:
    """The agent under a filter refusing user namespaces, as in a default Docker container: the
    sysctls allow them, so doctor blames the filter and says how to start the agent without it."""
    need(machine_name() is not None, "an x86_64 or aarch64 machine (the filter's syscall numbers)")
    code, text, hosts = doctor(prefix=under_filter(*NO_USERNS_SECCOMP))
    report = hosts["localhost"]
    checks, container = report["checks"], report["facts"]["container"]
    fix = CONTAINER_SECCOMP_FIX if container else SUPERVISOR_SECCOMP_FIX
    assert code == 8 and report["facts"]["seccomp_mode"] == 2
    where = f"this {container} container runs" if container else "the agent runs under a seccomp filter, set by"
    assert checks["userns"]["state"] == "fail" and checks["userns"]["fix"] == fix
    assert checks["userns"]["detail"].startswith(f"user namespaces are refused: {where}")
    assert "forbids unshare/clone of user namespaces" in checks["userns"]["detail"]
    assert checks["bwrap"]["fix"] == fix and checks["default intent"]["fix"] == fix
    assert checks["seccomp"]["detail"].endswith("(the agent itself runs under a seccomp filter)")
    assert fix_line(text, "userns", fix)


@pytest.fixture
def landlock_can_be_taken() -> None:
    need(probe_landlock()[0].available, "Landlock is enabled here (the baseline to take it from)")
    need(machine_name() is not None, "an x86_64 or aarch64 machine (the filter's syscall number)")


def test_landlock_off_is_named_and_only_matters_where_it_is_pinned(tmp_path: Path,
                                                                  landlock_can_be_taken: None) -> None:
    reason = ("Landlock is built into this kernel but disabled at boot: add landlock to the lsm= kernel boot "
              "parameter (e.g. lsm=landlock,lockdown,yama,integrity,apparmor,bpf)")
    code, _, hosts = doctor(prefix=under_filter(NO_LANDLOCK))
    landlock = hosts["localhost"]["checks"]["landlock"]
    assert code == 0 and hosts["localhost"]["backend"] == "bwrap"  # bwrap, the default, does not need it
    assert landlock["state"] == "info" and landlock["detail"].startswith(reason + "; used only where")
    assert hosts["localhost"]["facts"]["landlock_abi"] == 0

    inventory = tmp_path / "inv.yml"
    inventory.write_text("all:\n  hosts:\n    pinned: {ansible_connection: local, sandfleet_sandbox: landlock}\n")
    code, text, hosts = doctor("-i", str(inventory), prefix=under_filter(NO_LANDLOCK))
    checks = hosts["pinned"]["checks"]
    assert code == 8 and hosts["pinned"]["pin"] == "landlock"
    assert checks["landlock"] == {"name": "landlock", "state": "fail", "detail": f"pinned by sandfleet_sandbox, but "
                                  f"{reason}", "fix": LSM_FIX + DROP_PIN}
    assert checks["default intent"]["fix"] == LSM_FIX + DROP_PIN and fix_line(text, "landlock", LSM_FIX + DROP_PIN)
    assert checks["bwrap"]["state"] == "ok" and "(not used: the operator chose another backend" in \
        checks["bwrap"]["detail"]


# -- over SSH: agents run as an unprivileged user --------------------------------------------------


@pytest.fixture(scope="module")
def sshd() -> Iterator[Fleet]:
    with running(4) as fleet:
        yield fleet


def _restart_with(fleet: Fleet, host: SshHost, **env: str) -> None:
    """Give ``host``'s logins more environment: its sshd's one SetEnv line (sshd reads only the
    first), then a restart."""
    config = host.dir / "sshd_config"
    extra = " ".join(f"{k}={v}" for k, v in env.items())
    config.write_text(config.read_text().replace(f"SetEnv XDG_CACHE_HOME={host.cache}",
                                                 f"SetEnv XDG_CACHE_HOME={host.cache} {extra}"))
    host.stop()
    fleet.start(host)


def test_over_ssh_each_host_its_own_verdict_and_fix(sshd: Fleet, tmp_path: Path) -> None:
    """as-is (bwrap), no bwrap, Landlock pinned, Landlock pinned but turned off: one doctor run."""
    need(probe_landlock()[0].available, "Landlock is enabled here")
    as_is, no_bwrap, pinned, pinned_off = sshd.hosts
    (no_bwrap.dir / "no-bwrap").mkdir(exist_ok=True)
    _restart_with(sshd, no_bwrap, SANDFLEET_BWRAP_DIRS=str(no_bwrap.dir / "no-bwrap"))
    _restart_with(sshd, pinned_off, SANDFLEET_LANDLOCK_MAX_ABI="0")
    pin = {"sandfleet_sandbox": "landlock"}
    inventory = sshd.inventory(tmp_path / "inv.yml", sshd.hosts, **{pinned.name: pin, pinned_off.name: pin})
    ssh_config = sshd.ssh_config(tmp_path / "ssh_config", sshd.known_hosts(tmp_path / "known_hosts", sshd.hosts))
    code, text, hosts = doctor("-i", str(inventory), "--ssh-config", str(ssh_config))
    assert code == 8, text
    assert [h["host"] for h in hosts.values()] == [h.name for h in sshd.hosts]
    assert [(h["enforced"], h["backend"]) for h in hosts.values()] == [
        (True, "bwrap"), (False, None), (True, "landlock"), (False, None)]
    for h in hosts.values():
        assert h["facts"]["user"] == "sandfleet-test" and h["facts"]["euid"] != 0

    checks = hosts[no_bwrap.name]["checks"]
    assert checks["bwrap"]["fix"] == BWRAP_PACKAGE and checks["default intent"]["fix"] == BWRAP_PACKAGE
    # an unprivileged agent may use Landlock: doctor names the inventory variable that would
    assert checks["landlock"]["state"] == "info" and checks["landlock"]["fix"] == LANDLOCK_WAY_OUT

    abi = probe_landlock()[1]
    assert hosts[pinned.name]["checks"]["landlock"] == {"name": "landlock", "state": "ok",
                                                        "detail": f"ABI {abi}, pinned by sandfleet_sandbox"}

    checks = hosts[pinned_off.name]["checks"]
    assert checks["landlock"] == {"name": "landlock", "state": "fail", "fix": ENV_FIX + DROP_PIN, "detail": (
        "pinned by sandfleet_sandbox, but Landlock is turned off here by SANDFLEET_LANDLOCK_MAX_ABI=0")}
    assert checks["default intent"]["fix"] == ENV_FIX + DROP_PIN
    block = text.split(f"{pinned_off.name} | PROBLEM | the default sandbox CANNOT be enforced\n", 1)[1]
    assert fix_line(block, "landlock", ENV_FIX + DROP_PIN)
    assert f"{as_is.name} | OK | the default sandbox can be enforced" in text


def test_a_filter_outside_any_container_is_blamed_on_what_started_the_agent() -> None:
    """The branch this machine (a container) cannot reach for real: the same bwrap failure (Debian's
    wording of EPERM) for an agent under a seccomp filter and in no container."""
    debian = "bwrap: No permissions to create new namespace, likely because the kernel does not allow non-privileged"
    status = BackendStatus("bwrap", False, "; ".join(classify_bwrap_failure(debian)), "/usr/bin/bwrap")
    facts = HostFacts(os="linux", home="/home/u", tmpdir="/tmp", user="u", euid=1000, machine="x86_64",
                      backends=(status,), seccomp_mode=2, container="")
    userns = next(c for c in diagnose("h", facts).checks if c.name == "userns")
    assert userns.state == "fail" and userns.fix == SUPERVISOR_SECCOMP_FIX and "SystemCallFilter=" in userns.fix
    assert userns.detail.startswith("user namespaces are refused: the agent runs under a seccomp filter, set by")
