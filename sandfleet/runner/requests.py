"""From a playbook task and one host's variables to the wire request that host receives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

from sandfleet.errors import InputError
from sandfleet.modules.intent import FilePath, Special
from sandfleet.modules.pathuri import PathUri
from sandfleet.modules.wire import ExecRequest
from sandfleet.playbook import Task
from sandfleet.templating import render


def cwd_spec(text: Optional[str], host_os: str) -> Union[Special, FilePath, None]:
    """``:workspace_roots/sub`` stays symbolic, ``~/x`` becomes the host's home, a path a URI."""
    if text is None or text == "":
        return None
    if text.startswith(":"):
        name, _, sub = text[1:].partition("/")
        return Special(name, sub or None)
    if text == "~" or text.startswith("~/"):
        return Special("home", text[2:] or None)
    convention = "windows" if host_os == "windows" else "posix"
    return FilePath(str(PathUri.from_native(text, convention)))


def build_request(task: Task, request_id: str, variables: Mapping[str, Any], host: str, host_os: str) -> ExecRequest:
    spec = task.exec
    marks = spec.argv_marks

    def mark(i: int) -> Any:
        return marks[i] if i < len(marks) else task.mark

    argv = tuple(render(a, variables, what=f"argv[{i}]", mark=mark(i), host=host, task=task.name)
                 for i, a in enumerate(spec.argv))
    env = {k: render(v, variables, what=f"env {k}", mark=spec.env_marks.get(k, task.mark), host=host,
                     task=task.name) for k, v in spec.env.items()}
    cwd_text = None if spec.cwd is None else render(spec.cwd, variables, what="cwd", mark=spec.cwd_mark or task.mark,
                                                     host=host, task=task.name)
    try:
        cwd = cwd_spec(cwd_text, host_os)
    except ValueError as exc:
        raise InputError(f"cwd {cwd_text!r} of task {task.name!r} on host {host!r} is not usable on a {host_os} "
                         f"host: {exc}", spec.cwd_mark or task.mark,
                         allowed=[":workspace_roots[/sub]", "~/sub", "an absolute path"]) from None
    if not argv[0]:
        raise InputError(f"argv[0] of task {task.name!r} renders empty on host {host!r}", mark(0))
    return ExecRequest(id=request_id, argv=argv, cwd=cwd, env=env, timeout_s=task.timeout,
                       sandbox=task.sandbox.intent)
