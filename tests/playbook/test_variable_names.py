"""One rule for what may name a variable (sandfleet/load/varnames.py), the same in ``vars``, ``register``,
``loop_control.loop_var``/``index_var`` and ``-e``, and it is what Jinja2 really resolves."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Callable, Optional

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2.sandbox import SandboxedEnvironment

from sandfleet.errors import InputError, UsageError
from sandfleet.load.extra_vars import parse_extra_vars
from sandfleet.load.playbook import load_playbook
from sandfleet.load.varnames import JINJA_WORDS, is_variable_name

JINJA = SandboxedEnvironment(undefined=jinja2.StrictUndefined)
PYTHON_KEYWORDS = ["class", "def", "lambda", "import", "from", "in", "is", "if", "else", "and", "or", "for",
                   "pass", "with", "as", "not_", "match", "case", "_", "None_"]


def jinja_reads(name: str) -> bool:
    """Whether Jinja resolves ``name`` as the variable in the shapes a playbook uses it."""
    shapes = {"{{ %s }}": "X", "{{ %s.y }}": "Y", "{{ [%s] | first }}": "X", "{{ %s == 'X' }}": "True"}
    for shape, want in shapes.items():
        value: Any = {"y": "Y"} if ".y" in shape else "X"
        try:
            if JINJA.from_string(shape % name).render({name: value}) != want:
                return False
        except (jinja2.TemplateError, TypeError):
            return False
    return True


@given(st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True),
                 st.sampled_from([*JINJA_WORDS, *PYTHON_KEYWORDS])))
def test_the_rule_is_what_jinja_resolves(name: str) -> None:
    assert is_variable_name(name) is jinja_reads(name)


def test_python_keywords_are_names_and_jinja_words_are_not() -> None:
    assert all(is_variable_name(n) and jinja_reads(n) for n in PYTHON_KEYWORDS)
    assert not any(is_variable_name(n) or jinja_reads(n) for n in JINJA_WORDS)
    assert not any(is_variable_name(n) for n in ("my-var", "1st", "é", "", "a b", 1, None, ["x"]))


# -- every place that names a variable applies it alike ------------------------------------------------


def _load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "pb.yml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    load_playbook(str(path))


def _task(control: str = "", register: str = "", vars_: str = "") -> str:
    return f"""
        - hosts: all
          {vars_}
          tasks:
            - exec: {{argv: [x]}}
              loop: [1]
              {control}
              {register}
        """


def _extra_file(tmp_path: Path, key: str) -> None:
    (tmp_path / "vars.json").write_text(json.dumps({key: 1}))
    parse_extra_vars([f"@{tmp_path / 'vars.json'}"])


PLACES: dict[str, Callable[[Path, str], None]] = {
    "vars": lambda tmp, n: _load(tmp, _task(vars_=f"vars: {{{json.dumps(n)}: 1}}")),
    "register": lambda tmp, n: _load(tmp, _task(register=f"register: {json.dumps(n)}")),
    "loop_var": lambda tmp, n: _load(tmp, _task(control=f"loop_control: {{loop_var: {json.dumps(n)}}}")),
    "index_var": lambda tmp, n: _load(tmp, _task(control=f"loop_control: {{index_var: {json.dumps(n)}}}")),
    "-e k=v": lambda tmp, n: parse_extra_vars([f"{n}=1"]),
    "-e json": lambda tmp, n: parse_extra_vars([json.dumps({n: 1})]),
    "-e @file": _extra_file,
}


def _refusal(place: str, tmp_path: Path, name: str) -> Optional[str]:
    try:
        PLACES[place](tmp_path, name)
    except (InputError, UsageError) as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("name", ["item", "pkg_2", "_x", "class", "in", "lambda", "loop", "True_"])
def test_a_name_jinja_reads_is_accepted_everywhere(tmp_path: Path, place: str, name: str) -> None:
    assert _refusal(place, tmp_path, name) is None


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("name", sorted(JINJA_WORDS))
def test_a_jinja_word_is_refused_everywhere_saying_why(tmp_path: Path, place: str, name: str) -> None:
    message = _refusal(place, tmp_path, name)
    assert message is not None
    assert f"cannot be {name!r}: Jinja reads {name} as {JINJA_WORDS[name]}, so {{{{ {name} }}}} would never " \
           "reach the variable" in message


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("name", ["my-var", "1st", "caf\u00e9", "a.b"])
def test_a_malformed_name_is_refused_everywhere(tmp_path: Path, place: str, name: str) -> None:
    message = _refusal(place, tmp_path, name)
    assert message is not None
    assert f"must be a variable name (ASCII letters, digits and '_', not starting with a digit), got {name!r}" \
        in message


@pytest.mark.parametrize(("place", "start"), [
    ("vars", "a vars key"), ("register", "register"), ("loop_var", "loop_var"), ("index_var", "index_var"),
    ("-e k=v", "-e 'my-var=1': an extra-vars key"), ("-e json", "-e '{\"my-var\": 1}': an extra-vars key"),
    ("-e @file", "an extra-vars key"),
])
def test_each_place_names_itself(tmp_path: Path, place: str, start: str) -> None:
    message = _refusal(place, tmp_path, "my-var")
    assert message is not None and f"error: {start} must be" in f"error: {message.split('error: ')[-1]}"
