"""``{{ }}`` in argv, cwd and env, rendered on the controller per host (DESIGN §3).

A sandboxed Jinja2 environment (playbooks may come from untrusted authors) with StrictUndefined:
a missing variable is an error naming the file, line, task, host and variable, never an empty
string. Each argv element renders to exactly one element, whatever the variable holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Optional

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from sandfleet.errors import InputError, Mark


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


@lru_cache(maxsize=4096)
def _compile(text: str) -> jinja2.Template:
    return environment().from_string(text)


@lru_cache(maxsize=1024)
def _compile_expression(text: str) -> Any:
    return environment().compile_expression(text)


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def _context(what: str, mark: Optional[Mark], host: str, task: str) -> str:
    return f"{what} of task {task!r} on host {host!r}"


def render(text: str, variables: Mapping[str, Any], *, what: str, mark: Optional[Mark], host: str, task: str) -> str:
    """Render one string; plain strings (the common case) cost nothing."""
    if not is_template(text):
        return text
    try:
        return _compile(text).render(variables)
    except jinja2.UndefinedError as exc:
        raise InputError(f"{exc.message} in {_context(what, mark, host, task)}", mark) from None
    except jinja2.TemplateError as exc:
        raise InputError(f"cannot render {_context(what, mark, host, task)}: {exc}", mark) from None


def evaluate(expression: str, variables: Mapping[str, Any], *, what: str, mark: Optional[Mark], host: str,
             task: str) -> Any:
    """Evaluate a raw Jinja expression (``when:``, ``failed_when:``) as Ansible does."""
    text = expression.strip()
    if text.startswith("{{") and text.endswith("}}"):
        text = text[2:-2]
    try:
        return _compile_expression(text)(**variables)
    except jinja2.UndefinedError as exc:
        raise InputError(f"{exc.message} in {_context(what, mark, host, task)}", mark) from None
    except jinja2.TemplateError as exc:
        raise InputError(f"cannot evaluate {_context(what, mark, host, task)}: {exc}", mark) from None


def render_data(value: Any, variables: Mapping[str, Any], *, what: str, mark: Optional[Mark], host: str,
                task: str) -> Any:
    """Render strings inside a loop list or nested data, keeping its shape."""
    if isinstance(value, str):
        if is_template(value) and value.strip().startswith("{{") and value.strip().endswith("}}") \
                and value.count("{{") == 1:
            return evaluate(value, variables, what=what, mark=mark, host=host, task=task)
        return render(value, variables, what=what, mark=mark, host=host, task=task)
    if isinstance(value, list):
        return [render_data(v, variables, what=what, mark=mark, host=host, task=task) for v in value]
    if isinstance(value, dict):
        return {k: render_data(v, variables, what=what, mark=mark, host=host, task=task) for k, v in value.items()}
    return value
