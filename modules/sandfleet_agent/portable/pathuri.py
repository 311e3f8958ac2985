"""``file:`` URIs for concrete paths that travel between hosts of different operating systems.

A native string such as ``C:\\x`` or ``/x`` means different things on different hosts, so every
concrete path on the wire is a :class:`PathUri`: a canonical ``file:`` URI whose spelling says which
path convention it belongs to. A host converts it back only when the convention is its own
(:meth:`PathUri.to_native`), so a Windows path never masquerades as a POSIX one.

Modelled on Codex's ``PathUri``, with these deliberate choices:

* Conversion is lossless. POSIX paths are bytes: non-UTF-8 bytes become ``%XX`` and come back as
  ``str`` with ``surrogateescape`` (``os.fsencode`` returns the exact bytes). Dot segments, empty
  segments and trailing slashes are kept as spelled, never normalised; the kernel resolves them.
* A POSIX path whose first component looks like a drive (``/C:/x``) is written ``file:///C%3A/x``
  so it stays POSIX (``file:///C:/x`` is read as Windows, as in Codex).
* Paths with no ordinary URI use the opaque form ``file:///%00/bad/path/<base64url, no padding>``
  of the POSIX bytes or the Windows UTF-16LE code units: paths containing NUL, Windows device and
  verbatim namespaces (``\\\\?\\``, ``\\\\.\\``), Windows names that are not Unicode (lone
  surrogates) and UNC hosts that are not plain host names (including ``localhost``, which would
  otherwise collapse into a POSIX path). ``%00`` cannot occur in a real path, so the form cannot
  collide. An opaque URI is accepted only when its payload decodes to an absolute POSIX or Windows
  path, so its convention is always known; it contains only itself and cannot be joined.
* Windows device/verbatim or bad-host paths spelled with a leading ``/`` (``//?/x``) are refused:
  their UTF-16LE would read as POSIX bytes. Spell them with backslashes.
* UNC host names are case-insensitive and canonicalised to lower case (RFC 3986 §3.2.2).
* Encoded path separators (``%2F``; on Windows also ``%5C``) are refused when parsing: converting
  them to a native path would split one URI segment into several.
* Windows names are otherwise not validated (``<>|?*"`` or a trailing dot pass through): the URI
  carries them exactly and the Windows host rejects what it cannot open.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass
from typing import Optional, Union

POSIX = "posix"
WINDOWS = "windows"
HOST_CONVENTIONS = {"linux": POSIX, "macos": POSIX, "windows": WINDOWS}

_OPAQUE_PREFIX = "file:///%00/bad/path/"
_OPAQUE_PATH_PREFIX = "/%00/bad/path/"
# RFC 3986 unreserved + sub-delims + ":" / "@": the bytes a path segment may hold unencoded.
_SEGMENT_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_DRIVE_SEGMENT = re.compile(r"[A-Za-z]:\Z")
_HOST = re.compile(r"[a-z0-9_\-]+(?:\.[a-z0-9_\-]+)*\Z")
_BASE64URL = re.compile(r"[A-Za-z0-9_\-]+\Z")
_WIN_SEPS = "\\/"
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")


def unquote_to_bytes(text: str) -> bytes:
    """``urllib.parse.unquote_to_bytes``: UTF-8, then each ``%XX`` decoded (any other ``%`` kept).
    Here because urllib.parse imports ipaddress: ~1.7 ms of every agent start."""
    return _ESCAPE.sub(lambda escape: bytes((int(escape[1], 16),)), text.encode("utf-8"))


def _encode_segment(segment: bytes) -> str:
    return "".join(chr(b) if b in _SEGMENT_SAFE else f"%{b:02X}" for b in segment)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _is_drive(segment: str) -> bool:
    return _DRIVE_SEGMENT.match(segment) is not None


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _opaque_convention(raw: bytes) -> Optional[str]:
    """POSIX payloads are absolute byte paths; Windows ones UTF-16LE starting like ``C:\\`` or ``\\\\``."""
    if raw.startswith(b"/"):
        return POSIX
    if len(raw) % 2 or len(raw) < 6:
        return None
    first, second, third = (chr(unit) for unit in struct.unpack("<3H", raw[:6]))
    drive = first.isascii() and first.isalpha() and second == ":" and third in _WIN_SEPS
    unc = first == "\\" and second in _WIN_SEPS
    return WINDOWS if drive or unc else None


def _decode_opaque(raw: bytes, convention: str) -> str:
    if convention == POSIX:
        return raw.decode("utf-8", "surrogateescape")
    return raw.decode("utf-16-le", "surrogatepass")


@dataclass(frozen=True)
class PathUri:
    """A validated, canonical ``file:`` URI. Build it with :meth:`parse` or :meth:`from_native`;
    the constructor accepts only an already canonical string."""

    uri: str

    def __post_init__(self) -> None:
        canonical = _canonicalise(self.uri)
        if canonical != self.uri:
            raise ValueError(f"{self.uri!r} is not a canonical file URI; use PathUri.parse")

    @classmethod
    def _trusted(cls, uri: str) -> PathUri:
        """Wrap a string this module built itself (already canonical), skipping re-validation."""
        obj = object.__new__(cls)
        object.__setattr__(obj, "uri", uri)
        return obj

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> PathUri:
        """Validate a ``file:`` URI and return its canonical form (``FILE:/x`` -> ``file:///x``)."""
        return cls._trusted(_canonicalise(text))

    @classmethod
    def from_native(cls, path: Union[str, bytes], convention: Optional[str] = None) -> PathUri:
        """Convert an absolute native path; ``convention`` is ``"posix"``, ``"windows"`` or inferred
        from the spelling (``C:\\x``, ``C:/x``, ``\\\\server\\share`` -> Windows; ``/x`` -> POSIX)."""
        if convention is None:
            convention = _infer_native_convention(path)
        if convention == POSIX:
            return cls._trusted(_posix_uri(_posix_bytes(path)))
        if convention == WINDOWS:
            if isinstance(path, bytes):
                try:
                    text = path.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"{path!r} is not UTF-8; pass Windows paths as str") from None
            else:
                text = path
            return cls._trusted(_windows_uri(text))
        raise ValueError(f"unknown path convention {convention!r}; expected 'posix' or 'windows'")

    # -- inspection ----------------------------------------------------------------------------

    def __str__(self) -> str:
        return self.uri

    @property
    def is_opaque(self) -> bool:
        return self.uri.startswith(_OPAQUE_PREFIX)

    @property
    def convention(self) -> str:
        """``"windows"`` for a UNC authority or a ``C:`` first segment, else ``"posix"``."""
        if self.is_opaque:
            convention = _opaque_convention(self._opaque_bytes())
            assert convention is not None  # parse() refuses payloads without one
            return convention
        host, segments = _split(self.uri)
        return WINDOWS if host or _is_drive(segments[0]) else POSIX

    @property
    def basename(self) -> Optional[str]:
        """The decoded last non-empty segment (``surrogateescape`` for non-UTF-8 bytes); ``None``
        for ``file:///`` and for opaque URIs, whose payload is not lexical."""
        if self.is_opaque:
            return None
        names = [s for s in _split(self.uri)[1] if s]
        return unquote_to_bytes(names[-1]).decode("utf-8", "surrogateescape") if names else None

    def _opaque_bytes(self) -> bytes:
        payload = self.uri[len(_OPAQUE_PREFIX) :]
        return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))

    # -- conversion ----------------------------------------------------------------------------

    def to_native(self, host_os: str) -> str:
        """The native path on ``host_os`` (``linux``/``macos``/``windows``); refuses a URI of the
        other convention rather than projecting it onto an unrelated local path."""
        if host_os not in HOST_CONVENTIONS:
            raise ValueError(f"unknown host OS {host_os!r}; expected one of linux, macos, windows")
        convention = self.convention
        if HOST_CONVENTIONS[host_os] != convention:
            raise ValueError(f"'{self.uri}' is invalid on '{host_os}'")
        if self.is_opaque:
            return _decode_opaque(self._opaque_bytes(), convention)
        host, segments = _split(self.uri)
        if convention == POSIX:
            return unquote_to_bytes("/" + "/".join(segments)).decode("utf-8", "surrogateescape")
        names = [unquote_to_bytes(s).decode("utf-8") for s in segments]
        if host:
            if not names[0]:
                raise ValueError(f"'{self.uri}' names no share, so it is not a Windows path")
            return "\\\\" + host + "\\" + "\\".join(names)
        return names[0] + "\\" + "\\".join(names[1:])

    def inferred_native(self) -> str:
        """For messages: the path in its own convention's spelling, whatever this host is."""
        if self.is_opaque:
            return self.uri
        try:
            return self.to_native("windows" if self.convention == WINDOWS else "linux")
        except ValueError:
            return self.uri

    # -- lexical operations --------------------------------------------------------------------

    def join(self, relative: str) -> PathUri:
        """Append a relative path, read with this URI's convention. Absolute paths, ``..``, NUL and
        (on Windows) drive-relative ``C:x`` are refused: a join never leaves the base."""
        if "\0" in relative:
            raise ValueError(f"cannot join {relative!r}: it contains NUL")
        convention = self.convention
        seps = "/" if convention == POSIX else _WIN_SEPS
        if relative[:1] and relative[0] in seps:
            raise ValueError(f"cannot join {relative!r}: it must be relative")
        if convention == WINDOWS and len(relative) >= 2 and relative[1] == ":":
            raise ValueError(f"cannot join {relative!r}: a drive path is not relative")
        parts = [p for p in re.split("[" + re.escape(seps) + "]", relative) if p not in ("", ".")]
        if ".." in parts:
            raise ValueError(f"cannot join {relative!r}: '..' would climb out of {self.uri}")
        if not parts:
            return self
        if self.is_opaque:
            raise ValueError(f"cannot join {relative!r} to the opaque URI {self.uri}")
        if convention == POSIX:
            base = self.to_native("linux").rstrip("/")
            return PathUri.from_native(base + "/" + "/".join(parts), POSIX)
        base = self.to_native("windows").rstrip("\\")
        if _has_surrogate(relative):
            raise ValueError(f"cannot join {relative!r}: it is not valid Unicode")
        return PathUri.from_native(base + "\\" + "\\".join(parts), WINDOWS)

    def starts_with(self, other: PathUri) -> bool:
        """Lexical, segment-wise containment (no filesystem access, case-sensitive). Fails closed:
        an opaque URI contains only itself, and ``.``/``..`` segments prevent containment."""
        if self == other:
            return True
        if self.is_opaque or other.is_opaque or self.convention != other.convention:
            return False
        mine, theirs = _containment_key(self.uri), _containment_key(other.uri)
        if mine is None or theirs is None:
            return False
        return mine[0] == theirs[0] and mine[1][: len(theirs[1])] == theirs[1]


