"""How the host-side code reaches a host: one zip, one fixed command, uploaded only when missing.

The zip holds the host side (the package ``sandfleet_agent``, templates included) plus Jinja2
and MarkupSafe's pure-Python files, so a host needs nothing but Python >= 3.9. It is built in
memory once per controller process, byte-for-byte reproducible (sorted entries, fixed
timestamps), and named by its sha256: a host that already has ``agent-<sha>.zip`` in its cache
skips the upload, and a new sandfleet version never runs an old agent.

The remote shell sees exactly one string per host (:meth:`AgentBundle.command`): the interpreter,
a short Python stub, the zip's hash and size, the hash of its manifest, the agent's init line
(base64; see below), the persist time and the copy's last stamp (see below). The stub checks the
Python version, says whether it needs the zip, reads it from the channel's stdin when asked (no
SFTP, no temp files in shared places), verifies the hash and stores it atomically (dir 0700, file
0600) as ``agent-<sha>.zip`` beside its unpacked copy ``agent-<sha>/``. The agent runs from the
unpacked copy, in the stub's own process, because its bytecode is kept there: importing from
the zip would compile Jinja2 and the agent anew on every start, ~0.2 s of CPU per host. Task
argv never touches a shell: it travels as JSON lines afterwards.

The unpacked copy is checked on every start, before anything is imported from it, because the
agent runs unsandboxed: a process of that user that appended a line to ``agent.py`` there would
otherwise run it on the next start. (Sandboxed tasks are denied ``~/.cache/sandfleet`` by
policy; this is the second wall.) The zip carries ``MANIFEST.sha256`` (``sha256sum`` format:
the hash of every other file) and the command carries that manifest's own hash, so the
controller vouches for every file without the stub reading the zip (``zipfile`` alone costs
~14 ms). The copy must hold exactly the listed files with their hashes, nothing else, and no
symlink, pipe or the like; only ``__pycache__/`` folders and the agent's caches at the top
(``template-cache/``, ``render-memo/``, ``facts-cache/``, see ``agent.main``; ``dataclass-cache/``,
see ``sandfleet_agent.dataclass_code``) may hold more. Anything else means the copy is replaced:
the zip is checked against its hash (the stored one, or an upload when that copy is bad too),
extracted aside from those checked bytes and renamed in, and the stub says ``repaired``;
:meth:`Reply.warning` is what the user is told. The check is of what was left there between
starts: a process writing into the folder while an agent starts can still race it. Before its
first import the stub also drops the login folder that ``-c`` puts first on
``sys.path``: an ``os.py`` or ``hashlib.py`` in the home folder is not what runs.

Bytecode: a ``.pyc`` whose header matches its source's mtime and size is run instead of the
verified source, so being there must not make it trusted. The stub compiles every listed source
itself (``py_compile``, for this interpreter's tag: ``x.cpython-311.pyc``) right after
unpacking, lists the hashes of what it compiled in ``__pycache__/MANIFEST.<tag>.sha256``, turns
bytecode writing off (``sys.dont_write_bytecode``; ``sys.pycache_prefix`` cleared, so nothing
else is read) and, on every start, requires the ``*.<tag>.pyc`` files to be exactly those.
Another interpreter adds its own tag and list, which is not a repair. What this defends
against, honestly: a planted, stale or edited ``.pyc`` from anything that does not also rewrite
that list. The list lives on the host, so a process that knows this scheme and can write the
folder can forge a matching pair: nothing kept on the host can stop that; compiling on every
start could (measured: +190 ms of CPU per start, three times the whole agent), or a hash the
controller remembered per host. Sources and the manifest have no such gap: the controller's
hashes vouch for them. The agent's own caches (``template-cache/``: Jinja2 bytecode,
``render-memo/``: rendered wrappers, ``dataclass-cache/``: the compiled methods of its dataclasses,
``facts-cache/``: a working bwrap, see ``binding.facts.kept_bwrap``)
are not checked here at all, and are trusted by :mod:`render` and :mod:`dataclass_code` the same
way as an unchecked ``.pyc`` would be.

Cost, measured on Python 3.9 to 3.13 with a warm copy: importing hashlib ~2.5 ms and the check
(~120 files, ~2.3 MB of sources and bytecode read and hashed) 2-3.5 ms of CPU, so a whole agent
start went from ~63 to ~67 ms. Hence the **stamp** (:mod:`sandfleet.transports.stamps`): after a
check the stub reports a digest of every checked file's device, inode, size, mtime and ctime
(``_blake2``, no OpenSSL); the controller keeps it and sends it with the host's next start, and a
copy whose stamp is the same is the one checked then, so nothing is read or hashed (~0.6 ms: one
``lstat`` per file). A write, rename, link or replacement sets a file's ctime to now, which only
root can set back, and a new file has its own inode: no process of the user can change the copy
and keep its stamp (a copy with a file changed this second gets none: ctimes may count whole
seconds). A different stamp (or none) is only a reason to check, as before. With the
stamp, no OpenSSL is loaded at all (~6 ms less per start, ``python bench/agent_cost.py``).

Mending (unpack, compile every file, including Jinja2's) costs ~170-220 ms, once per bundle and
interpreter and after a change; concurrent stubs mend one at a time (``flock`` on the cache
folder, taken only when there is something to do) and one that waited checks again, so it finds
the work done.

Round trips: the init line (workspace roots, sandbox pin, resolve map, protected paths: nothing
secret, and no task data) rides on the command line, base64 so that no shell alters it, when it is
at most :data:`INLINE_INIT` bytes (every argument must stay below Linux's 128 KiB; ``ps`` on the
host shows it, as it shows the stub). The stub hands it to the agent as the first line of its
stdin, so the controller sends the exec request without waiting for its reply and then only
reads: the stub's ``ready`` and the agent's hello come back within the exec's own round trip. On
stdin instead it would cost one more, however early it was sent: OpenSSH opens a session
channel with a zero window and grants one only once the command has started. Stdin carries only
the zip (exactly ``SIZE`` bytes, after ``upload``), then the requests; without an init line on
the command line (a bigger one) the agent reads it from stdin after ``ready``, as before.

Stub replies, one line each, prefixed with :data:`MARKER` so noise a login shell prints first
(a chatty ``.bashrc``) is skipped instead of corrupting the protocol::

    SANDFLEET-BOOTSTRAP upload                  send SIZE bytes of zip now
    SANDFLEET-BOOTSTRAP ready cached|stored|repaired|resident X.Y.Z [STAMP]
                                                the agent starts; its hello next (init line next,
                                                if not on the command line); STAMP: the copy's
                                                stamp ("-": none; a resident says none)
    SANDFLEET-BOOTSTRAP too-old X.Y.Z           the interpreter is older than 3.9
    SANDFLEET-BOOTSTRAP corrupt                 the upload did not match the hash
    SANDFLEET-BOOTSTRAP stopped|refused|gone|busy NAME   (stop mode) what became of each resident

``stored``: the zip was uploaded; ``repaired``: the unpacked copy (or its bytecode) had been
changed and was replaced, whether or not the zip had to be uploaded again; ``resident``: a
resident agent of this bundle serves the run (``sandfleet_agent_persist``), said by it.

The resident agent (docs/resident-agent.md): with a persist time as one more word, the stub first
looks for a resident of this bundle, interpreter and machine (``~/.cache/sandfleet/run``, a folder
it checks is this user's alone) before reading or importing anything of the bundle, and hands it
the run: its init line, environment, working directory and umask in one request with the key
beside the socket, and the channel's own descriptors (``SCM_RIGHTS``), then waits for its end.
Without one, it starts as above and, before the agent serves, forks one
(:func:`sandfleet_agent.resident.detach`) from its own process, where everything imported came
from the copy it has just verified. That client (``relay``, and ``stop`` for ``sandfleet agent
stop``, which runs this stub with ``stop`` instead of a persist time and needs no bundle) is part
of the stub, so it speaks to residents of any version.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shlex
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jinja2
import markupsafe

import sandfleet_agent
from sandfleet.transports import stamps
from sandfleet_agent.resident import MARK as RESIDENT_MARK
from sandfleet_agent.resident import PROTOCOL as RESIDENT_PROTOCOL

AGENT_PACKAGE = "sandfleet_agent"
MANIFEST = "MANIFEST.sha256"  # at the zip's root: ``sha256sum`` lines for every other file
MARKER = "SANDFLEET-BOOTSTRAP"
#: What the stub says of each resident agent it asked to stop (:meth:`AgentBundle.stop_command`).
STOP_STATES = ("stopped", "refused", "gone", "busy")
MIN_PYTHON = (3, 9)
#: The largest init line sent on the command line (``ps`` shows it there; every exec'd argument
#: must stay below Linux's 128 KiB, the stub takes ~12 KiB of it): a bigger one (a huge resolve map)
#: is sent on stdin after the stub's ``ready`` line, one round trip later.
INLINE_INIT = 16 * 1024
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest timestamp a zip can hold: same bytes on every build

# The stub's client of the resident agent (:mod:`sandfleet_agent.resident` is the server): reach it
# and hand it the run (relay), or ask every resident to exit (stop). Part of the stub, so it runs
# before anything of the bundle is read or imported, and ``sandfleet agent stop`` reaches residents
# of every version. No single quote, as the rest of the stub; it must parse on any Python.
_CLIENT = f"""
# The client of the resident agent (modules/sandfleet_agent/resident.py is the server, docs/resident-agent.md
# the design): its folder, its socket named by this bundle and this interpreter, its key beside it.
run = os.path.join(d, "run")
# one per bundle, interpreter and machine (a home shared by several hosts holds one for each)
name = "a-%s-%08x" % (sha[:40], binascii.crc32((sys.executable + " " + sys.version + " " + os.uname()[1]).encode())
                      & 0xFFFFFFFF)

