"""bwrap backend: golden argv cases (data files), and real enforcement under bubblewrap.

Golden cases live in ``cases/bwrap/*.json``, one per case: a directory layout to create under a
temporary ``$ROOT``, the bound policy, the argv, and the exact wrapper argv expected (or the
refusal). One test reads them all. Enforcement tests run real commands under the rendered
wrapper on the real kernel and check that what the policy forbids really fails. They skip when
bwrap cannot run here, except under ``CI`` where they fail instead (``conftest.need``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandfleet_agent.backends.base import ProxyEndpoint, Refused
from sandfleet_agent.backends.bwrap import Bwrap
from sandfleet_agent.binding.bind import BoundPolicy, LocalFs, Rule, bind
from sandfleet_agent.binding.facts import BackendStatus, HostFacts, probe_bwrap
from sandfleet_agent.binding.hostfs import AssumedFs
from sandfleet_agent.network import netns
from sandfleet_agent.portable import globs
from sandfleet_agent.portable.intent import PROFILES, Access, NetworkMode, NetworkPolicy, SandboxIntent
from support import wrappers
from support.ci import need

CASES = sorted((Path(__file__).parent / "cases" / "bwrap").glob("*.json"))
PY = "/usr/bin/python3"  # outside /root, so the unprivileged user can run it too
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
TIMEOUT = 30


# -- golden cases ------------------------------------------------------------------------------

def _subst(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return value.replace("$ROOT", root)
    if isinstance(value, list):
        return [_subst(v, root) for v in value]
    if isinstance(value, dict):
        return {_subst(k, root): _subst(v, root) for k, v in value.items()}
    return value


def _make_layout(root: Path, layout: dict[str, Any]) -> None:
    for d in layout.get("dirs", ()):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in layout.get("files", ()):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("content of " + f)
    for link, target in layout.get("symlinks", {}).items():
        (root / link).symlink_to(target)


def _snapshot(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*"))


def _facts(bwrap_path: str | None = "/usr/bin/bwrap", available: bool = True, **kw: Any) -> HostFacts:
    return HostFacts(os="linux", home="/home/user", tmpdir="/tmp",
                     backends=(BackendStatus("bwrap", available, "" if available else "not installed",
                                             bwrap_path),), **kw)


def _policy(spec: dict[str, Any]) -> BoundPolicy:
    return BoundPolicy(
        os="linux",
        rules=tuple(Rule(path, Access(access), "case") for path, access in spec["rules"]),
        cwd=spec["cwd"],
        network=NetworkPolicy(NetworkMode(spec.get("network", "none"))),
        minimal_read=spec.get("minimal_read", False),
        deny_globs=tuple(spec.get("deny_globs", ())),
    )


@pytest.mark.parametrize("case_file", CASES, ids=[c.stem for c in CASES])
def test_golden_case(case_file: Path, tmp_path: Path) -> None:
    root = tmp_path.resolve()
    case = _subst(json.loads(case_file.read_text(encoding="utf-8")), str(root))
    _make_layout(root, case["layout"])
    before = _snapshot(root)
    backend = Bwrap(_facts(case["facts"]["bwrap"]), platform_read=case.get("platform_read"))
    policy = _policy(case["policy"])
    if "refused" in case:
        with pytest.raises(Refused) as exc:
            backend.render(policy, case["argv"])
        assert case["refused"] in str(exc.value)
        return
    wrapper = backend.render(policy, case["argv"])
    assert list(wrapper.argv) == case["expected"]
    plan = backend.plan(policy)
    assert list(plan.notes) == case.get("notes", [])
    assert list(plan.placeholders) == case.get("placeholders", [])
    assert _snapshot(root) == before, "rendering must not touch the host"
    _bwrap_accepts(wrapper.argv[:-len(case["argv"])])


def _bwrap_accepts(prefix: tuple[str, ...]) -> None:
    """The real bwrap sets the golden sandbox up (the command itself may be absent inside)."""
    status = _bwrap_status()
    if not status.available:
        return  # the enforcement tests below report (CI: fail) that bwrap cannot run
    proc = wrappers.run_wrapper([status.path or "bwrap", *prefix[1:], "/bin/true"], capture_output=True,
                                text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 or "execvp /bin/true" in proc.stderr, proc.stderr


@functools.cache
def _bwrap_status() -> BackendStatus:
    return probe_bwrap()


def test_there_are_enough_golden_cases() -> None:
    assert len(CASES) >= 10


# -- rendering without a sandbox ---------------------------------------------------------------

def _ro_policy(cwd: str = "/", **kw: Any) -> BoundPolicy:
    return BoundPolicy(os="linux", rules=(Rule("/", Access.READ, "t"),), cwd=cwd, network=NetworkPolicy(), **kw)


def test_missing_or_broken_bwrap_is_refused_with_its_reason() -> None:
    with pytest.raises(Refused, match="not installed"):
        Bwrap(_facts(None, available=False)).render(_ro_policy(), ["true"])
    no_probe = HostFacts(os="linux", home="/root", tmpdir="/tmp")
    with pytest.raises(Refused, match="not probed"):
        Bwrap(no_probe).render(_ro_policy(), ["true"])


def test_policy_bound_for_another_os_is_refused() -> None:
    policy = BoundPolicy(os="macos", rules=(Rule("/", Access.READ, "t"),), cwd="/", network=NetworkPolicy())
    with pytest.raises(Refused, match="Linux policies only"):
        Bwrap(_facts()).render(policy, ["true"])


def test_empty_argv_is_an_error() -> None:
    with pytest.raises(ValueError):
        Bwrap(_facts()).render(_ro_policy(), [])


def test_dry_run_assumes_paths_and_leaves_globs_to_the_host() -> None:
    facts = _facts(None, assumed=True)
    policy = BoundPolicy(os="linux", rules=(Rule("/srv/ws", Access.WRITE, "t"),), cwd="/srv/ws",
                         network=NetworkPolicy(), minimal_read=True, deny_globs=("/srv/ws/**/*.pem",))
    backend = Bwrap(facts, platform_read=["/usr", "/lib32"])
    assert type(backend.paths) is AssumedFs
    argv = backend.render(policy, ["make"]).argv
    assert argv[0] == "bwrap"
    text = " ".join(argv)
    assert "--tmpfs / --dev /dev --mqueue /dev/mqueue --proc /proc " in text
    assert "/proc/key-users --ro-bind-try /lib32 /lib32 --ro-bind-try /usr /usr " \
        "--bind /srv/ws /srv/ws --remount-ro / --chdir /srv/ws -- make" in text
    assert backend.plan(policy).notes == ("deny glob /srv/ws/**/*.pem is expanded on the host when the task runs",)


def test_managed_network_wiring() -> None:
    """The netns helper comes first and hands the sandbox's listener to the proxy at the
    endpoint; bwrap gets the proxy variables and no ``--unshare-net`` (it shares the helper's
    namespace). A dry-run for another host names its agent's interpreter and copy nominally."""
    policy = BoundPolicy(os="linux", rules=(Rule("/", Access.READ, "t"),), cwd="/",
                         network=NetworkPolicy(NetworkMode.MANAGED, ("pypi.org",)))
    proxy = ProxyEndpoint(3128, "/tmp/sfnet-x/proxy.sock")
    argv = Bwrap(_facts(), proxy).render(policy, ["pip", "download", "requests"]).argv
    helper = (sys.executable, "-I", "-S", os.path.abspath(netns.__file__), "--port", "3128", "--handoff",
              "/tmp/sfnet-x/proxy.sock", "--", "/usr/bin/bwrap")
    assert argv[:len(helper)] == helper
    assert "--unshare-net" not in argv
    setenv = [argv[i + 1:i + 3] for i, word in enumerate(argv) if word == "--setenv"]
    assert ("HTTPS_PROXY", "http://127.0.0.1:3128") in setenv and ("NO_PROXY", "localhost,127.0.0.1,::1") in setenv
    assert argv.index("--setenv") < argv.index("--chdir") < argv.index("pip")
    dry = Bwrap(_facts(assumed=True), proxy).render(policy, ["true"]).argv
    assert dry[:4] == ("python3", "-I", "-S", "<agent>/netns.py")


