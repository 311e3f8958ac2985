"""Ansible's common filters and tests, with the examples from Ansible's documentation; regexes
bounded against hostile input; an unknown filter or test refused when the playbook loads."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandfleet.errors import InputError, Mark
from sandfleet.inventory.model import VarSetting
from sandfleet.load.playbook import load_playbook
from sandfleet.templating import VarRenderer, check_expression, check_template

MARK = Mark("pb.yml", 3, 7)


def render(text: str, limit: int | None = None, **variables: Any) -> Any:
    renderer = VarRenderer({k: VarSetting(v, None) for k, v in variables.items()})
    renderer.value_limit = limit
    return renderer.render(text, "v", MARK)


def fails(text: str, limit: int | None = None, **variables: Any) -> str:
    with pytest.raises(InputError) as info:
        render(text, limit, **variables)
    return str(info.value)


# --- dictionaries and lists ---

def test_combine():
    assert render("{{ {'a':1, 'b':2} | combine({'b':3}) }}") == {"a": 1, "b": 3}
    default = {"a": {"x": "default", "y": "default"}, "b": "default", "c": "default"}
    patch = {"a": {"y": "patch", "z": "patch"}, "b": "patch"}
    assert render("{{ d | combine(p, recursive=True) }}", d=default, p=patch) == {
        "a": {"x": "default", "y": "patch", "z": "patch"}, "b": "patch", "c": "default"}
    assert render("{{ d | combine(p) }}", d=default, p=patch)["a"] == {"y": "patch", "z": "patch"}
    assert render("{{ {'a':[1]} | combine({'a':[2]}, list_merge='append') }}") == {"a": [1, 2]}
    assert render("{{ {'a':[1]} | combine({'a':[2]}, list_merge='keep') }}") == {"a": [1]}
    assert render("{{ [{'a':1}, {'b':2}] | combine }}") == {"a": 1, "b": 2}
    assert render("{{ {'a':1} | combine({'b':2}, {'a':3}) }}") == {"a": 3, "b": 2}


def test_dict2items_and_items2dict():
    tags = {"Application": "payment", "Environment": "dev"}
    assert render("{{ t | dict2items }}", t=tags) == [
        {"key": "Application", "value": "payment"}, {"key": "Environment", "value": "dev"}]
    assert render("{{ t | dict2items(key_name='k', value_name='v') }}", t={"a": 1}) == [{"k": "a", "v": 1}]
    assert render("{{ t | dict2items | items2dict }}", t=tags) == tags
    items = [{"fruit": "apple", "color": "red"}]
    assert render("{{ i | items2dict(key_name='fruit', value_name='color') }}", i=items) == {"apple": "red"}
    assert "requires a dictionary" in fails("{{ [1] | dict2items }}")


def test_flatten():
    assert render("{{ [1, 2, [3, [4, 5]], 6] | flatten }}") == [1, 2, 3, 4, 5, 6]
    assert render("{{ [1, 2, [3, [4, 5]], 6] | flatten(levels=1) }}") == [1, 2, 3, [4, 5], 6]
    assert render("{{ [1, none, [2, none]] | flatten }}") == [1, 2]
    assert render("{{ [1, none] | flatten(skip_nulls=false) }}") == [1, None]
    assert render("{{ ['ab', ['cd']] | flatten }}") == ["ab", "cd"]


def test_product_and_zip():
    assert render("{{ ['foo', 'bar'] | product(['com']) | map('join', '.') | list }}") == ["foo.com", "bar.com"]
    assert render("{{ [1,2] | product(repeat=2) | list }}") == [[1, 1], [1, 2], [2, 1], [2, 2]]
    assert render("{{ [1,2,3,4,5,6] | zip(['a','b','c','d','e','f']) | list }}") == [
        [1, "a"], [2, "b"], [3, "c"], [4, "d"], [5, "e"], [6, "f"]]
    assert render("{{ [1,2,3] | zip(['a','b']) | list }}") == [[1, "a"], [2, "b"]]
    assert render("{{ [1,2,3] | zip_longest(['a'], fillvalue='X') | list }}") == [[1, "a"], [2, "X"], [3, "X"]]


def test_product_is_bounded():
    assert "too large" in fails("{{ l | product(l, l, l) }}", limit=1000, l=list(range(100)))


# --- regular expressions ---

def test_regex_search():
    assert render("{{ 'foobar' | regex_search('(foo)') }}") == "foo"
    assert render("{{ 'ansible' | regex_search('foobar') }}") is None
    assert render("{{ 'foo\\nBAR' | regex_search('^bar', multiline=True, ignorecase=True) }}") == "BAR"
    assert render("{{ 'server1/database42' | regex_search('server([0-9]+)/database([0-9]+)', '\\\\1', '\\\\2') }}"
                  ) == ["1", "42"]
    assert render("{{ 'server1/database42' | regex_search('(?P<dbname>database[0-9]+)', '\\\\g<dbname>') }}"
                  ) == ["database42"]


def test_regex_replace():
    assert render("{{ 'ansible' | regex_replace('^a.*i(.*)$', 'a\\\\1') }}") == "able"
    assert render("{{ 'foobar' | regex_replace('^f.*o(.*)$', '\\\\1') }}") == "bar"
    assert render("{{ 'localhost:80' | regex_replace('^(?P<host>.+):(?P<port>\\\\d+)$', '\\\\g<host>, \\\\g<port>') }}"
                  ) == "localhost, 80"
    assert render("{{ 'CAR\\ntar\\nfoo\\nbar\\n' | regex_replace('^.ar$', '#CommentedOut', multiline=True, "
                  "ignorecase=True) }}") == "#CommentedOut\n#CommentedOut\nfoo\n#CommentedOut\n"
    assert render("{{ 'aaa' | regex_replace('a', 'b', count=2) }}") == "bba"
    assert "should match 1 times" in fails("{{ 'aaa' | regex_replace('a', 'b', mandatory_count=1) }}")


def test_regex_findall():
    assert render("{{ 'Some DNS servers are 8.8.8.8 and 8.8.4.4' | regex_findall('\\\\b(?:[0-9]{1,3}\\\\.){3}"
                  "[0-9]{1,3}\\\\b') }}") == ["8.8.8.8", "8.8.4.4"]
    assert render("{{ 'CAR\\ntar\\nfoo\\nbar\\n' | regex_findall('^.ar$', multiline=True, ignorecase=True) }}"
                  ) == ["CAR", "tar", "bar"]


def test_regex_tests():
    url = "https://example.com/users/foo/resources/bar"
    assert render("{{ u is match('https://example.com/users/.*/resources') }}", u=url) is True
    assert render("{{ u is match('example.com') }}", u=url) is False
    assert render("{{ u is search('users/.*/resources/.*') }}", u=url) is True
    assert render("{{ u is search('USERS', ignorecase=true) }}", u=url) is True
    assert render("{{ u is regex('example\\\\.com/\\\\w+/foo') }}", u=url) is True
    assert render("{{ u is regex('example', match_type='match') }}", u=url) is False


@pytest.mark.parametrize("pattern", ["(a+)+$", "(a*)*b", "(x+x+)+y", "((ab)*)+c", "(?:a|b+)*$"])
def test_nested_repeats_are_refused_before_they_run(pattern: str):
    started = time.monotonic()
    message = fails("{{ s | regex_search(p) }}", s="a" * 40 + "!", p=pattern)
    assert "repeats a repeat" in message and "'v'" in message
    assert time.monotonic() - started < 1


def test_long_patterns_and_long_inputs_are_refused():
    assert "over the limit of 1000" in fails("{{ 'x' | regex_search(p) }}", p="a" * 1001)
    assert "over the limit of 100" in fails("{{ s is search('a') }}", limit=100, s="b" * 101)
    assert "over the limit" in fails("{{ s | regex_replace('b', r) }}", limit=1000, s="b" * 500, r="c" * 500)
    assert render("{{ s | regex_findall('a.c') }}", limit=100, s="abc" * 30) == ["abc"] * 30


# --- the rest ---

def test_ternary():
    assert render("{{ (x == 'a') | ternary('yes', 'no') }}", x="a") == "yes"
    assert render("{{ false | ternary('yes', 'no') }}") == "no"
    assert render("{{ n | ternary('yes', 'no', 'null') }}", n=None) == "null"
    assert render("{{ n | ternary('yes', 'no') }}", n=None) == "no"


def test_mandatory():
    assert render("{{ x | mandatory }}", x=1) == 1
    assert "Mandatory variable 'y' not defined" in fails("{{ y | mandatory }}")
    assert "set y please" in fails("{{ y | mandatory('set y please') }}")


def test_to_yaml_and_to_nice_json():
    data = {"b": [1, 2], "a": "é"}
    assert yaml.safe_load(render("{{ d | to_yaml }}", d=data)) == data
    assert render("{{ d | to_nice_yaml }}", d={"a": [1]}) == "a:\n- 1\n"
    assert render("{{ d | to_nice_json }}", d=data) == '{\n    "a": "é",\n    "b": [\n        1,\n        2\n    ]\n}'
    assert render("{{ d | to_nice_json(indent=2) }}", d={"a": 1}) == '{\n  "a": 1\n}'


def test_paths_base64_hash_quote():
    assert render("{{ '/etc/asdf/foo.txt' | basename }}") == "foo.txt"
    assert render("{{ '/etc/asdf/foo.txt' | dirname }}") == "/etc/asdf"
    assert render("{{ 'Ansible - くらとみ' | b64encode }}") == "QW5zaWJsZSAtIOOBj+OCieOBqOOBvw=="
    assert render("{{ 'QW5zaWJsZSAtIOOBj+OCieOBqOOBvw==' | b64decode }}") == "Ansible - くらとみ"
    assert render("{{ 'test1' | hash('sha1') }}") == "b444ac06613fc8d63795be9ad0beaf55011936ac"
    assert render("{{ 'test1' | hash('md5') }}") == "5a105e8b9d40e1329780d62ea2265d8a"
    assert render("{{ 'test1' | hash('sha256') }}") == (
        "1b4f0e9851971998e732078544c96b36c3d01cedf7caa332359d6f1d83567014")
    assert render("{{ 'test1' | hash }}") == render("{{ 'test1' | hash('sha1') }}")
    assert "unknown hash type" in fails("{{ 'x' | hash('nope') }}")
    assert render("{{ s | quote }}", s="it's a $(test)") == "'it'\"'\"'s a $(test)'"
    assert render("{{ 'plain' | quote }}") == "plain"


@pytest.mark.parametrize(("expr", "expected"), [
    ("'1.2' is version('1.2', '>=')", True),
    ("'1.10' is version('1.9', '>')", True),
    ("'2.0' is version('10.0', 'lt')", True),
    ("'12.04' is version('12.04', 'eq')", True),
    ("'12.04' is version('12.04', '!=')", False),
    ("'1.2.3' is version('1.2', 'ge')", True),
    ("'2.9.0b1' is version('2.9.0', '<', strict=true)", True),
    ("'1.0a' is version('1.0', '>')", True),
])
def test_version(expr: str, expected: bool):
    assert render("{{ " + expr + " }}") is expected


def test_version_bad_operator():
    assert "invalid operator" in fails("{{ '1' is version('1', 'about') }}")


# --- unknown filters and tests are refused when the playbook loads ---

def test_unknown_filter_and_test_refused_by_the_check():
    with pytest.raises(InputError) as info:
        check_template("{{ x | regex_serach('a') }}", MARK, "variable 'y'")
    assert "unknown filter 'regex_serach'" in str(info.value) and "did you mean 'regex_search'" in str(info.value)
    assert info.value.mark == MARK
    with pytest.raises(InputError) as info:
        check_expression("x is mach('a')", MARK, "when")
    assert "unknown test 'mach'" in str(info.value) and "'match'" in str(info.value)
    check_template("{{ x | combine(y) | dict2items | items2dict }}", MARK, "v")
    check_expression("x is version('1.2', '>=') and x | default('') is search('a')", MARK, "when")


def _load(tmp_path: Path, text: str) -> InputError:
    path = tmp_path / "pb.yml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_playbook(str(path))
    return info.value


def test_unknown_filter_refused_at_load_with_its_position(tmp_path: Path):
    err = _load(tmp_path, """
        - hosts: all
          vars:
            ok: "{{ [1, [2]] | flatten }}"
            bad: "first line\\n{{ x | to_nice_jsn }}"
          tasks:
            - exec: {argv: [echo, hi]}
        """)
    text = str(err)
    assert "unknown filter 'to_nice_jsn'" in text and "did you mean 'to_nice_json'" in text
    assert "(line 2 of the value)" in text
    assert "pb.yml:4:" in text


def test_unknown_test_in_when_refused_at_load(tmp_path: Path):
    err = _load(tmp_path, """
        - hosts: all
          tasks:
            - exec: {argv: [echo, hi]}
              when: x is verison('1.2', '>=')
        """)
    assert "unknown test 'verison'" in str(err) and "did you mean 'version'" in str(err)
    assert "pb.yml:4:" in str(err)