def private():
    # the folder of the residents, opened without following a link; None unless only this user has it
    try:
        fd = os.open(run, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
    except (OSError, AttributeError):
        return None
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and not st.st_mode & 0o077:
        return fd
    os.close(fd)
    return None

def b64(data):
    return binascii.b2a_base64(data, newline=False).decode() if data else "-"

def answer(s):
    data = b""
    while not data.endswith(b"\\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("ascii", "replace").strip()

def ask(fd, base, verb, words=(), fds=()):
    # one request to the resident base, its key read from its file: (the socket, the answer)
    import _socket
    k = os.open(base + ".key", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    try:
        key = os.read(k, 200).decode("ascii").strip()
    finally:
        os.close(k)
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect("/proc/self/fd/%d/%s.sock" % (fd, base))  # fits sun_path however long the home
        cred = s.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        if int.from_bytes(cred[4:8], sys.byteorder) != os.geteuid():
            raise OSError("another user")
        data = " ".join(["{RESIDENT_MARK}", "{RESIDENT_PROTOCOL}", verb, key] + list(words)).encode() + b"\\n"
        rights = b"".join(i.to_bytes(4, sys.byteorder) for i in fds)
        sent = s.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)] if fds else [])
        if sent < len(data):
            s.sendall(data[sent:])
        return s, answer(s)
    except BaseException:
        s.close()
        raise

