"""Landlock backend: ruleset format, and real kernel enforcement on sandboxed subprocesses.

Landlock restricts the calling process for good, so every enforcement test applies it only in
a child (``preexec_fn`` or the ``landlock_exec`` CLI), never in the pytest process. Tests that
need the kernel skip when Landlock is missing, except under ``CI`` where they fail instead.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from sandfleet_agent.linux import landlock_ruleset as landlock
from sandfleet_agent.linux.landlock_ruleset import (
    FsRule,
    LandlockRuleset,
    LandlockUnavailable,
    NetRules,
    RulesetError,
)

TIMEOUT = 30


def require_abi(needed: int) -> None:
    abi = landlock.landlock_abi()
    if abi >= needed:
        return
    message = f"needs Landlock ABI {needed}, this kernel has {abi}: {landlock.unavailable_reason()}"
    if os.environ.get("CI"):
        pytest.fail(f"CI must not skip: {message}")
    pytest.skip(message)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def ruleset(ws: Path, *, abi: int = 7, net: NetRules | None = None, scope=(), extra=()) -> LandlockRuleset:
    fs = (FsRule("/", "read"), FsRule(str(ws), "write"), FsRule("/dev/null", "write"), *extra)
    return LandlockRuleset(abi=abi, fs=fs, net=net, scope=tuple(scope))


def run_sandboxed(rs: LandlockRuleset, argv: list[str]) -> subprocess.CompletedProcess[str]:
    with landlock.prepare(rs) as prepared:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=TIMEOUT, **prepared.popen_kwargs()
        )


def run_py(rs: LandlockRuleset, body: str) -> str:
    """Run ``body`` in a sandboxed Python; returns its last stdout line: ``OK`` or an errno name."""
    script = "import errno, os, sys\ntry:\n" + textwrap.indent(textwrap.dedent(body), "    ")
    script += "\n    print('OK')\nexcept OSError as exc:\n    print(errno.errorcode[exc.errno])\n"
    proc = run_sandboxed(rs, [sys.executable, "-I", "-c", script])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


# -- the ruleset format --------------------------------------------------------------------------

EXAMPLE = {
    "abi": 7,
    "fs": [
        {"path": "/", "access": "read"},
        {"path": "/work/ws", "access": "write"},
        {"path": "/dev/null", "access": "write"},
    ],
    "net": {"tcp_connect": [], "tcp_bind": []},
    "scope": ["abstract_unix_socket", "signal"],
    "sockets": "none",
}


def test_example_json_round_trips():
    rs = LandlockRuleset.from_json(json.dumps(EXAMPLE))
    assert rs.abi == 7
    assert rs.fs[1] == FsRule("/work/ws", "write")
    assert rs.net == NetRules()
    assert rs.scope == ("abstract_unix_socket", "signal")
    assert json.loads(rs.to_json()) == EXAMPLE
    assert LandlockRuleset.from_json(rs.to_json(indent=2)) == rs


def test_net_null_and_hostile_paths_round_trip():
    hostile = os.fsdecode(b"/tmp/q\"uo'te $(x) `y`\n\xff\xfe")
    rs = LandlockRuleset(abi=4, fs=(FsRule(hostile, "write"),), net=NetRules((443, 80), (0,)))
    text = rs.to_json()
    assert json.loads(text)["net"] == {"tcp_connect": [443, 80], "tcp_bind": [0]}
    back = LandlockRuleset.from_json(text)
    assert back == rs
    assert os.fsencode(back.fs[0].path) == b"/tmp/q\"uo'te $(x) `y`\n\xff\xfe"
    assert json.loads(LandlockRuleset(abi=7).to_json())["net"] is None


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("net"), "missing net"),
        (lambda d: d.update(extra=1), "unknown extra"),
        (lambda d: d.update(abi=0), "abi must be"),
        (lambda d: d.update(abi=True), "abi must be"),
        (lambda d: d["fs"].append({"path": "rel/x", "access": "read"}), "absolute"),
        (lambda d: d["fs"].append({"path": "/x", "access": "rw"}), "read or write"),
        (lambda d: d["fs"].append({"path": "/x", "access": "read", "x": 1}), "unknown x"),
        (lambda d: d["fs"].append({"path": "/work/ws/", "access": "read"}), "at or beneath the write"),
        (lambda d: d["fs"].append({"path": "/work/ws/.git", "access": "read"}), "at or beneath the write"),
        (lambda d: d.update(net={"tcp_connect": [70000], "tcp_bind": []}), "not a port"),
        (lambda d: d.update(net={"tcp_connect": [True], "tcp_bind": []}), "not a port"),
        (lambda d: d.update(net={"tcp_connect": []}), "missing tcp_bind"),
        (lambda d: d.update(scope=["ptrace"]), "unknown scope"),
        (lambda d: d.update(abi=3), "net rules need abi >= 4"),
        (lambda d: d.update(abi=5), "scopes need abi >= 6"),
    ],
)
def test_malformed_rulesets_are_rejected(mutate, needle):
    data = json.loads(json.dumps(EXAMPLE))
    mutate(data)
    with pytest.raises(RulesetError, match=needle):
        LandlockRuleset.from_json(json.dumps(data))


def test_nested_and_repeated_writes_are_accepted():
    rs = LandlockRuleset(abi=1, fs=(FsRule("/tmp", "write"), FsRule("/tmp/ws", "write"),
                                    FsRule("/tmp", "write"), FsRule("/", "read")))
    assert LandlockRuleset.from_json(rs.to_json()) == rs


def test_invalid_json_is_a_ruleset_error():
    with pytest.raises(RulesetError, match="not valid JSON"):
        LandlockRuleset.from_json("{")


def test_write_rights_per_abi():
    assert landlock.fs_rights(1) == (1 << 13) - 1
    assert landlock.fs_rights(2) & landlock.FS_REFER
    assert not landlock.fs_rights(2) & landlock.FS_TRUNCATE
    assert landlock.fs_rights(3) & landlock.FS_TRUNCATE
    assert not landlock.fs_rights(4) & landlock.FS_IOCTL_DEV
    assert landlock.fs_rights(7) == (1 << 16) - 1
    assert not landlock.fs_rights(8) & landlock.FS_RESOLVE_UNIX
    assert landlock.fs_rights(9) & landlock.FS_RESOLVE_UNIX


def test_unenforced_lists_gaps_by_abi():
    assert any("UDP" in gap for gap in landlock.unenforced(7))
    assert any("truncate" in gap for gap in landlock.unenforced(2))
    assert not any("truncate" in gap for gap in landlock.unenforced(3))
    assert any("pathname UNIX" in gap for gap in landlock.unenforced(8))
    assert not any("pathname UNIX" in gap for gap in landlock.unenforced(9))


# -- refusing what the kernel cannot enforce (faked kernel ABI) ----------------------------------


def test_abi_probe_is_cached_and_never_raises(monkeypatch):
    """One probe syscall however often the ABI and the reason are asked for; a probe that blows up
    gives ABI 0 and its message instead of an exception."""
    assert isinstance(landlock.landlock_abi(), int) and landlock.landlock_abi() >= 0
    calls = []

    def create_ruleset(*args):
        calls.append(args)
        return 5

    def broken(*args):
        raise RuntimeError("probe blew up")

    monkeypatch.setattr(landlock, "_SYS", landlock._Syscalls(create_ruleset, None, None, None))
    landlock._probe.cache_clear()
    try:
        assert [landlock.landlock_abi() for _ in range(3)] == [5, 5, 5]
        assert landlock.unavailable_reason() == ""
        assert len(calls) == 1
        landlock._probe.cache_clear()
        monkeypatch.setattr(landlock, "_SYS", landlock._Syscalls(broken, None, None, None))
        assert landlock.landlock_abi() == 0
        assert landlock.unavailable_reason() == "probe blew up"
    finally:
        landlock._probe.cache_clear()  # the next caller probes this kernel again


def test_ruleset_abi_above_kernel_is_unavailable(ws):
    with pytest.raises(LandlockUnavailable, match=r"needs Landlock ABI 7 \(Linux >= 6.15\).*offers ABI 5"):
        landlock.build(ruleset(ws, abi=7), kernel_abi=5)


def test_net_rules_on_kernel_without_tcp_say_so(ws):
    rs = ruleset(ws, abi=4, net=NetRules())
    with pytest.raises(LandlockUnavailable, match=r"TCP port rules need ABI 4.*offers ABI 3"):
        landlock.build(rs, kernel_abi=3)


def test_scopes_on_old_kernel_say_so(ws):
    rs = ruleset(ws, abi=6, scope=["signal"])
    with pytest.raises(LandlockUnavailable, match=r"scopes need ABI 6.*offers ABI 5"):
        landlock.prepare(rs, kernel_abi=5)


def test_no_landlock_at_all_is_unavailable(ws):
    with pytest.raises(LandlockUnavailable, match="Landlock is not available"):
        landlock.build(ruleset(ws, abi=1), kernel_abi=0)


def test_abi_newer_than_this_module_is_unavailable(ws):
    with pytest.raises(LandlockUnavailable, match="knows rights only up to ABI 9"):
        landlock.build(ruleset(ws, abi=landlock.MAX_ABI + 1), kernel_abi=99)


# -- filesystem enforcement ----------------------------------------------------------------------


def test_write_outside_workspace_is_denied(ws, tmp_path):
    require_abi(1)
    outside = tmp_path / "outside.txt"
    assert run_py(ruleset(ws), f"open({str(outside)!r}, 'w')") == "EACCES"
    assert not outside.exists()


def test_write_inside_workspace_works(ws):
    require_abi(1)
    body = f"""
    os.chdir({str(ws)!r})
    with open('a.txt', 'w') as fh:
        fh.write('hello')
    os.truncate('a.txt', 2)
    os.mkdir('sub')
    os.rename('a.txt', 'sub/b.txt')
    os.symlink('b.txt', 'sub/link')
    os.unlink('sub/link')
    """
    assert run_py(ruleset(ws), body) == "OK"
    assert (ws / "sub" / "b.txt").read_text() == "he"


def test_read_only_file_cannot_be_truncated(ws, tmp_path):
    require_abi(3)
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    assert run_py(ruleset(ws), f"os.truncate({str(victim)!r}, 0)") == "EACCES"
    assert run_py(ruleset(ws), f"os.unlink({str(victim)!r})") == "EACCES"
    assert victim.read_text() == "precious"


def test_read_usr_exec_sh_and_write_dev_null(ws):
    require_abi(1)
    script = "ls /usr >/dev/null && head -c1 /proc/self/status && echo ok"
    proc = run_sandboxed(ruleset(ws), ["/bin/sh", "-c", script])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("ok\n")


def test_device_ioctl_needs_write(ws):
    require_abi(5)
    body = """
    import errno, fcntl, termios
    for dev in ('/dev/null', '/dev/zero'):
        with open(dev, 'rb') as fh:
            try:
                fcntl.ioctl(fh.fileno(), termios.TCGETS, bytes(64))
            except OSError as exc:
                print(dev, errno.errorcode[exc.errno])
    """
    out = run_sandboxed(ruleset(ws), [sys.executable, "-I", "-c", textwrap.dedent(body)]).stdout
    assert "/dev/null ENOTTY" in out  # granted: the driver answers
    assert "/dev/zero EACCES" in out  # read only: Landlock refuses the ioctl


def test_missing_path_is_skipped_not_fatal(ws, tmp_path, caplog):
    require_abi(1)
    missing = str(tmp_path / "does" / "not" / "exist")
    rs = ruleset(ws, extra=(FsRule(missing, "write"), FsRule("/etc/passwd", "read")))
    with landlock.prepare(rs) as prepared:
        assert prepared.skipped == (missing,)
        assert prepared.abi == 7
    with caplog.at_level(logging.INFO, logger=landlock.__name__):
        fd = landlock.build(rs)
    os.close(fd)
    assert missing in caplog.text
    assert run_py(rs, f"open({str(ws / 'x')!r}, 'w')") == "OK"


def test_ruleset_fd_is_not_inherited(ws):
    require_abi(1)
    body = """
    import os
    for name in os.listdir('/proc/self/fd'):
        try:
            print(os.readlink('/proc/self/fd/' + name))
        except OSError:
            pass
    """
    proc = run_sandboxed(ruleset(ws), [sys.executable, "-I", "-c", textwrap.dedent(body)])
    assert proc.returncode == 0, proc.stderr
    assert "landlock" not in proc.stdout


def test_failure_in_child_fails_closed(ws):
    require_abi(1)
    marker = ws / "ran"
    prepared = landlock.prepare(ruleset(ws))
    kwargs = prepared.popen_kwargs()
    prepared.close()  # the child now cannot restrict itself (EBADF)
    with pytest.raises(subprocess.SubprocessError):
        subprocess.run(["/bin/touch", str(marker)], timeout=TIMEOUT, **kwargs)
    assert not marker.exists()


def test_popen_helper(ws):
    require_abi(1)
    with landlock.popen(ruleset(ws), ["/bin/sh", "-c", f"echo hi > {ws}/p; echo x > {ws}/../q"],
                        stderr=subprocess.PIPE) as proc:
        _, err = proc.communicate(timeout=TIMEOUT)
    assert (ws / "p").read_text() == "hi\n"
    assert b"Permission denied" in err
    assert not (ws.parent / "q").exists()


# -- network -------------------------------------------------------------------------------------


@pytest.fixture
def listeners():
    socks = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        socks.append(sock)
    yield [s.getsockname()[1] for s in socks]
    for sock in socks:
        sock.close()


def connect(port: int) -> str:
    return f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).close()"


def test_tcp_denied_when_handled_without_ports(ws, listeners):
    require_abi(4)
    assert run_py(ruleset(ws, net=NetRules()), connect(listeners[0])) == "EACCES"


def test_tcp_allowed_when_net_is_null(ws, listeners):
    require_abi(4)
    assert run_py(ruleset(ws, net=None), connect(listeners[0])) == "OK"


def test_only_listed_tcp_port_is_allowed(ws, listeners):
    require_abi(4)
    allowed, other = listeners
    rs = ruleset(ws, net=NetRules(tcp_connect=(allowed,)))
    assert run_py(rs, connect(allowed)) == "OK"
    assert run_py(rs, connect(other)) == "EACCES"


def test_tcp_bind_follows_its_list(ws):
    require_abi(4)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    bind = "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', {}))\ns.close()"
    assert run_py(ruleset(ws, net=NetRules(tcp_bind=(free,))), bind.format(free)) == "OK"
    assert run_py(ruleset(ws, net=NetRules()), bind.format(free)) == "EACCES"


# -- scopes --------------------------------------------------------------------------------------


@pytest.fixture
def victim():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_signal_scope_blocks_kill_outside(ws, victim):
    require_abi(6)
    rs = ruleset(ws, scope=["signal"])
    assert run_py(rs, f"os.kill({victim.pid}, {int(signal.SIGTERM)})") == "EPERM"
    assert victim.poll() is None
    # Processes inside the sandbox can still signal each other.
    proc = run_sandboxed(rs, ["/bin/sh", "-c", "sleep 30 & kill $! && wait $!; echo $?"])
    assert proc.stdout.strip() == str(128 + signal.SIGTERM)


def test_without_signal_scope_kill_outside_works(ws, victim):
    require_abi(6)
    assert run_py(ruleset(ws), f"os.kill({victim.pid}, {int(signal.SIGTERM)})") == "OK"
    assert victim.wait(timeout=TIMEOUT) == -signal.SIGTERM


def test_abstract_unix_socket_scope(ws):
    require_abi(6)
    name = f"\0sandfleet-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(4)
        body = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({name!r})\ns.close()"
        assert run_py(ruleset(ws, scope=["abstract_unix_socket"]), body) == "EPERM"
        assert run_py(ruleset(ws), body) == "OK"


# -- the landlock_exec CLI -----------------------------------------------------------------------


def cli(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandfleet_agent.linux.landlock_exec", *args],
        capture_output=True, text=True, timeout=TIMEOUT, **kwargs,
    )


def test_cli_applies_ruleset_then_execs(ws, tmp_path):
    require_abi(6)
    path = tmp_path / "ruleset.json"
    path.write_text(ruleset(ws, net=NetRules(), scope=["signal"]).to_json(indent=2))
    script = f"echo in > {ws}/in.txt && cat {ws}/in.txt; echo out > {tmp_path}/out.txt; exit 3"
    proc = cli([str(path), "--", "sh", "-c", script])
    assert proc.returncode == 3
    assert proc.stdout == "in\n"
    assert "Permission denied" in proc.stderr
    assert not (tmp_path / "out.txt").exists()


def test_cli_reads_ruleset_from_stdin(ws):
    require_abi(1)
    proc = cli(["-", "--", "/bin/sh", "-c", "echo ok"], input=ruleset(ws, abi=1).to_json())
    assert (proc.returncode, proc.stdout) == (0, "ok\n")


def test_cli_fails_closed_with_126(ws, tmp_path):
    path = tmp_path / "ruleset.json"
    marker = tmp_path / "ran"
    path.write_text(ruleset(ws, abi=landlock.MAX_ABI + 1).to_json())
    proc = cli([str(path), "--", "/bin/touch", str(marker)])
    assert proc.returncode == 126
    assert "sandbox unavailable" in proc.stderr
    assert not marker.exists()
    path.write_text('{"abi": 7}')
    proc = cli([str(path), "--", "/bin/touch", str(marker)])
    assert proc.returncode == 126
    assert "missing fs, net, scope" in proc.stderr
    assert not marker.exists()


def test_cli_usage_and_missing_command(ws, tmp_path):
    assert cli(["only-one-arg"]).returncode == 2
    require_abi(1)
    path = tmp_path / "ruleset.json"
    path.write_text(ruleset(ws, abi=1).to_json())
    proc = cli([str(path), "--", "no-such-command-sandfleet"])
    assert proc.returncode == 127
    assert "command not found" in proc.stderr


def test_no_sockets_close_udp_tcp_and_unix_but_keep_socket_pairs(tmp_path):
    """Landlock has no UDP rules and (below ABI 9) no say over pathname UNIX sockets; the seccomp
    filter's "none" is what makes "network none" whole. Connected pairs keep working."""
    require_abi(1)
    code = (
        "import socket\n"
        "a, b = socket.socketpair(); print('pair ok')\n"
        "for fam, typ in ((socket.AF_INET, socket.SOCK_DGRAM), (socket.AF_INET6, socket.SOCK_DGRAM),"
        " (socket.AF_INET, socket.SOCK_STREAM), (socket.AF_NETLINK, socket.SOCK_RAW),"
        " (socket.AF_UNIX, socket.SOCK_STREAM), (socket.AF_UNIX, socket.SOCK_DGRAM)):\n"
        "    try:\n        socket.socket(fam, typ); print('LEAK', int(fam))\n"
        "    except PermissionError: print('denied', int(fam))\n"
    )
    rs = LandlockRuleset(abi=landlock.landlock_abi(), fs=(FsRule("/", "read"),), sockets="none")
    out = run_sandboxed(rs, [sys.executable, "-c", code])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "pair ok"
    assert "LEAK" not in out.stdout and out.stdout.count("denied") == 6


