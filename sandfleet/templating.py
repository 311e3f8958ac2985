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
variable used it and where that variable was set. Also here: ``omit`` (:data:`OMIT`), and
``hostvars`` (:class:`HostVars`), whose values :mod:`sandfleet.run.fleetvars` supplies; what a
template may read is docs/variables.md.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import itertools
import json
import operator
import posixpath
import re
import secrets
import shlex
import threading
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Optional

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
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
                     "to_json": lambda v: json.dumps(_plain(v), ensure_ascii=False), "from_json": json.loads})

#: Ansible's ``omit``: a value that means "as if this were not written". It is honoured where
#: :mod:`sandfleet.run.requests` says (an argv item, an ``env`` value, ``cwd``), and an error
#: anywhere else; random per process, so no text a playbook writes can stand for it by accident.
OMIT = "__omit_place_holder__" + secrets.token_hex(20)
_ENV.globals["omit"] = OMIT


# --- Ansible's common filters and tests (ansible.builtin), with Ansible's documented semantics. ---

#: Regular expressions come from playbooks and inventories other people wrote, and Python's ``re``
#: cannot be interrupted: a pattern is refused when longer than this, or when it nests unbounded
#: repeats (``(a+)+``, ``(a*)*``: exponential backtracking), and the text searched is cut to the
#: thread's value bound (``limits.value_bytes``) or, with none, to this many characters.
REGEX_PATTERN_MAX = 1000
REGEX_INPUT_MAX = 1 << 20


def _unbounded_repeat_nesting(parsed: Any, inside: bool = False) -> bool:
    """Whether a parsed pattern has an unbounded repeat inside another repeat (star height > 1)."""
    from re import _constants as c  # type: ignore[attr-defined]  # the stdlib's own parse tree
    for op, av in parsed:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            _low, high, sub = av
            repeats = high is c.MAXREPEAT or high > 1
            if repeats and inside and high is c.MAXREPEAT:
                return True
            if _unbounded_repeat_nesting(sub, inside or repeats):
                return True
        elif op == c.SUBPATTERN:
            if _unbounded_repeat_nesting(av[-1], inside):
                return True
        elif op == c.BRANCH:
            if any(_unbounded_repeat_nesting(b, inside) for b in av[1]):
                return True
        elif op in (c.ASSERT, c.ASSERT_NOT):
            if _unbounded_repeat_nesting(av[1], inside):
                return True
        elif op == getattr(c, "ATOMIC_GROUP", None) or op == getattr(c, "POSSESSIVE_REPEAT", None):
            continue  # no backtracking into them
    return False


@lru_cache(maxsize=512)
def _regex(pattern: str, flags: int) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise ValueError(f"a regular expression must be a string, got {type(pattern).__name__}")
    if len(pattern) > REGEX_PATTERN_MAX:
        raise ValueError(f"the regular expression is {len(pattern)} characters long, over the limit of "
                         f"{REGEX_PATTERN_MAX}")
    compiled = re.compile(pattern, flags)
    from re import _parser  # type: ignore[attr-defined]
    if _unbounded_repeat_nesting(_parser.parse(pattern, flags)):
        raise ValueError(f"the regular expression {pattern!r} repeats a repeat (like (a+)+), which can take "
                         "exponential time; rewrite it without the nested repeat")
    return compiled


