"""Playbooks that load: the exact data model they become."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sandfleet.errors import InputError, Mark
from sandfleet.load.playbook import (
    ExecSpec,
    Play,
    Playbook,
    PlaybookWarning,
    SandboxOrigin,
    SandboxSetting,
    Task,
    load_playbook,
)
from sandfleet.load.sandbox_spec import DEFAULT_INTENT
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

DESIGN_EXAMPLE = Path(__file__).resolve().parent / "data" / "design_example.yml"
WORKSPACE = PROFILES["workspace"]


def load(tmp_path: Path, text: str) -> Playbook:
    path = tmp_path / "pb.yml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return load_playbook(str(path))


def error(tmp_path: Path, text: str) -> InputError:
    with pytest.raises(InputError) as info:
        load(tmp_path, text)
    return info.value


def only_task(pb: Playbook) -> Task:
    (play,) = pb.plays
    (task,) = play.tasks
    return task


def test_design_example_loads_into_the_exact_model():
    f = str(DESIGN_EXAMPLE)
    play_sandbox = SandboxSetting(
        SandboxIntent(WORKSPACE, NetworkPolicy(NetworkMode.NONE)), SandboxOrigin.PLAY, Mark(f, 5, 5))
    expected = Playbook(
        path=f,
        plays=(
            Play(
                name="Test untrusted code on every runner",
                hosts="runners:&linux:!quarantined",
                vars={"suite": "unit"},
                sandbox=play_sandbox,
                tasks=(
                    Task(
                        name="run the suite",
                        exec=ExecSpec(
                            argv=("python3", "-m", "pytest", "-q", "tests/{{ suite }}"),
                            cwd=":workspace_roots",
                            env={"CI": "1"},
                            timeout=600.0,
                        ),
                        sandbox=play_sandbox,
                        when=None,
                        loop=None,
                        register=None,
                        ignore_errors=False,
                        timeout=600.0,
                        mark=Mark(f, 8, 7),
                    ),
                    Task(
                        name="fetch deps through the allowlist",
                        exec=ExecSpec(argv=("pip", "download", "-d", "{{ sandfleet_facts.home }}/wheels", "requests")),
                        sandbox=SandboxSetting(
                            SandboxIntent(
                                permissions=(
                                    Permission(Special("root"), Access.READ),
                                    Permission(Special("workspace_roots"), Access.WRITE),
                                    Permission(Special("workspace_roots", ".git"), Access.READ),
                                    Permission(Special("tmpdir"), Access.WRITE),
                                    Permission(FilePath("file:///opt/cache"), Access.READ),
                                    Permission(Glob("**/*.pem"), Access.DENY),
                                ),
                                network=NetworkPolicy(NetworkMode.MANAGED,
                                                      allow=("pypi.org", "*.pythonhosted.org")),
                            ),
                            SandboxOrigin.TASK,
                            Mark(f, 17, 9),
                        ),
                        when=None,
                        loop=None,
                        register=None,
                        ignore_errors=False,
                        timeout=None,
                        mark=Mark(f, 14, 7),
                    ),
                    Task(
                        name="deliberately unsandboxed (must be explicit)",
                        exec=ExecSpec(argv=("systemctl", "restart", "runner")),
                        sandbox=SandboxSetting(None, SandboxOrigin.TASK, Mark(f, 27, 16)),
                        when=None,
                        loop=None,
                        register=None,
                        ignore_errors=False,
                        timeout=None,
                        mark=Mark(f, 25, 7),
                    ),
                ),
                mark=Mark(f, 1, 3),
            ),
        ),
        warnings=(),
    )
    loaded = load_playbook(f)
    assert loaded == expected
    assert not loaded.plays[0].tasks[2].sandbox.sandboxed
    # per-value positions for render-time errors
    first = loaded.plays[0].tasks[0].exec
    assert first.argv_marks[4] == Mark(f, 10, 41)
    assert first.cwd_mark == Mark(f, 11, 14)
    assert first.env_marks == {"CI": Mark(f, 12, 19)}


def test_sandbox_omitted_everywhere_is_workspace_without_network(tmp_path):
    task = only_task(load(tmp_path, """
        - hosts: all
          tasks:
            - exec: {argv: [make]}
    """))
    assert task.sandbox == SandboxSetting(DEFAULT_INTENT, SandboxOrigin.DEFAULT, None)
    assert task.sandbox.intent == SandboxIntent(WORKSPACE, NetworkPolicy(NetworkMode.NONE))
    assert task.sandbox.sandboxed


def test_play_sandbox_is_inherited_and_a_task_sandbox_replaces_it(tmp_path):
    pb = load(tmp_path, """
        - hosts: all
          sandbox: {profile: read-only, network: full}
          tasks:
            - exec: {argv: [a]}
            - exec: {argv: [b]}
              sandbox: {filesystem: {":root": write}}
            - exec: {argv: [c]}
              sandbox: true
            - exec: {argv: [d]}
              sandbox: false
    """)
    play = pb.plays[0]
    inherited, replaced, default, bare = play.tasks
    assert play.sandbox.origin is SandboxOrigin.PLAY
    assert inherited.sandbox == play.sandbox
    assert inherited.sandbox.intent == SandboxIntent(PROFILES["read-only"], NetworkPolicy(NetworkMode.FULL))
    # replaced entirely: the play's network: full does not leak into the task
    assert replaced.sandbox.origin is SandboxOrigin.TASK
    assert replaced.sandbox.intent == SandboxIntent((Permission(Special("root"), Access.WRITE),))
    assert replaced.sandbox.intent.network.mode is NetworkMode.NONE
    f = str(tmp_path / "pb.yml")
    assert default.sandbox == SandboxSetting(DEFAULT_INTENT, SandboxOrigin.TASK, Mark(f, 8, 16))
    assert bare.sandbox.intent is None and bare.sandbox.origin is SandboxOrigin.TASK


def test_play_sandbox_false_is_inherited_as_unsandboxed(tmp_path):
    task = only_task(load(tmp_path, """
        - hosts: all
          sandbox: false
          tasks:
            - exec: {argv: [make]}
    """))
    assert task.sandbox.intent is None
    assert task.sandbox.origin is SandboxOrigin.PLAY


def test_profile_then_filesystem_entries_in_order(tmp_path):
    task = only_task(load(tmp_path, """
        - hosts: all
          tasks:
            - exec: {argv: [make]}
              sandbox:
                profile: read-only
                filesystem:
                  "~/.cache": write
                  "~": read
                  ":workspace_roots/./build/.": write
                  ":workspace_roots/**/*.key": deny
                  "~/**/.ssh": deny
                  ":minimal": read
                  ":slash_tmp": write
    """))
    assert task.sandbox.intent.permissions == (
        Permission(Special("root"), Access.READ),
        Permission(Special("home", ".cache"), Access.WRITE),
        Permission(Special("home"), Access.READ),
        Permission(Special("workspace_roots", "build"), Access.WRITE),
        Permission(Glob("**/*.key"), Access.DENY),
        Permission(Glob("~/**/.ssh"), Access.DENY),
        Permission(Special("minimal"), Access.READ),
        Permission(Special("slash_tmp"), Access.WRITE),
    )


def test_empty_mapping_is_the_default_sandbox(tmp_path):
    task = only_task(load(tmp_path, """
        - hosts: all
          tasks:
            - {exec: {argv: [make]}, sandbox: {}}
    """))
    assert task.sandbox.intent == DEFAULT_INTENT


def test_argv_and_env_scalars_are_kept_exactly_as_written(tmp_path):
    task = only_task(load(tmp_path, """
        - hosts: all
          tasks:
            - exec:
                argv: [sleep, 010, 0x1F, 1.50, yes, 2001-01-01, .inf, 1_000, "{{ '{{' }}", "", '~']
                env: {A: 010, B: true, C: "", D: "{{ x | default('y') }}"}
    """))
    assert task.exec.argv == ("sleep", "010", "0x1F", "1.50", "yes", "2001-01-01", ".inf", "1_000",
                              "{{ '{{' }}", "", "~")
    assert task.exec.env == {"A": "010", "B": "true", "C": "", "D": "{{ x | default('y') }}"}


def test_unknown_symbol_is_kept_with_a_warning(tmp_path):
    pb = load(tmp_path, """
        - hosts: all
          sandbox:
            filesystem:
              ":root": read
              ":cwd": write
              ":gpu_devices/card0": read
          tasks:
            - exec: {argv: [make]}
    """)
    assert pb.plays[0].sandbox.intent.permissions[1:] == (
        Permission(Special("cwd"), Access.WRITE),
        Permission(Special("gpu_devices", "card0"), Access.READ),
    )
    f = str(tmp_path / "pb.yml")
    first, second = pb.warnings
    assert isinstance(first, PlaybookWarning)
    assert first.mark == Mark(f, 5, 7)
    assert "unknown symbol ':cwd'" in first.message and "did you mean ':workspace_roots'?" in first.message
    assert second.mark == Mark(f, 6, 7)
    assert str(second).startswith(f"{f}:6:7: warning: unknown symbol ':gpu_devices'")


def test_windows_and_posix_path_keys_become_file_uris(tmp_path):
    pb = load(tmp_path, r"""
        - hosts: all
          sandbox:
            filesystem:
              'C:\Users\ci\.cache': write
              C:/tools: read
              '\\build01\share\artifacts': read
              /opt/my cache: read
            workspace_roots: ['D:\src\app', /srv/repo]
          tasks:
            - exec: {argv: [make]}
    """)
    intent = pb.plays[0].sandbox.intent
    assert [p.path for p in intent.permissions] == [
        FilePath("file:///C:/Users/ci/.cache"),
        FilePath("file:///C:/tools"),
        FilePath("file://build01/share/artifacts"),
        FilePath("file:///opt/my%20cache"),
    ]
    assert intent.workspace_roots == ("file:///D:/src/app", "file:///srv/repo")


def test_managed_network_and_os_hints(tmp_path):
    intent = load(tmp_path, """
        - hosts: all
          sandbox:
            network:
              allow: [PyPI.org, "*.pythonhosted.org", pypi.org, localhost]
              deny: [upload.pypi.org]
            linux: {prefer: landlock, extra: [1, 2]}
            windows: {mode: appcontainer}
          tasks: []
    """).plays[0].sandbox.intent
    assert intent.network == NetworkPolicy(
        NetworkMode.MANAGED, allow=("pypi.org", "*.pythonhosted.org", "localhost"), deny=("upload.pypi.org",))
    assert intent.per_os == {"linux": {"prefer": "landlock", "extra": [1, 2]},
                             "windows": {"mode": "appcontainer"}}
    assert type(intent.per_os["linux"]) is dict


def test_task_fields(tmp_path):
    pb = load(tmp_path, """
        - hosts: [web, "db:&prod"]
          vars: {items: [a, b], n: 3}
          tasks:
            - exec: {argv: [echo, "{{ item }}"], cwd: "~/src"}
              loop: "{{ items }}"
              when: [n > 1, "items | length > 0"]
              register: out
              ignore_errors: yes
              timeout: 2.5
            - exec: {argv: [echo, "{{ item.x }}"], cwd: ":workspace_roots/svc"}
              loop: [{x: 1}, {x: "{{ n }}"}]
              when: false
    """)
    play = pb.plays[0]
    assert play.name == "web:db:&prod" and play.hosts == "web:db:&prod"
    assert play.vars == {"items": ["a", "b"], "n": 3}
    first, second = play.tasks
    assert first.name == "echo '{{ item }}'"
    assert first.loop == "{{ items }}"
    assert first.when == "(n > 1) and (items | length > 0)"
    assert first.register == "out"
    assert first.ignore_errors is True
    assert first.timeout == 2.5 and first.exec.timeout == 2.5
    assert first.exec.cwd == "~/src"
    assert second.loop == [{"x": 1}, {"x": "{{ n }}"}]
    assert second.when == "False"
    assert second.exec.cwd == ":workspace_roots/svc"


def test_play_without_tasks_warns(tmp_path):
    pb = load(tmp_path, """
        - hosts: all
    """)
    assert pb.plays[0].tasks == ()
    assert [w.message for w in pb.warnings] == ["the play has no tasks"]


def test_data_model_is_frozen(tmp_path):
    task = only_task(load(tmp_path, """
        - hosts: all
          tasks:
            - exec: {argv: [make], env: {A: b}}
    """))
    with pytest.raises(AttributeError):
        task.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        task.exec.env["A"] = "c"  # type: ignore[index]


@pytest.mark.parametrize(("snippet", "fragment"), [
    ('"/etc/*.conf": write', "can only be used with deny"),
    ('":root/etc": read', ":root takes no subpath"),
    ('":slash_tmp/x": write', ":slash_tmp takes no subpath"),
    ('":home/x": read', "write '~/x' for the home directory"),
    ('":": read', "':' must be followed by a name"),
    ('":workspace_roots\\\\x": read', "separate a symbol's subpath with '/'"),
    ('"~/a\\\\b": read', "separate a subpath with '/'"),
    ('"~/": read', "empty segment"),
    ('"C:\\\\x\\\\*.pem": deny', "write Windows globs with '/'"),
    ('"../*.pem": deny', "may not contain '..'"),
    ('":tmpdir/*.log": deny', "a glob may only follow :workspace_roots/"),
    ("1: read", "must be a path, got a number"),
    ('"C:x": read', "relative path 'C:x'"),
])
def test_path_key_mistakes(tmp_path, snippet, fragment):
    err = error(tmp_path, f"""
        - hosts: all
          sandbox:
            filesystem:
              {snippet}
          tasks: []
    """)
    assert fragment in str(err)
    assert err.mark.line == 4


@pytest.mark.parametrize(("domain", "fragment"), [
    ("pypi.org:http", "the port must be a number from 1 to 65535 or *"),
    ("pypi.org:70000", "the port must be a number from 1 to 65535 or *"),
    ("*:443", "would allow every domain"),
    ("exa_mple.org", "is not a valid domain"),
    ("foo.*.org", "is not a valid domain"),
    ("example.org.", "is not a valid domain"),
    ("bücher.de", "write it as 'xn--bcher-kva.de'"),
    ("-bad.org", "is not a valid domain"),
])
def test_domain_mistakes(tmp_path, domain, fragment):
    err = error(tmp_path, f"""
        - hosts: all
          sandbox: {{network: {{allow: ["{domain}"]}}}}
          tasks: []
    """)
    assert fragment in str(err)


EXEC = "- hosts: all\n  tasks:\n    - exec: {argv: [x], timeout: %s}\n"


@pytest.mark.parametrize(("text", "line", "column", "fragment"), [
    # values Python's own float()/int()/len() would choke on, or turn into a ValueError/TypeError
    (EXEC % ".nan", 3, 34, "positive number of seconds, got nan"),
    (EXEC % "-.inf", 3, 34, "positive number of seconds, got -inf"),
    (EXEC % "1e400", 3, 34, "number of seconds, got a string"),
    (EXEC % "[1]", 3, 34, "number of seconds, got a list"),
    ("- hosts: all\n  tasks:\n    - exec: {argv: [{a: 1}]}\n", 3, 21, "argv item 1 must be a plain value"),
    ("- hosts: all\n  serial: .nan\n  tasks: []\n", 2, 11, "serial must be a number of hosts or a percentage"),
])
def test_errors_never_leak_python_exceptions(tmp_path, text, line, column, fragment):
    """A value Python itself cannot handle is an InputError (``error`` lets any other exception
    through and fails) that names the value's position and says what is allowed, never the text
    of a Python exception."""
    err = error(tmp_path, text)
    assert type(err) is InputError
    assert err.mark == Mark(str(tmp_path / "pb.yml"), line, column)
    assert fragment in err.message
    assert str(err).startswith(f"{tmp_path / 'pb.yml'}:{line}:{column}: error: ")
    for leak in ("Traceback", "Error", "Exception", "<class", "object", "convert", "invalid literal"):
        assert leak not in err.message
    with pytest.raises(InputError, match="file not found"):
        load_playbook(str(tmp_path / "missing.yml"))
