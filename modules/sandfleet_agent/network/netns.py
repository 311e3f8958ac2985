"""Give a managed-network sandbox its only way out: a private network namespace whose one
listener (``127.0.0.1:PORT``) belongs to the host-side proxy. Runs as the first word of the
wrapper, before bwrap::

    python3 -I -S .../netns.py --port 3128 --handoff /tmp/sfnet-x/proxy.sock -- bwrap ... -- argv

1. connect to the agent's hand-off socket (a Unix socket in a private 0700 directory);
2. ``unshare(CLONE_NEWUSER | CLONE_NEWNET)`` (as root without user namespaces: the net namespace
   alone), map our own uid/gid, bring ``lo`` up — the namespace has no other interface, so
   nothing outside it has a route;
3. listen on ``127.0.0.1:PORT`` and pass that listening socket to the agent over the hand-off
   socket (``SCM_RIGHTS``); the agent's proxy accepts on it directly, from outside the namespace;
4. wait for the agent's acknowledgement (it then closes and unlinks the hand-off socket, so
   nothing started later can reach it), drop both sockets and exec the command, normally bwrap
   *without* ``--unshare-net``: the sandbox shares this namespace and its single listener.

Why a helper outside bwrap rather than a bridge inside it (Codex's route bridge, srt's socat):
nothing of sandfleet has to be visible or runnable inside the sandbox (no interpreter, no proxy
socket, whatever the filesystem policy), no relay process copies every byte, and the helper is
gone (exec'd) before the command starts. The price is one short interpreter start per task.

Standard library only, no package imports, started with ``-I -S``: it must start fast and run
from any copy of the agent. It imports ``_socket`` rather than ``socket`` (half the start-up
time). Any failure before the exec prints one ``sandfleet netns:`` line and exits 125; the agent,
which never received a listener, reports ``sandbox_unavailable``: the command never runs with a
network other than the proxy's.
"""

from __future__ import annotations

import _socket
import os
import struct
import sys

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
HANDOFF_BYTE, ACK_BYTE = b"L", b"K"
EXIT_SETUP_FAILED = 125
USAGE = "usage: netns.py --port PORT --handoff SOCKET -- COMMAND [ARG...]"


class SetupError(Exception):
    pass


def _unshare(flags: int) -> None:
    call = getattr(os, "unshare", None)  # Python >= 3.12
    if call is not None:
        call(flags)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def private_namespace() -> None:
    """Enter a new network namespace (in a new user namespace when we need one for the right)."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    except OSError as exc:
        if uid != 0:
            raise SetupError(f"cannot create a user and network namespace ({exc.strerror}); allow unprivileged "
                             "user namespaces (sysctl kernel.unprivileged_userns_clone=1 or, on Ubuntu, "
                             "kernel.apparmor_restrict_unprivileged_userns=0)") from None
        try:
            _unshare(CLONE_NEWNET)
        except OSError as again:
            raise SetupError(f"cannot create a network namespace ({again.strerror})") from None
        return
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


def loopback_up() -> None:
    import fcntl

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))
    finally:
        sock.close()


def hand_off(control: _socket.socket, port: int) -> None:
    listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        try:
            control.sendmsg([HANDOFF_BYTE], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                              struct.pack("i", listener.fileno()))])
            control.settimeout(30.0)
            ack = control.recv(1)
        except OSError as exc:
            raise SetupError(f"the agent did not accept the proxy listener ({exc.strerror or exc})") from None
        if ack != ACK_BYTE:
            raise SetupError("the agent did not accept the proxy listener")
    finally:
        listener.close()


def parse(argv: list[str]) -> tuple[int, str, list[str]]:
    if "--" not in argv:
        raise SetupError(USAGE)
    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1:]
    if len(opts) != 4 or opts[0] != "--port" or opts[2] != "--handoff" or not opts[1].isdigit() or not command:
        raise SetupError(USAGE)
    return int(opts[1]), opts[3], command


def main(argv: list[str]) -> int:
    try:
        port, handoff, command = parse(argv)
        control = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            control.connect(handoff)
        except OSError as exc:
            raise SetupError(f"cannot reach the agent's proxy at {handoff}: {exc.strerror}") from None
        private_namespace()
        loopback_up()
        hand_off(control, port)
        control.close()
    except (SetupError, OSError) as exc:
        sys.stderr.write(f"sandfleet netns: {exc}\n")
        return EXIT_SETUP_FAILED
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"sandfleet netns: cannot run {command[0]!r}: {exc.strerror}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