def test_deny_glob_with_too_many_matches_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(6):
        (tmp_path / f"{i}.key").write_text("")
    monkeypatch.setattr(globs, "MAX_GLOB_MATCHES", 5)
    policy = _ro_policy(deny_globs=(f"{tmp_path}/*.key",))
    with pytest.raises(Refused, match="matches more than 5 paths"):
        Bwrap(_facts()).plan(policy)


def test_deny_glob_scanning_too_much_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(6):
        (tmp_path / f"d{i}").mkdir()
    monkeypatch.setattr(globs, "MAX_GLOB_SCAN", 5)
    with pytest.raises(Refused, match="scans more than 5 entries"):
        Bwrap(_facts()).plan(_ro_policy(deny_globs=(f"{tmp_path}/**/*.key",)))


def test_deny_glob_anchored_at_the_filesystem_root_is_refused() -> None:
    with pytest.raises(Refused, match="whole filesystem"):
        Bwrap(_facts()).plan(_ro_policy(deny_globs=("/**/*.pem",)))


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("**/*.env", ".env", True),
    ("**/*.env", "a/b/c.env", True),
    ("**/*.env", "a/b/c.env.txt", False),
    ("*/file[0-9]?.txt", "x/file1a.txt", True),
    ("*/file[0-9]?.txt", "x/y/file1a.txt", False),
    ("*/file[!0-9].txt", "x/filea.txt", True),
    ("*/file[!0-9].txt", "x/file1.txt", False),
    ("[*.env", "[x.env", True),
    ("secrets/**", "secrets/a/b", True),
    ("secrets/**", "secrets", False),
    ("a--b[x--z]", "a--by", False),
    ("id_*", ".id_rsa", False),
    ("*", ".hidden", True),
])
def test_glob_translation_is_git_style(pattern: str, path: str, matches: bool) -> None:
    import re

    regex = re.compile(globs._glob_regex(pattern.split("/")))
    assert bool(regex.fullmatch(path)) is matches