def _containment_key(uri: str) -> Optional[tuple[str, list[bytes]]]:
    host, segments = _split(uri)
    decoded = [unquote_to_bytes(s) for s in segments if s]
    if any(s in (b".", b"..") for s in decoded):
        return None
    return host, decoded


def _split(uri: str) -> tuple[str, list[str]]:
    """Host and path segments of a canonical, non-opaque URI (``file:///a/b`` -> ``("", [a, b])``)."""
    rest = uri[len("file://") :]
    host, _, path = rest.partition("/")
    return host, path.split("/")


# -- native paths -------------------------------------------------------------------------------


def _infer_native_convention(path: Union[str, bytes]) -> str:
    text = path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path
    if text.startswith("/"):
        return POSIX
    if text[:2] == "\\\\" or (
        len(text) >= 3 and text[0].isascii() and text[0].isalpha() and text[1] == ":" and text[2] in _WIN_SEPS
    ):
        return WINDOWS
    scheme = _SCHEME.match(text)
    hint = "; it looks like a URI, use PathUri.parse" if scheme and len(scheme.group(1)) > 1 else ""
    raise ValueError(
        f"{path!r} is not an absolute path: expected /x (POSIX), C:\\x, C:/x or \\\\server\\share\\x"
        f" (Windows){hint}"
    )


