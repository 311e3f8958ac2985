"""PathUri: research/codex-sandbox.md §8 cases 1-6 verbatim, rejections, and lossless round trips."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sandfleet_agent.portable.pathuri import PathUri

OPAQUE_CASE_5 = "file:///%00/bad/path/L3RtcC9udWxsLQAt_y1ieXRl"


def fsencode(native: str) -> bytes:
    """What ``os.fsencode`` does on a UTF-8 host, independent of this host's locale."""
    return native.encode("utf-8", "surrogateescape")


# -- §8 case 1: conventions and native spellings ----------------------------------------------------


def test_case1_windows_drive_uri() -> None:
    uri = PathUri.parse("file:///C:/Users/Alice%20Smith/main.rs")
    assert uri.convention == "windows"
    assert uri.to_native("windows") == "C:\\Users\\Alice Smith\\main.rs"
    assert uri.basename == "main.rs"
    assert str(uri) == "file:///C:/Users/Alice%20Smith/main.rs"


def test_case1_unc_uri() -> None:
    uri = PathUri.parse("file://server/share/main.rs")
    assert uri.convention == "windows"
    assert uri.to_native("windows") == "\\\\server\\share\\main.rs"
    assert str(uri) == "file://server/share/main.rs"


def test_case1_posix_uri() -> None:
    uri = PathUri.parse("file:///home/alice/a%20file.rs")
    assert uri.convention == "posix"
    assert uri.to_native("linux") == "/home/alice/a file.rs"
    assert uri.to_native("macos") == "/home/alice/a file.rs"


def test_case1_unc_without_share_stays_the_uri() -> None:
    uri = PathUri.parse("file://server/")
    assert str(uri) == "file://server/"
    assert uri.inferred_native() == "file://server/"
    with pytest.raises(ValueError, match="names no share"):
        uri.to_native("windows")


# -- §8 case 2: one canonical spelling --------------------------------------------------------------


@pytest.mark.parametrize(
    "alias",
    [
        "FILE:///workspace/src",
        "file:/workspace/src",
        "file://localhost/workspace/src",
        "file://LOCALHOST/workspace/src",
    ],
)
def test_case2_aliases_canonicalise(alias: str) -> None:
    assert str(PathUri.parse(alias)) == "file:///workspace/src"
    assert PathUri.parse(alias) == PathUri.parse("file:///workspace/src")


# -- §8 case 3: rejections ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://example.com/file", "unsupported scheme 'http'"),
        ("https://example.com/file", "unsupported scheme 'https'"),
        ("ssh://host/workspace", "unsupported scheme 'ssh'"),
        ("vscode-remote://ssh-remote+host/workspace", "unsupported scheme 'vscode-remote'"),
        ("codex-env:///devbox/workspace", "unsupported scheme 'codex-env'"),
        ("untitled:Untitled-1", "unsupported scheme 'untitled'"),
        ("file:///tmp/file.rs?version=1", r"has a query \('\?'\)"),
        ("file:///tmp/file.rs#L1", "has a fragment"),
        ("file:///tmp/%00", "encodes a NUL byte"),
        ("src/lib.rs", "is relative"),
        ("/home/alice/src", "is a native path, not a file URI"),
        ("C:\\Users\\alice", "is a native path, not a file URI"),
        ("C:/Users/alice", "is a native path, not a file URI"),
        ("\\\\server\\share\\x", "is a native path, not a file URI"),
    ],
)
def test_case3_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        PathUri.parse(text)
    assert repr(text) in str(info.value), "the message names the input"


