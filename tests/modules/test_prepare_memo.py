"""The agent's prepare memo (executor.py ``prepare_local``): a repeated request reuses an earlier
wrapper only when the filesystem still answers every question that wrapper was computed from, so
whatever a task changed in between, the next task gets exactly what a fresh agent computes.

Each case lets a real task (real bwrap) or the host change the filesystem between two identical
requests, then compares the second result with a fresh computation (``prepare`` with a new view,
which no memo reaches) and shows the wall holds by attempting what it forbids.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import sandfleet_agent.backends.landlock  # noqa: F401 - before as_user: its child may not read this interpreter's files
from sandfleet_agent import executor
from sandfleet_agent.binding.facts import HostFacts, probe
from sandfleet_agent.binding.hostfs import LocalFs, MemoFs, ReplayFs, replay
from sandfleet_agent.executor import Prepared, execute, prepare, prepare_local
from sandfleet_agent.portable.intent import Access, FilePath, Glob, NetworkPolicy, Permission, SandboxIntent, Special
from sandfleet_agent.portable.pathuri import PathUri
from sandfleet_agent.portable.wire import ExecRequest, ExecResult, Status
from support.policies import WIDE
from support.unprivileged import as_user, user_tree

WORKSPACE = (Permission(Special("root"), Access.READ), Permission(Special("workspace_roots"), Access.WRITE))


@pytest.fixture(autouse=True)
def _empty_memo() -> None:
    executor._memo.clear()


def facts_for(root: Path) -> HostFacts:
    facts = probe((str(root),))
    status = facts.backend("bwrap")
    if status is None or not status.available:
        pytest.skip(f"bwrap unavailable: {status.reason if status else 'not probed'}")
    return facts


def request(*argv: str, extra: tuple[Permission, ...] = (), cwd: Special | None = None) -> ExecRequest:
    intent = SandboxIntent(WORKSPACE + extra, network=NetworkPolicy())
    return ExecRequest(id="t", argv=argv, sandbox=intent, cwd=cwd)


def fresh(req: ExecRequest, facts: HostFacts) -> Prepared | ExecResult:
    """What an agent that never saw a task computes now."""
    return prepare(req, facts, LocalFs())


def wrapper_of(prepared: Prepared | ExecResult) -> tuple[str, ...]:
    assert isinstance(prepared, Prepared), prepared
    return prepared.wrapper.argv


def test_an_unchanged_filesystem_reuses_the_wrapper_for_any_command(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    facts = facts_for(tmp_path)
    first = prepare_local(request("/bin/true"), facts)
    assert prepare_local(request("/bin/true"), facts) is first  # reused, not recomputed
    for argv in (("/bin/echo", "a b", "'\"$x", "é", "\udcff"), ("/bin/sh", "-c", "echo --chdir -- /")):
        again = prepare_local(request(*argv), facts)
        assert again == fresh(request(*argv), facts) and wrapper_of(again)[-len(argv):] == argv


def test_a_protected_dir_a_task_leaves_behind_is_seen(tmp_path: Path) -> None:
    """The first task finds no ``.git`` and bwrap blocks its creation with an empty mount point,
    which stays on the host: the second must bind it as the directory it now is."""
    facts = facts_for(tmp_path)
    first = execute(request("/bin/true"), facts)
    assert first.status is Status.OK and (tmp_path / ".git").is_dir()
    now = fresh(request("/bin/true"), facts)
    second = execute(request("/bin/sh", "-c", "mkdir .git/hooks"), facts)
    assert second.wrapper == wrapper_of(fresh(request("/bin/sh", "-c", "mkdir .git/hooks"), facts))
    assert wrapper_of(now) != first.wrapper  # the memo had to see the change
    assert second.status is Status.FAILED and not (tmp_path / ".git" / "hooks").exists()


def test_a_gitdir_file_planted_between_tasks_is_guarded(tmp_path: Path) -> None:
    """A ``.git`` file's ``gitdir:`` target is read-only too: its content is an answer as well."""
    (tmp_path / ".git").write_text("gitdir: real-git\n")
    (tmp_path / "real-git").mkdir()
    (tmp_path / "other-git").mkdir()
    facts = facts_for(tmp_path)
    assert execute(request("/bin/true"), facts).status is Status.OK
    (tmp_path / ".git").write_text("gitdir: other-git\n")  # what a task could not do, the host did
    second = execute(request("/bin/sh", "-c", "touch other-git/x"), facts)
    assert second.wrapper == wrapper_of(fresh(request("/bin/sh", "-c", "touch other-git/x"), facts))
    assert str(tmp_path / "other-git") in second.wrapper
    assert second.status is Status.FAILED and not (tmp_path / "other-git" / "x").exists()