def _subject(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    limit: Optional[int] = getattr(_bound, "limit", None)
    limit = REGEX_INPUT_MAX if limit is None else min(limit, REGEX_INPUT_MAX)
    if len(text) > limit:
        raise ValueTooLarge(f"a regular expression would search {len(text)} characters, over the limit of {limit}")
    return text


def _flags(ignorecase: bool = False, multiline: bool = False) -> int:
    return (re.I if ignorecase else 0) | (re.M if multiline else 0)


def regex_search(value: Any, regex: str, *args: str, ignorecase: bool = False, multiline: bool = False) -> Any:
    groups: list[Any] = []
    for arg in args:
        if arg.startswith("\\g"):
            m = re.match(r"\\g<(\S+)>", arg)
            if not m:
                raise ValueError(f"unknown argument {arg!r}")
            groups.append(m.group(1))
        elif arg.startswith("\\"):
            groups.append(int(arg[1:]))
        else:
            raise ValueError(f"unknown argument {arg!r}")
    match = _regex(regex, _flags(ignorecase, multiline)).search(_subject(value))
    if not match:
        return None
    if not groups:
        return match.group()
    return [match.group(g) for g in groups]


def regex_replace(value: Any = "", pattern: str = "", replacement: str = "", ignorecase: bool = False,
                  multiline: bool = False, count: int = 0, mandatory_count: int = 0) -> str:
    compiled = _regex(pattern, _flags(ignorecase, multiline))
    text = _subject(value)
    if isinstance(replacement, str) and len(replacement) * (len(text) + 1) > (getattr(_bound, "limit", None)
                                                                              or REGEX_INPUT_MAX * 16):
        raise ValueTooLarge("the replacement could build a value over the limit")
    output, subs = compiled.subn(replacement, text, count=count)
    if mandatory_count and mandatory_count != subs:
        raise ValueError(f"'{pattern}' should match {mandatory_count} times, but matches {subs} times")
    return output


def regex_findall(value: Any, regex: str, multiline: bool = False, ignorecase: bool = False) -> list[Any]:
    return _regex(regex, _flags(ignorecase, multiline)).findall(_subject(value))


def _regex_test(match_type: str) -> Any:
    def test(value: Any, pattern: str = "", ignorecase: bool = False, multiline: bool = False) -> bool:
        compiled = _regex(pattern, _flags(ignorecase, multiline))
        return bool(getattr(compiled, match_type)(_subject(value)))
    return test


def regex_test(value: Any, pattern: str = "", ignorecase: bool = False, multiline: bool = False,
               match_type: str = "search") -> bool:
    if match_type not in ("match", "search", "fullmatch"):
        raise ValueError(f"match_type must be match, search or fullmatch, not {match_type!r}")
    return bool(_regex_test(match_type)(value, pattern, ignorecase, multiline))


def _merge(a: dict[Any, Any], b: Mapping[Any, Any], recursive: bool, list_merge: str) -> dict[Any, Any]:
    out = dict(a)
    for key, value in b.items():
        old = out.get(key)
        if recursive and isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = _merge(dict(old), value, recursive, list_merge)
        elif key in out and isinstance(old, list) and isinstance(value, list) and list_merge != "replace":
            if list_merge == "keep":
                continue
            if list_merge == "append":
                out[key] = old + value
            elif list_merge == "prepend":
                out[key] = value + old
            elif list_merge == "append_rp":
                out[key] = [x for x in old if x not in value] + value
            else:  # prepend_rp
                out[key] = value + [x for x in old if x not in value]
        else:
            out[key] = value
    return out


def combine(*terms: Any, recursive: bool = False, list_merge: str = "replace") -> dict[Any, Any]:
    if list_merge not in ("replace", "keep", "append", "prepend", "append_rp", "prepend_rp"):
        raise ValueError(f"list_merge must be replace, keep, append, prepend, append_rp or prepend_rp, "
                         f"not {list_merge!r}")
    dicts: list[Any] = []
    for term in terms:  # a list of dicts is taken as its dicts, as in Ansible
        dicts.extend(flatten(term) if isinstance(term, list) else [term])
    out: dict[Any, Any] = {}
    for d in dicts:
        if not isinstance(d, Mapping):
            raise ValueError(f"combine expects dictionaries, got {type(d).__name__}")
        out = _merge(out, d, recursive, list_merge)
    return out


def dict2items(mydict: Any, key_name: str = "key", value_name: str = "value") -> list[dict[str, Any]]:
    if not isinstance(mydict, Mapping):
        raise ValueError(f"dict2items requires a dictionary, got {type(mydict).__name__} instead.")
    return [{key_name: k, value_name: v} for k, v in mydict.items()]


def items2dict(mylist: Any, key_name: str = "key", value_name: str = "value") -> dict[Any, Any]:
    if not isinstance(mylist, (list, tuple)):
        raise ValueError(f"items2dict requires a list, got {type(mylist).__name__} instead.")
    try:
        return {item[key_name]: item[value_name] for item in mylist}
    except KeyError as exc:
        raise ValueError(f"items2dict requires each dictionary in the list to contain the keys "
                         f"{key_name!r} and {value_name!r}, {exc} is missing") from None
    except TypeError:
        raise ValueError("items2dict requires a list of dictionaries") from None


def flatten(mylist: Any, levels: Optional[int] = None, skip_nulls: bool = True) -> list[Any]:
    out: list[Any] = []
    for element in mylist:
        if skip_nulls and element in (None, "None", "null"):
            continue
        if isinstance(element, (list, tuple)):
            if levels is None:
                out.extend(flatten(element, skip_nulls=skip_nulls))
            elif levels >= 1:
                out.extend(flatten(element, levels=levels - 1, skip_nulls=skip_nulls))
            else:
                out.append(element)
        else:
            out.append(element)
    return out


def _checked_count(count: int) -> int:
    limit: Optional[int] = getattr(_bound, "limit", None)
    if limit is not None and count > limit:
        raise ValueTooLarge(f"it would build {count} items, over the policy's limits.value_bytes {limit}")
    return count


def product(*iterables: Any, repeat: int = 1) -> list[list[Any]]:
    lists = [list(i) for i in iterables] * max(repeat, 0)
    count = 1
    for each in lists:
        count *= len(each)
    _checked_count(count)
    return [list(t) for t in itertools.product(*lists)]


def ternary(value: Any, true_val: Any, false_val: Any, none_val: Any = None) -> Any:
    if value is None and none_val is not None:
        return none_val
    return true_val if bool(value) else false_val


def mandatory(a: Any, msg: Optional[str] = None) -> Any:
    if isinstance(a, Undefined):
        if msg is not None:
            raise ValueError(str(msg))
        name = getattr(a, "_undefined_name", None)
        raise ValueError(f"Mandatory variable {name!r} not defined." if name else "Mandatory variable not defined.")
    return a


def _plain(value: Any) -> Any:
    """Jinja's and sandfleet's values as YAML/JSON can write them."""
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def to_yaml(a: Any, default_flow_style: Any = None, **kw: Any) -> str:
    kw.setdefault("allow_unicode", True)
    return str(yaml.safe_dump(_plain(a), default_flow_style=default_flow_style, **kw))


def to_nice_yaml(a: Any, indent: int = 4, **kw: Any) -> str:
    kw.setdefault("allow_unicode", True)
    return str(yaml.safe_dump(_plain(a), indent=indent, default_flow_style=False, **kw))


def to_nice_json(a: Any, indent: int = 4, sort_keys: bool = True, **kw: Any) -> str:
    kw.setdefault("ensure_ascii", False)
    return json.dumps(_plain(a), indent=indent, sort_keys=sort_keys, separators=(",", ": "), **kw)


def b64encode(string: Any, encoding: str = "utf-8") -> str:
    return base64.b64encode(str(string).encode(encoding, "surrogateescape")).decode("ascii")


def b64decode(string: Any, encoding: str = "utf-8") -> str:
    return base64.b64decode(str(string)).decode(encoding, "surrogateescape")


def get_hash(data: Any, hashtype: str = "sha1") -> str:
    if hashtype not in hashlib.algorithms_available:
        raise ValueError(f"unknown hash type {hashtype!r}; try one of sha1, sha256, sha512, md5")
    h = hashlib.new(hashtype)
    h.update(data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


_VERSION_OPS = {"==": operator.eq, "=": operator.eq, "eq": operator.eq, "<": operator.lt, "lt": operator.lt,
                "<=": operator.le, "le": operator.le, ">": operator.gt, "gt": operator.gt, ">=": operator.ge,
                "ge": operator.ge, "!=": operator.ne, "<>": operator.ne, "ne": operator.ne}
_LOOSE_PART = re.compile(r"(\d+|[a-z]+|\.)", re.I)
_STRICT_VERSION = re.compile(r"^(\d+)\.(\d+)(\.(\d+))?([ab](\d+))?$", re.A)


def _loose(text: str) -> list[Any]:
    """distutils' LooseVersion, which Ansible's ``version`` test uses by default."""
    return [int(p) if p.isdigit() else p for p in _LOOSE_PART.split(text) if p and p != "."]


def _strict(text: str) -> tuple[Any, ...]:
    m = _STRICT_VERSION.match(text)
    if not m:
        raise ValueError(f"invalid version number {text!r}")
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(4) or 0)
    pre = (m.group(5)[0], int(m.group(6))) if m.group(5) else ("~",)  # a release sorts after its pre-releases
    return (major, minor, patch, pre)


def version_compare(value: Any, version: Any, operator: str = "eq", strict: bool = False,
                    version_type: Optional[str] = None) -> bool:
    op = _VERSION_OPS.get(operator)
    if op is None:
        raise ValueError(f"invalid operator {operator!r} for version; use one of {', '.join(_VERSION_OPS)}")
    if not str(value):
        raise ValueError("input version value cannot be empty")
    if not str(version):
        raise ValueError("version value cannot be empty")
    kind = version_type or ("strict" if strict else "loose")
    if kind == "loose":
        left, right = _loose(str(value)), _loose(str(version))
        try:
            return bool(op(left, right))
        except TypeError:  # LooseVersion compares number to word by their text
            return bool(op([str(p) for p in left], [str(p) for p in right]))
    if kind == "strict":
        return bool(op(_strict(str(value)), _strict(str(version))))
    raise ValueError(f"version_type {kind!r} is not supported here; use loose or strict")


_ENV.filters.update({
    "combine": combine, "dict2items": dict2items, "items2dict": items2dict, "flatten": flatten,
    "product": product, "zip": lambda *lists: [list(t) for t in zip(*lists)],
    "zip_longest": lambda *lists, fillvalue=None: [list(t) for t in itertools.zip_longest(*lists,
                                                                                          fillvalue=fillvalue)],
    "regex_search": regex_search, "regex_replace": regex_replace, "regex_findall": regex_findall,
    "ternary": ternary, "mandatory": mandatory, "to_yaml": to_yaml, "to_nice_yaml": to_nice_yaml,
    "to_nice_json": to_nice_json, "basename": posixpath.basename, "dirname": posixpath.dirname,
    "b64encode": b64encode, "b64decode": b64decode, "hash": get_hash, "quote": lambda s: shlex.quote(str(s)),
})
_ENV.tests.update({"match": _regex_test("match"), "search": _regex_test("search"), "regex": regex_test,
                   "version": version_compare, "version_compare": version_compare})
TEMPLATE_START = ("{{", "{%", "{#")


def check_template(text: str, mark: Mark, what: str) -> None:
    """Parse (not render) a template so a syntax error is reported now, at its file and line."""
    if not any(d in text for d in TEMPLATE_START):
        return
    try:
        tree = _ENV.parse(text)
    except TemplateSyntaxError as exc:
        line = f" (line {exc.lineno} of the value)" if exc.lineno and exc.lineno > 1 else ""
        message = (exc.message or "syntax error").rstrip(".")
        raise InputError(f"{what} is not a valid template: {message}{line} (for a literal '{{{{' write "
                         "{{ '{{' }})", mark) from None
    _check_names(tree, mark, what)


def _check_names(tree: nodes.Node, mark: Mark, what: str) -> None:
    """Every filter and test a template uses must exist: said now, with a did-you-mean, rather than
    when the template first renders on a host."""
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        is_filter = isinstance(node, nodes.Filter)
        known = _ENV.filters if is_filter else _ENV.tests
        name = node.name
        if name in known:
            continue
        kind = "filter" if is_filter else "test"
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        line = f" (line {node.lineno} of the value)" if node.lineno and node.lineno > 1 else ""
        raise InputError(f"{what} uses an unknown {kind} {name!r}{line}{hint}", mark)


def check_expression(text: str, mark: Mark, what: str) -> None:
    """A bare expression (``when: x == 1``) must be one expression and nothing after it."""
    if "{{" in text or "{%" in text:
        raise InputError(f"{what} is a bare expression: write `x == 1`, not `{{{{ x == 1 }}}}`", mark)
    try:
        tree = _ENV.parse(f"{{{{ ({text}\n) }}}}")
    except TemplateSyntaxError:
        tree = None  # compiling it below says what is wrong
    if tree is not None:
        _check_names(tree, mark, what)
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
            hidden = self._renderer.refused(key)
            if hidden is not None:
                return StrictUndefined(hint=f"{key!r} cannot be read by a template: {hidden}", name=key)
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
        if name in self._fixed and self._fixed[name] is value:
            return  # the same object: nothing rendered from it can differ
        self._fixed[name] = value
        self._done.clear()

    def drop_fixed(self, name: str) -> None:
        if self._fixed.pop(name, None) is not None:
            self._done.clear()

    def has(self, name: str) -> bool:
        return name in self._fixed or name in self._settings

    def names(self) -> list[str]:
        """Every variable set here, in no particular order."""
        return list({**self._settings, **self._fixed})

    def hidden(self, name: str) -> Optional[str]:
        """Why a template may not read ``name`` although it is set (a connection secret: see
        :class:`~sandfleet.inventory.inventory.TaggedRenderer`); ``None``: it may."""
        return None

    def refused(self, name: str) -> Optional[str]:
        """Why the template rendering now may not read ``name``: it is hidden, unless what renders
        is itself a hidden variable's value (``ansible_become_password: "{{ ansible_password }}"``)."""
        hidden = self.hidden(name)
        if hidden is None or any(self.hidden(active) is not None for active in self._active):
            return None
        return hidden

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


# --- hostvars ---------------------------------------------------------------------------------------


class HostVars(Mapping[str, Any]):
    """``hostvars``: every inventory host's variables, as Ansible's ``hostvars[name].var``.

    Each host's variables render in that host's own context (``{{ inventory_hostname }}`` inside
    them is that host), from the renderer ``renderer_of(host, self)`` builds for it, once per host
    of ``hosts`` (any other name is undefined). Only a host's variables are reachable, never the renderer
    (the sandbox refuses ``_`` attributes), and what its renderer hides (connection secrets) reads
    as undefined, with the reason."""

    def __init__(self, hosts: Sequence[str], renderer_of: Callable[[str, HostVars], VarRenderer],
                 known: Optional[frozenset[str]] = None) -> None:
        self._hosts = hosts  # in order, each once; ``known``: the same as a set (one per fleet, not per host)
        self._known = frozenset(hosts) if known is None else known
        self._renderer_of = renderer_of
        self._views: dict[str, HostVarsVars] = {}

    def __getitem__(self, host: Any) -> Any:
        if host not in self:
            close = difflib.get_close_matches(str(host), self._hosts, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return StrictUndefined(hint=f"hostvars[{host!r}] is undefined: there is no host {host!r} in the "
                                        f"inventory{hint}", name=str(host))
        view = self._views.get(host)
        if view is None:
            view = self._views[host] = HostVarsVars(host, self._renderer_of(host, self))
        return view

    def __contains__(self, host: object) -> bool:
        return isinstance(host, str) and host in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._hosts)

    def __len__(self) -> int:
        return len(self._hosts)

    def __repr__(self) -> str:
        return f"hostvars({len(self._hosts)} hosts)"


class HostVarsVars(Mapping[str, Any]):
    """One host's variables in ``hostvars``: rendered on first use, in that host's context."""

    def __init__(self, host: str, renderer: VarRenderer) -> None:
        self._host, self._renderer = host, renderer

    def __getitem__(self, name: Any) -> Any:
        if not isinstance(name, str) or name == "hostvars" or not self._renderer.has(name):
            return StrictUndefined(hint=f"hostvars[{self._host!r}].{name} is undefined: host {self._host!r} has no "
                                        f"variable {name!r}", name=str(name))
        hidden = self._renderer.hidden(name)
        if hidden is not None:
            return StrictUndefined(hint=f"hostvars[{self._host!r}].{name} cannot be read by a template: {hidden}",
                                   name=name)
        try:
            return self._renderer.get(name)
        except InputError as exc:
            raise InputError(f"hostvars[{self._host!r}].{name}: {exc.message}", exc.mark, allowed=exc.allowed) from None

    def __contains__(self, name: object) -> bool:
        return (isinstance(name, str) and name != "hostvars" and self._renderer.has(name)
                and self._renderer.hidden(name) is None)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(n for n in self._renderer.names() if n in self))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"hostvars[{self._host!r}]"


@lru_cache(maxsize=4096)
def hostvars_read(text: str) -> Optional[frozenset[str]]:
    """The variable names a template reads through ``hostvars[...]`` (``hostvars[h].x``,
    ``hostvars[h]['x']``); ``None`` when it uses a host's variables in a way that names none
    (``hostvars[h][name]``, ``hostvars[h] | to_json``). For a dry-run's "depends on a result"."""
    if "hostvars" not in names_read(text):
        return frozenset()
    tree = _ENV.parse(text)
    names: set[str] = set()
    spans: set[int] = set()  # the nodes that are ``hostvars[...]`` itself, read through a name
    lookups = [n for n in tree.find_all((nodes.Getattr, nodes.Getitem))
               if isinstance(n, (nodes.Getattr, nodes.Getitem))]
    for node in lookups:
        inner = node.node
        if isinstance(inner, (nodes.Getattr, nodes.Getitem)) and _is_hostvars(inner.node):
            if isinstance(node, nodes.Getattr):
                names.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                names.add(node.arg.value)
            else:
                return None
            spans.add(id(inner))
    uses = sum(1 for n in tree.find_all(nodes.Name) if _is_hostvars(n))
    return frozenset(names) if uses == len(spans) else None


def _is_hostvars(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "hostvars"