def test_case3_json_strings_must_be_uris() -> None:
    for payload in ['"src/lib.rs"', json.dumps("/home/alice/workspace/src")]:
        with pytest.raises(ValueError):
            PathUri.parse(json.loads(payload))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file://user@host/x", "credentials"),
        ("file://host:22/x", "has a port"),
        ("file://[::1]/x", "invalid host"),
        ("file://bad host/x", "invalid host"),
        ("file:///a\\b", "backslash"),
        ("file:///a%zz", "malformed percent-escape"),
        ("file:///a%2", "malformed percent-escape"),
        ("file:///a%2Fb", "encodes a path separator"),
        ("file:///C:/a%5Cb", "encodes a path separator"),
        ("file:///C:/a%FF", "not UTF-8"),
        ("file:///a\nb", "control character"),
        ("file:///a\ud800", "lone surrogate"),
        ("file:relative", "relative path"),
        ("file:", "relative path"),
        ("file:///%00/other/YQ", "encodes a NUL byte"),
    ],
)
def test_other_rejections(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathUri.parse(text)


def test_parse_refuses_non_strings() -> None:
    with pytest.raises(TypeError):
        PathUri.parse(b"file:///x")  # type: ignore[arg-type]


# -- §8 case 4: a URI is only valid on a host of its own convention ----------------------------------


@pytest.mark.parametrize("host_os", ["linux", "macos"])
@pytest.mark.parametrize("text", ["file://server/share/file.txt", "file:///C:/workspace"])
def test_case4_windows_uri_invalid_on_posix(text: str, host_os: str) -> None:
    with pytest.raises(ValueError) as info:
        PathUri.parse(text).to_native(host_os)
    assert str(info.value) == f"'{text}' is invalid on '{host_os}'"


def test_case4_posix_uri_invalid_on_windows() -> None:
    with pytest.raises(ValueError) as info:
        PathUri.parse("file:///usr/local/file.txt").to_native("windows")
    assert str(info.value) == "'file:///usr/local/file.txt' is invalid on 'windows'"


def test_to_native_refuses_unknown_host_os() -> None:
    with pytest.raises(ValueError, match="unknown host OS 'freebsd'"):
        PathUri.parse("file:///x").to_native("freebsd")


# -- §8 case 5: the opaque form ----------------------------------------------------------------------


def test_case5_nul_path_uses_opaque_form() -> None:
    path = b"/tmp/null-\0-\xff-byte"
    uri = PathUri.from_native(path)
    assert str(uri) == OPAQUE_CASE_5
    assert uri == PathUri.parse(OPAQUE_CASE_5)
    serialised = json.dumps(str(uri))
    assert serialised == '"file:///%00/bad/path/L3RtcC9udWxsLQAt_y1ieXRl"'
    assert PathUri.parse(json.loads(serialised)) == uri
    assert uri.convention == "posix"
    assert fsencode(uri.to_native("linux")) == path
    assert os.fsencode(uri.to_native("linux")) == path
    assert uri.basename is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file:///%00/bad/path/YQ==", "not unpadded base64url"),
        ("file:///%00/bad/path/YR", "not canonical base64url"),
        ("file:///%00/bad/path/YQ/extra", "not unpadded base64url"),
        ("file:///%00/bad/path/", "not unpadded base64url"),
        ("file:///%00/bad/path/not*base64", "not unpadded base64url"),
        ("file:///%00/bad/path/YWJjZA", "does not decode to an absolute"),  # "abcd": relative
        ("file:///%00/bad/path/YQ", "does not decode to an absolute"),  # Codex accepts; we refuse
    ],
)
def test_case5_malformed_opaque_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathUri.parse(text)


@pytest.mark.parametrize(
    ("native", "expected"),
    [  # the UTF-16LE values Codex pins for its own Windows namespace paths
        ("\\\\.\\COM1\\", "file:///%00/bad/path/XABcAC4AXABDAE8ATQAxAFwA"),
        (
            "\\\\?\\Volume{00000000-0000-0000-0000-000000000000}\\file.rs",
            "file:///%00/bad/path/XABcAD8AXABWAG8AbAB1AG0AZQB7ADAAMAAwADAAMAAwADAAMAAtADAAMAAwADAALQAwADAAMAAw"
            "AC0AMAAwADAAMAAtADAAMAAwADAAMAAwADAAMAAwADAAMAAwAH0AXABmAGkAbABlAC4AcgBzAA",
        ),
    ],
)
def test_windows_namespaces_use_opaque_form(native: str, expected: str) -> None:
    uri = PathUri.from_native(native)
    assert str(uri) == expected
    assert uri.convention == "windows"
    assert PathUri.parse(expected).to_native("windows") == native
    with pytest.raises(ValueError, match="is invalid on 'linux'"):
        uri.to_native("linux")


