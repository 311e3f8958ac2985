"""The bwrap probe: which binary is the sandbox, and what a failing bwrap start means.

The binary comes only from root-owned system directories (``trusted_binary``): a ``bwrap`` planted
on PATH, or a copy someone other than root could replace, is never run. The ownership checks are
exercised on real files (the tests run as root: chmod/chown). A failing start is explained from
bwrap's own stderr; "cannot mount /proc" is not a namespace problem, and the probe falls back to
an empty /proc. That fallback runs for real inside a mount namespace whose /proc has a covered
part, where the kernel refuses a fresh proc mount, as in a Docker container.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandfleet_agent.binding import facts
from sandfleet_agent.binding.facts import BWRAP_DIRS_ENV, classify_bwrap_failure, probe_bwrap, trusted_binary
from support.ci import need

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_BWRAP = "/usr/bin/bwrap"
TIMEOUT = 60


def _need_root() -> None:
    need(hasattr(os, "geteuid") and os.geteuid() == 0, "root is needed to create files owned by others")


def _exe(path: Path, body: str = "#!/bin/sh\nexit 0\n", mode: int = 0o755) -> Path:
    path.write_text(body)
    path.chmod(mode)
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A directory only root can change, all the way up to ``/`` (pytest's tmp dir is root's, 0700,
    under the sticky ``/tmp``), so every verdict below comes from what a test itself sets up."""
    _need_root()
    tmp_path.chmod(0o755)
    probe = _exe(tmp_path / "baseline")
    need(facts._trust_problem(str(probe)) == "", f"the temp dir is not root-only: {facts._trust_problem(str(probe))}")
    probe.unlink()
    return tmp_path


def _dir(parent: Path, name: str, mode: int = 0o755, uid: int = 0) -> Path:
    path = parent / name
    path.mkdir()
    path.chmod(mode)
    os.chown(path, uid, 0)
    return path


# -- which binary ----------------------------------------------------------------------------------

