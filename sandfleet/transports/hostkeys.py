"""known_hosts checking with OpenSSH's rules, safe for many hosts connecting at once.

Every Python peer got host keys wrong somewhere (silent auto-add, prompts interleaved across
forks, a whole file dropped for one unparsable line, files rewritten on save). Here:

* an unknown key is refused unless the policy is ``accept-new``; the refusal says how to trust it;
* a changed key (or a host that now shows a key type it never had while others are recorded) is
  refused whatever the policy, naming both fingerprints and how to remove the old entry;
* ``accept-new`` appends one line per new host (and says so on stderr: host, key type, fingerprint,
  file) under a process-wide lock plus ``flock`` on the
  file, after re-reading it, so parallel hosts and parallel sandfleet runs record each key once;
  the file is never rewritten;
* lines this code cannot use (``@cert-authority``, unknown key types, garbage) are skipped one by
  one; ``@revoked`` keys are honoured; hashed names (``|1|salt|hash``), patterns and negations
  match as in OpenSSH, and non-22 ports use the ``[host]:port`` form.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Optional, get_args

from sandfleet.transports.base import HostUnreachable

HostKeyPolicy = Literal["reject", "accept-new"]
REJECT: HostKeyPolicy = "reject"
ACCEPT_NEW: HostKeyPolicy = "accept-new"
POLICIES: tuple[HostKeyPolicy, ...] = get_args(HostKeyPolicy)


class UnknownHostKey(HostUnreachable):
    """The host's key is in no known_hosts file and the policy does not record new keys."""


class ChangedHostKey(HostUnreachable):
    """The host shows a different key than the one recorded: refused under every policy."""


@dataclass(frozen=True)
class KnownKey:
    """One usable known_hosts line: where it is, whom it names, and the key."""

    file: str
    line: int
    patterns: tuple[str, ...]
    key_type: str
    blob: bytes
    revoked: bool = False

    def names(self, host: str) -> bool:
        """Whether this line's host field covers ``host`` (the ``[name]:port`` form for non-22)."""
        host = host.lower()
        hit = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            pattern = pattern[1:] if negated else pattern
            if _matches(pattern, host):
                if negated:
                    return False
                hit = True
        return hit


