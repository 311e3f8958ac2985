"""``{{ }}`` everywhere: checked when a playbook loads, rendered against one host's variables.

One sandboxed Jinja2 environment (public API only) for both: the loader parses every template
and bare expression (``when``, ``failed_when``) so a syntax error is reported at its file and
line before anything runs (:func:`check_template`, :func:`check_expression`); the host loop and
the inventory render with :class:`VarRenderer`.

Variables may refer to variables that are themselves templates (``ansible_host: "{{ ip }}"``,
``ip: "10.0.0.{{ n }}"``); each is rendered when first used, at most once, and a loop between
them is an error instead of a hang. A value that is exactly one ``{{ expression }}`` keeps the
expression's type (a list stays a list), as in Ansible. Inventories may come from other people,
so the environment is Jinja2's sandbox, and an undefined name is an error that says which
variable used it and where that variable was set.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Optional

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from sandfleet.errors import InputError, Mark

if TYPE_CHECKING:  # inventories are rendered here, and the inventory renders with this module
    from sandfleet.inventory.model import VarSetting

_SINGLE_EXPRESSION = re.compile(r"^\{\{((?:(?!\{\{|\}\}).)*)\}\}$", re.S)
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined")
_RESULT = "__sandfleet_result"

#: The largest value one template may build, in bytes, for the thread rendering now (the host's
#: policy's ``limits.value_bytes``, set by :meth:`VarRenderer.render`); ``None`` means no bound.
_bound = threading.local()


class ValueTooLarge(Exception):
    """A template would build a value beyond the policy's ``limits.value_bytes``."""


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