@pytest.mark.parametrize(
    "native",
    [
        "C:\\bad\\\ud800",  # not Unicode
        "C:\\a\0b",  # NUL
        "\\\\localhost\\share\\x",  # would collapse into the POSIX file:///share/x
        "\\\\bad host\\share\\x",  # not a URI host
        "\\\\serv\u00e9r\\share",  # non-ASCII host (URL parsers would punycode it)
    ],
)
def test_unrepresentable_windows_paths_round_trip_opaque(native: str) -> None:
    uri = PathUri.from_native(native)
    assert uri.is_opaque
    assert PathUri.parse(str(uri)) == uri
    assert uri.to_native("windows") == native


def test_windows_opaque_spelled_with_forward_slash_is_refused() -> None:
    # its UTF-16LE would begin with the byte "/", i.e. read as POSIX bytes
    with pytest.raises(ValueError, match="leading backslash"):
        PathUri.from_native("//?/C:/x", "windows")


# -- §8 case 6 -------------------------------------------------------------------------------------------


def test_case6_bad_path_without_nul_is_ordinary() -> None:
    uri = PathUri.from_native("/bad/path/L3RtcC9udWxsLQAt_y1ieXRl")
    assert str(uri) == "file:///bad/path/L3RtcC9udWxsLQAt_y1ieXRl"
    assert not uri.is_opaque
    assert uri.to_native("linux") == "/bad/path/L3RtcC9udWxsLQAt_y1ieXRl"


# -- from_native -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("native", "expected", "convention"),
    [
        ("/opt/cache", "file:///opt/cache", "posix"),
        ("/", "file:///", "posix"),
        ("/a b/c", "file:///a%20b/c", "posix"),
        ("/tmp/100%/a?b#c", "file:///tmp/100%25/a%3Fb%23c", "posix"),
        ("/a\\b", "file:///a%5Cb", "posix"),
        ("/caf\u00e9", "file:///caf%C3%A9", "posix"),
        ("/C:/x", "file:///C%3A/x", "posix"),  # stays POSIX
        ("/a/../b/./c//d/", "file:///a/../b/./c//d/", "posix"),  # never normalised
        ("C:\\Users\\x", "file:///C:/Users/x", "windows"),
        ("C:\\a b\\c", "file:///C:/a%20b/c", "windows"),
        ("C:/Users/x", "file:///C:/Users/x", "windows"),
        ("c:\\", "file:///c:/", "windows"),
        ("\\\\server\\share\\x", "file://server/share/x", "windows"),
        ("\\\\SERVER\\share", "file://server/share", "windows"),  # hosts are case-insensitive
    ],
)
def test_from_native(native: str, expected: str, convention: str) -> None:
    uri = PathUri.from_native(native)
    assert str(uri) == expected
    assert uri.convention == convention
    assert PathUri.parse(expected) == uri


def test_from_native_bytes_and_surrogateescape_agree() -> None:
    raw = b"/srv/caf\xe9/\xff"
    assert str(PathUri.from_native(raw)) == "file:///srv/caf%E9/%FF"
    assert PathUri.from_native(os.fsdecode(raw)) == PathUri.from_native(raw)