# -- enforcement under real bubblewrap ---------------------------------------------------------

@pytest.fixture(scope="module")
def facts() -> HostFacts:
    status = _bwrap_status()
    need(status.available, status.reason or "bwrap is not available")
    return HostFacts(os="linux", home=os.path.expanduser("~"), tmpdir=tempfile.gettempdir(), backends=(status,))


@pytest.fixture
def root() -> Iterator[Path]:
    """A temp tree every user may traverse (pytest's tmp dir is private to root), outside
    ``/tmp`` because the workspace profile makes ``/tmp`` writable."""
    path = Path(tempfile.mkdtemp(prefix="sandfleet-bwrap-", dir="/var/tmp")).resolve()
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _unprivileged() -> list[str]:
    """Prefix that drops to ``nobody`` when we are root; empty when we already are unprivileged."""
    if os.geteuid() != 0:
        return []
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to drop to nobody")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def run(facts: HostFacts, policy: BoundPolicy, argv: list[str], as_nobody: bool = False,
        ) -> subprocess.CompletedProcess[str]:
    wrapper = Bwrap(facts).render(policy, argv)
    prefix = _unprivileged() if as_nobody else []
    return wrappers.run(wrapper, prefix, capture_output=True, text=True, timeout=TIMEOUT, env=ENV,
                        stdin=subprocess.DEVNULL)