def relay():
    # hand this run (stdin, stdout, stderr, the init line) to the resident agent of this bundle, then
    # wait for its end and exit as it did; returns only when none took the run
    fd = private()
    if fd is None:
        return
    try:
        mask = os.umask(0o077)
        os.umask(mask)
        try:
            here = os.getcwdb()
        except OSError:
            here = b""
        env = b"\\0".join(k + b"=" + v for k, v in os.environb.items())
        s, said = ask(fd, name, "run", [sha, persist, b64(ahead[0] if ahead else b""), b64(here), "%o" % mask,
                                        b64(env)], (0, 1, 2))
    except Exception:
        return
    finally:
        os.close(fd)
    try:
        if said != "ok":
            raise OSError(said)
        s.sendall(b"go\\n")  # the resident serves the run from here on: ready, hello, ...
    except OSError:
        s.close()
        return
    s.settimeout(None)
    said = b""
    while True:
        try:
            chunk = s.recv(4096)
        except OSError:
            chunk = b""
        if not chunk:
            break
        said += chunk
    words = said.decode("ascii", "replace").split()
    sys.exit(int(words[1]) if words[:1] == ["exit"] and words[1:2] and words[1].isdigit() else 1)

def forget(fd, base):
    # "gone": what a dead resident left (socket, key) is removed; "busy": one still holds its lock
    import fcntl
    try:
        lock = os.open(base + ".lock", os.O_RDWR | os.O_NOFOLLOW, dir_fd=fd)
    except OSError:
        lock = -1
    try:
        if lock >= 0:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        return "busy"
    for ext in (".sock", ".key"):
        try:
            os.unlink(base + ext, dir_fd=fd)
        except OSError:
            pass
    if lock >= 0:
        os.close(lock)
    return "gone"