def test_from_native_explicit_convention() -> None:
    assert str(PathUri.from_native("//server/share/x", "windows")) == "file://server/share/x"
    assert str(PathUri.from_native("//server/share/x")) == "file:////server/share/x"  # inferred POSIX
    with pytest.raises(ValueError, match="not an absolute POSIX path"):
        PathUri.from_native("C:\\x", "posix")
    with pytest.raises(ValueError, match="not an absolute Windows path"):
        PathUri.from_native("/x", "windows")
    with pytest.raises(ValueError, match="unknown path convention"):
        PathUri.from_native("/x", "vms")


@pytest.mark.parametrize("native", ["relative/x", "", "~/x", "C:x", "\\x", "\\\\server", "\\\\server\\", "x:"])
def test_from_native_rejects_relative(native: str) -> None:
    with pytest.raises(ValueError, match="not an absolute"):
        PathUri.from_native(native)


def test_from_native_hints_at_parse_for_uris() -> None:
    with pytest.raises(ValueError, match=r"use PathUri\.parse"):
        PathUri.from_native("file:///x")


def test_from_native_rejects_unencodable() -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        PathUri.from_native("/a\ud800")
    with pytest.raises(ValueError, match="not UTF-8"):
        PathUri.from_native(b"C:\\\xff", "windows")


# -- parse details ---------------------------------------------------------------------------------------


def test_percent_encoding_is_preserved_and_hex_uppercased() -> None:
    uri = PathUri.parse("file:///tmp/a%3fb%23c%25d/100%25")
    assert str(uri) == "file:///tmp/a%3Fb%23c%25d/100%25"
    assert uri.basename == "100%"
    assert uri.to_native("linux") == "/tmp/a?b#c%d/100%"
    assert str(PathUri.parse("file:///tmp/a%252Fb")) == "file:///tmp/a%252Fb"


def test_raw_characters_are_encoded() -> None:
    assert str(PathUri.parse("file:///caf\u00e9 dir")) == "file:///caf%C3%A9%20dir"


def test_drive_shaped_posix_uri_is_windows_but_encoded_colon_is_posix() -> None:
    assert PathUri.parse("file:///C:/actually/posix").convention == "windows"
    assert PathUri.parse("file:///C%3A/actually/posix").to_native("linux") == "/C:/actually/posix"


def test_drive_root_spellings() -> None:
    assert PathUri.parse("file:///C:").to_native("windows") == "C:\\"
    assert PathUri.parse("file:///C:/").to_native("windows") == "C:\\"
    assert PathUri.parse("file:///d:").convention == "windows"


def test_constructor_only_takes_canonical_strings() -> None:
    assert PathUri("file:///x") == PathUri.parse("file:///x")
    with pytest.raises(ValueError, match="not a canonical file URI"):
        PathUri("FILE:///x")


def test_value_semantics() -> None:
    uri = PathUri.parse("file:///x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        uri.uri = "file:///y"  # type: ignore[misc]
    assert len({uri, PathUri.parse("file://localhost/x")}) == 1


def test_inferred_native() -> None:
    assert PathUri.parse("file:///C:/Program%20Files/x.exe").inferred_native() == "C:\\Program Files\\x.exe"
    assert PathUri.parse("file:///usr/bin/bash").inferred_native() == "/usr/bin/bash"
    assert PathUri.parse(OPAQUE_CASE_5).inferred_native() == OPAQUE_CASE_5


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///", None),
        ("file:///workspace/src/lib.rs", "lib.rs"),
        ("file:///workspace/a%20file.rs", "a file.rs"),
        ("file:///workspace/dir/", "dir"),
        ("file:///C:/", "C:"),
        ("file://server/share", "share"),
    ],
)
def test_basename(uri: str, expected: str | None) -> None:
    assert PathUri.parse(uri).basename == expected