def _posix_bytes(path: Union[str, bytes]) -> bytes:
    if isinstance(path, bytes):
        raw = path
    else:
        try:
            raw = path.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise ValueError(f"{path!r} cannot be a POSIX path: it holds a lone surrogate") from None
    if not raw.startswith(b"/"):
        raise ValueError(f"{path!r} is not an absolute POSIX path: it must start with '/'")
    return raw


def _posix_uri(raw: bytes) -> str:
    if b"\0" in raw:
        return _OPAQUE_PREFIX + _b64(raw)
    segments = raw[1:].split(b"/")
    encoded = [_encode_segment(s) for s in segments]
    if _is_drive(encoded[0]):  # keep `/C:/x` POSIX: `file:///C:/x` would read as Windows
        encoded[0] = encoded[0][0] + "%3A"
    return "file:///" + "/".join(encoded)


def _windows_uri(text: str) -> str:
    seps = "[" + re.escape(_WIN_SEPS) + "]"
    namespace = len(text) >= 4 and text[0] in _WIN_SEPS and text[1] in _WIN_SEPS and text[2] in ".?"
    if len(text) >= 2 and text[0] in _WIN_SEPS and text[1] in _WIN_SEPS:
        if namespace and text[3] in _WIN_SEPS:
            return _windows_opaque(text)
        parts = re.split(seps, text[2:])
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{text!r} is not an absolute Windows path: UNC needs \\\\server\\share")
        host = parts[0].lower() if parts[0].isascii() else parts[0]
        if "\0" in text or _has_surrogate(text) or not _HOST.match(host) or host == "localhost":
            return _windows_opaque(text)
        return f"file://{host}/" + "/".join(_encode_segment(p.encode("utf-8")) for p in parts[1:])
    if len(text) >= 3 and text[0].isascii() and text[0].isalpha() and text[1] == ":" and text[2] in _WIN_SEPS:
        if "\0" in text or _has_surrogate(text):
            return _windows_opaque(text)
        parts = re.split(seps, text[3:])
        return "file:///" + text[:2] + "/" + "/".join(_encode_segment(p.encode("utf-8")) for p in parts)
    raise ValueError(
        f"{text!r} is not an absolute Windows path: expected C:\\x, C:/x or \\\\server\\share\\x"
    )


