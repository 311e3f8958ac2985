"""The SBPL, PowerShell, XML and Windows command-line escapers are exact (hypothesis), each checked
by a reader of that language (native_readers.py; XML by the standard library's expat parser, which
follows the same XML 1.0 rules as .NET's XmlDocument)."""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from native_readers import SbplError, Str, command_line_to_argv, ps_read_string, sbpl_parse

from sandfleet_agent.backends.escaping import (
    PS_SINGLE_QUOTES,
    ps_str,
    sbpl_str,
    win_arg,
    win_cmdline,
    win_program,
    xml_str,
)
from sandfleet_agent.backends.seatbelt import glob_regex
from sandfleet_agent.portable import globs

FRAGMENTS = ["'", '"', "\\", "\\\\", '\\"', "\n", "\r", "\t", " ", "$(", ")", "(", "`", "${x}", "*", "?", "[", "]",
             "-", "~", "#", ";", "&", "|", "!", "{", "}", "%PATH%", "^", "<", ">", "é", "€", "\u202e", "\u2018",
             "\u2019", "\u201a", "\u201b", "\u201c", '""', "#\"", "\x1b", "\udcff", "a", "Z", "0", "/", ".", ":"]
hostile = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=14).map("".join)
fs_text = st.binary(max_size=30).map(os.fsdecode)  # non-UTF-8 bytes as a POSIX host decodes them
any_text = st.one_of(st.text(), hostile, fs_text)
no_nul = any_text.map(lambda s: s.replace("\x00", ""))
CHEAP = settings(max_examples=400)


# -- SBPL ------------------------------------------------------------------------------------------

@CHEAP
@given(no_nul)
@example('\\"')
@example("^/a\\.b(/.*)?$")
@example("\\n\\t\\x41;")
def test_sbpl_string_round_trips_through_the_tinyscheme_reader(value: str) -> None:
    forms = sbpl_parse(f"(regex {sbpl_str(value)})")
    assert forms == [[forms[0][0], Str(value)]]  # type: ignore[index]


def test_sbpl_string_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        sbpl_str("a\x00b")


@pytest.mark.parametrize("text", ['(allow "x)', "(allow (x)", "(allow))", '(regex #"^/x$")'])
def test_the_sbpl_reader_rejects_broken_profiles(text: str) -> None:
    with pytest.raises(SbplError):
        sbpl_parse(text)


def test_an_unescaped_backslash_would_change_a_regex() -> None:
    """Why the filter escapes backslashes: TinyScheme drops the backslash of an unknown escape."""
    assert sbpl_parse('"\\."') == [Str(".")]
    assert sbpl_parse(sbpl_str("\\.")) == [Str("\\.")]


# -- PowerShell ----------------------------------------------------------------------------------

@CHEAP
@given(any_text)
@example("it's")
@example("\u2018\u2019\u201a\u201b''")
@example("$(Remove-Item C:\\ -Recurse)`n")
def test_ps_string_round_trips_through_the_powershell_tokenizer(value: str) -> None:
    script = f"$x = {ps_str(value)}\nWrite-Output $x\n"
    read, end = ps_read_string(script, len("$x = "))
    assert read == value
    assert script[end:] == "\nWrite-Output $x\n"  # the literal ends where it should: nothing leaks out


def test_every_powershell_single_quote_is_doubled() -> None:
    for quote in PS_SINGLE_QUOTES:
        assert ps_str(f"a{quote}b") == f"'a{quote}{quote}b'"


# -- XML -------------------------------------------------------------------------------------------

XML_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
xml_text = any_text.filter(lambda s: not XML_FORBIDDEN.search(s))


@CHEAP
@given(xml_text)
@example(" \t\n\r ")
@example("<a b=\"'&amp;'\">]]>")
def test_xml_round_trips_in_attributes_and_text(value: str) -> None:
    doc = ET.fromstring(f'<p name="{xml_str(value)}" other=\'{xml_str(value)}\'>{xml_str(value)}</p>')
    assert doc.get("name") == value
    assert doc.get("other") == value
    assert (doc.text or "") == value


@pytest.mark.parametrize("bad", ["\x00", "\x01", "\x1b", "\ufffe", "\uffff", "\udcff", "\ud800"])
def test_xml_refuses_what_xml_cannot_carry(bad: str) -> None:
    with pytest.raises(ValueError, match=r"XML 1\.0 cannot carry"):
        xml_str(f"a{bad}b")


# -- Windows command lines -----------------------------------------------------------------------

program = st.text(min_size=0, max_size=12).filter(lambda s: '"' not in s and "\x00" not in s)
win_text = no_nul