# -- join / starts_with ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "relative", "expected"),
    [
        ("file:///workspace", "svc", "file:///workspace/svc"),
        ("file:///workspace/", "svc/.git", "file:///workspace/svc/.git"),
        ("file:///workspace", "a?b#c%d", "file:///workspace/a%3Fb%23c%25d"),
        ("file:///workspace", "./a//b/", "file:///workspace/a/b"),
        ("file:///workspace", "", "file:///workspace"),
        ("file:///", "C:", "file:///C%3A"),  # still POSIX
        ("file:///C:/Users", "x\\y", "file:///C:/Users/x/y"),
        ("file:///C:/", "x", "file:///C:/x"),
        ("file://server/share", "x/y", "file://server/share/x/y"),
    ],
)
def test_join(base: str, relative: str, expected: str) -> None:
    assert PathUri.parse(base).join(relative) == PathUri.parse(expected)


@pytest.mark.parametrize(
    ("base", "relative", "message"),
    [
        ("file:///workspace", "../etc", "climb"),
        ("file:///workspace", "a/../../etc", "climb"),
        ("file:///workspace", "/etc", "must be relative"),
        ("file:///C:/w", "\\Windows", "must be relative"),
        ("file:///C:/w", "D:tmp", "drive path is not relative"),
        ("file:///workspace", "a\0b", "NUL"),
        (OPAQUE_CASE_5, "child", "opaque"),
    ],
)
def test_join_refuses(base: str, relative: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathUri.parse(base).join(relative)


@pytest.mark.parametrize(
    ("path", "base", "expected"),
    [
        ("file:///workspace/plugin", "file:///", True),
        ("file:///workspace/plugin", "file:///workspace/plugin", True),
        ("file:///workspace/plugin/assets/icon.svg", "file:///workspace/plugin", True),
        ("file:///workspace/plugin/", "file:///workspace/plugin", True),
        ("file:///workspace/plugin-other/icon.svg", "file:///workspace/plugin", False),
        ("file:///workspace/plugin/%5C..%5Coutside", "file:///workspace/plugin", True),  # POSIX name
        ("file:///workspace/plugin/../outside", "file:///workspace/plugin", False),  # fails closed
        ("file:///C:/plugins/foo/assets/icon.svg", "file:///C:/plugins/foo", True),
        ("file:///C:/plugins/foo2/assets/icon.svg", "file:///C:/plugins/foo", False),
        ("file://server/share/plugins/foo/icon.svg", "file://server/share/plugins/foo", True),
        ("file://other/share/plugins/foo/icon.svg", "file://server/share/plugins/foo", False),
        ("file:///C:/x", "file:///", False),  # conventions differ
        (OPAQUE_CASE_5, OPAQUE_CASE_5, True),
        (OPAQUE_CASE_5, "file:///", False),
        ("file:///tmp", OPAQUE_CASE_5, False),
    ],
)
def test_starts_with(path: str, base: str, expected: bool) -> None:
    assert PathUri.parse(path).starts_with(PathUri.parse(base)) is expected


# -- properties ----------------------------------------------------------------------------------------------

HOSTILE_BYTES = [
    b"/",
    b"\0",
    b"\x80",
    b"\xff",
    b"\xed\xa0\x80",
    b"%",
    b"%00",
    b"?",
    b"#",
    b" ",
    b"\n",
    b"\\",
    b"..",
    b".",
    b"C:",
    b":",
    b"@",
    "\u00e9".encode(),
    "\U0001f600".encode(),
    b"bad/path",
]
posix_paths = st.lists(st.one_of(st.binary(max_size=6), st.sampled_from(HOSTILE_BYTES)), max_size=12).map(
    lambda parts: b"/" + b"".join(parts)
)
# Windows names: anything but the separators, NUL (tested separately) and surrogates (tested
# separately: a pair of lone surrogates would read back as the one character it encodes).
# Characters Windows forbids in names (<>:"|?* and controls) are kept on purpose: the URI must
# carry them exactly and leave rejecting them to the Windows host.
HOSTILE_CHARS = [
    "%",
    "?",
    "#",
    " ",
    "\n",
    ":",
    "<",
    ">",
    "|",
    "*",
    '"',
    ".",
    "..",
    "\u00e9",
    "\U0001f600",
    "\u202e",
    "%00",
    "C:",
]
windows_names = st.lists(
    st.one_of(
        st.text(st.characters(exclude_characters="\\/\0", exclude_categories=("Cs",)), max_size=5),
        st.sampled_from(HOSTILE_CHARS),
    ),
    max_size=3,
).map("".join)


@given(posix_paths)
def test_posix_bytes_round_trip(path: bytes) -> None:
    uri = PathUri.from_native(path)
    native = uri.to_native("linux")
    assert fsencode(native) == path
    assert uri.convention == "posix"
    assert PathUri.parse(str(uri)) == uri
    assert PathUri.from_native(os.fsdecode(path)) == uri
    assert str(uri).isascii() and "\n" not in str(uri)


@given(st.sampled_from("ACZacz"), st.lists(windows_names, max_size=5))
def test_windows_drive_round_trip(drive: str, names: list[str]) -> None:
    path = f"{drive}:\\" + "\\".join(names)
    uri = PathUri.from_native(path)
    assert uri.convention == "windows"
    assert uri.to_native("windows") == path
    assert PathUri.parse(str(uri)) == uri
    assert PathUri.from_native(path.replace("\\", "/")) == uri  # '/' is a separator too


hosts = st.one_of(
    st.from_regex(r"[a-z0-9_-]{1,8}(\.[a-z0-9_-]{1,8}){0,2}", fullmatch=True),
    st.text(st.characters(exclude_characters="\\/\0", exclude_categories=("Cs",)), min_size=1, max_size=8),
)


@given(hosts, windows_names.filter(bool), st.lists(windows_names, max_size=4))
def test_unc_round_trip(host: str, share: str, names: list[str]) -> None:
    path = "\\\\" + "\\".join([host, share, *names])
    assume(not re.match(r"[.?][\\/]", path[2:4]))  # \\.\ and \\?\ are namespaces, tested above
    uri = PathUri.from_native(path)
    assert uri.convention == "windows"
    native = uri.to_native("windows")
    # UNC host names are case-insensitive and canonicalised to lower case; all else is exact
    expected_host = host.lower() if host.isascii() and not uri.is_opaque else host
    assert native == "\\\\" + "\\".join([expected_host, share, *names])
    assert PathUri.parse(str(uri)) == uri


@given(st.text(max_size=4).map(lambda s: "C:\\a" + s), st.sampled_from(["\ud800", "\udc80", "\udfff"]))
def test_windows_lone_surrogates_round_trip(prefix: str, surrogate: str) -> None:
    assume(not prefix or not ("\ud800" <= prefix[-1] <= "\udbff"))
    path = prefix + surrogate + "x"
    uri = PathUri.from_native(path)
    assert uri.is_opaque
    assert uri.to_native("windows") == path


URI_ALPHABET = st.sampled_from([*"/%:.@AaCcZz09fF \u00e9?#\\\0", "%00", "%2F", "%5c", "%FF", "localhost"])


@given(
    st.sampled_from(["file:", "file:/", "file://", "file:///", "FILE://", "file://server/", "http://"]),
    st.lists(URI_ALPHABET, max_size=12).map("".join),
)
def test_parse_is_idempotent_or_rejects(prefix: str, rest: str) -> None:
    try:
        uri = PathUri.parse(prefix + rest)
    except ValueError:
        return
    assert PathUri.parse(str(uri)) == uri
    assert PathUri(str(uri)) == uri
    host_os = "windows" if uri.convention == "windows" else "linux"
    try:
        native = uri.to_native(host_os)
    except ValueError as exc:  # the only URI that parses but has no native path
        assert "names no share" in str(exc)
        return
    # escapes may be spelled differently (%41 vs A), the path they mean may not
    assert PathUri.from_native(native, uri.convention).to_native(host_os) == native