def stop(keep):
    # ask every resident here to exit but those of bundle keep: [(stopped|refused|gone|busy, name)]
    done = []
    fd = private()
    if fd is None:
        return done
    try:
        names = sorted(n[:-5] for n in os.listdir("/proc/self/fd/%d" % fd) if n.endswith(".sock"))
    except OSError:
        names = []
    for base in names:
        if keep and base.startswith("a-" + keep[:40] + "-"):
            continue
        try:
            s, said = ask(fd, base, "stop")
            s.close()
            done.append(("stopped" if said == "stopped" else "refused", base))
        except OSError:
            done.append((forget(fd, base), base))
    os.close(fd)
    return done
"""

_MAIN = f'''"""Run the sandfleet agent: python3 agent-<sha>.zip (JSON lines on stdin/stdout)."""
import sys

from {AGENT_PACKAGE}.agent import main

sys.exit(main())
'''

# Runs on the host under ``python -E -s -S -c`` (no environment, user site or site-packages: the
# agent brings everything it imports). It must parse on any Python (even 2.7) so that an
# old interpreter gets a clear "too old" instead of a SyntaxError, and it holds no single quote,
# so the shell quoting stays readable in `ps`. The fast path (the copy is as sent) only reads
# and hashes files; the rest is imported when there is something to mend.
_STUB = f"""
import sys
sys.path[:] = [p for p in sys.path if p]  # -c puts the login folder first: nothing comes from there
import os
def say(*words):
    sys.stdout.write(" ".join(("{MARKER}",) + words) + "\\n")
    sys.stdout.flush()
v = "%d.%d.%d" % tuple(sys.version_info[:3])
if sys.version_info < {MIN_PYTHON!r}:
    say("too-old", v)
    sys.exit(3)
import io, binascii
sha, size, listing = sys.argv[2], int(sys.argv[3]), sys.argv[4]
# the init line of the agent, when the controller put it on the command line (base64, "-" if not): the
# agent reads it before stdin (see Ahead), so the controller sends nothing before the hello
ahead = [binascii.a2b_base64(sys.argv[5])] if len(sys.argv) > 5 and sys.argv[5] != "-" else []
# sandfleet_agent_persist: the seconds a resident agent stays after the last run ("-": none), or "stop"
persist = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else ""
# the stamp the controller remembers of this copy ("-": none): the same now means no check (see stamp)
known = sys.argv[7] if len(sys.argv) > 7 else "-"
d = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sandfleet")
f = os.path.join(d, "agent-" + sha + ".zip")
root = os.path.join(d, "agent-" + sha)
{_CLIENT}
if persist == "stop":
    for what, base in stop(""):
        say(what, base)
    sys.exit(0)
if persist:
    relay()
# Bytecode is read from NAME.TAG.pyc in __pycache__ only, never written by Python: the stub
# compiles it and lists what it compiled in __pycache__/MANIFEST.TAG.sha256.
tag = sys.implementation.cache_tag + (".opt-%d" % sys.flags.optimize if sys.flags.optimize else "")
compiled = os.path.join(root, "__pycache__", "MANIFEST." + tag + ".sha256")
sys.pycache_prefix, sys.dont_write_bytecode = None, True

def digest(path):
    from hashlib import sha256  # here: a start whose stamp is unchanged never loads OpenSSL
    with open(path, "rb") as fh:
        return sha256(fh.read()).hexdigest()

def load(path):
    # a sha256sum listing as path -> hash, None if unreadable
    try:
        with open(path, "rb") as fh:
            lines = fh.read().decode("ascii", "replace").splitlines()
    except OSError:
        return None
    return dict(line.split("  ", 1)[::-1] for line in lines if "  " in line)

