"""YAML loading that remembers where every key and value came from.

PyYAML's plain loaders forget positions, so an error found after loading could not name the line.
Here mappings load as :class:`YMap` and sequences as :class:`YList`: ordinary ``dict``/``list``
subclasses that also carry the :class:`~sandfleet.errors.Mark` of themselves, of each key and of
each value, and the source text of each scalar value (``raw``), so that ``argv: [sleep, 010]``
can run exactly what was written rather than YAML's reading of it (``8``). Duplicate keys are an
error (PyYAML would silently keep the last one).

Ansible's two tags load as Ansible loads them, so the inventories people already have are valid:
``!vault`` becomes a :class:`VaultedValue` (the ciphertext, kept opaque: sandfleet cannot decrypt
Ansible Vault, and says so where the value is used) and ``!unsafe`` an :class:`UnsafeText` (text
that is never rendered as a template; on a list or mapping, every string inside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sandfleet.errors import InputError, Mark

VAULT_TAG, UNSAFE_TAG = "!vault", "!unsafe"


@dataclass(frozen=True)
class VaultedValue:
    """A ``!vault`` value: Ansible Vault ciphertext, exactly as written. Opaque on purpose:
    ``sandfleet inventory`` prints it as ``ansible-inventory`` does (``{"__ansible_vault": ...}``),
    and using it in a template or a task is an error naming the variable (decryption is out of
    scope: no vault password ever reaches sandfleet)."""

    ciphertext: str

    def __repr__(self) -> str:  # never the whole ciphertext in a message
        return "VaultedValue(<ciphertext>)"


class UnsafeText(str):
    """A ``!unsafe`` string: literal text, never rendered as a template (``{{`` stays ``{{``)."""

    __slots__ = ()


def vaulted_message(name: str) -> str:
    """What a use of a vaulted variable says: which variable, and why it cannot be used."""
    return (f"variable {name!r} is vaulted (!vault); sandfleet cannot decrypt it (Ansible Vault decryption is "
            "not supported: pass the value some other way, e.g. -e @file from your secret store)")


def _unsafe(value: Any) -> Any:
    """``!unsafe`` on a list or mapping: every string inside becomes :class:`UnsafeText`."""
    if isinstance(value, str):
        return UnsafeText(value)
    if isinstance(value, YMap):
        for key in list(value):
            dict.__setitem__(value, key, _unsafe(value[key]))
    elif isinstance(value, YList):
        for i, item in enumerate(value):
            value[i] = _unsafe(item)
    return value


class YMap(dict):  # type: ignore[type-arg]
    """A mapping with the position of itself, each key and each value."""

    mark: Mark
    key_marks: dict[Any, Mark]
    value_marks: dict[Any, Mark]
    value_raw: dict[Any, str]

    def key_mark(self, key: Any) -> Mark:
        return self.key_marks.get(key, self.mark)

    def value_mark(self, key: Any) -> Mark:
        return self.value_marks.get(key, self.mark)

    def raw(self, key: Any) -> Optional[str]:
        """The source text of a scalar value as written (``None`` for containers)."""
        return self.value_raw.get(key)


class YList(list):  # type: ignore[type-arg]
    """A sequence with the position of itself and of each item."""

    mark: Mark
    item_marks: list[Mark]
    item_raw: list[Optional[str]]

    def item_mark(self, index: int) -> Mark:
        return self.item_marks[index] if 0 <= index < len(self.item_marks) else self.mark

    def raw(self, index: int) -> Optional[str]:
        """The source text of a scalar item as written (``None`` for containers)."""
        return self.item_raw[index] if 0 <= index < len(self.item_raw) else None


def _mark(node: Node, file: str) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(loader: yaml.SafeLoader, node: Node, file: str) -> Any:
    if node.tag == VAULT_TAG:
        if not isinstance(node, ScalarNode):
            raise InputError("!vault must tag a string: the vault's ciphertext ($ANSIBLE_VAULT;...)",
                             _mark(node, file))
        return VaultedValue(node.value)
    if node.tag == UNSAFE_TAG:
        if isinstance(node, ScalarNode):
            return UnsafeText(node.value)  # as Ansible: the text as written, never a number or bool
        node.tag = "tag:yaml.org,2002:map" if isinstance(node, MappingNode) else "tag:yaml.org,2002:seq"
        return _unsafe(_convert(loader, node, file))
    if isinstance(node, MappingNode):
        loader.flatten_mapping(node)  # resolves `<<` merge keys like SafeLoader does
        out = YMap()
        out.mark, out.key_marks, out.value_marks, out.value_raw = _mark(node, file), {}, {}, {}
        for key_node, value_node in node.value:
            key = _convert(loader, key_node, file)
            if isinstance(key, (dict, list)):
                unquoted = " (a value starting with '{{' must be quoted: \"{{ ... }}\")" \
                    if isinstance(key_node, MappingNode) and key_node.flow_style else ""
                raise InputError(f"a mapping key must be a plain value, not a mapping or list{unquoted}",
                                 _mark(key_node, file))
            if key in out:
                raise InputError(f"duplicate key {key!r} (first given at line "
                                 f"{out.key_marks[key].line})", _mark(key_node, file))
            out[key] = _convert(loader, value_node, file)
            out.key_marks[key] = _mark(key_node, file)
            out.value_marks[key] = _mark(value_node, file)
            if isinstance(value_node, ScalarNode):
                out.value_raw[key] = value_node.value
        return out
    if isinstance(node, SequenceNode):
        seq = YList(_convert(loader, item, file) for item in node.value)
        seq.mark = _mark(node, file)
        seq.item_marks = [_mark(item, file) for item in node.value]
        seq.item_raw = [item.value if isinstance(item, ScalarNode) else None for item in node.value]
        return seq
    assert isinstance(node, ScalarNode)
    return loader.construct_object(node, deep=True)


#: libyaml's parser when PyYAML has it: the same nodes, marks and constructors, ~5x faster (a
#: 1,000-host inventory took 0.5 s with the pure-Python one). Its error messages say less, so a
#: document it rejects is parsed again by the pure-Python loader for the message.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml_text(text: str, file: str) -> Any:
    """Parse one YAML document; a syntax error becomes an :class:`InputError` at its position."""
    try:
        return _load(_FAST_LOADER, text, file)
    except yaml.YAMLError as exc:
        if _FAST_LOADER is yaml.SafeLoader:
            raise _syntax_error(exc, file, text) from None
    try:
        return _load(yaml.SafeLoader, text, file)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, file, text) from None


def _load(loader_class: Any, text: str, file: str) -> Any:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _convert(loader, node, file)
    finally:
        loader.dispose()


_INDENT_HINT = "is the line indented wrongly? Lines at one level need the same number of spaces"
#: PyYAML's problem (a prefix of it) → what a person would say; the common mistakes only.
_HINTS: tuple[tuple[str, str], ...] = (
    ("found character '\\t'", "a tab is not allowed for indentation: indent with spaces"),
    ("mapping values are not allowed here",
     "is a ':' missing, or missing a space after it, on the line above; does a value containing ': ' need "
     "quotes; or is the line indented wrongly?"),
    ("could not find expected ':'", "is the ':' after a key missing, or is the line indented wrongly?"),
    ("expected <block end>", _INDENT_HINT),
    ("did not find expected key", _INDENT_HINT),
    ("did not find expected '-' indicator",
     "every item of a list starts with '- ' at the same indentation; is the line indented wrongly?"),
    ("expected ',' or ']'", "is a '[' left unclosed? A value starting with '[' is a list: quote it if it is text"),
    ("expected ',' or '}'", "is a '{' left unclosed? A value starting with '{' is a mapping: quote it if it "
                            "is text (a '{{ template }}' value must be quoted)"),
)


def _hint(problem: str, context: str) -> Optional[str]:
    if problem.startswith("found unexpected end of stream") and "quoted scalar" in context:
        return "a quote is never closed"
    return next((hint for prefix, hint in _HINTS if problem.startswith(prefix)), None)


def source_excerpt(text: str, line: int, col: int) -> str:
    """The source line ``line`` (1-based) and a caret under ``col``, as compilers show them; ``""``
    when the line is past the end of the text."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    source = lines[line - 1]
    number = str(line)
    pad = "".join(c if c == "\t" else " " for c in source[:col - 1])  # tabs kept so the caret lines up
    return f"  {number} | {source}\n  {' ' * len(number)} | {pad}^"


def _syntax_error(exc: yaml.YAMLError, file: str, text: str = "") -> InputError:
    if isinstance(exc, yaml.MarkedYAMLError):
        where = exc.problem_mark or exc.context_mark
        mark = Mark(file, where.line + 1, where.column + 1) if where else Mark(file, 1, 1)
        message = f"invalid YAML: {exc.problem or exc.context or 'invalid YAML'}"
        hint = _hint(exc.problem or "", exc.context or "")
        if hint:
            message += f": {hint}"
        excerpt = source_excerpt(text, mark.line, mark.col)
        if not excerpt and exc.context_mark is not None:  # at the end of the text: show where it began
            excerpt = source_excerpt(text, exc.context_mark.line + 1, exc.context_mark.column + 1)
        return InputError(f"{message}\n{excerpt}" if excerpt else message, mark)
    return InputError(f"invalid YAML: {exc}", Mark(file, 1, 1))


def load_yaml_file(path: Union[str, Path]) -> Any:
    """Read and parse a YAML file; unreadable files are user errors too."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", file=name) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a YAML file", file=name) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=name) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", file=name) from None
    return load_yaml_text(text, name)
