"""The one Jinja2 environment every wrapper template renders in.

Templates live in ``templates/`` beside this module and are read through the package's loader,
so they also load when the host side runs from a zip. Autoescaping is off because no template
emits HTML; instead every value goes through an explicit filter for its target language
(:mod:`.escaping`), and ``StrictUndefined`` turns a missing value into an error, not a blank.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import cache
from typing import TYPE_CHECKING, Any, Optional

from sandfleet_agent.backends import escaping

if TYPE_CHECKING:
    import jinja2

#: Where compiled templates are kept between agent starts (see :func:`cache_compiled_templates`).
_bytecode_dir: Optional[str] = None
#: Where rendered texts are kept between agent starts (see :func:`memoise_renders`).
_memo_dir: Optional[str] = None
#: Entries the memo holds before it is emptied and starts again (a few KiB each).
MEMO_ENTRIES = 1024


def cache_compiled_templates(directory: str) -> None:
    """Keep compiled templates in ``directory`` (Jinja2's bytecode cache), for the agent.

    Why: compiling a template costs ~9 ms of CPU, paid by every agent at every run for the same
    unchanged files; loading the cached code costs ~0.3 ms. The agent calls this with a folder
    inside its own unpacked bundle (private to the user, named by the bundle's hash); entries are
    keyed by template name and source checksum, so a changed template is compiled afresh.
    Must be called before the first render.
    """
    global _bytecode_dir
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _bytecode_dir = directory


@cache
def environment() -> jinja2.Environment:
    import jinja2  # on first render only: an agent serving only unsandboxed tasks never needs it

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sandfleet_agent.backends", "templates"),
        bytecode_cache=jinja2.FileSystemBytecodeCache(_bytecode_dir) if _bytecode_dir else None,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["sh"] = escaping.sh
    env.filters["sh_join"] = escaping.sh_join
    env.filters["json"] = escaping.json_str
    env.filters["sbpl"] = escaping.sbpl_str
    env.filters["ps"] = escaping.ps_str
    env.filters["xml"] = escaping.xml_str
    return env


def memoise_renders(directory: str) -> None:
    """Keep every rendered text in ``directory``, keyed by the template and its whole context.

    Why: importing Jinja2 costs ~17 ms of CPU, paid by every agent on every host at every run,
    to render the same wrappers again (a playbook run twice, a fleet of hosts alike). A text
    found here is the one the template rendered for exactly this context (see :func:`memo_key`),
    so an agent whose wrappers are all known never imports Jinja2. The agent calls this with a
    folder inside its own unpacked bundle (private to the user, named by the bundle's hash, so
    the templates and the code that builds their contexts cannot have changed).
    """
    global _memo_dir
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _memo_dir = directory


def memo_key(template: str, context: dict[str, Any]) -> Optional[str]:
    """A name for (template, context), or None when a value is of a kind the key cannot
    describe exactly (then nothing is memoised). Exact types only, each tagged, so two contexts
    share a key only when they are equal value for value, type for type."""
    try:
        blob = json.dumps([template, _plain(context)], ensure_ascii=True, separators=(",", ":"))
        blake2b: Any = __import__("_blake2").blake2b  # hashlib would load OpenSSL: ~13 ms
    except (TypeError, ImportError):
        return None
    return str(blake2b(blob.encode("ascii"), digest_size=32).hexdigest())


def _plain(value: Any) -> Any:
    kind = type(value)
    if value is None or kind in (str, int, bool):
        return value
    if kind in (list, tuple):
        return [kind.__name__, [_plain(v) for v in value]]
    if kind is dict:
        if not all(type(k) is str for k in value):
            raise TypeError("only str keys")
        return ["dict", [[k, _plain(value[k])] for k in sorted(value)]]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
        if set(getattr(value, "__dict__", names)) != set(names):
            raise TypeError("a dataclass with attributes beyond its fields")
        return [f"{kind.__module__}.{kind.__qualname__}",
                [[name, _plain(getattr(value, name))] for name in names]]
    raise TypeError(f"{kind.__name__} is not memoised")


def _remembered(key: str) -> Optional[str]:
    assert _memo_dir is not None
    try:
        with open(os.path.join(_memo_dir, key), encoding="utf-8", errors="surrogatepass", newline="") as fh:
            return fh.read()
    except (OSError, ValueError):
        return None


def _remember(key: str, text: str) -> None:
    assert _memo_dir is not None
    try:
        with os.scandir(_memo_dir) as entries:
            names = [e.name for e in entries]
        if len(names) >= MEMO_ENTRIES:  # bounded: start again rather than keep an index of use
            for name in names:
                os.unlink(os.path.join(_memo_dir, name))
        part = os.path.join(_memo_dir, f".{key}.{os.getpid()}")
        with open(part, "w", encoding="utf-8", errors="surrogatepass", newline="") as fh:
            fh.write(text)  # surrogatepass: a text with lone surrogates comes back as it went in
        os.replace(part, os.path.join(_memo_dir, key))  # whole or absent, for agents running side by side
    except (OSError, ValueError):
        pass  # a memo that cannot be written only costs the next agent a render


def render_text(template: str, **context: Any) -> str:
    key = memo_key(template, context) if _memo_dir else None
    text = _remembered(key) if key else None
    if text is None:
        text = environment().get_template(template).render(**context)
        if key:
            _remember(key, text)
    return text


def render_argv(template: str, **context: Any) -> list[str]:
    """Render a template that writes a JSON array of strings, and return that argv.

    Going through JSON means every element was placed with the ``json`` filter, so an argument
    can never split into two or merge with its neighbour, whatever characters it holds.
    """
    text = render_text(template, **context)
    argv = json.loads(text)
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"template {template} did not render a JSON list of strings")
    return argv