def scan(identify):
    # path -> identify(entry) of every file and of the bytecode this Python reads, the agent caches
    # at the top left out; None if a folder is unreadable or anything is a link, pipe or device
    files, pycs, todo = dict(), dict(), [""]
    try:
        while todo:
            top = todo.pop()
            for entry in os.scandir(os.path.join(root, top)):
                name = top + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if name not in ("template-cache", "render-memo", "dataclass-cache", "facts-cache"):
                        todo.append(name + "/")
                elif not entry.is_file(follow_symlinks=False):
                    return None
                elif "__pycache__/" not in name:
                    files[name] = identify(entry)
                elif name.endswith("." + tag + ".pyc"):
                    pycs[name] = identify(entry)
    except OSError:
        return None
    return files, pycs

def identity(entry):
    # what a write, rename, link or replacement of the file changes: its ctime becomes now, which no
    # process but root can set back, and a new file has its own inode
    st = entry.stat(follow_symlinks=False)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

def stamp():
    # the stamp of the copy ("-": none): a digest of every file check() reads, as identity() sees it. The
    # controller remembers it after a check (sandfleet/transports/stamps.py) and sends it with the next
    # start: the same stamp then is the same, checked copy, so no file is read or hashed. None while a
    # file changed this second: where ctimes count whole seconds, a change later this second would
    # keep the same one
    import time
    found = None if os.path.islink(root) else scan(identity)
    second = time.time_ns() // 1000000000 * 1000000000
    if found is None or any(i[4] >= second for part in found for i in part.values()):
        return "-"
    try:
        from _blake2 import blake2b  # not hashlib, which loads OpenSSL (~2-4 ms)
    except ImportError:
        from hashlib import blake2b
    rows = sorted(found[0].items()) + sorted(found[1].items())
    return blake2b(repr(rows).encode(), digest_size=20).hexdigest()

def check():
    # "" if the copy is the one sent, else "missing", "bytecode" (none yet for this Python) or "changed"
    if not os.path.lexists(root):
        return "missing"
    found = None if os.path.islink(root) else scan(lambda entry: digest(entry.path))
    listed = load(os.path.join(root, "{MANIFEST}"))
    if found is None or listed is None or found[0].get("{MANIFEST}") != listing:
        return "changed"
    listed["{MANIFEST}"] = listing
    if found[0] != listed:
        return "changed"
    made = load(compiled)
    if made is None and not found[1]:
        return "bytecode"
    return "" if found[1] == made else "changed"

def fetch():
    # the zip, checked against its hash: the stored copy, else an upload (then stored)
    from hashlib import sha256
    try:
        with open(f, "rb") as fh:
            data = fh.read()
    except OSError:
        data = b""
    if sha256(data).hexdigest() == sha:
        return data, False
    say("upload")
    data = bytearray()
    while len(data) < size:
        chunk = os.read(0, min(1 << 20, size - len(data)))
        if not chunk:
            sys.exit(4)
        data += chunk
    if sha256(data).hexdigest() != sha:
        say("corrupt")
        sys.exit(5)
    tmp = "%s.%d.tmp" % (f, os.getpid())
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, f)
    return bytes(data), True

def unpack(data):
    # the checked bytes (not the file, which may have changed since) extracted aside, renamed in
    import shutil, zipfile
    tmp = "%s.%d.tmp" % (root, os.getpid())
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp)
    if os.path.lexists(root):
        old = "%s.%d.old" % (root, os.getpid())
        os.rename(root, old)
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)
    os.rename(tmp, root)

def compile_all():
    # every listed source compiled for this Python (one it cannot compile is skipped), then listed
    import py_compile
    made = []
    for name in sorted(load(os.path.join(root, "{MANIFEST}"))):
        if name.endswith(".py"):
            pyc = py_compile.compile(os.path.join(root, name))
            if pyc:
                made.append("%s  %s\\n" % (digest(pyc), pyc[len(root) + 1:]))
    os.makedirs(os.path.dirname(compiled), exist_ok=True)
    tmp = "%s.%d.tmp" % (compiled, os.getpid())
    with open(tmp, "w") as out:
        out.write("".join(made))
    os.replace(tmp, compiled)

