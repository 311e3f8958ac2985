"""How the host-side code reaches a host: one zip, one fixed command, uploaded only when missing.

The zip holds ``modules/`` (as the package ``sandfleet_agent``, templates included) plus Jinja2
and MarkupSafe's pure-Python files, so a host needs nothing but Python >= 3.9. It is built in
memory once per controller process, byte-for-byte reproducible (sorted entries, fixed
timestamps), and named by its sha256: a host that already has ``agent-<sha>.zip`` in its cache
skips the upload, and a new sandfleet version never runs an old agent.

The remote shell sees exactly one string per host (:meth:`AgentBundle.command`): the interpreter,
a short Python stub, the hash and the size. The stub checks the Python version, says whether it
needs the zip, reads it from the channel's stdin when asked (no SFTP, no temp files in shared
places), verifies the hash and stores it atomically (dir 0700, file 0600) as ``agent-<sha>.zip``
beside its unpacked copy ``agent-<sha>/``. The agent runs from the unpacked copy, in the stub's
own process, because Python caches bytecode there: importing from the zip would compile
Jinja2 and the agent anew on every start, ~0.2 s of CPU per host. Task argv never touches a
shell: it travels as JSON lines afterwards.

Stub replies, one line each, prefixed with :data:`MARKER` so noise a login shell prints first
(a chatty ``.bashrc``) is skipped instead of corrupting the protocol::

    SANDFLEET-BOOTSTRAP upload                  send SIZE bytes of zip now
    SANDFLEET-BOOTSTRAP ready cached|stored X.Y.Z   the agent starts; init line next
    SANDFLEET-BOOTSTRAP too-old X.Y.Z           the interpreter is older than 3.9
    SANDFLEET-BOOTSTRAP corrupt                 the upload did not match the hash
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jinja2
import markupsafe

from sandfleet import modules

AGENT_PACKAGE = "sandfleet_agent"
MARKER = "SANDFLEET-BOOTSTRAP"
MIN_PYTHON = (3, 9)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest timestamp a zip can hold: same bytes on every build

_MAIN = f'''"""Run the sandfleet agent: python3 agent-<sha>.zip (JSON lines on stdin/stdout)."""
import sys

from {AGENT_PACKAGE}.agent import main

sys.exit(main())
'''

# Runs on the host under ``python -E -s -S -c`` (no environment, user site or site-packages: the
# agent brings everything it imports). It must parse on any Python (even 2.7) so that an
# old interpreter gets a clear "too old" instead of a SyntaxError, and it holds no single quote,
# so the shell quoting stays readable in `ps`.
_STUB = f"""
import os, sys
def say(*words):
    sys.stdout.write(" ".join(("{MARKER}",) + words) + "\\n")
    sys.stdout.flush()
v = "%d.%d.%d" % tuple(sys.version_info[:3])
if sys.version_info < {MIN_PYTHON!r}:
    say("too-old", v)
    sys.exit(3)
sha, size = sys.argv[2], int(sys.argv[3])
d = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sandfleet")
f = os.path.join(d, "agent-" + sha + ".zip")
root = os.path.join(d, "agent-" + sha)
state = "cached"
if not os.path.isfile(os.path.join(root, "__main__.py")):
    import hashlib, shutil, zipfile
    mask = os.umask(0o077)
    try:
        with open(f, "rb") as fh:
            data = fh.read()
    except OSError:
        data = b""
    if hashlib.sha256(data).hexdigest() != sha:
        say("upload")
        data = bytearray()
        while len(data) < size:
            chunk = os.read(0, min(1 << 20, size - len(data)))
            if not chunk:
                sys.exit(4)
            data += chunk
        if hashlib.sha256(data).hexdigest() != sha:
            say("corrupt")
            sys.exit(5)
        os.makedirs(d, exist_ok=True)
        tmp = "%s.%d.tmp" % (f, os.getpid())
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, f)
        state = "stored"
    tmp = "%s.%d.tmp" % (root, os.getpid())
    zipfile.ZipFile(f).extractall(tmp)
    try:
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp)
    os.umask(mask)
say("ready", state, v)
sys.path[:] = [root] + [p for p in sys.path if p]
sys.argv = [root]
from {AGENT_PACKAGE}.agent import main
sys.exit(main())
"""


@dataclass(frozen=True)
class AgentBundle:
    """The zip every host runs, and the hash that names it."""

    data: bytes
    sha256: str

    def command(self, python: str) -> str:
        """The one string the remote login shell (POSIX quoting, as Ansible assumes) runs.

        ``python`` is split like a shebang line (``/usr/bin/env python3`` works) and every word is
        quoted, so an inventory value can name a program but never add a shell command.
        """
        try:
            words = shlex.split(python)
        except ValueError:  # an unbalanced quote: take the value as one path
            words = [python]
        interpreter = " ".join(shlex.quote(word) for word in words) or "python3"
        return (f"exec {interpreter} -E -s -S -c {shlex.quote(_STUB.strip())} "
                f"sandfleet-agent {self.sha256} {len(self.data)}")


@dataclass(frozen=True)
class Reply:
    """One stub line: ``kind`` is upload, ready, too-old or corrupt; ``words`` what follows."""

    kind: str
    words: tuple[str, ...] = ()


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
    """Zip the host side and its two dependencies, deterministically."""
    sources = {
        AGENT_PACKAGE: (Path(next(iter(modules.__path__))), ("**/*.py", "templates/*.j2")),
        "jinja2": (Path(jinja2.__file__).parent, ("*.py",)),
        "markupsafe": (Path(markupsafe.__file__).parent, ("*.py",)),  # its C speedups are optional
    }
    entries: dict[str, bytes] = {"__main__.py": _MAIN.encode()}
    for package, (root, patterns) in sources.items():
        for name, path in _package_files(root, patterns):
            entries[f"{package}/{name}"] = path.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name])
    data = buffer.getvalue()
    return AgentBundle(data, hashlib.sha256(data).hexdigest())


_built: list[AgentBundle] = []
_building = threading.Lock()


def agent_bundle() -> AgentBundle:
    """The bundle for this controller process: built once, on first use, shared by every host
    (the lock matters: all host threads ask for it at the same moment)."""
    with _building:
        if not _built:
            _built.append(build_bundle())
        return _built[0]


def cache_path(home: str, sha: str, xdg_cache_home: Optional[str] = None) -> str:
    """Where the stub keeps the zip on a POSIX host (for tests and for people cleaning up)."""
    return os.path.join(xdg_cache_home or os.path.join(home, ".cache"), "sandfleet", f"agent-{sha}.zip")