def _windows_opaque(text: str) -> str:
    if text[0] == "/":
        raise ValueError(
            f"{text!r} has no file URI and its opaque form would read as POSIX; "
            "spell it with a leading backslash"
        )
    return _OPAQUE_PREFIX + _b64(text.encode("utf-16-le", "surrogatepass"))


# -- parsing ------------------------------------------------------------------------------------


def _canonicalise(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"a file URI must be a str, not {type(text).__name__}")
    match = _SCHEME.match(text)
    if match is None or len(match.group(1)) == 1:  # `C:` is a drive, not a scheme
        if text.startswith(("/", "\\")) or (match is not None and text[2:3] in ("/", "\\")):
            raise ValueError(
                f"{text!r} is a native path, not a file URI; convert it with PathUri.from_native"
            )
        raise ValueError(f"{text!r} is relative; only absolute file: URIs (file:///...) are allowed")
    scheme = match.group(1).lower()
    if scheme != "file":
        raise ValueError(f"{text!r} has the unsupported scheme {scheme!r}; only file: URIs are allowed")
    rest = text[match.end() :]
    query, fragment = rest.find("?"), rest.find("#")
    if query >= 0 and (fragment < 0 or query < fragment):
        raise ValueError(f"{text!r} has a query ('?'); file URIs may not (encode it as %3F)")
    if fragment >= 0:
        raise ValueError(f"{text!r} has a fragment ('#'); file URIs may not (encode it as %23)")

    if rest.startswith("//"):
        slash = rest.find("/", 2)
        authority, path = (rest[2:slash], rest[slash:]) if slash >= 0 else (rest[2:], "/")
    elif rest.startswith("/"):
        authority, path = "", rest
    else:
        raise ValueError(f"{text!r} has a relative path; a file URI path must start with '/'")
    host = _canonical_host(text, authority)
    path = _canonical_path(text, path)

    if not host and path.startswith(_OPAQUE_PATH_PREFIX):
        _check_opaque(text, path[len(_OPAQUE_PATH_PREFIX) :])
        return "file://" + path
    if "%00" in path:
        raise ValueError(
            f"{text!r} encodes a NUL byte (%00), which no native path can hold; "
            f"only the opaque form {_OPAQUE_PREFIX}<base64url> may"
        )
    segments = path[1:].split("/")
    windows = bool(host) or _is_drive(segments[0])
    for segment in segments:
        raw = unquote_to_bytes(segment)
        if b"/" in raw or (windows and b"\\" in raw):
            raise ValueError(f"{text!r} encodes a path separator inside the segment {segment!r}")
        if windows:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(
                    f"{text!r} is a Windows path whose segment {segment!r} is not UTF-8"
                ) from None
    return f"file://{host}{path}"