def test_a_dir_a_task_swaps_for_a_symlink_is_refused_as_afresh(tmp_path: Path) -> None:
    """A read-only ``sub`` inside the writable root, which a task under this policy cannot touch
    (shown) but one under another policy, or the host, can swap for a symlink to /etc. A
    read-only rule through a link in a writable root cannot be enforced: the next identical
    request is refused exactly as a fresh agent refuses it."""
    (tmp_path / "sub").mkdir()
    facts = facts_for(tmp_path)
    read_sub = (Permission(FilePath(PathUri.from_native(str(tmp_path / "sub")).uri), Access.READ),)
    first = execute(request("/bin/sh", "-c", "touch sub/x", extra=read_sub), facts)
    assert first.status is Status.FAILED and not (tmp_path / "sub" / "x").exists()
    shutil.rmtree(tmp_path / "sub")
    os.symlink("/etc", tmp_path / "sub")
    second = execute(request("/bin/sh", "-c", "touch sub/x", extra=read_sub), facts)
    expected = fresh(request("/bin/sh", "-c", "touch sub/x", extra=read_sub), facts)
    assert isinstance(expected, ExecResult) and second.status is expected.status is Status.SANDBOX_UNAVAILABLE
    assert second.message == expected.message and not second.wrapper


def test_a_cwd_swapped_for_a_symlink_by_a_task_moves_with_it(tmp_path: Path) -> None:
    """A task in the writable root replaces the cwd ``sub`` with a link to /etc: the next task
    starts where a fresh agent would start it (/etc, read-only there), not in the old ``sub``."""
    (tmp_path / "sub").mkdir()
    facts = facts_for(tmp_path)
    in_sub = Special("workspace_roots", "sub")
    swap = execute(request("/bin/sh", "-c", "cd .. && rmdir sub && ln -s /etc sub", cwd=in_sub), facts)
    assert swap.status is Status.OK and (tmp_path / "sub").is_symlink()
    second = execute(request("/bin/sh", "-c", "pwd; touch x", cwd=in_sub), facts)
    assert second.wrapper == wrapper_of(fresh(request("/bin/sh", "-c", "pwd; touch x", cwd=in_sub), facts))
    assert second.stdout == "/etc\n" and second.status is Status.FAILED and not os.path.exists("/etc/x")


def test_a_file_a_task_creates_under_a_deny_glob_is_masked_next_time(tmp_path: Path) -> None:
    facts = facts_for(tmp_path)
    deny_pem = (Permission(Glob("*.pem"), Access.DENY),)
    first = execute(request("/bin/sh", "-c", "echo secret > key.pem", extra=deny_pem), facts)
    assert first.status is Status.OK
    second = execute(request("/bin/cat", "key.pem", extra=deny_pem), facts)
    assert second.wrapper == wrapper_of(fresh(request("/bin/cat", "key.pem", extra=deny_pem), facts))
    assert second.status is Status.FAILED and "secret" not in second.stdout