def probe_ops(facts: HostFacts, policy: BoundPolicy, ops: dict[str, str], as_nobody: bool = False,
              ) -> dict[str, str]:
    """Run each Python statement in ``ops`` inside one sandbox: ``OK`` or the errno name."""
    script = textwrap.dedent("""
        import errno, json, os, socket, sys
        out = {}
        for name, stmt in json.loads(sys.argv[1]).items():
            try:
                exec(stmt)
                out[name] = "OK"
            except OSError as exc:
                out[name] = errno.errorcode.get(exc.errno, str(exc))
        print(json.dumps(out))
    """)
    proc = run(facts, policy, [PY, "-I", "-c", script, json.dumps(ops)], as_nobody)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def write(path: Path | str) -> str:
    return f"open({str(path)!r}, 'w').write('x')"


def read(path: Path | str) -> str:
    return f"open({str(path)!r}).read()"


def policy_of(cwd: Path | str, *rules: tuple[Path | str, Access], network: NetworkMode = NetworkMode.NONE,
              **kw: Any) -> BoundPolicy:
    ordered = sorted(rules, key=lambda r: (len(Path(r[0]).parts), str(r[0])))
    return BoundPolicy(os="linux", rules=tuple(Rule(str(p), a, "test") for p, a in ordered), cwd=str(cwd),
                       network=NetworkPolicy(network), **kw)


def test_workspace_writes_only_inside_and_git_stays_read_only(facts: HostFacts, root: Path) -> None:
    ws, outside = root / "ws", root / "outside"
    (ws / ".git" / "hooks").mkdir(parents=True)
    outside.mkdir()
    policy = policy_of(ws, ("/", Access.READ), (ws, Access.WRITE), (ws / ".git", Access.READ))
    got = probe_ops(facts, policy, {
        "inside": write(ws / "new.txt"),
        "outside": write(outside / "x"),
        "etc": write("/etc/sandfleet-test"),
        "hook": write(ws / ".git" / "hooks" / "pre-commit"),
        "git_rename": f"os.rename({str(ws / '.git')!r}, {str(ws / 'moved')!r})",
        "usr": "os.listdir('/usr')",
    })
    assert got == {"inside": "OK", "outside": "EROFS", "etc": "EROFS", "hook": "EROFS",
                   "git_rename": "EBUSY", "usr": "OK"}
    assert (ws / "new.txt").read_text() == "x"
    assert not (outside / "x").exists()
    assert list((ws / ".git" / "hooks").iterdir()) == []


def test_missing_git_cannot_be_created(facts: HostFacts, root: Path) -> None:
    ws = root / "ws"
    ws.mkdir()
    policy = policy_of(ws, ("/", Access.READ), (ws, Access.WRITE), (ws / ".git", Access.READ),
                       (ws / "blocked", Access.READ))
    got = probe_ops(facts, policy, {
        "hooks": f"os.makedirs({str(ws / '.git' / 'hooks')!r})",
        "config": write(ws / ".git" / "config"),
        "remove": f"os.rmdir({str(ws / '.git')!r})",
        "blocked": write(ws / "blocked"),
        "ok": write(ws / "ok"),
    })
    assert got == {"hooks": "EROFS", "config": "EROFS", "remove": "EBUSY", "blocked": "EACCES", "ok": "OK"}
    # bwrap leaves the empty mount points behind (MountPlan.placeholders), nothing in them.
    assert list((ws / ".git").iterdir()) == []
    assert (ws / "blocked").read_bytes() == b""


def test_denied_file_and_dir_cannot_be_read(facts: HostFacts, root: Path) -> None:
    (root / "secret").mkdir()
    (root / "secret" / "f").write_text("s3cret")
    (root / "key.pem").write_text("s3cret")
    (root / "public").write_text("fine")
    policy = policy_of(root, ("/", Access.READ), (root / "secret", Access.DENY), (root / "key.pem", Access.DENY))
    got = probe_ops(facts, policy, {
        "file": read(root / "key.pem"),
        "list": f"os.listdir({str(root / 'secret')!r})",
        "in_dir": read(root / "secret" / "f"),
        "public": read(root / "public"),
    })
    assert got == {"file": "EACCES", "list": "EACCES", "in_dir": "EACCES", "public": "OK"}


