"""The one Jinja2 environment every wrapper template renders in.

Templates live in ``templates/`` beside this module and are read through the package's loader,
so they also load when the host side runs from a zip. Autoescaping is off because no template
emits HTML; instead every value goes through an explicit filter for its target language
(:mod:`.escaping`), and ``StrictUndefined`` turns a missing value into an error, not a blank.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import TYPE_CHECKING, Any, Optional

from . import escaping

if TYPE_CHECKING:
    import jinja2

#: Where compiled templates are kept between agent starts (see :func:`cache_compiled_templates`).
_bytecode_dir: Optional[str] = None


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
        loader=jinja2.PackageLoader(__package__ or "sandfleet.modules", "templates"),
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


def render_text(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


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
