"""Golden cases for the macOS and Windows wrappers, as data: ``cases/seatbelt/*.json`` and
``cases/windows/*.json``, one file per case, read by one test each (test_seatbelt.py,
test_windows.py).

A case is the request the host receives (``intent`` in wire form, or a ``filesystem`` map in
playbook spelling, plus ``cwd`` and ``argv``), the host ``facts``, optionally a ``fs`` layout (then
the host's filesystem is exactly that; without it the dry-run assumptions apply) and a ``proxy``
port; then ``expected`` (argv, profile or policy text, notes) or ``refused`` (a substring of the
refusal). The fixed parts shared by every case live in one golden file per OS (``base.sb``,
``launcher.ps1``) so a case shows only what differs.

``python tests/modules/native_cases.py`` rewrites ``expected`` of every case and the shared
goldens from the current code; review the diff before committing it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).parent
CASES = HERE / "cases"
if __name__ == "__main__":  # run as a script: make the test helpers importable
    sys.path.insert(0, str(HERE.parent))

from sandfleet_agent.backends.base import Backend, ProxyEndpoint, Refused, Wrapper  # noqa: E402
from sandfleet_agent.backends.escaping import ps_str  # noqa: E402
from sandfleet_agent.backends.seatbelt import PROFILE_FILE, Seatbelt  # noqa: E402
from sandfleet_agent.backends.windows import LAUNCHER_FILE, POLICY_FILE, WindowsSandbox  # noqa: E402
from sandfleet_agent.binding.bind import BindError, BoundPolicy, bind  # noqa: E402
from sandfleet_agent.binding.facts import BackendStatus, HostFacts, assumed_facts  # noqa: E402
from sandfleet_agent.binding.hostfs import AssumedFs, FsView  # noqa: E402
from sandfleet_agent.portable import wire  # noqa: E402
from sandfleet_agent.portable.intent import PROFILES, SandboxIntent  # noqa: E402
from sandfleet_agent.portable.pathuri import PathUri  # noqa: E402

#: Where the fixed base of every Seatbelt profile ends and the policy's own sections begin.
SEATBELT_SPLIT = "; Reads (with mapping code and starting programs).\n"
BASE_FILE = CASES / "seatbelt" / "base.sb"
LAUNCHER_GOLDEN = CASES / "windows" / "launcher.ps1"
POLICY_MARK, COMMAND_MARK = "<POLICY_XML>", "<COMMAND_LINE>"


class FakeFs(FsView):
    """An exact filesystem given as data: directories, files (with content) and symlinks.
    Windows names compare ignoring case, as NTFS does."""

    exact = True

    def __init__(self, system: str, dirs: list[str], files: dict[str, str], links: dict[str, str]) -> None:
        super().__init__(system)
        self.win = system == "windows"
        if system == "macos":
            links = {"/tmp": "/private/tmp", "/var": "/private/var", "/etc": "/private/etc", **links}
        self.files = {self._key(p): c for p, c in files.items()}
        self.links = {self._key(p): t for p, t in links.items()}
        self.names = {self._key(p): str(self.path.normpath(p)) for p in [*files, *links]}
        self.dirs: dict[str, str] = {}
        for path in [*dirs, *files, *links]:
            for parent in self._parents(path):
                self.dirs.setdefault(self._key(parent), parent)
        for path in dirs:
            self.dirs[self._key(path)] = path

    def _key(self, path: str) -> str:
        norm = str(self.path.normpath(path))
        return norm.lower() if self.win else norm

    def _parents(self, path: str) -> Iterator[str]:
        parent = self.path.dirname(self.path.normpath(path))
        while True:
            yield parent
            up = self.path.dirname(parent)
            if up == parent:
                return
            parent = up

    def kind(self, path: str) -> Optional[str]:
        key = self._key(path)
        if key in self.links:
            return "link"
        if key in self.files:
            return "file"
        return "dir" if key in self.dirs else None

    def realpath(self, path: str) -> str:
        norm = str(self.path.normpath(path))
        drive, rest = self.path.splitdrive(norm)
        sep = "\\" if self.win else "/"
        out = drive + sep
        for part in [p for p in rest.split(sep) if p]:
            out = str(self.path.join(out, part))
            for _ in range(40):
                target = self.links.get(self._key(out))
                if target is None:
                    break
                out = str(self.path.normpath(self.path.join(self.path.dirname(out), target)))
            canonical = self.dirs.get(self._key(out))
            out = canonical if canonical and self.win else out
        return out

    def scandir(self, path: str) -> Iterator[tuple[str, Optional[str]]]:
        key = self._key(path)
        names: dict[str, Optional[str]] = {}
        for table in (self.dirs, self.files, self.links):
            for child_key in table:
                if child_key != key and self._key(self.path.dirname(child_key)) == key:
                    name = self.path.basename(self.dirs.get(child_key) or self.names[child_key])
                    names[name] = self.kind(child_key)
        return iter(sorted(names.items()))

    def read_head(self, path: str) -> Optional[str]:
        return self.files.get(self._key(path))


def case_files(backend: str) -> list[Path]:
    return sorted((CASES / backend).glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


# -- from a case to the host's inputs ------------------------------------------------------------

def facts_of(case: dict[str, Any], backend: str) -> HostFacts:
    f = case["facts"]
    system = f["os"]
    base = assumed_facts(system, f.get("user", "dev"), tuple(f.get("workspace_roots", ())), f.get("home"),
                         f.get("tmpdir"))
    status = BackendStatus(backend, f.get("available", True), f.get("reason", ""), f.get("path"))
    return HostFacts(os=system, home=base.home, tmpdir=base.tmpdir, workspace_roots=base.workspace_roots,
                     user=base.user, backends=(status,), assumed="fs" not in case)


def fs_of(case: dict[str, Any], system: str) -> FsView:
    layout = case.get("fs")
    if layout is None:
        return AssumedFs(system)
    return FakeFs(system, layout.get("dirs", []), layout.get("files", {}), layout.get("links", {}))


def _path_json(key: str, system: str) -> dict[str, Any]:
    """A filesystem key in playbook spelling (``:workspace_roots/.git``, ``~/.ssh``, ``**/*.pem``,
    an absolute path) as the wire carries it."""
    if key.startswith(":"):
        name, _, sub = key[1:].partition("/")
        return {"special": name, **({"subpath": sub} if sub else {})}
    if key == "~" or key.startswith("~/"):
        return {"special": "home", **({"subpath": key[2:]} if key[2:] else {})}
    if re.search(r"[*?[]", key):
        return {"glob": key}
    return {"uri": str(PathUri.from_native(key, "windows" if system == "windows" else "posix"))}


def request_of(case: dict[str, Any]) -> wire.ExecRequest:
    system = case["facts"]["os"]
    intent = dict(case.get("intent", {}))
    permissions: list[Any] = []
    if "profile" in case:
        permissions += wire.intent_to_json(SandboxIntent(PROFILES[case["profile"]]))["permissions"]
    permissions += [{"path": _path_json(k, system), "access": v} for k, v in case.get("filesystem", {}).items()]
    intent["permissions"] = permissions + intent.get("permissions", [])
    if "network" in case:
        intent["network"] = case["network"]
    return wire.request_from_json({"v": 1, "id": "case", "argv": case["argv"], "cwd": case.get("cwd"),
                                   "sandbox": intent})


def backend_of(case: dict[str, Any], backend: str) -> Backend:
    facts = facts_of(case, backend)
    proxy = ProxyEndpoint(case["proxy"]) if "proxy" in case else None
    fs = fs_of(case, facts.os)
    return Seatbelt(facts, proxy, fs) if backend == "seatbelt" else WindowsSandbox(facts, proxy, fs)


def bound(case: dict[str, Any], backend: str) -> tuple[Backend, BoundPolicy, wire.ExecRequest]:
    request = request_of(case)
    be = backend_of(case, backend)
    assert request.sandbox is not None
    try:
        policy = bind(request.sandbox, be.facts, request.cwd, fs_of(case, be.facts.os))
    except BindError as exc:
        raise Refused(f"sandbox intent cannot be bound on this host: {exc}") from None
    return be, policy, request


def render(case: dict[str, Any], backend: str) -> Wrapper:
    """The wrapper for a case, or :class:`Refused` (a binding error counts as a refusal too)."""
    be, policy, request = bound(case, backend)
    return be.render(policy, request.argv)


# -- what a case expects ---------------------------------------------------------------------------

def observed(case: dict[str, Any], backend: str) -> dict[str, Any]:
    """The case's ``expected`` (or ``refused``) as the current code produces it."""
    try:
        be, policy, request = bound(case, backend)
        wrapper = be.render(policy, request.argv)
    except Refused as exc:
        return {"refused": str(exc)}
    told = {"notes": list(wrapper.notes), "warnings": list(policy.warnings)}
    if backend == "seatbelt":
        profile = wrapper.files[PROFILE_FILE]
        argv = ["$PROFILE" if w == profile else w for w in wrapper.argv]
        return {"expected": {"argv": argv, "profile": profile.split(SEATBELT_SPLIT, 1)[1].splitlines(), **told}}
    script = wrapper.files[LAUNCHER_FILE]
    argv = ["$LAUNCHER" if w == script else w for w in wrapper.argv]
    return {"expected": {"argv": argv, "policy": wrapper.files[POLICY_FILE].splitlines(),
                         "command_line": command_line_of(script), **told}}


def command_line_of(script: str) -> str:
    from native_readers import ps_assignment

    return ps_assignment(script, "CommandLine")


def seatbelt_base(profile: str) -> str:
    return profile.split(SEATBELT_SPLIT, 1)[0]


def launcher_golden(script: str, policy_xml: str, command_line: str) -> str:
    """The launcher with its two values replaced by markers: the same text for every case."""
    head = f"$PolicyXml = {ps_str(policy_xml)}\n$CommandLine = {ps_str(command_line)}\n"
    assert head in script
    return script.replace(head, f"$PolicyXml = {POLICY_MARK}\n$CommandLine = {COMMAND_MARK}\n")


def regenerate() -> None:
    for backend in ("seatbelt", "windows"):
        for path in case_files(backend):
            case = load(path)
            case.pop("expected", None)
            case.pop("refused", None)
            case.update(observed(case, backend))
            path.write_text(json.dumps(case, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            if "expected" in case and backend == "seatbelt":
                BASE_FILE.write_text(seatbelt_base(render(case, backend).files[PROFILE_FILE]), encoding="utf-8")
            if "expected" in case and backend == "windows":
                w = render(case, backend)
                LAUNCHER_GOLDEN.write_text(launcher_golden(w.files[LAUNCHER_FILE], w.files[POLICY_FILE],
                                                           command_line_of(w.files[LAUNCHER_FILE])), encoding="utf-8")
            print(f"{backend}/{path.name}: {'refused' if 'refused' in case else 'rendered'}")


if __name__ == "__main__":
    regenerate()