def test_deny_glob_masks_existing_matches(facts: HostFacts, root: Path) -> None:
    ws = root / "ws"
    (ws / "app").mkdir(parents=True)
    for name in (".env", "app/config.env", "app/env.txt"):
        (ws / name).write_text("s3cret")
    policy = policy_of(ws, ("/", Access.READ), (ws, Access.WRITE), deny_globs=(f"{ws}/**/*.env",))
    got = probe_ops(facts, policy, {
        "dotenv": read(ws / ".env"),
        "nested": read(ws / "app" / "config.env"),
        "overwrite": write(ws / ".env"),
        "other": read(ws / "app" / "env.txt"),
    })
    assert got == {"dotenv": "EACCES", "nested": "EACCES", "overwrite": "EACCES", "other": "OK"}
    assert (ws / ".env").read_text() == "s3cret"


def test_denied_dir_with_a_writable_child(facts: HostFacts, root: Path) -> None:
    home = root / "home"
    (home / "ws").mkdir(parents=True)
    (home / "other").mkdir()
    (home / "other" / "f").write_text("s3cret")
    policy = policy_of(home / "ws", ("/", Access.READ), (home, Access.DENY), (home / "ws", Access.WRITE))
    got = probe_ops(facts, policy, {
        "child": write(home / "ws" / "ok"),
        "list": f"os.listdir({str(home)!r})",
        "sibling": read(home / "other" / "f"),
        "new": write(home / "new"),
    })
    assert got == {"child": "OK", "list": "EACCES", "sibling": "ENOENT", "new": "EROFS"}


@pytest.mark.parametrize(("mode", "expected"), [(NetworkMode.NONE, "ECONNREFUSED"), (NetworkMode.FULL, "OK")])
def test_network_to_a_host_listener(facts: HostFacts, root: Path, mode: NetworkMode, expected: str) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(TIMEOUT)
        port = server.getsockname()[1]
        accepted: list[bytes] = []

        def serve() -> None:
            try:
                conn, _ = server.accept()
                with conn:
                    accepted.append(conn.recv(16))
            except OSError:
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        connect = f"s = socket.create_connection(('127.0.0.1', {port}), timeout=5); s.sendall(b'hi'); s.close()"
        got = probe_ops(facts, policy_of(root, ("/", Access.READ), network=mode), {"connect": connect})
        if expected == "OK":
            thread.join(TIMEOUT)
            assert accepted == [b"hi"]
    assert got == {"connect": expected}


def test_minimal_restricted_reads(facts: HostFacts, root: Path) -> None:
    ws, tmp, secret = root / "ws", root / "tmpdir", root / "secret.txt"
    ws.mkdir()
    tmp.mkdir()
    secret.write_text("s3cret")
    policy = policy_of(ws, (ws, Access.WRITE), (tmp, Access.WRITE), minimal_read=True)
    got = probe_ops(facts, policy, {
        "usr": "os.listdir('/usr')",
        "etc": read("/etc/passwd"),
        "tmpdir": write(tmp / "t"),
        "ws": write(ws / "w"),
        "outside": read(secret),
        "home": f"os.listdir({os.path.expanduser('~')!r})",
        "root_write": write("/new-file"),
    })
    assert got == {"usr": "OK", "etc": "OK", "tmpdir": "OK", "ws": "OK", "outside": "ENOENT",
                   "home": "ENOENT", "root_write": "EROFS"}


def test_full_access_is_still_namespaced_and_capability_free(facts: HostFacts, root: Path) -> None:
    policy = policy_of(root, ("/", Access.WRITE), network=NetworkMode.FULL)
    script = "import os; print(os.getpid()); print(open('/proc/self/status').read())"
    proc = run(facts, policy, [PY, "-I", "-c", script])
    assert proc.returncode == 0, proc.stderr
    pid, status = proc.stdout.split("\n", 1)
    assert int(pid) < 10  # a fresh pid namespace
    assert "CapEff:\t0000000000000000" in status
    got = probe_ops(facts, policy, {"write": write(root / "f")})
    assert got == {"write": "OK"}


