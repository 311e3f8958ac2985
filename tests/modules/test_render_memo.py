"""The agent's memo of rendered wrappers: a hit is exactly what the template renders for that
context, two contexts share an entry only when they are equal value for value and type for type,
and an agent whose wrappers are all remembered never imports Jinja2."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandfleet_agent.backends import render
from sandfleet_agent.backends.bwrap import Mount

CONTEXT: dict[str, Any] = dict(
    prefix=[], bwrap="/usr/bin/bwrap", unshare=["--unshare-user", "--unshare-pid"], unshare_net=True, setenv=[],
    seccomp_fd="3", status_fd="4",
    mounts=[Mount("ro-bind", "/", "/"), Mount("bind", "/w o\"rk", "/w o\"rk"), Mount("tmpfs", "/tmp", perms="0700")],
    cwd="/w o\"rk", argv=["echo", "a b", "$(x)"])


@pytest.fixture
def memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(render, "_memo_dir", None)
    render.memoise_renders(str(tmp_path / "memo"))
    return tmp_path / "memo"


def plain_render(template: str, context: dict[str, Any]) -> str:
    return render.environment().get_template(template).render(**context)


def test_a_hit_is_what_the_template_renders(memo: Path) -> None:
    first = render.render_argv("bwrap.j2", **CONTEXT)
    assert len(list(memo.iterdir())) == 1
    (entry,) = memo.iterdir()
    assert entry.read_text() == plain_render("bwrap.j2", CONTEXT)
    assert render.render_argv("bwrap.j2", **CONTEXT) == first == json.loads(entry.read_text())
    assert first[-4:] == ["--", "echo", "a b", "$(x)"]


def test_another_context_is_another_entry(memo: Path) -> None:
    render.render_argv("bwrap.j2", **CONTEXT)
    other = render.render_argv("bwrap.j2", **{**CONTEXT, "argv": ["echo", "a", "b"]})
    assert other[-3:] == ["echo", "a", "b"] and len(list(memo.iterdir())) == 2


def test_the_memo_is_private_and_bounded(memo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert memo.stat().st_mode & 0o077 == 0
    monkeypatch.setattr(render, "MEMO_ENTRIES", 3)
    for n in range(3):
        render.render_argv("bwrap.j2", **{**CONTEXT, "argv": [str(n)]})
    assert len(list(memo.iterdir())) == 3
    assert render.render_argv("bwrap.j2", **{**CONTEXT, "argv": ["3"]})[-1] == "3"
    assert len(list(memo.iterdir())) == 1  # full: emptied, then the new entry


def test_no_memo_without_a_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "_memo_dir", None)
    assert render.render_argv("bwrap.j2", **CONTEXT)[-1] == "$(x)"


@dataclass(frozen=True)
class Point:
    x: int
    y: Any = None


@dataclass(frozen=True)
class Other:
    x: int
    y: Any = None


class Text(str):
    pass


@pytest.mark.parametrize(("a", "b"), [
    ([1, 2], (1, 2)), ("1", 1), (True, 1), (None, "None"), ({"a": 1}, [["a", 1]]), (Point(1), Other(1)),
    (Point(1, [2]), Point(1, (2,))), ([["list", []]], [[]]), ("", None), (0, False),
])
def test_values_that_differ_in_type_or_value_never_share_a_key(a: Any, b: Any) -> None:
    assert render.memo_key("t", {"v": a}) != render.memo_key("t", {"v": b})


@pytest.mark.parametrize("value", [1.5, {1, 2}, object(), Text("x"), {1: "a"}, Point(1, 2.0), Point])
def test_values_the_key_cannot_describe_exactly_are_not_memoised(value: Any) -> None:
    assert render.memo_key("t", {"v": value}) is None


def test_a_dataclass_carrying_more_than_its_fields_is_not_memoised() -> None:
    @dataclass
    class Loose:
        x: int = 0
        extra: list[int] = field(default_factory=list)

    loose = Loose()
    assert render.memo_key("t", {"v": loose}) is not None
    loose.hidden = 1  # type: ignore[attr-defined]
    assert render.memo_key("t", {"v": loose}) is None


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12)


def normal(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", sorted((k, normal(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [normal(v) for v in value])
    return value


@given(values, values)
def test_keys_agree_exactly_when_the_values_do(a: Any, b: Any) -> None:
    same = repr(normal(a)) == repr(normal(b))  # repr tells list from tuple, True from 1, "1" from 1
    assert (render.memo_key("t", {"v": a}) == render.memo_key("t", {"v": b})) == same


def test_an_agent_whose_wrappers_are_remembered_never_imports_jinja2(memo: Path) -> None:
    expected = render.render_argv("bwrap.j2", **CONTEXT)
    script = f"""
import json, sys
from sandfleet_agent.backends import render
from sandfleet_agent.backends.bwrap import Mount
render.memoise_renders({str(memo)!r})
words = render.render_argv("bwrap.j2", **{CONTEXT!r})
print(json.dumps([words, "jinja2" in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [expected, False]


def test_texts_with_lone_surrogates_come_back_exactly(memo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wrapper templates escape to ASCII, but the memo must not depend on it."""
    raw = jinja2.Environment(loader=jinja2.DictLoader({"raw.j2": "{{ v }}"}))
    monkeypatch.setattr(render, "environment", lambda: raw)
    hostile = "/w/\udcff \ud800x"
    assert render.render_text("raw.j2", v=hostile) == hostile
    assert len(list(memo.iterdir())) == 1
    monkeypatch.setattr(render, "environment", None)  # a hit must not render
    assert render.render_text("raw.j2", v=hostile) == hostile