def _canonical_host(text: str, authority: str) -> str:
    if "@" in authority:
        raise ValueError(f"{text!r} has credentials; file URIs may not")
    host = authority.lower() if authority.isascii() else authority
    if host in ("", "localhost"):
        return ""
    if ":" in host and not host.startswith("["):  # an IP literal `[::1]` fails the host check below
        raise ValueError(f"{text!r} has a port; file URIs may not")
    if not _HOST.match(host):
        raise ValueError(f"{text!r} has the invalid host {authority!r}; expected a plain host name")
    return host


def _canonical_path(text: str, path: str) -> str:
    """Uppercase existing escapes, encode characters a URI may not hold raw, refuse ambiguous ones."""
    out: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "%":
            pair = path[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in "0123456789abcdefABCDEF" for c in pair):
                raise ValueError(f"{text!r} has a malformed percent-escape at {path[i : i + 3]!r}")
            out.append("%" + pair.upper())
            i += 3
            continue
        if ch == "\\":
            raise ValueError(f"{text!r} contains a backslash; use '/' between segments or %5C in a name")
        if ch < " " or ch == "\x7f":
            raise ValueError(f"{text!r} contains the control character {ch!r}; percent-encode it")
        if ch == "/" or (ch.isascii() and ord(ch) in _SEGMENT_SAFE):
            out.append(ch)
        else:
            try:
                out.append(_encode_segment(ch.encode("utf-8")))
            except UnicodeEncodeError:
                raise ValueError(f"{text!r} contains a lone surrogate; it is not valid text") from None
        i += 1
    return "".join(out)


def _check_opaque(text: str, payload: str) -> None:
    problem = ""
    raw = b""
    if not _BASE64URL.match(payload) or len(payload) % 4 == 1:
        problem = "is not unpadded base64url"
    else:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        if _b64(raw) != payload:
            problem = "is not canonical base64url (stray trailing bits)"
        elif _opaque_convention(raw) is None:
            problem = "does not decode to an absolute POSIX or Windows path"
    if problem:
        raise ValueError(
            f"{text!r} is a malformed opaque path URI: the part after {_OPAQUE_PREFIX} {problem}"
        )