def test_a_bwrap_planted_first_on_path_is_not_the_sandbox(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need(os.path.exists(SYSTEM_BWRAP), f"{SYSTEM_BWRAP} is needed (apt-get install bubblewrap)")
    planted_dir = _dir(base, "planted", 0o777)
    ran = base / "planted-ran"
    planted = _exe(planted_dir / "bwrap", f"#!/bin/sh\ntouch {ran}\nexit 0\n")
    monkeypatch.setenv("PATH", f"{planted_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.delenv(BWRAP_DIRS_ENV, raising=False)
    assert shutil.which("bwrap") == str(planted)  # what the old PATH lookup would have run
    status = probe_bwrap()
    assert status.path == SYSTEM_BWRAP
    assert not ran.exists(), "the planted script ran"


def test_a_bwrap_only_on_path_is_refused_and_named(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No bwrap in the system directories, one in a user-writable dir on PATH: unavailable, and the
    reason names that file, why it is not used, and the fix."""
    system = _dir(base, "system")  # the only "system" directory, without bwrap
    planted_dir = _dir(base, "home-bin", 0o777)
    ran = base / "planted-ran"
    planted = _exe(planted_dir / "bwrap", f"#!/bin/sh\ntouch {ran}\nexit 0\n")
    monkeypatch.setenv("PATH", f"{planted_dir}:/usr/bin:/bin")
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(system))
    status = probe_bwrap()
    assert not status.available and status.path is None and not ran.exists()
    assert f"{planted} (on PATH) is not used: {planted_dir} is writable by group and others" in status.reason
    assert "bwrap is not installed" in status.reason and "bubblewrap package" in status.reason

    # Even a root-owned, read-only copy on PATH is not taken: PATH is never where the sandbox comes from.
    planted_dir.chmod(0o755)
    path, reason = trusted_binary("bwrap", [str(system)])
    assert path is None
    assert f"{planted} (on PATH) is not used: only the system directories are trusted, never PATH" in reason


def test_with_no_directory_to_look_in_bwrap_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BWRAP_DIRS_ENV, "")
    status = probe_bwrap()
    assert not status.available and status.path is None
    assert "bwrap is not installed" in status.reason and BWRAP_DIRS_ENV in status.reason


def test_nothing_anywhere_says_not_installed(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(_dir(base, "empty-path")))
    path, reason = trusted_binary("bwrap", [str(_dir(base, "empty"))])
    assert path is None and reason == f"bwrap is not installed (looked in {base / 'empty'})"


def test_a_root_only_copy_is_trusted_and_the_first_one_wins(base: Path) -> None:
    first, second = _dir(base, "first"), _dir(base, "second")
    _exe(second / "tool")
    assert trusted_binary("tool", [str(first), str(second)]) == (str(second / "tool"), "")
    _exe(first / "tool")
    assert trusted_binary("tool", ["relative/ignored", str(first), str(second)]) == (str(first / "tool"), "")


def test_an_unsafe_copy_is_skipped_for_a_later_safe_one(base: Path) -> None:
    bad, good = _dir(base, "bad", 0o777), _dir(base, "good")
    _exe(bad / "tool")
    _exe(good / "tool")
    assert trusted_binary("tool", [str(bad), str(good)]) == (str(good / "tool"), "")


@pytest.mark.parametrize("case", [
    "dir-writable-by-all", "dir-writable-by-others", "dir-writable-by-group", "dir-owned-by-user", "file-owned-by-user",
    "file-writable-by-others", "file-writable-by-group", "file-not-executable", "not-a-file",
    "parent-writable-by-others",
])
def test_an_unsafe_copy_is_refused_with_its_reason(base: Path, case: str) -> None:
    parent = _dir(base, "parent", 0o777 if case == "parent-writable-by-others" else 0o755)
    dir_modes = {"dir-writable-by-all": 0o777, "dir-writable-by-others": 0o757, "dir-writable-by-group": 0o775}
    mode = dir_modes.get(case, 0o755)
    d = _dir(parent, "bin", mode, uid=1000 if case == "dir-owned-by-user" else 0)
    target = d / "tool"
    if case == "not-a-file":
        target.mkdir()
    else:
        _exe(target, mode={"file-writable-by-others": 0o757, "file-writable-by-group": 0o775,
                           "file-not-executable": 0o644}.get(case, 0o755))
    if case == "file-owned-by-user":
        os.chown(target, 1000, 1000)
    expected = {
        "dir-writable-by-all": f"{d} is writable by group and others (mode 0777) (on the way to {target})",
        "dir-writable-by-others": f"{d} is writable by others (mode 0757) (on the way to {target})",
        "dir-writable-by-group": f"{d} is writable by group (mode 0775) (on the way to {target})",
        "dir-owned-by-user": f"{d} is owned by uid 1000, not root (on the way to {target})",
        "file-owned-by-user": f"{target} is owned by uid 1000, not root",
        "file-writable-by-others": f"{target} is writable by others (mode 0757)",
        "file-writable-by-group": f"{target} is writable by group (mode 0775)",
        "file-not-executable": f"{target} is not executable",
        "not-a-file": f"{target} is not a regular file",
        "parent-writable-by-others": f"{parent} is writable by group and others (mode 0777) (on the way to {target})",
    }[case]
    path, reason = trusted_binary("tool", [str(d)])
    assert path is None
    assert f"{target} is not used: {expected}" in reason, reason
    assert reason.startswith("tool is not installed in a root-owned system directory")


def test_symlinks_are_followed_and_every_hop_is_checked(base: Path) -> None:
    """``/usr/bin/bwrap`` may be a symlink: the target's chain must be root-only too, and so must
    every directory a link passes through on the way (relative links and ``..`` included)."""
    bin_dir, real, unsafe = _dir(base, "bin"), _dir(base, "libexec"), _dir(base, "unsafe", 0o777)
    _exe(real / "tool-real")
    (bin_dir / "tool").symlink_to("../libexec/tool-real")
    assert trusted_binary("tool", [str(bin_dir)]) == (str(bin_dir / "tool"), "")

    (bin_dir / "tool").unlink()
    _exe(unsafe / "tool-real")
    (bin_dir / "tool").symlink_to(unsafe / "tool-real")
    path, reason = trusted_binary("tool", [str(bin_dir)])
    assert path is None
    assert f"{unsafe} is writable by group and others (mode 0777) (on the way to {bin_dir / 'tool'})" in reason

    # A safe end, but reached through a link that sits in a writable directory: refused.
    (bin_dir / "tool").unlink()
    (unsafe / "hop").symlink_to(real / "tool-real")
    (bin_dir / "tool").symlink_to(unsafe / "hop")
    path, reason = trusted_binary("tool", [str(bin_dir)])
    assert path is None and f"{unsafe} is writable by group and others" in reason

    # A link owned by someone else is refused (its owner is not root).
    (bin_dir / "tool").unlink()
    (bin_dir / "tool").symlink_to(real / "tool-real")
    os.chown(bin_dir / "tool", 1000, 1000, follow_symlinks=False)
    path, reason = trusted_binary("tool", [str(bin_dir)])
    assert path is None and f"{bin_dir / 'tool'} is owned by uid 1000, not root" in reason

    (bin_dir / "tool").unlink()
    (bin_dir / "tool").symlink_to("tool")
    path, reason = trusted_binary("tool", [str(bin_dir)])
    assert path is None and "too many levels of symbolic links" in reason

    (bin_dir / "tool").unlink()
    (bin_dir / "tool").symlink_to(base / "missing" / "tool")
    path, reason = trusted_binary("tool", [str(bin_dir)])
    assert path is None and f"{base / 'missing'} cannot be examined" in reason


def test_a_sticky_shared_directory_holds_root_entries_safely(base: Path) -> None:
    """As NixOS's ``/nix/store`` (1775) or ``/tmp`` (1777): others may add entries, but only root
    may replace a root-owned one. Another owner's entry there is refused."""
    store = _dir(base, "store", 0o1777)
    pkg = _dir(store, "bubblewrap-0.8")
    _exe(pkg / "tool")
    link_dir = _dir(base, "sw-bin")
    (link_dir / "tool").symlink_to(pkg / "tool")
    assert trusted_binary("tool", [str(link_dir)]) == (str(link_dir / "tool"), "")
    os.chown(pkg, 1000, 1000)
    path, reason = trusted_binary("tool", [str(link_dir)])
    assert path is None and f"{pkg} is owned by uid 1000, not root" in reason


def test_the_system_bwrap_here_is_trusted() -> None:
    need(os.path.exists(SYSTEM_BWRAP), f"{SYSTEM_BWRAP} is needed (apt-get install bubblewrap)")
    path, reason = trusted_binary("bwrap")
    assert (path, reason) == (SYSTEM_BWRAP, "")


# -- what a failing start means --------------------------------------------------------------------

def test_apparmor_restriction_says_so_and_gives_the_ubuntu_fixes() -> None:
    cause, fix = classify_bwrap_failure("bwrap: setting up uid map: Permission denied\n")
    assert "bwrap: setting up uid map: Permission denied" in cause and "restricted" in cause
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in fix and "AppArmor profile" in fix


@pytest.mark.parametrize("line", [
    # bwrap >= 0.5
    "bwrap: No permissions to create new namespace, likely because the kernel does not allow non-privileged user "
    "namespaces. See <https://deb.li/bubblewrap> or <file:///usr/share/doc/bubblewrap/README.Debian.gz>.",
    # older bwrap
    "bwrap: No permissions to creating new namespace, likely because the kernel does not allow non-privileged user "
    "namespaces. On e.g. debian this can be enabled with 'sysctl kernel.unprivileged_userns_clone=1'.",
    # root in a container whose seccomp profile refuses clone(CLONE_NEWUSER)
    "bwrap: Creating new namespace failed: Operation not permitted",
    "bwrap: unshare user ns: Operation not permitted",
])
def test_blocked_user_namespaces_say_how_to_allow_them(line: str) -> None:
    cause, fix = classify_bwrap_failure(line + "\n")
    assert line in cause and "namespace" in cause
    assert "sysctl kernel.unprivileged_userns_clone=1" in fix
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in fix
    assert "container" in fix and "seccomp" in fix


def test_no_user_namespaces_left_or_none_in_the_kernel() -> None:
    cause, fix = classify_bwrap_failure("bwrap: Creating new namespace failed: No space left on device\n")
    assert "limit" in cause and "user.max_user_namespaces" in fix
    cause, fix = classify_bwrap_failure(
        "bwrap: Creating new namespace failed, likely because the kernel does not support user namespaces.  "
        "bwrap must be installed setuid on such systems.\n")
    assert "no user namespaces" in cause and "CONFIG_USER_NS" in fix


def test_cannot_mount_proc_is_not_a_namespace_problem() -> None:
    line = "bwrap: Can't mount proc on /newroot/proc: Operation not permitted"
    cause, fix = classify_bwrap_failure(line + "\n")
    assert line in cause and "/proc" in cause and "not a user namespace problem" in cause
    assert "sysctl" not in fix and "empty /proc" in fix


@pytest.mark.parametrize("line", [
    "bwrap: loopback: Failed RTM_NEWADDR: Operation not permitted",
    "bwrap: loopback: Failed RTM_NEWLINK: Operation not permitted",
    "bwrap: loopback: Failed RTM_NEWADDR: File exists",  # gVisor: lo is already configured
])
def test_loopback_failures_are_a_network_namespace_problem(line: str) -> None:
    cause, fix = classify_bwrap_failure(line + "\n")
    assert line in cause and "network namespace" in cause
    assert "sysctl" not in fix and "lo" in fix


def test_an_unknown_failure_quotes_bwrap() -> None:
    cause, _ = classify_bwrap_failure("bwrap: something new\nbwrap: and its last line\n", 1)
    assert cause == "bwrap fails here (bwrap: and its last line)"
    assert classify_bwrap_failure("", 1)[0] == "bwrap fails here (exit 1)"


def _fake_bwrap(base: Path, body: str) -> tuple[Path, Path]:
    """A root-owned stand-in for the system bwrap (a script that logs each start), in a root-only
    directory that the probe is told to search: the probe's own logic, end to end."""
    d = _dir(base, "sbin")
    log = base / "starts.log"
    _exe(d / "bwrap", f'#!/bin/sh\necho "$*" >> {log}\n{body}\n')
    return d, log


def test_the_probe_starts_bwrap_once_when_it_works(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, log = _fake_bwrap(base, "exit 0")
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(d))
    status = probe_bwrap()
    assert status == facts.BackendStatus("bwrap", True, "", str(d / "bwrap"))
    assert len(log.read_text().splitlines()) == 1


def test_the_probe_retries_without_proc_only_on_a_proc_failure(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, log = _fake_bwrap(base, textwrap.dedent("""\
        case " $* " in *" --proc /proc "*)
            echo "bwrap: Can't mount proc on /newroot/proc: Operation not permitted" >&2; exit 1;;
        esac
        exit 0"""))
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(d))
    status = probe_bwrap()
    assert status.available and not status.proc and status.path == str(d / "bwrap")
    assert "Can't mount proc on /newroot/proc" in status.proc_reason
    starts = log.read_text().splitlines()
    assert len(starts) == 2 and "--proc /proc" in starts[0]
    assert "--proc" not in starts[1].split() and "--tmpfs /proc" in starts[1]


def test_when_the_retry_fails_too_its_cause_is_reported(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, log = _fake_bwrap(base, textwrap.dedent("""\
        case " $* " in *" --proc /proc "*)
            echo "bwrap: Can't mount proc on /newroot/proc: Operation not permitted" >&2; exit 1;;
        esac
        echo "bwrap: loopback: Failed RTM_NEWADDR: Operation not permitted" >&2; exit 1"""))
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(d))
    status = probe_bwrap()
    assert not status.available and "network namespace" in status.reason and "RTM_NEWADDR" in status.reason
    assert len(log.read_text().splitlines()) == 2


def test_a_namespace_failure_is_one_start_with_its_own_fix(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, log = _fake_bwrap(base, 'echo "bwrap: setting up uid map: Permission denied" >&2; exit 1')
    monkeypatch.setenv(BWRAP_DIRS_ENV, str(d))
    status = probe_bwrap()
    assert not status.available and status.path == str(d / "bwrap")
    assert "setting up uid map: Permission denied" in status.reason
    assert "apparmor_restrict_unprivileged_userns=0" in status.reason
    assert len(log.read_text().splitlines()) == 1


# -- the /proc fallback, for real --------------------------------------------------------------------

#: Run inside a private mount namespace whose /proc has a covered part: probe, then run a task.
_INSIDE = textwrap.dedent("""\
    import dataclasses, json, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    from support import wrappers
    from sandfleet_agent.backends.bwrap import Bwrap
    from sandfleet_agent.binding.bind import BoundPolicy, Rule
    from sandfleet_agent.binding.facts import HostFacts, probe_bwrap
    from sandfleet_agent.portable.intent import Access, NetworkPolicy

    status = probe_bwrap()
    out = {"status": dataclasses.asdict(status)}
    if status.available:
        facts = HostFacts(os="linux", home="/root", tmpdir="/tmp", backends=(status,))
        policy = BoundPolicy(os="linux", rules=(Rule("/", Access.READ, "t"),), cwd="/", network=NetworkPolicy())
        script = "echo entries=$(ls -A /proc | wc -l); touch /proc/x 2>/dev/null || echo proc-read-only; echo ran"
        backend = Bwrap(facts)
        wrapper = backend.render(policy, ["/bin/sh", "-c", script])
        proc = wrappers.run(wrapper, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                            env={"PATH": "/usr/bin:/bin"})
        out.update(argv=list(wrapper.argv), notes=list(backend.plan(policy).notes), rc=proc.returncode,
                   stdout=proc.stdout, stderr=proc.stderr)
    print(json.dumps(out))
""")


def _covered_proc_dir() -> str:
    """A non-empty /proc directory other than /proc/sys (bwrap reads /proc/sys/kernel/overflowuid)."""
    for name in ("fs", "bus", "irq", "tty", "driver", "sysvipc"):
        path = f"/proc/{name}"
        if os.path.isdir(path) and os.listdir(path):
            return path
    pytest.skip("no non-empty /proc subdirectory to cover")


@pytest.mark.parametrize("cover", ["tmpfs-over-subdir", "docker-read-only-proc-sys"])
def test_where_proc_cannot_be_mounted_tasks_run_with_an_empty_proc(cover: str) -> None:
    _need_root()
    need(shutil.which("unshare") is not None and shutil.which("mount") is not None, "unshare and mount (util-linux)")
    need(probe_bwrap().available, "bwrap must work here first")
    if cover == "tmpfs-over-subdir":
        setup = f"mount -t tmpfs sandfleet-test {_covered_proc_dir()}"
    else:  # what Docker does: /proc/sys bound on itself read-only
        setup = "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop(BWRAP_DIRS_ENV, None)
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{setup} && exec "$@"', "sh",
         sys.executable, "-c", _INSIDE, str(ROOT / "tests")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    status = facts.BackendStatus(**out["status"])
    assert status.available and status.path == SYSTEM_BWRAP, status
    assert not status.proc and "Can't mount proc" in status.proc_reason and "/proc" in status.proc_reason
    assert dataclasses.replace(status, proc=True, proc_reason="") == facts.BackendStatus("bwrap", True, "",
                                                                                           SYSTEM_BWRAP)
    argv = out["argv"]
    assert "--proc" not in argv and any(argv[i:i + 2] == ["--tmpfs", "/proc"] for i in range(len(argv)))
    assert any("/proc is empty inside" in note for note in out["notes"])
    assert out["rc"] == 0, out["stderr"]
    assert out["stdout"].split() == ["entries=0", "proc-read-only", "ran"]