@CHEAP
@given(program, st.lists(win_text, max_size=6))
@example("C:\\Program Files\\x.exe", ["a\\\\\"b", "", "\\", "tail\\", '"', "a b", "\t", "\n"])
@example("", ["x"])
def test_command_lines_split_back_exactly(prog: str, args: list[str]) -> None:
    line = win_cmdline([prog, *args])
    assert command_line_to_argv(line) == [prog, *args]


@CHEAP
@given(st.lists(win_text, min_size=1, max_size=6))
def test_pythons_list2cmdline_splits_back_too(args: list[str]) -> None:
    """The agent on Windows starts the wrapper with subprocess, which quotes with list2cmdline:
    after a plain program name, what it writes also splits back exactly."""
    argv = ["powershell.exe", *args]
    assert command_line_to_argv(subprocess.list2cmdline(argv)) == argv


def test_a_program_name_with_a_quote_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="double quote"):
        win_program('a"b')
    with pytest.raises(ValueError, match="NUL"):
        win_arg("a\x00")


@pytest.mark.parametrize(("line", "argv"), [
    # From Microsoft's "Parsing C++ command-line arguments" table, after a program name.
    ('p "a b c" d e', ["p", "a b c", "d", "e"]),
    ('p "ab\\"c" "\\\\" d', ["p", 'ab"c', "\\", "d"]),
    ('p a\\\\\\b d"e f"g h', ["p", "a\\\\\\b", "de fg", "h"]),
    ('p a\\\\\\"b c d', ["p", 'a\\"b', "c", "d"]),
    ('p a\\\\\\\\"b c" d e', ["p", "a\\\\b c", "d", "e"]),
    # The program name takes no escapes and ends at the next quote.
    ('"C:\\dir\\"x y', ["C:\\dir\\", "x", "y"]),
    ("p\t  x", ["p", "x"]),
])
def test_the_reader_matches_windows(line: str, argv: list[str]) -> None:
    assert command_line_to_argv(line) == argv


# -- deny globs as Seatbelt regexes mean what they mean on Linux ---------------------------------

glob_part = st.lists(st.sampled_from(["*", "?", "a", "b", ".", "[ab]", "[!a]", "[a-c]", "x-y", "**"]),
                     min_size=1, max_size=3).map("".join).filter(lambda p: p not in (".", ".."))
path_part = st.lists(st.sampled_from(["a", "b", "c", ".", "x-y", "-", "ab"]), min_size=1, max_size=3).map("".join)


@settings(max_examples=500)
@given(st.lists(glob_part, min_size=1, max_size=3), st.lists(path_part, min_size=1, max_size=4))
def test_seatbelt_glob_regex_matches_what_the_linux_backends_mask(pattern_parts: list[str], parts: list[str]) -> None:
    """The regex Seatbelt gets for a deny glob matches exactly the paths :func:`globs.expand`
    would mask below the same anchor (so a policy denies the same files on every OS)."""
    pattern_parts = [p if "**" not in p or p == "**" else p.replace("**", "*") for p in pattern_parts]
    assume(any(globs.GLOB_MAGIC.search(p) for p in pattern_parts))  # the binding only makes globs of these
    anchor = "/w"
    ours = re.fullmatch(glob_regex(anchor + "/" + "/".join(pattern_parts)), anchor + "/" + "/".join(parts))
    theirs = re.fullmatch(globs._glob_regex(pattern_parts), "/".join(parts))
    assert bool(ours) == bool(theirs)


@pytest.mark.parametrize(("pattern", "regex", "matches", "misses"), [
    # research §8 case 36
    ("/tmp/repo/**/*.env", "^/tmp/repo/(.*/)?[^/]*\\.env$", ["/tmp/repo/.env", "/tmp/repo/app/config.env"],
     ["/tmp/repo/app/config.env.txt"]),
    ("/tmp/repo/*/file[0-9]?.txt", "^/tmp/repo/[^/]*/file[0-9][^/]\\.txt$", ["/tmp/repo/x/file1a.txt"],
     ["/tmp/repo/x/y/file1a.txt"]),
    ("/tmp/repo/[*.env", "^/tmp/repo/\\[[^/]*\\.env$", ["/tmp/repo/[x.env"], ["/tmp/repo/x.env"]),
    ("/s/secrets/**", "^/s/secrets/.*$", ["/s/secrets/a/b"], ["/s/secrets"]),
])
def test_codex_glob_cases(pattern: str, regex: str, matches: list[str], misses: list[str]) -> None:
    assert glob_regex(pattern) == regex
    assert all(re.fullmatch(regex, m) for m in matches)
    assert not any(re.fullmatch(regex, m) for m in misses)