class _BoundedEnvironment(SandboxedEnvironment):
    """Jinja's sandbox, plus a size bound checked *before* ``*`` repeats, ``+`` joins or ``**``
    raises a value: ``{{ 'x' * 20000000 }}`` is refused without building the string (and the
    rendered output is cut off as soon as it passes the bound)."""

    intercepted_binops = frozenset(["*", "+", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        limit: Optional[int] = getattr(_bound, "limit", None)
        if limit is not None:
            estimate = 0
            if operator == "*":
                count = right if isinstance(right, int) else left if isinstance(left, int) else 0
                estimate = max(_size(left), _size(right)) * max(count, 0)
            elif operator == "+":
                estimate = _size(left) + _size(right)
            elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
                estimate = right * max(abs(left).bit_length(), 1) // 3  # decimal digits, roughly
            if estimate > limit:
                raise ValueTooLarge(f"it would build a value of about {estimate} bytes, over the policy's "
                                    f"limits.value_bytes {limit}")
        return super().call_binop(context, operator, left, right)


_ENV = _BoundedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


def _flag(name: str, expected: bool = True) -> Any:
    return lambda result: isinstance(result, Mapping) and bool(result.get(name)) is expected


# The tests and filters Ansible playbooks use most on registered results, so ported `when:` lines work.
_ENV.tests.update({"failed": _flag("failed"), "succeeded": _flag("failed", False), "success": _flag("failed", False),
                   "changed": _flag("changed"), "skipped": _flag("skipped")})
_ENV.filters.update({"bool": lambda v: v if isinstance(v, bool) else str(v).strip().lower() in ("1", "true", "yes"),
                     "to_json": lambda v: json.dumps(v, ensure_ascii=False), "from_json": json.loads})
TEMPLATE_START = ("{{", "{%", "{#")


def check_template(text: str, mark: Mark, what: str) -> None:
    """Parse (not render) a template so a syntax error is reported now, at its file and line."""
    if not any(d in text for d in TEMPLATE_START):
        return
    try:
        _ENV.parse(text)
    except TemplateSyntaxError as exc:
        line = f" (line {exc.lineno} of the value)" if exc.lineno and exc.lineno > 1 else ""
        message = (exc.message or "syntax error").rstrip(".")
        raise InputError(f"{what} is not a valid template: {message}{line} (for a literal '{{{{' write "
                         "{{ '{{' }})", mark) from None


def check_expression(text: str, mark: Mark, what: str) -> None:
    """A bare expression (``when: x == 1``) must be one expression and nothing after it."""
    if "{{" in text or "{%" in text:
        raise InputError(f"{what} is a bare expression: write `x == 1`, not `{{{{ x == 1 }}}}`", mark)
    try:
        _ENV.compile_expression(text)
    except TemplateSyntaxError as exc:
        message = (exc.message or "syntax error").rstrip(".")
        raise InputError(f"{what} is not a valid expression: {message}", mark) from None


@lru_cache(maxsize=4096)
def names_read(text: str) -> frozenset[str]:
    """The variables a template reads (Jinja's own analysis of the parsed template); none for
    plain text or text that does not parse (the loader reports that)."""
    if not any(d in text for d in TEMPLATE_START):
        return frozenset()
    try:
        return frozenset(meta.find_undeclared_variables(_ENV.parse(text)))
    except TemplateSyntaxError:
        return frozenset()


#: Compiling is the slow part of rendering; the same few templates render for every host.
_compile = lru_cache(maxsize=4096)(_ENV.from_string)


def _joined(chunks: Any) -> str:
    """The rendered chunks, stopped as soon as they pass the thread's bound."""
    limit: Optional[int] = getattr(_bound, "limit", None)
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if limit is not None and size > limit:
            raise ValueTooLarge(f"it renders to more than the policy's limits.value_bytes {limit}")
        out.append(chunk)
    return "".join(out)


class _LazyVars(dict):  # type: ignore[type-arg]
    """The variables as Jinja sees them: each rendered on first lookup, then cached."""

    def __init__(self, renderer: VarRenderer) -> None:
        super().__init__()
        self._renderer = renderer

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self._renderer.has(key) or key in _ENV.globals)

    def __getitem__(self, key: str) -> Any:
        if self._renderer.has(key):
            return self._renderer.get(key)
        return _ENV.globals[key]


class VarRenderer:
    """One host's variables, rendered on demand.

    ``settings`` are templates to render (inventory vars, and play vars layered over them);
    ``fixed`` are values taken as they are (magic vars such as ``groups``), which win over both.
    """

    def __init__(self, settings: Mapping[str, VarSetting], fixed: Optional[Mapping[str, Any]] = None) -> None:
        self._settings = settings
        self._fixed = dict(fixed or {})
        self._done: dict[str, Any] = {}
        self._active: list[str] = []
        self._lazy = _LazyVars(self)

    def set_fixed(self, name: str, value: Any) -> None:
        """Set a run-time variable (a registered result, the loop ``item``); it wins over the
        inventory's. Rendered values are recomputed, since they may have used the old one."""
        self._fixed[name] = value
        self._done.clear()

    def drop_fixed(self, name: str) -> None:
        if self._fixed.pop(name, None) is not None:
            self._done.clear()

    def has(self, name: str) -> bool:
        return name in self._fixed or name in self._settings

    def mark(self, name: str) -> Optional[Mark]:
        setting = self._settings.get(name)
        return setting.mark if setting is not None and name not in self._fixed else None

    def raw(self, name: str) -> Any:
        if name in self._fixed:
            return self._fixed[name]
        setting = self._settings.get(name)
        return setting.value if setting is not None else None

    def get(self, name: str, default: Any = None) -> Any:
        """The rendered value of ``name`` (``default`` when it is not set)."""
        if name in self._fixed:
            return self._fixed[name]
        if name in self._done:
            return self._done[name]
        setting = self._settings.get(name)
        if setting is None:
            return default
        if name in self._active:
            chain = " -> ".join([*self._active[self._active.index(name):], name])
            raise InputError(f"variable {name!r} refers to itself ({chain})", setting.mark)
        self._active.append(name)
        try:
            value = self.render(setting.value, name, setting.mark)
        finally:
            self._active.pop()
        self._done[name] = value
        return value

    #: The bound on one rendered value (the host policy's ``limits.value_bytes``); None: unbounded.
    value_limit: Optional[int] = None

    def render(self, value: Any, what: str, mark: Optional[Mark]) -> Any:
        """Render every string inside ``value``; ``what`` names it in error messages."""
        if self.value_limit is None or getattr(_bound, "limit", None) is not None:
            return self._render(value, what, mark)
        _bound.limit = self.value_limit
        try:
            return self._render(value, what, mark)
        finally:
            _bound.limit = None

    def _render(self, value: Any, what: str, mark: Optional[Mark]) -> Any:
        if isinstance(value, str):
            return self._render_text(value, what, mark) if ("{{" in value or "{%" in value) else value
        if isinstance(value, dict):
            return {key: self._render(item, what, mark) for key, item in value.items()}
        if isinstance(value, list):
            return [self._render(item, what, mark) for item in value]
        return value

    def _render_text(self, text: str, what: str, mark: Optional[Mark]) -> Any:
        try:
            single = _SINGLE_EXPRESSION.match(text)
            if single:
                template = _compile(f"{{% set {_RESULT} = ({single.group(1)}) %}}")
                context = template.new_context(self._lazy, shared=True)
                for _ in template.root_render_func(context):
                    pass
                result = context.vars.get(_RESULT)
                if isinstance(result, Undefined):
                    str(result)  # StrictUndefined raises here, naming the variable
                return result
            template = _compile(text)
            return _joined(template.root_render_func(template.new_context(self._lazy, shared=True)))
        except InputError:
            raise
        except ValueTooLarge as exc:
            raise InputError(f"the value of {what!r} is too large: {exc} (the operator can raise it with "
                             "sandfleet_policy limits)", mark) from None
        except UndefinedError as exc:
            m = _UNDEFINED_NAME.match(str(exc))
            if m:
                raise InputError(f"undefined variable {m.group(1)!r} in the value of {what!r}", mark) from None
            raise InputError(f"cannot render the value of {what!r}: {exc}", mark) from None
        except TemplateSyntaxError as exc:
            raise InputError(f"invalid template in the value of {what!r}: {exc.message}", mark) from None
        except SecurityError as exc:
            raise InputError(f"unsafe template in the value of {what!r}: {exc}", mark) from None
        except Exception as exc:  # any other failure of a user's template is the user's to fix
            raise InputError(f"cannot render the value of {what!r}: {exc}", mark) from None
