"""The one Jinja2 environment every wrapper template renders in.

Templates live in ``templates/`` beside this module and are read through the package's loader,
so they also load when the host side runs from a zip. Autoescaping is off because no template
emits HTML; instead every value goes through an explicit filter for its target language
(:mod:`.escaping`), and ``StrictUndefined`` turns a missing value into an error, not a blank.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2

from . import escaping


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__ or "sandfleet.modules", "templates"),
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
