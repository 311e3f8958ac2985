"""Binding an intent to a host: every symbol on each OS, precedence, carve-outs, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandfleet_agent.binding.bind import AssumedFs, BindError, BoundPolicy, LocalFs, bind_cwd
from sandfleet_agent.binding.bind import bind as bind_all_names
from sandfleet_agent.binding.facts import HostFacts, assumed_facts
from sandfleet_agent.portable.intent import (
    PROFILES,
    Access,
    FilePath,
    Glob,
    NetworkMode,
    NetworkPolicy,
    Permission,
    SandboxIntent,
    Special,
)

R, W, D = Access.READ, Access.WRITE, Access.DENY


def bind(*args: object, **kwargs: object) -> BoundPolicy:
    """Binding with ``.git`` as the only protected name, so these cases stay readable; the
    default list (and a policy's additions) is tested on its own below."""
    kwargs.setdefault("protected_names", (".git",))
    return bind_all_names(*args, **kwargs)  # type: ignore[arg-type]


def intent(*perms: tuple[object, Access], roots: tuple[str, ...] = ()) -> SandboxIntent:
    return SandboxIntent(tuple(Permission(p, a) for p, a in perms), workspace_roots=roots)  # type: ignore[arg-type]


WALLS = ("sandfleet's own state", "sandfleet's code, interpreter or PATH")


def rules(policy: object) -> dict[str, Access]:
    """The policy's rules, without the agent's own walls (tested on their own below)."""
    return {r.path: r.access for r in policy.rules if r.source not in WALLS}  # type: ignore[attr-defined]


def walls(policy: object) -> dict[str, Access]:
    return {r.path: r.access for r in policy.rules if r.source in WALLS}  # type: ignore[attr-defined]


LINUX = assumed_facts("linux", "alice", ("/work/a", "/work/b"), tmpdir="/var/tmp/alice")
MACOS = assumed_facts("macos", "alice", ("/Users/alice/src",))
WINDOWS = assumed_facts("windows", "alice", ("D:\\src", "\\\\server\\share\\ci"))


class TestSymbolsPerOs:
    def test_linux_every_symbol(self) -> None:
        p = bind(intent((Special("root"), R), (Special("workspace_roots"), W), (Special("workspace_roots", "out"), W),
                        (Special("tmpdir"), W), (Special("slash_tmp"), W), (Special("home", ".cache"), W),
                        (Special("minimal"), R)), LINUX, fs=AssumedFs("linux"))
        assert rules(p) == {
            "/": R, "/tmp": W, "/work/a": W, "/work/b": W, "/home/alice/.cache": W, "/var/tmp/alice": W,
            "/work/a/out": W, "/work/a/.git": R, "/work/b/.git": R, "/work/b/out": W,
            "/work/a/out/.git": R, "/work/b/out/.git": R, "/home/alice/.cache/.git": R, "/tmp/.git": R,
        }
        assert p.minimal_read and p.cwd == "/work/a" and p.full_read

    def test_macos_binds_canonical_private_paths(self) -> None:
        p = bind(intent((Special("slash_tmp"), W), (Special("workspace_roots"), W), (FilePath("file:///var/log"), R)),
                 MACOS, fs=AssumedFs("macos"))
        assert rules(p) == {"/private/tmp": W, "/private/var/log": R, "/Users/alice/src": W,
                            "/Users/alice/src/.git": R, "/private/tmp/.git": R}

    def test_windows_roots_drive_and_unc(self) -> None:
        p = bind(intent((Special("root"), R), (Special("workspace_roots"), W), (Special("slash_tmp"), W),
                        (FilePath("file:///C:/Tools"), R), (FilePath("file://server/share/ci/cache"), D)),
                 WINDOWS, fs=AssumedFs("windows"))
        assert rules(p) == {
            "D:\\": R, "D:\\src": W, "C:\\Tools": R, "\\\\server\\share\\ci": W,
            "D:\\src\\.git": R, "\\\\server\\share\\ci\\.git": R, "\\\\server\\share\\ci\\cache": D,
        }
        assert p.cwd == "D:\\src"

    def test_windows_path_on_a_posix_host_is_refused_clearly(self) -> None:
        with pytest.raises(BindError, match=r"'file:///C:/workspace' is invalid on 'linux'"):
            bind(intent((FilePath("file:///C:/workspace"), W)), LINUX)
        with pytest.raises(BindError, match="invalid on 'linux'"):
            bind(intent((Special("workspace_roots"), W), roots=("file://server/share/x",)), LINUX)

    def test_posix_path_on_windows_is_refused(self) -> None:
        with pytest.raises(BindError, match="invalid on 'windows'"):
            bind(intent((FilePath("file:///usr/local"), R)), WINDOWS)

    def test_the_refusal_names_the_path_as_the_user_wrote_it(self) -> None:
        with pytest.raises(BindError) as info:
            bind(intent((FilePath("file:///C:/data"), R)), MACOS)
        assert str(info.value) == (
            "'file:///C:/data' is invalid on 'macos': C:\\data is a Windows path and this host runs macos; "
            "give this host a path in its own spelling (per-host paths belong in that host's inventory vars)")
        with pytest.raises(BindError, match=r": /usr/local is a POSIX path and this host runs windows; "):
            bind(intent((FilePath("file:///usr/local"), R)), WINDOWS)


class TestRootsAndCwd:
    def test_no_roots_binds_workspace_to_an_explicit_cwd(self) -> None:
        facts = assumed_facts("linux", "bob")
        p = bind(intent((Special("workspace_roots"), W)), facts, cwd=FilePath("file:///srv/job"))
        assert rules(p) == {"/srv/job": W, "/srv/job/.git": R} and p.cwd == "/srv/job"

    def test_no_roots_and_no_cwd_grants_nothing_and_says_so(self) -> None:
        p = bind(intent((Special("root"), R), (Special("workspace_roots"), W)), assumed_facts("linux", "bob"))
        assert rules(p) == {"/": R}
        assert p.cwd == "/home/bob"
        assert any("grants nothing" in w for w in p.warnings)

    def test_intent_roots_replace_the_hosts(self) -> None:
        p = bind(intent((Special("workspace_roots"), W), roots=("file:///opt/ws",)), LINUX)
        assert rules(p) == {"/opt/ws": W, "/opt/ws/.git": R}

    def test_symbolic_cwd_binds_to_first_root(self) -> None:
        assert bind_cwd(Special("workspace_roots", "svc/api"), LINUX.workspace_roots, LINUX,
                        AssumedFs("linux")) == "/work/a/svc/api"
        assert bind_cwd(Special("home", "x"), (), LINUX, AssumedFs("linux")) == "/home/alice/x"
        with pytest.raises(BindError, match="has none"):
            bind_cwd(Special("workspace_roots"), (), LINUX, AssumedFs("linux"))

    def test_symlinked_root_is_canonicalised(self, tmp_path: Path) -> None:
        real = tmp_path / "real"
        (real / "sub").mkdir(parents=True)
        (tmp_path / "link").symlink_to(real)
        facts = assumed_facts("linux", "bob", (str(tmp_path / "link"),))
        p = bind(intent((Special("workspace_roots"), W)), facts, cwd=Special("workspace_roots", "sub"), fs=LocalFs())
        assert rules(p) == {str(real): W, str(real / ".git"): R}
        assert p.cwd == str(real / "sub")


class TestPrecedenceAndCarveOuts:
    def test_equal_paths_deny_beats_write_beats_read(self) -> None:
        p = bind(intent((FilePath("file:///data"), R), (FilePath("file:///data"), W), (FilePath("file:///x"), W),
                        (FilePath("file:///x"), D), (FilePath("file:///y"), R)), LINUX)
        assert rules(p)["/data"] is W and rules(p)["/x"] is D and rules(p)["/y"] is R

    def test_deeper_path_wins(self) -> None:
        p = bind(intent((Special("root"), W), (FilePath("file:///etc"), D), (FilePath("file:///etc/ssl"), R)), LINUX)
        assert p.access("/etc/passwd") is D and p.access("/etc/ssl/certs/x") is R and p.access("/usr/bin") is W

    def test_git_protected_unless_a_rule_writes_it(self) -> None:
        p = bind(intent((Special("workspace_roots"), W), (Special("workspace_roots", ".git"), W)), LINUX)
        assert rules(p)["/work/a/.git"] is W

    @pytest.mark.parametrize(("facts", "name"), [(LINUX, ".git"), (MACOS, ".git"), (WINDOWS, ".Git")])
    def test_a_writable_git_gets_no_git_of_its_own(self, facts: HostFacts, name: str) -> None:
        """Nothing inside a .git made writable on purpose needs guarding; a .git/.git carve-out
        would only leave a stray placeholder in the repository (bwrap, Windows)."""
        p = bind(intent((Special("workspace_roots"), W), (Special("workspace_roots", name), W)), facts)
        nested = [r.path for r in p.rules if r.path.replace("\\", "/").lower().endswith(".git/.git")]
        assert nested == []
        assert {r.access for r in p.rules if r.path.replace("\\", "/").lower().endswith("/.git")} == {W}

    def test_gitdir_file_target_is_protected(self, tmp_path: Path) -> None:
        main_git = tmp_path / "main" / ".git" / "worktrees" / "wt"
        main_git.mkdir(parents=True)
        wt = tmp_path / "wt"
        wt.mkdir()
        (wt / ".git").write_text(f"gitdir: {os.path.relpath(main_git, wt)}\n")
        p = bind(intent((Special("workspace_roots"), W)), assumed_facts("linux", "bob", (str(wt),)), fs=LocalFs())
        assert rules(p) == {str(wt): W, str(wt / ".git"): R, str(main_git): R}

    def test_no_carve_out_in_the_private_tmpdir_or_full_write(self) -> None:
        p = bind(SandboxIntent(PROFILES["full-access"] + ((Permission(Special("tmpdir"), W)),)), LINUX)
        assert rules(p) == {"/": W, "/var/tmp/alice": W} and p.private == ("/var/tmp/alice",)

    def test_the_shared_tmp_is_guarded_like_a_workspace(self) -> None:
        """A ``.git`` planted in the host's /tmp would be trusted by the next git run there."""
        p = bind(intent((Special("root"), R), (Special("slash_tmp"), W), (Special("tmpdir"), W)),
                 assumed_facts("linux", "alice", tmpdir="/tmp"), fs=AssumedFs("linux"))
        assert rules(p) == {"/": R, "/tmp": W, "/tmp/.git": R} and p.private == ()

    def test_globs_anchor_at_roots_and_home(self) -> None:
        p = bind(intent((Glob("**/*.pem"), D), (Glob("~/.aws/*"), D), (Glob("/etc/*.key"), D)), LINUX)
        assert p.deny_globs == ("/work/a/**/*.pem", "/work/b/**/*.pem", "/home/alice/.aws/*", "/etc/*.key")

    def test_globs_never_widen(self) -> None:
        p = bind(intent((Glob("**/*.py"), W)), LINUX)
        assert p.deny_globs == () and rules(p) == {} and "globs can only deny" in p.warnings[0]


class TestForwardCompatibility:
    def test_unknown_symbol_is_ignored_with_a_warning(self) -> None:
        p = bind(intent((Special("future_thing", "x"), W), (Special("root"), R)), LINUX)
        assert rules(p) == {"/": R}
        assert "unknown symbol :future_thing ignored" in p.warnings[0]

    def test_unknown_symbol_that_denies_fails_closed(self) -> None:
        with pytest.raises(BindError, match="ignoring a deny would grant more"):
            bind(intent((Special("root"), R), (Special("future_secrets"), D)), LINUX)

    def test_minimal_only_reads(self) -> None:
        p = bind(intent((Special("minimal"), W)), LINUX)
        assert not p.minimal_read and p.warnings

    def test_network_and_hints_travel(self) -> None:
        i = SandboxIntent((), NetworkPolicy(NetworkMode.FULL), per_os={"linux": {"prefer": "landlock"},
                                                                        "macos": {"x": 1}})
        p = bind(i, LINUX)
        assert p.network.mode is NetworkMode.FULL and p.hints == {"prefer": "landlock"}


class TestProtectedNames:
    def test_the_default_names_are_kept_read_only_in_every_writable_root(self) -> None:
        p = bind_all_names(intent((Special("root"), R), (Special("workspace_roots"), W)),
                           assumed_facts("linux", "alice", ("/w",)), fs=AssumedFs("linux"))
        assert {path for path, access in rules(p).items() if access is R and path != "/"} == {
            "/w/.git", "/w/.agents", "/w/.codex", "/w/.aws", "/w/.ssh", "/w/.docker", "/w/.kube"}

    def test_a_policy_adds_names_with_subpaths(self) -> None:
        p = bind_all_names(intent((Special("workspace_roots"), W)), assumed_facts("linux", "alice", ("/w",)),
                           fs=AssumedFs("linux"), protected_names=(".git", ".github/workflows"))
        assert rules(p) == {"/w": W, "/w/.git": R, "/w/.github/workflows": R}
        assert p.creates_dir(".github") and p.creates_dir(".git") and not p.creates_dir("workflows")

