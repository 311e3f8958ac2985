"""From a playbook task and one host's variables to the wire request that host receives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

from sandfleet.errors import InputError, Mark
from sandfleet.load.playbook import EnvLayer, EnvTemplate, Task
from sandfleet.templating import OMIT, VarRenderer
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
    """The wire request; ``omit`` (docs/variables.md) drops an argv item that is exactly it, leaves
    out an env variable whose value is it and unsets cwd; anywhere else in them it is an error."""
    spec = task.exec

    def mark(i: int) -> Any:
        return spec.argv_marks[i] if i < len(spec.argv_marks) else task.mark

    argv = []
    for i, a in enumerate(spec.argv):
        word = render_text(renderer, a, f"argv[{i}]", mark(i))
        if word == OMIT:
            if i == 0:
                raise InputError("argv[0] (the program) renders to omit; only an argument can be left out", mark(0))
            continue
        argv.append(_no_omit(word, f"argv[{i}]", mark(i)))
    env = _environment(task, renderer)
    cwd_text = None if spec.cwd is None else render_text(renderer, spec.cwd, "cwd", spec.cwd_mark or task.mark)
    if cwd_text == OMIT:
        cwd_text = None  # as if cwd were not written
    elif cwd_text is not None:
        _no_omit(cwd_text, "cwd", spec.cwd_mark or task.mark)
    try:
        cwd = cwd_spec(cwd_text, host_os)
    except ValueError as exc:
        raise InputError(f"cwd {cwd_text!r} is not usable on a {host_os} host: {exc}", spec.cwd_mark or task.mark,
                         allowed=[":workspace_roots[/sub]", "~/sub", "an absolute path"]) from None
    if not argv[0]:
        raise InputError("argv[0] renders empty", mark(0))
    request = ExecRequest(id=request_id, argv=tuple(argv), cwd=cwd, env=env, timeout_s=task.timeout,
                          sandbox=task.sandbox.intent, policy=policy)
    check_sizes(request, policy.limits, task.mark)
    return request


def _no_omit(text: str, what: str, mark: Optional[Mark]) -> str:
    if OMIT in text:
        shown = text.replace(OMIT, "{{ omit }}")
        raise InputError(f"{what} renders to {shown!r}: omit works only as a whole value (an argv item that is "
                         "exactly omit is dropped, an env value unsets its variable, cwd is as if not given), never "
                         "inside other text", mark)
    return text


def _environment(task: Task, renderer: VarRenderer) -> dict[str, str]:
    """The task's environment: each level (the play's ``environment``, the task's, ``exec.env``)
    rendered and merged, the later winning; a value that is omit leaves its name out."""
    spec = task.exec
    layers: tuple[EnvLayer, ...] = spec.env_layers or ((spec.env, spec.env_marks),)
    env: dict[str, str] = {}
    for layer in layers:
        if isinstance(layer, EnvTemplate):
            entries = _rendered_mapping(renderer, layer)
        else:
            values, marks = layer
            entries = {k: (render_text(renderer, v, f"env {k}", marks.get(k, task.mark)), marks.get(k, task.mark))
                       for k, v in values.items()}
        for name, (value, where) in entries.items():
            if value == OMIT:
                env.pop(name, None)
            else:
                env[name] = _no_omit(value, f"env {name}", where)
    return env


def _rendered_mapping(renderer: VarRenderer, layer: EnvTemplate) -> dict[str, tuple[str, Optional[Mark]]]:
    """``env: "{{ my_env }}"`` rendered and checked as the loader checks a written mapping: names are
    non-empty strings without ``=`` or NUL, values plain (a number or boolean becomes its text)."""
    value = renderer.render(layer.text, layer.what, layer.mark)
    if value == OMIT:
        return {}  # as if the level were not written
    if not isinstance(value, Mapping):
        raise InputError(f"{layer.what} {layer.text!r} must render to a mapping of NAME: value, got "
                         f"{_kind(value)}", layer.mark, allowed=("{NAME: value, ...}",))
    out: dict[str, tuple[str, Optional[Mark]]] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise InputError(f"{layer.what} {layer.text!r} renders a variable name {name!r}: a name must be a "
                             "non-empty string without '=' or NUL", layer.mark)
        if item is None or isinstance(item, (Mapping, list, tuple)) or not isinstance(item, (str, int, float)):
            raise InputError(f"{layer.what} {layer.text!r} renders {name} to {_kind(item)}; a value must be plain "
                             "text (or a number or boolean)", layer.mark)
        text = str(item)
        if "\0" in text:
            raise InputError(f"{layer.what} {layer.text!r} renders {name} with a NUL character, which no OS can pass "
                             "to a program", layer.mark)
        out[name] = (text, layer.mark)
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} {str(value)[:60]!r}"


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