state = "cached"
now = stamp() if known != "-" else "-"
if now == "-" or now != known:
    if check():
        import fcntl
        mask = os.umask(0o077)
        os.makedirs(d, exist_ok=True)
        lock = os.open(d, os.O_RDONLY)
        fcntl.flock(lock, fcntl.LOCK_EX)  # one stub mends at a time
        problem = check()  # again: another stub may have mended it meanwhile
        if problem in ("missing", "changed"):
            data, uploaded = fetch()
            unpack(data)
            state = "repaired" if problem == "changed" else "stored" if uploaded else "cached"
        if problem:
            compile_all()
        os.close(lock)
        os.umask(mask)
    now = stamp()  # of the copy just checked
say("ready", state, v, now)
if ahead:
    class Ahead(io.RawIOBase):
        # fd 0 as the agent reads it, after the init line from the command line (fileno() stays
        # 0: the agent watches it for a cancel)
        def readable(self):
            return True
        def fileno(self):
            return 0
        def readinto(self, buf):
            data = ahead.pop() if ahead else os.read(0, len(buf))
            if len(data) > len(buf):
                ahead.append(data[len(buf):])
                data = data[:len(buf)]
            buf[:len(data)] = data
            return len(data)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(Ahead()), encoding=getattr(sys.stdin, "encoding", None) or "utf-8",
                                 errors=getattr(sys.stdin, "errors", None) or "strict", newline="\\n")
sys.path.insert(0, root)
sys.argv = [root]
from {AGENT_PACKAGE}.dataclass_code import cache_compiled, defer_inspect
defer_inspect()  # before dataclasses is imported
cache_compiled(os.path.join(root, "dataclass-cache"))  # before any class of the agent is made
from {AGENT_PACKAGE}.agent import leave, main
notes = []
if persist:
    from {AGENT_PACKAGE}.resident import detach
    notes = detach(run, name, sha, root, int(persist), check, stop)