def test_root_in_the_sandbox_cannot_unmount_a_mask(facts: HostFacts, root: Path) -> None:
    """bwrap started by root keeps all capabilities unless told otherwise; ``--cap-drop ALL``
    is what stops ``umount`` from revealing a denied dir."""
    (root / "secret").mkdir()
    (root / "secret" / "f").write_text("s3cret")
    policy = policy_of(root, ("/", Access.READ), (root / "secret", Access.DENY))
    need(shutil.which("umount") is not None, "umount (util-linux) is needed")
    proc = run(facts, policy, ["sh", "-c", f"umount {root}/secret; umount -l {root}/secret; cat {root}/secret/f"])
    assert proc.returncode != 0
    assert "s3cret" not in proc.stdout


def test_unprivileged_user_is_confined_too(facts: HostFacts, root: Path) -> None:
    ws, outside = root / "ws", root / "outside"
    ws.mkdir()
    outside.mkdir()
    (root / "secret").mkdir()
    (root / "secret" / "f").write_text("s3cret")
    for path in (ws, outside):
        path.chmod(0o777)
    policy = policy_of(ws, ("/", Access.READ), (ws, Access.WRITE), (ws / ".git", Access.READ),
                       (root / "secret", Access.DENY))
    got = probe_ops(facts, policy, {
        "uid": "assert os.getuid() != 0 or sys.exit('still root')",
        "inside": write(ws / "ok"),
        "outside": write(outside / "x"),
        "git": f"os.makedirs({str(ws / '.git' / 'hooks')!r})",
        "secret": read(root / "secret" / "f"),
    }, as_nobody=True)
    assert got == {"uid": "OK", "inside": "OK", "outside": "EROFS", "git": "EROFS", "secret": "EACCES"}
    if shutil.which("unshare"):
        # A nested user namespace gets CAP_SYS_ADMIN, but the masks are locked into it.
        proc = run(facts, policy, ["unshare", "-Urm", "sh", "-c", f"umount {root}/secret; cat {root}/secret/f"],
                   as_nobody=True)
        assert "s3cret" not in proc.stdout


def test_bound_workspace_profile_end_to_end(facts: HostFacts, root: Path) -> None:
    """The real path: the built-in ``workspace`` profile bound on this host, then rendered."""
    ws, tmp = root / "ws", root / "tmp"
    (ws / ".git").mkdir(parents=True)
    tmp.mkdir()
    host = HostFacts(os="linux", home=str(root), tmpdir=str(tmp), workspace_roots=(str(ws),),
                     backends=facts.backends)
    policy = bind(SandboxIntent(PROFILES["workspace"]), host, fs=LocalFs())
    got = probe_ops(facts, policy, {
        "ws": write(ws / "a"),
        "tmpdir": write(tmp / "b"),
        "git": write(ws / ".git" / "config"),
        "home": write(root / "c"),
    })
    assert got == {"ws": "OK", "tmpdir": "OK", "git": "EROFS", "home": "EROFS"}


def test_host_global_proc_files_are_covered_when_the_agent_is_root() -> None:
    """uid 0 in bwrap's user namespace is the host's root for /proc/sys's permission check; any
    other agent user cannot write those files anyway, and its sandboxes skip the five mounts."""
    policy = BoundPolicy(os="linux", rules=(Rule("/", Access.READ, "t"),), cwd="/", network=NetworkPolicy())
    as_root = Bwrap(_facts(euid=0)).render(policy, ["true"]).argv
    as_user = Bwrap(_facts(euid=1000)).render(policy, ["true"]).argv
    assert "/proc/sys" in as_root and "/proc/sysrq-trigger" in as_root
    assert "/proc/sys" not in as_user and "/proc/keys" in as_user and "/proc/keys" in as_root