def test_replay_fails_on_any_changed_answer_and_a_raise_is_never_remembered(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    view = MemoFs(LocalFs())
    view.kind(str(tmp_path / "d"))
    view.realpath(str(tmp_path / "d"))
    assert list(view.scandir(str(tmp_path))) == [("d", "dir")]
    assert replay(view.log, LocalFs())
    (tmp_path / "e").touch()  # only the listing changes
    assert not replay(view.log, LocalFs())
    with pytest.raises(OSError):
        view.readlink(str(tmp_path / "d"))
    assert view.tainted


def _realpath_mismatches(root: str) -> list[str]:
    """Every path built from the names under ``root`` (links of each kind, a loop, a file used as
    a directory, a folder this user cannot search, ``.``, ``..``, empty parts) whose answer from
    the views differs from ``os.path.realpath``'s, raises included."""
    names = ("d", "f", "rel", "abs", "dangling", "loop", "self", "up", "chain", "shut", "missing", ".", "..", "")
    paths = {root, "/", "//", "///x", root + "/", "relative/x", ".", "..", root + "/d\0x", root + "/\udcff",
             root + "/\ud800"}
    paths.update(root + "/" + "/".join(p) for n in (1, 2, 3) for p in itertools.product(names, repeat=n))

    def outcome(fn: Callable[[str], str], path: str) -> object:
        try:
            return fn(path)
        except Exception as exc:  # the same raise is the same answer
            return type(exc)

    return [f"{path!r}: {outcome(view.realpath, path)!r} != {outcome(os.path.realpath, path)!r}"
            for path in sorted(paths) for view in (LocalFs(), ReplayFs())
            if outcome(view.realpath, path) != outcome(os.path.realpath, path)]


def test_the_views_realpath_is_os_path_realpath_for_every_kind_of_path() -> None:
    """LocalFs answers a plain path itself (hostfs._realpath): pinned against the real one on a
    tree with every case it must leave to it, as root and as a user a folder is closed to."""
    with user_tree("sandfleet-realpath-") as root:
        (root / "d" / "e").mkdir(parents=True)
        (root / "f").write_text("x")
        (root / "shut" / "inner").mkdir(parents=True)
        links = {"rel": "d", "abs": str(root / "d"), "dangling": "nowhere", "loop": "loop2", "loop2": "loop",
                 "self": "self", "up": "..", "chain": "rel", "d/e/up2": "../.."}
        for name, target in links.items():
            os.symlink(target, root / name)
        (root / "shut").chmod(0o700)  # root's: the user gets EACCES below it
        assert _realpath_mismatches(str(root)) == []
        assert as_user(_realpath_mismatches, str(root)) == []


def test_a_replay_lstats_each_path_once_and_still_sees_a_change(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """ReplayFs: a kind and the realpaths through a path share one lstat of it within a replay; a
    change made before the replay is seen all the same, and the next replay asks afresh."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    view = MemoFs(LocalFs())
    for path in (tmp_path / "a", tmp_path / "a" / "b"):
        view.realpath(str(path))
        view.kind(str(path))
    asked: list[str] = []
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda path: asked.append(path) or real_lstat(path))
    assert replay(view.log, ReplayFs())
    assert sorted(asked) == sorted(set(asked)) and str(tmp_path / "a" / "b") in asked
    (tmp_path / "a" / "b").rmdir()
    os.symlink("/etc", tmp_path / "a" / "b")
    assert not replay(view.log, ReplayFs())
    assert replay(view.log, LocalFs()) is False
    (tmp_path / "a" / "b").unlink()
    (tmp_path / "a" / "b").mkdir()
    assert replay(view.log, ReplayFs())


def bare(*argv: str, cwd: Special | None = None) -> ExecRequest:
    return ExecRequest(id="t", argv=argv, sandbox=None, cwd=cwd, policy=WIDE)


def test_a_bare_task_reuses_its_prepare_for_any_command_and_follows_its_cwd(tmp_path: Path) -> None:
    """A ``sandbox: false`` task's prepare is kept too: another argv gets the wrapper a fresh
    agent renders for it, and a cwd swapped for a symlink moves the task as afresh."""
    (tmp_path / "sub").mkdir()
    facts = probe((str(tmp_path),))
    in_sub = Special("workspace_roots", "sub")
    first = prepare_local(bare("/bin/true", cwd=in_sub), facts)
    assert isinstance(first, Prepared) and first.wrapper.cwd == str(tmp_path / "sub")
    assert prepare_local(bare("/bin/true", cwd=in_sub), facts) is first
    other = prepare_local(bare("/bin/echo", "a b", "\udcff", cwd=in_sub), facts)
    assert other == fresh(bare("/bin/echo", "a b", "\udcff", cwd=in_sub), facts)
    assert wrapper_of(other) == ("/bin/echo", "a b", "\udcff")
    (tmp_path / "sub").rmdir()
    os.symlink("/etc", tmp_path / "sub")
    moved = prepare_local(bare("/bin/true", cwd=in_sub), facts)
    assert moved == fresh(bare("/bin/true", cwd=in_sub), facts)
    assert isinstance(moved, Prepared) and moved.wrapper.cwd == "/etc"



def _landlock_memo(root: str) -> list[str]:
    """As the unprivileged user (Landlock refuses root): what differs from a fresh computation."""
    ws = Path(root)
    (ws / ".git").mkdir()
    (ws / "a").write_text("a")
    facts = probe((root,))
    status = facts.backend("landlock")
    if status is None or not status.available:
        return [f"skip: landlock unavailable: {status.reason if status else 'not probed'}"]
    executor._memo.clear()
    wrong = []
    first = prepare_local(request("/bin/true"), facts, pin="landlock")
    if not isinstance(first, Prepared) or first.wrapper.backend != "landlock":
        return [f"not a landlock prepare: {getattr(first, 'message', first)}"]
    if prepare_local(request("/bin/true"), facts, pin="landlock") is not first:
        wrong.append("the same request was computed again")
    other = prepare_local(request("/bin/echo", "x"), facts, pin="landlock")
    if other is first or other != prepare(request("/bin/echo", "x"), facts, LocalFs(), pin="landlock"):
        wrong.append("another command did not get a fresh prepare")
    (ws / "b").write_text("b")
    again = prepare_local(request("/bin/true"), facts, pin="landlock")
    if again is first or again != prepare(request("/bin/true"), facts, LocalFs(), pin="landlock"):
        wrong.append("a new entry of the workspace was not seen")
    elif str(ws / "b") not in again.wrapper.files["landlock.json"] or str(ws / "b") in first.wrapper.files[
            "landlock.json"]:
        wrong.append("the new entry is not in the new ruleset alone")
    return wrong


def test_a_landlock_prepare_serves_its_own_command_only_and_sees_a_new_entry() -> None:
    """Landlock's ruleset is the slow part of its prepare (a writable workspace with a read-only
    ``.git`` is granted entry by entry): an identical request reuses it after a replay; another
    command is computed afresh (its wrapper is not a tail to swap); a file a task adds to the
    workspace changes a listing the replay asks again, so the next ruleset grants it."""
    with user_tree("sandfleet-landlock-memo-") as root:
        wrong = as_user(_landlock_memo, str(root))
    if wrong[:1] and wrong[0].startswith("skip: "):
        pytest.skip(wrong[0][6:])
    assert wrong == []