leave(main(root, notes))  # no interpreter teardown (see its doc)
"""


@dataclass(frozen=True)
class AgentBundle:
    """The zip every host runs, the hash that names it, and the hash of the manifest inside it
    (sent with the command, so the stub can check the unpacked copy without reading the zip)."""

    data: bytes
    sha256: str
    manifest_sha256: str

    def command(self, python: str, init: Optional[bytes] = None, become_user: Optional[str] = None,
                become_prompt: Optional[str] = None, persist_s: int = 0, stamp: Optional[str] = None) -> str:
        """The one string the remote login shell (POSIX quoting, as Ansible assumes) runs.

        ``python`` is split like a shebang line (``/usr/bin/env python3`` works) and every word is
        quoted, so an inventory value can name a program but never add a shell command.
        ``init``: the agent's init line, given to it by the stub as the first line of its stdin,
        so the controller need not wait for the stub and then for the channel's window before it
        can send it (see :data:`INLINE_INIT`). Base64: one word no shell (POSIX, csh, fish) alters.
        ``become_user``: run the interpreter as that user through ``sudo -n -H -u USER --`` (never
        asks for a password; ``-H``: HOME, and so the stub's cache ``~/.cache/sandfleet``, is that
        user's, and sudo's default ``env_reset`` drops the login's ``XDG_CACHE_HOME``).
        ``become_prompt``: the controller has a become password: ``sudo -S -p PROMPT`` instead of
        ``-n``, so sudo asks on stderr with that (unique) prompt and reads the answer from stdin,
        where nothing else is sent before the stub speaks; sudo that does not ask reads nothing.
        ``persist_s`` (``sandfleet_agent_persist``): hand the run to this bundle's resident agent
        when one is up (``ready resident``), else start one beside the run that stays that many
        seconds after the last run ends (docs/resident-agent.md); 0: no resident is used or started.
        ``stamp``: what this host's stub last reported of its copy (:mod:`.stamps`); the same now
        means the copy is the one it checked then, and it is not checked again.
        """
        if stamp is not None and not stamps.valid(stamp):
            raise ValueError("not a stamp")
        return self._command(python, become_user, become_prompt,
                             base64.b64encode(init).decode("ascii") if init is not None else "-",
                             str(persist_s) if persist_s > 0 else "-", stamp or "-")

    def stop_command(self, python: str, become_user: Optional[str] = None,
                     become_prompt: Optional[str] = None) -> str:
        """The command that asks every resident agent of the login (or become) user to exit,
        whatever its version; the stub says ``stopped|refused|gone|busy NAME`` for each and exits."""
        return self._command(python, become_user, become_prompt, "-", "stop")

    def _command(self, python: str, become_user: Optional[str], become_prompt: Optional[str], *extra: str) -> str:
        try:
            words = shlex.split(python)
        except ValueError:  # an unbalanced quote: take the value as one path
            words = [python]
        interpreter = " ".join(shlex.quote(word) for word in words) or "python3"
        asks = f"-S -p {shlex.quote(become_prompt)}" if become_prompt is not None else "-n"
        sudo = f"sudo {asks} -H -u {shlex.quote(become_user)} -- " if become_user is not None else ""
        tail = list(extra)
        while tail and tail[-1] in ("", "-"):  # the stub's defaults: no init line, no resident
            tail.pop()
        return (f"exec {sudo}{interpreter} -E -s -S -c {shlex.quote(_STUB.strip())} "
                f"sandfleet-agent {self.sha256} {len(self.data)} {self.manifest_sha256}"
                + "".join(f" {word}" for word in tail))


@dataclass(frozen=True)
class Reply:
    """One stub line: ``kind`` is upload, ready, too-old or corrupt (or, in stop mode, one of
    :data:`STOP_STATES`); ``words`` what follows."""

    kind: str
    words: tuple[str, ...] = ()

    def warning(self, host: str) -> Optional[str]:
        """What the user must be told about this reply, if anything. ``ready repaired``: the
        agent's unpacked code on the host had been changed since the stub unpacked it, which
        nothing of sandfleet does; it was restored before it ran, but whatever wrote there can
        write there again."""
        if self.kind == "ready" and self.words[:1] == ("repaired",):
            return (f"{host}: the agent code cached on this host had been modified since it was unpacked "
                    "(a file edited, added or replaced); it was restored from the verified zip before it ran. "
                    "Find out what writes to sandfleet's cache folder there (~/.cache/sandfleet)")
        return None


def parse_reply(line: bytes) -> Optional[Reply]:
    """The stub's reply in ``line``, or None when the line is shell noise to skip."""
    words = line.decode("utf-8", "replace").split()
    if len(words) < 2 or words[0] != MARKER:
        return None
    return Reply(words[1], tuple(words[2:]))


def _package_files(root: Path, patterns: tuple[str, ...]) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    for pattern in patterns:
        for path in root.glob(pattern):
            if path.is_file() and "__pycache__" not in path.parts:
                files.append((path.relative_to(root).as_posix(), path))
    return files


def build_bundle() -> AgentBundle:
    """Zip the host side and its two dependencies, deterministically, with their manifest."""
    sources = {
        AGENT_PACKAGE: (Path(next(iter(sandfleet_agent.__path__))), ("**/*.py", "**/templates/*")),
        "jinja2": (Path(jinja2.__file__).parent, ("*.py",)),
        "markupsafe": (Path(markupsafe.__file__).parent, ("*.py",)),  # its C speedups are optional
    }
    entries: dict[str, bytes] = {"__main__.py": _MAIN.encode()}
    for package, (root, patterns) in sources.items():
        for name, path in _package_files(root, patterns):
            entries[f"{package}/{name}"] = path.read_bytes()
    manifest = "".join(f"{hashlib.sha256(entries[name]).hexdigest()}  {name}\n" for name in sorted(entries))
    entries[MANIFEST] = manifest.encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            # level 1: every run builds it (~6 ms against ~17 ms at zlib's default 6), while only
            # a host's first contact uploads it (~15 % larger: 0.37 against 0.32 MB)
            archive.writestr(info, entries[name], compresslevel=1)
    data = buffer.getvalue()
    return AgentBundle(data, hashlib.sha256(data).hexdigest(), hashlib.sha256(entries[MANIFEST]).hexdigest())


_built: list[AgentBundle] = []
_building = threading.Lock()


def agent_bundle() -> AgentBundle:
    """The bundle for this controller process: built once, on first use, shared by every host
    (the lock matters: all host threads ask for it at the same moment)."""
    with _building:
        if not _built:
            _built.append(build_bundle())
        return _built[0]
