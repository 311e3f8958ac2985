"""known_hosts rules: matching as OpenSSH does, refusals that say what to do, safe parallel appends."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sandfleet.transports.hostkeys import (
    ACCEPT_NEW,
    REJECT,
    ChangedHostKey,
    KnownHosts,
    UnknownHostKey,
    fingerprint,
    hashed_name,
    host_id,
    parse_known_hosts,
)

ROOT = Path(__file__).resolve().parents[2]
ED = "ssh-ed25519"


def blob(seed: int) -> bytes:
    return b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + bytes([seed]) * 32


def line(name: str, seed: int, key_type: str = ED) -> str:
    return f"{name} {key_type} {base64.b64encode(blob(seed)).decode()}\n"


def store(tmp_path: Path, text: str = "", **kw: bool) -> KnownHosts:
    path = tmp_path / "known_hosts"
    path.write_text(text)
    return KnownHosts([str(path)], str(path), **kw)


def verify(known: KnownHosts, host: str, seed: int, policy: str = REJECT, key_type: str = ED) -> bool:
    return known.verify(host, key_type, blob(seed), policy, keyscan=f"ssh-keyscan {host}")


class TestMatching:
    def test_port_22_is_plain_and_other_ports_are_bracketed(self) -> None:
        assert host_id("web1", 22) == "web1" and host_id("10.0.0.1", 2222) == "[10.0.0.1]:2222"

    def test_brackets_are_literal_not_a_character_class(self, tmp_path: Path) -> None:
        known = store(tmp_path, line("[10.0.0.1]:2222", 1))
        assert verify(known, "[10.0.0.1]:2222", 1) is False
        with pytest.raises(UnknownHostKey):
            verify(known, "1", 1)

    def test_hashed_names_wildcards_and_negations(self, tmp_path: Path) -> None:
        known = store(tmp_path, line(hashed_name("[h.example]:2200"), 1) + line("*.corp,!bad.corp", 2)
                      + line("db?", 3))
        assert verify(known, "[h.example]:2200", 1) is False
        assert verify(known, "a.corp", 2) is False
        assert verify(known, "db1", 3) is False
        for host in ("bad.corp", "db10", "[h.example]:2201"):
            with pytest.raises(UnknownHostKey):
                verify(known, host, 9)

    def test_unusable_lines_are_skipped_one_by_one(self) -> None:
        text = ("# comment\n\n@cert-authority *.corp ssh-ed25519 AAAA\nshort line\nbad ssh-ed25519 !!notbase64\n"
                + line("good", 1) + "@revoked * " + line("", 2).strip() + "\n")
        keys = parse_known_hosts(text, "f")
        assert [(k.line, k.patterns, k.revoked) for k in keys] == [(6, ("good",), False), (7, ("*",), True)]

    def test_revoked_key_is_refused_even_if_listed(self, tmp_path: Path) -> None:
        known = store(tmp_path, line("h", 1) + "@revoked " + line("*", 1))
        with pytest.raises(ChangedHostKey, match="@revoked"):
            verify(known, "h", 1, ACCEPT_NEW)


class TestPolicy:
    def test_unknown_is_refused_with_how_to_trust_it(self, tmp_path: Path) -> None:
        known = store(tmp_path)
        with pytest.raises(UnknownHostKey) as caught:
            verify(known, "[h]:2222", 1)
        message = str(caught.value)
        assert fingerprint(blob(1)) in message and "--host-key-policy accept-new" in message
        assert f"ssh-keyscan [h]:2222 >> {known.write_to}" in message
        assert Path(known.write_to).read_text() == ""

    def test_accept_new_appends_exactly_one_line(self, tmp_path: Path) -> None:
        known = store(tmp_path, "old entry ssh-ed25519 AAAA")  # no final newline: ours starts on its own line
        assert verify(known, "[h]:2222", 1, ACCEPT_NEW) is True
        assert verify(known, "[h]:2222", 1, ACCEPT_NEW) is False
        assert verify(known, "[h]:2222", 1) is False  # remembered without re-reading
        assert Path(known.write_to).read_text() == "old entry ssh-ed25519 AAAA\n" + line("[h]:2222", 1)

    def test_a_missing_file_is_created_private(self, tmp_path: Path) -> None:
        path = tmp_path / "new" / "known_hosts"
        verify(KnownHosts([str(path)], str(path)), "h", 1, ACCEPT_NEW)
        assert path.read_text() == line("h", 1)
        assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700

    def test_hashed_recording_when_asked(self, tmp_path: Path) -> None:
        known = store(tmp_path, hash_names=True)
        verify(known, "h", 1, ACCEPT_NEW)
        text = Path(known.write_to).read_text()
        assert text.startswith("|1|") and "h " not in text
        assert verify(store(tmp_path, text), "h", 1) is False

    def test_changed_key_is_refused_under_every_policy(self, tmp_path: Path) -> None:
        text = "# first\n" + line("h", 1)
        for policy in (REJECT, ACCEPT_NEW):
            known = store(tmp_path, text)
            with pytest.raises(ChangedHostKey) as caught:
                verify(known, "h", 2, policy)
            message = str(caught.value)
            assert "HOST KEY CHANGED" in message and fingerprint(blob(1)) in message
            assert fingerprint(blob(2)) in message and f"{known.write_to}:2" in message
            assert f"ssh-keygen -R 'h' -f {known.write_to}" in message
            assert Path(known.write_to).read_text() == text

    def test_a_new_key_type_while_another_is_recorded_counts_as_changed(self, tmp_path: Path) -> None:
        known = store(tmp_path, line("h", 1, "ecdsa-sha2-nistp256"))
        assert known.preferred_types("h") == ["ecdsa-sha2-nistp256"]
        with pytest.raises(ChangedHostKey):
            verify(known, "h", 1, ACCEPT_NEW)

    def test_global_files_are_read_but_never_written(self, tmp_path: Path) -> None:
        system = tmp_path / "ssh_known_hosts"
        system.write_text(line("h", 1))
        user = tmp_path / "known_hosts"
        known = KnownHosts([str(user), str(system)], str(user))
        assert verify(known, "h", 1) is False
        verify(known, "g", 2, ACCEPT_NEW)
        assert system.read_text() == line("h", 1) and user.read_text() == line("g", 2)


class TestParallel:
    def test_threads_record_one_host_once(self, tmp_path: Path) -> None:
        known = store(tmp_path)
        barrier = threading.Barrier(16)

        def connect() -> None:
            barrier.wait()
            verify(known, "[h]:2222", 1, ACCEPT_NEW)

        threads = [threading.Thread(target=connect) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert Path(known.write_to).read_text() == line("[h]:2222", 1)

    def test_processes_append_without_duplicates_or_rewrites(self, tmp_path: Path) -> None:
        path = tmp_path / "known_hosts"
        path.write_text("# keep me\n")
        inode = path.stat().st_ino
        script = (
            "import sys, threading\n"
            "from sandfleet.transports.hostkeys import KnownHosts\n"
            "sys.path.insert(0, sys.argv[2])\n"
            "from test_hostkeys import blob\n"
            "known = KnownHosts([sys.argv[1]], sys.argv[1])\n"
            "def one(i):\n"
            "    known.verify(f'[h{i}]:2222', 'ssh-ed25519', blob(i), 'accept-new', keyscan='')\n"
            "threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]\n"
            "[t.start() for t in threads]\n[t.join() for t in threads]\n"
        )
        procs = [subprocess.Popen([sys.executable, "-c", script, str(path), str(Path(__file__).parent)], cwd=ROOT)
                 for _ in range(4)]
        assert [p.wait(timeout=60) for p in procs] == [0] * 4
        lines = path.read_text().splitlines()
        assert lines[0] == "# keep me" and path.stat().st_ino == inode
        assert sorted(lines[1:]) == sorted(line(f"[h{i}]:2222", i).strip() for i in range(12))
