"""What may name a variable: one rule for ``vars``, ``-e``, ``register``, ``loop_var`` and ``index_var``.

A variable is only any use if a template can read it back (``{{ name }}``, a ``when:``
expression), so the rule is what Jinja2's parser reads as a plain name, in ASCII: letters, digits
and ``_``, not starting with a digit, and none of the few words Jinja gives another meaning
(:data:`JINJA_WORDS`: ``{{ true }}`` is the literal True whatever a variable ``true`` holds,
``{{ not }}`` is a syntax error, ``{{ self }}`` is the template itself). Python's keywords are
plain names to Jinja (``{{ class }}``, ``{{ in }}`` render the variable), so they are allowed.
"""

from __future__ import annotations

from typing import Any, Optional

from sandfleet_agent.portable.words import shown

#: The identifiers Jinja2 never resolves as a variable, and what it reads instead.
JINJA_WORDS = {
    **{word: "the literal True" for word in ("true", "True")},
    **{word: "the literal False" for word in ("false", "False")},
    **{word: "the literal None" for word in ("none", "None")},
    "not": "the operator not",
    "self": "the template itself",
}

FORMAT = "ASCII letters, digits and '_', not starting with a digit"


def is_variable_name(name: Any) -> bool:
    return isinstance(name, str) and name.isascii() and name.isidentifier() and name not in JINJA_WORDS


def name_error(what: str, name: Any) -> Optional[str]:
    """Why ``name`` cannot be the variable name ``what`` asks for (``register``, ``vars key``...),
    as a message starting with ``what``; ``None`` when it can."""
    if is_variable_name(name):
        return None
    if isinstance(name, str) and name in JINJA_WORDS:
        return (f"{what} cannot be {name!r}: Jinja reads {name} as {JINJA_WORDS[name]}, so {{{{ {name} }}}} "
                "would never reach the variable")
    return f"{what} must be a variable name ({FORMAT}), got {shown(name)}"


__all__ = ["FORMAT", "JINJA_WORDS", "is_variable_name", "name_error"]
