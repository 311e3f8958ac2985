"""From a playbook task and one host's variables to the wire request that host receives."""

from __future__ import annotations

from typing import Any, Optional, Union

from sandfleet.errors import InputError, Mark
from sandfleet.load.playbook import Task
from sandfleet.templating import VarRenderer
from sandfleet_agent.portable.intent import FilePath, Special
from sandfleet_agent.portable.pathuri import PathUri
from sandfleet_agent.portable.policy import BUILT_IN, Effective, Limits
from sandfleet_agent.portable.wire import ExecRequest, encode_request


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


def render_text(renderer: VarRenderer, text: str, what: str, mark: Optional[Mark]) -> str:
    """Render one string; whatever a variable holds, the result is one string (never several)."""
    value = renderer.render(text, what, mark)
    return value if isinstance(value, str) else str(value)


def build_request(task: Task, request_id: str, renderer: VarRenderer, host_os: str,
                  policy: Effective = BUILT_IN) -> ExecRequest:
    spec = task.exec

    def mark(i: int) -> Any:
        return spec.argv_marks[i] if i < len(spec.argv_marks) else task.mark

    argv = tuple(render_text(renderer, a, f"argv[{i}]", mark(i)) for i, a in enumerate(spec.argv))
    env = {k: render_text(renderer, v, f"env {k}", spec.env_marks.get(k, task.mark)) for k, v in spec.env.items()}
    cwd_text = None if spec.cwd is None else render_text(renderer, spec.cwd, "cwd", spec.cwd_mark or task.mark)
    try:
        cwd = cwd_spec(cwd_text, host_os)
    except ValueError as exc:
        raise InputError(f"cwd {cwd_text!r} is not usable on a {host_os} host: {exc}", spec.cwd_mark or task.mark,
                         allowed=[":workspace_roots[/sub]", "~/sub", "an absolute path"]) from None
    if not argv[0]:
        raise InputError("argv[0] renders empty", mark(0))
    request = ExecRequest(id=request_id, argv=argv, cwd=cwd, env=env, timeout_s=task.timeout,
                          sandbox=task.sandbox.intent, policy=policy)
    check_sizes(request, policy.limits, task.mark)
    return request


def check_sizes(request: ExecRequest, limits: Limits, mark: Optional[Mark]) -> None:
    """The policy's size limits on what a task sends: one value, the argv, the environment and
    the request as sent (the agent checks the last again against the host owner's limits)."""
    values = [*request.argv, *request.env.values()]
    checks = [("a single value", max((_bytes(v) for v in values), default=0), limits.value_bytes, "value_bytes"),
              ("the argv", sum(_bytes(a) + 1 for a in request.argv), limits.argv_bytes, "argv_bytes"),
              ("the environment", sum(_bytes(k) + _bytes(v) + 2 for k, v in request.env.items()), limits.env_bytes,
               "env_bytes")]
    for what, size, limit, key in checks:
        if size > limit:
            raise InputError(f"{what} of this task is {size} bytes, over the policy's limits.{key} {limit} (the "
                             "operator can raise it with sandfleet_policy limits)", mark)
    size = len(encode_request(request))
    if size > limits.request_bytes:
        raise InputError(f"this task's request is {size} bytes, over the policy's limits.request_bytes "
                         f"{limits.request_bytes} (the operator can raise it with sandfleet_policy limits)", mark)


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))