def _matches(pattern: str, host: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            salt_b64, digest_b64 = pattern[3:].split("|", 1)
            salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(hmac.new(salt, host.encode(), hashlib.sha1).digest(), digest)
    if "*" not in pattern and "?" not in pattern:
        return host == pattern.lower()
    # OpenSSH patterns know only * and ?; fnmatch would read "[host]:port" as a character class.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.fullmatch(regex, host) is not None


def host_id(hostname: str, port: int) -> str:
    """The name known_hosts uses for a host: plain for port 22, ``[host]:port`` otherwise."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint, as ``ssh-keygen -lf`` and ``ssh`` print it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def hashed_name(host: str, salt: Optional[bytes] = None) -> str:
    """``|1|salt|hash`` for ``HashKnownHosts yes``."""
    salt = salt or os.urandom(20)
    digest = hmac.new(salt, host.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def parse_known_hosts(text: str, file: str) -> list[KnownKey]:
    """The usable lines of a known_hosts file; every other line is skipped on its own."""
    keys: list[KnownKey] = []
    for number, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        revoked = False
        if fields[0].startswith("@"):
            if fields[0] != "@revoked":
                continue  # @cert-authority: certificates are not used here, the line is just skipped
            revoked, fields = True, fields[1:]
        if len(fields) < 3:
            continue
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except (ValueError, binascii.Error):
            continue
        keys.append(KnownKey(file, number, tuple(fields[0].split(",")), fields[1], blob, revoked))
    return keys


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise HostUnreachable(f"cannot read known_hosts file {path}: {exc.strerror}") from None


class KnownHosts:
    """The known_hosts files of one run: read once, checked per host, appended to under a lock.

    ``files`` are read (the user's first, then global ones); new keys go to ``write_to``, the
    first user file, as OpenSSH does.
    """

    _process_lock = threading.Lock()  # one lock for all files: flock alone does not order threads

    def __init__(self, files: Iterable[str], write_to: str, *, hash_names: bool = False,
                 notice: Optional[Callable[[str], None]] = None) -> None:
        self.files = tuple(dict.fromkeys([write_to, *files]))
        self.write_to = write_to
        self.hash_names = hash_names
        #: told one line per key ``accept-new`` records (default: stderr), so no key is trusted unseen
        self.notice = notice or _to_stderr
        self._by_file: dict[str, list[KnownKey]] = {}
        self._lock = threading.Lock()

    def _known(self) -> list[KnownKey]:
        with self._lock:
            for f in self.files:
                if f not in self._by_file:
                    self._by_file[f] = parse_known_hosts(_read(f), f)
            return [k for f in self.files for k in self._by_file[f]]

    def preferred_types(self, host: str) -> list[str]:
        """Key types recorded for ``host``, so the server is asked for one we can check."""
        return list(dict.fromkeys(k.key_type for k in self._known() if not k.revoked and k.names(host)))

    def verify(self, host: str, key_type: str, blob: bytes, policy: HostKeyPolicy, *, keyscan: str) -> bool:
        """Accept the key, record it (returns True), or raise. ``keyscan`` is the command to suggest."""
        if _decide(self._known(), host, key_type, blob):
            return False
        if policy != ACCEPT_NEW:
            fp = fingerprint(blob)
            raise UnknownHostKey(
                f"unknown host key for {host} ({key_type} {fp}); sandfleet only talks to hosts whose key it "
                f"knows. If this is the right host, record its key with `{keyscan} >> {self.write_to}` (and "
                f"compare the fingerprint) or run with --host-key-policy accept-new")
        return self._record(host, key_type, blob)

    def _record(self, host: str, key_type: str, blob: bytes) -> bool:
        with KnownHosts._process_lock:
            directory = os.path.dirname(self.write_to)
            try:
                if directory:
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                fd = os.open(self.write_to, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                raise HostUnreachable(f"cannot record the host key of {host} in {self.write_to}: "
                                      f"{exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                on_disk = _read_fd(fd)
                # Another thread or process may have recorded (or changed) it since we loaded.
                fresh = parse_known_hosts(on_disk.decode("utf-8", "replace"), self.write_to)
                with self._lock:
                    self._by_file[self.write_to] = fresh
                if _decide(self._known(), host, key_type, blob):
                    return False
                name = hashed_name(host) if self.hash_names else host
                line = f"{name} {key_type} {base64.b64encode(blob).decode()}\n".encode()
                if on_disk and not on_disk.endswith(b"\n"):
                    line = b"\n" + line
                os.write(fd, line)
                added = KnownKey(self.write_to, on_disk.count(b"\n") + line.count(b"\n"), (name,), key_type, blob)
                with self._lock:
                    self._by_file[self.write_to] = [*fresh, added]
                self.notice(f"added {host}'s {key_type} key ({fingerprint(blob)}) to {self.write_to}")
                return True
            finally:
                os.close(fd)  # releases the flock


def _to_stderr(message: str) -> None:
    sys.stderr.write(f"sandfleet: {message}\n")


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _decide(keys: list[KnownKey], host: str, key_type: str, blob: bytes) -> bool:
    """True if ``keys`` vouch for the key, False if they know nothing of the host; raises otherwise."""
    fp = fingerprint(blob)
    for k in keys:
        if k.revoked and k.blob == blob:
            raise ChangedHostKey(f"the host key of {host} ({key_type} {fp}) is marked @revoked in "
                                 f"{k.file}:{k.line}; refusing to connect")
    recorded = [k for k in keys if not k.revoked and k.names(host)]
    if any(k.key_type == key_type and k.blob == blob for k in recorded):
        return True
    if not recorded:
        return False
    old = next((k for k in recorded if k.key_type == key_type), recorded[0])
    raise ChangedHostKey(
        f"HOST KEY CHANGED for {host}: it now shows {key_type} {fp}, but {old.file}:{old.line} records "
        f"{old.key_type} {fingerprint(old.blob)}. Someone may be intercepting the connection (or the host was "
        f"reinstalled); refused whatever --host-key-policy says. If the change is expected, remove the old "
        f"key with `ssh-keygen -R '{host}' -f {old.file}` and connect again")