def test_a_read_rule_under_a_write_rule_is_named_with_the_first_write_rule_it_lies_under():
    """The check runs against the write rules alone (docs/performance.md), and still names the
    first offending pair in the rules' order."""
    rules = (FsRule("/", "read"), FsRule("/w2", "write"), FsRule("/w1", "write"), FsRule("/w1/r", "read"),
             *(FsRule(f"/usr/x{i}", "read") for i in range(300)))
    with pytest.raises(RulesetError, match=r"'/w1/r' \(read\) lies at or beneath the write rule '/w1'"):
        LandlockRuleset(abi=1, fs=rules)
    rules = (FsRule("/a", "write"), FsRule("/a/b", "write"), FsRule("/a/b/c", "read"))
    with pytest.raises(RulesetError, match=r"'/a/b/c' \(read\) lies at or beneath the write rule '/a'"):
        LandlockRuleset(abi=1, fs=rules)


def test_a_ruleset_file_is_parsed_once_per_text_and_a_bad_one_fails_every_time():
    from sandfleet_agent.backends.landlock import _parsed

    text = json.dumps(EXAMPLE)
    assert _parsed(text) is _parsed(text) == LandlockRuleset.from_json(text)
    for _ in "12":
        with pytest.raises(RulesetError, match="not valid JSON"):
            _parsed("{")
