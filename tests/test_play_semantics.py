"""Play and task keywords with Ansible's semantics, on real tasks over the local connection.

Every test runs ``sandfleet run`` in-process against several ``ansible_connection: local`` hosts
(each its own agent process and real sandbox) and reads the JSON event stream. The hosts that
must be unreachable are SSH hosts on a loopback port nothing listens on.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import textwrap
from pathlib import Path
from typing import Any, Optional

import pytest

from sandfleet.cli import main
from support import eventschema
from support.ci import need


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connecting is refused at once


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.err = code, err
        self.events: list[dict[str, Any]] = eventschema.parse(out)

    def results(self, host: Optional[str] = None, task: Optional[str] = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "task_result" and host in (None, e["host"])
                and task in (None, e["task"])]

    def statuses(self, task: str) -> dict[str, str]:
        return {e["host"]: e["status"] for e in self.results(task=task)}

    def ran(self, task: str) -> list[str]:
        return [e["host"] for e in self.results(task=task) if e["status"] != "skipped"]

    def unreachable(self) -> list[str]:
        return [e["host"] for e in self.events if e["event"] == "host_unreachable"]

    def recap(self) -> dict[str, Any]:
        found: dict[str, Any] = self.events[-1]
        assert found["event"] == "recap", self
        return found

    def __repr__(self) -> str:
        return f"exit {self.code}\n{self.err}\n" + "\n".join(map(json.dumps, self.events))


class Fleet:
    """A few local hosts (and optionally unreachable ones) and a way to run a playbook on them."""

    def __init__(self, tmp: Path) -> None:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        self.tmp = tmp
        self.ws = tmp / "ws"
        self.ws.mkdir()

    def inventory(self, local: tuple[str, ...] = ("h1", "h2", "h3"), down: tuple[str, ...] = (),
                  host_vars: Optional[dict[str, dict[str, Any]]] = None, group_vars: Optional[dict[str, Any]] = None
                  ) -> Path:
        hosts: dict[str, Any] = {}
        for name in local:
            hosts[name] = {"ansible_connection": "local", "sandfleet_workspace_roots": [str(self.ws)]}
        for name in down:
            hosts[name] = {"ansible_host": "127.0.0.1", "ansible_port": dead_port(), "sandfleet_os": "linux"}
        for name, extra in (host_vars or {}).items():
            hosts[name].update(extra)
        path = self.tmp / "inv.json.yml"
        path.write_text(json.dumps({"all": {"hosts": hosts, "vars": group_vars or {}}}))
        return path

    def run(self, playbook: str, *args: str, inventory: Optional[Path] = None) -> Run:
        pb = self.tmp / "pb.yml"
        pb.write_text(textwrap.dedent(playbook))
        out, err = io.StringIO(), io.StringIO()
        code = main(["run", str(pb), "-i", str(inventory or self.inventory()), "--format", "json", *args], out, err)
        return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


ECHO_HOST = 'exec: {argv: [echo, "{{ inventory_hostname }}"]}'


class TestVariables:
    def test_precedence_inventory_play_and_extra_vars(self, fleet: Fleet, tmp_path: Path) -> None:
        inv = fleet.inventory(("h1", "h2"), host_vars={"h1": {"v": "host"}}, group_vars={"v": "group", "w": "inv"})
        (tmp_path / "vars.yml").write_text("w: from-file\nn: 7\n")
        pb = """
            - hosts: all
              vars: {p: play}
              tasks:
                - name: show
                  exec: {argv: [echo, "{{ v }}/{{ p }}/{{ w }}/{{ n }}"]}
            """
        r = fleet.run(pb, "-e", f"@{tmp_path / 'vars.yml'}", "-e", "p=cli", inventory=inv)
        assert r.code == 0, r
        assert {e["host"]: e["stdout"] for e in r.results()} == {"h1": "host/cli/from-file/7\n",
                                                                 "h2": "group/cli/from-file/7\n"}
        r = fleet.run(pb, "-e", '{"v": "json", "w": [1, 2], "n": 0}', inventory=inv)
        assert {e["stdout"] for e in r.results()} == {"json/play/[1, 2]/0\n"}

    def test_extra_vars_win_over_registered_results(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: h1
              tasks:
                - {name: a, exec: {argv: [echo, registered]}, register: out}
                - {name: b, exec: {argv: [echo, "{{ out }}"]}}
            """, "-e", "out=extra")
        assert r.results(task="b")[0]["stdout"] == "extra\n"
        assert "register: out is also given with -e" in r.err

    def test_a_missing_variable_names_file_line_task_host_and_variable(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: h1:h2
              tasks:
                - name: uses a var only h2 has
                  exec: {argv: [echo, "{{ only_h2 }}"]}
                - {name: after, exec: {argv: ["true"]}}
            """, inventory=fleet.inventory(("h1", "h2"), host_vars={"h2": {"only_h2": "x"}}))
        assert r.code == 2, r
        assert r.statuses("uses a var only h2 has") == {"h1": "error", "h2": "ok"}
        message = r.results("h1")[0]["message"]
        assert "pb.yml:5:" in message and "'uses a var only h2 has'" in message and "'h1'" in message
        assert "undefined variable 'only_h2'" in message
        assert r.ran("after") == ["h2"]

    def test_templating_never_splits_an_argv_element(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: h1
              vars: {spaced: "a b  c", listed: [x, y], quote: "'; rm -rf / #"}
              tasks:
                - exec: {argv: [python3, -c, "import sys, json; print(json.dumps(sys.argv[1:]))",
                                "{{ spaced }}", "{{ listed }}", "{{ quote }}"]}
            """)
        assert json.loads(r.results()[0]["stdout"]) == ["a b  c", "['x', 'y']", "'; rm -rf / #"]

    def test_bad_extra_vars_are_usage_errors(self, fleet: Fleet, tmp_path: Path) -> None:
        assert fleet.run("- hosts: h1\n  tasks: []\n", "-e", "novalue").code == 64
        r = fleet.run("- hosts: h1\n  tasks: []\n", "-e", "@/nonexistent/vars.yml")
        assert r.code == 65 and "/nonexistent/vars.yml" in r.err and "not found" in r.err
        (tmp_path / "bad.yml").write_text("a: 1\na: 2\n")
        r = fleet.run("- hosts: h1\n  tasks: []\n", "-e", f"@{tmp_path / 'bad.yml'}")
        assert r.code == 65 and "bad.yml:2:" in r.err


class TestTaskKeywords:
    def test_when_per_host_and_per_item(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: all
              tasks:
                - {name: only h2, exec: {argv: ["true"]}, when: inventory_hostname == 'h2'}
                - name: items
                  exec: {argv: [echo, "{{ item }}"]}
                  loop: [1, 2, 3]
                  when: item != 2 and inventory_hostname == 'h1'
            """)
        assert r.statuses("only h2") == {"h1": "skipped", "h2": "ok", "h3": "skipped"}
        assert [(e["item"], e["status"]) for e in r.results("h1", "items")] == [(1, "ok"), (2, "skipped"), (3, "ok")]
        assert r.code == 0

    def test_loop_control_names_index_and_label(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: h1
              tasks:
                - name: pkgs
                  exec: {argv: [echo, "{{ pkg.name }}", "{{ idx }}"]}
                  loop: [{name: curl, big: "x"}, {name: git, big: "y"}]
                  loop_control: {loop_var: pkg, index_var: idx, label: "{{ pkg.name }}"}
                  register: out
                - {name: after, exec: {argv: [echo, "{{ out.results | map(attribute='stdout') | join(',') }}"]}}
            """)
        assert [(e["stdout"], e["label"]) for e in r.results(task="pkgs")] == [("curl 0\n", "curl"), ("git 1\n", "git")]
        assert r.results(task="after")[0]["stdout"] == "curl 0,git 1\n"

    def test_python_keywords_name_variables_jinja_reads_them(self, fleet: Fleet) -> None:
        """Python's keywords are plain names to Jinja, so vars, -e, loop_var, index_var and register
        may use them (sandfleet/load/varnames.py); Jinja's own words are refused at load."""
        r = fleet.run("""
            - hosts: h1
              vars: {class: first}
              tasks:
                - name: kw
                  exec: {argv: [echo, "{{ class }}", "{{ in }}", "{{ if }}", "{{ lambda }}"]}
                  loop: [a]
                  loop_control: {loop_var: in, index_var: if}
                  register: def
                - {name: after, exec: {argv: [echo, "{{ def.results[0].stdout }}"]}, when: def is succeeded}
            """, "-e", "lambda=x")
        assert r.results(task="kw")[0]["stdout"] == "first a 0 x\n", r
        assert r.results(task="after")[0]["stdout"] == "first a 0 x\n"
        bad = fleet.run("- hosts: h1\n  tasks:\n    - {exec: {argv: [x]}, register: none}\n")
        assert bad.code == 65 and "register cannot be 'none': Jinja reads none as the literal None" in bad.err

    def test_register_keeps_rc_output_lines_failed_and_backend(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: h1
              tasks:
                - name: probe
                  exec: {argv: [sh, -c, "echo one; echo two; echo err >&2; exit 3"]}
                  register: p
                  ignore_errors: true
                - name: show
                  exec: {argv: [echo, "{{ p.rc }}|{{ p.stdout_lines }}|{{ p.stderr }}|{{ p.failed }}|{{ p.backend }}"]}
                - {name: gated, exec: {argv: ["true"]}, when: p.rc == 3 and p is failed}
            """)
        assert r.results(task="show")[0]["stdout"] == "3|['one', 'two']|err|True|bwrap\n"
        assert r.statuses("gated") == {"h1": "ok"}
        assert r.results(task="probe")[0]["ignored"] is True and r.code == 0

    def test_failed_when_overrides_the_exit_code_both_ways(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: h1
              tasks:
                - name: grep finds nothing (rc 1) and that is fine
                  exec: {argv: [sh, -c, "exit 1"]}
                  register: g
                  failed_when: g.rc not in [0, 1]
                - name: exits 0 but said ERROR
                  exec: {argv: [echo, "ERROR: disk full"]}
                  register: e
                  failed_when: ["'ERROR' in e.stdout", "e.rc == 0"]
                - {name: not reached, exec: {argv: ["true"]}}
            """)
        assert r.statuses("grep finds nothing (rc 1) and that is fine") == {"h1": "ok"}
        failed = r.results(task="exits 0 but said ERROR")[0]
        assert failed["status"] == "failed" and failed["rc"] == 0 and "failed_when" in failed["message"]
        assert r.ran("not reached") == [] and r.code == 2

    def test_failed_when_never_hides_a_missing_sandbox_or_a_refusal(self, fleet: Fleet) -> None:
        inv = fleet.inventory(("h1", "h2"), host_vars={"h2": {"sandfleet_sandbox": "seatbelt"}})
        r = fleet.run("""
            - hosts: all
              tasks:
                - name: bare
                  exec: {argv: ["true"]}
                  sandbox: false
                  failed_when: false
                  when: inventory_hostname == 'h1'
                - {name: boxed, exec: {argv: ["true"]}, failed_when: false, when: inventory_hostname == 'h2'}
            """, inventory=inv)
        assert r.statuses("bare")["h1"] == "denied" and r.statuses("boxed")["h2"] == "sandbox_unavailable"
        assert r.code == 24

    def test_ignore_errors_never_covers_a_missing_sandbox_or_a_refusal(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: h1
              tasks:
                - {name: bare, exec: {argv: ["true"]}, sandbox: false, ignore_errors: true}
                - {name: next, exec: {argv: ["true"]}}
            """)
        assert r.results(task="bare")[0].get("ignored") is None and r.ran("next") == [] and r.code == 16

    def test_changed_when(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: h1
              tasks:
                - {name: read only, exec: {argv: ["true"]}, changed_when: false, register: a}
                - {name: default, exec: {argv: ["true"]}, register: b}
                - {name: show, exec: {argv: [echo, "{{ a.changed }} {{ b.changed }}"]}}
            """)
        assert [e["changed"] for e in r.results()[:2]] == [False, True]
        assert r.results(task="show")[0]["stdout"] == "False True\n"
        assert r.recap()["hosts"]["h1"]["changed"] == 2

    def test_timeout_kills_and_fails(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: h1
              tasks:
                - {name: slow, exec: {argv: [sleep, "30"]}, timeout: 0.5}
            """)
        assert r.statuses("slow") == {"h1": "timeout"} and r.code == 2

    def test_run_once_runs_on_the_first_host_and_registers_everywhere(self, fleet: Fleet) -> None:
        r = fleet.run(f"""
            - hosts: all
              tasks:
                - {{name: once, {ECHO_HOST}, run_once: true, register: o}}
                - {{name: everyone, exec: {{argv: [echo, "{{{{ o.stdout }}}}"]}}}}
            """)
        assert r.ran("once") == ["h1"]
        assert {e["host"]: e["stdout"] for e in r.results(task="everyone")} == {h: "h1\n" for h in ("h1", "h2", "h3")}

    def test_a_failed_run_once_task_fails_the_whole_batch(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: all
              tasks:
                - {name: once, exec: {argv: ["false"]}, run_once: true}
                - {name: next, exec: {argv: ["true"]}}
            """)
        assert r.ran("once") == ["h1"] and r.ran("next") == [] and r.code == 2


class TestTags:
    PLAYBOOK = """
        - hosts: h1
          tags: [play]
          tasks:
            - {name: untagged, exec: {argv: ["true"]}}
            - {name: build, exec: {argv: ["true"]}, tags: build}
            - {name: test, exec: {argv: ["true"]}, tags: "test,slow"}
            - {name: always, exec: {argv: ["true"]}, tags: [always]}
            - {name: debug, exec: {argv: ["true"]}, tags: [never, debug]}
        """

    @pytest.mark.parametrize(("args", "expected"), [
        ((), ["untagged", "build", "test", "always"]),
        (("--tags", "build"), ["build", "always"]),
        (("--tags", "slow,debug"), ["test", "always", "debug"]),
        (("--skip-tags", "slow", "--skip-tags", "always"), ["untagged", "build"]),
        (("--tags", "play"), ["untagged", "build", "test", "always", "debug"]),  # inherited tags count, as in Ansible
        (("--tags", "never"), ["always", "debug"]),
        (("--tags", "all", "--skip-tags", "build"), ["untagged", "test", "always"]),
    ])
    def test_selection(self, fleet: Fleet, args: tuple[str, ...], expected: list[str]) -> None:
        r = fleet.run(self.PLAYBOOK, *args)
        assert [e["task"] for e in r.results()] == expected, r


def started_order(r: Run) -> list[tuple[str, str]]:
    return [(e["host"], e["task"]) for e in sorted(r.results(), key=lambda e: e["started"])]


class TestBatchesAndStrategies:
    """A few scheduler rules end to end on real sandboxes; every rule, with the order it promises,
    is specified above the transport in tests/runner/test_scheduler.py (fast, with a fake connection)."""

    def test_serial_list_cuts_batches_and_the_last_size_repeats(self, fleet: Fleet) -> None:
        inv = fleet.inventory(("h1", "h2", "h3", "h4", "h5", "h6"))
        r = fleet.run(f"""
            - hosts: all
              serial: [1, "34%"]
              tasks:
                - {{name: a, {ECHO_HOST}}}
                - {{name: b, {ECHO_HOST}}}
            """, inventory=inv)
        hosts_in_order = [h for h, _ in started_order(r)]
        # batches: [h1], then 34% of 6 = 2 hosts at a time: [h2, h3], [h4, h5], [h6]
        assert hosts_in_order[:2] == ["h1", "h1"]
        batches = [set(hosts_in_order[i:i + 4]) for i in (2, 6)]
        assert batches == [{"h2", "h3"}, {"h4", "h5"}] and hosts_in_order[-2:] == ["h6", "h6"]

    def test_linear_finishes_a_task_everywhere_before_the_next(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: h1:h2
              tasks:
                - {name: a, exec: {argv: [sleep, "{{ '0.6' if inventory_hostname == 'h1' else '0' }}"]}}
                - {name: b, exec: {argv: ["true"]}}
            """)
        assert started_order(r)[-2:] == [("h1", "b"), ("h2", "b")] or started_order(r)[-2:] == [("h2", "b"),
                                                                                                ("h1", "b")]
        h1_a = r.results("h1", "a")[0]
        h2_b = r.results("h2", "b")[0]
        assert h2_b["started"] >= h1_a["started"] and r.code == 0

    def test_free_lets_a_fast_host_run_ahead(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: h1:h2
              strategy: free
              tasks:
                - {name: a, exec: {argv: [sleep, "{{ '1' if inventory_hostname == 'h1' else '0' }}"]}}
                - {name: b, exec: {argv: ["true"]}}
            """)
        order = started_order(r)
        assert order.index(("h2", "b")) < order.index(("h1", "b")) and r.code == 0
        assert [e["host"] for e in r.events if e["event"] == "task_result"][-1] == "h1"

    def test_any_errors_fatal_stops_every_host_and_later_plays(self, fleet: Fleet) -> None:
        r = fleet.run("""
            - hosts: all
              any_errors_fatal: true
              tasks:
                - {name: a, exec: {argv: ["{{ 'false' if inventory_hostname == 'h2' else 'true' }}"]}}
                - {name: b, exec: {argv: ["true"]}}
            - hosts: all
              tasks:
                - {name: c, exec: {argv: ["true"]}}
            """)
        assert r.statuses("a") == {"h1": "ok", "h2": "failed", "h3": "ok"}
        assert r.ran("b") == [] and r.ran("c") == [] and r.code == 2
        assert "any_errors_fatal" in r.recap()["aborted"]["reason"]

    def test_max_fail_percentage_counts_unreachable_hosts(self, fleet: Fleet) -> None:
        inv = fleet.inventory(("h1", "h2", "h3"), down=("gone",))
        pb = """
            - hosts: all
              max_fail_percentage: {pct}
              tasks:
                - {{name: a, exec: {{argv: ["{{{{ 'false' if inventory_hostname == 'h1' else 'true' }}}}"]}}}}
                - {{name: b, exec: {{argv: ["true"]}}}}
            """
        r = fleet.run(pb.format(pct=30), inventory=inv)  # 2 of 4 failed = 50 % > 30 %
        assert r.unreachable() == ["gone"] and r.ran("b") == [] and r.code == 6, r
        assert "max_fail_percentage 30% exceeded: 2 of 4" in r.recap()["aborted"]["reason"]
        r = fleet.run(pb.format(pct=50), inventory=inv)  # 50 % is not more than 50 %
        assert sorted(r.ran("b")) == ["h2", "h3"] and r.code == 6

    def test_a_whole_failed_batch_stops_the_run_unless_max_fail_percentage_is_100(self, fleet: Fleet) -> None:
        pb = """
            - hosts: all
              serial: 1
              {limit}
              tasks:
                - {{name: a, exec: {{argv: ["{{{{ 'false' if inventory_hostname == 'h1' else 'true' }}}}"]}}}}
            """
        r = fleet.run(pb.format(limit=""))
        assert r.ran("a") == ["h1"] and r.code == 2
        assert "every host of the batch failed" in r.recap()["aborted"]["reason"]
        r = fleet.run(pb.format(limit="max_fail_percentage: 100"))
        assert r.ran("a") == ["h1", "h2", "h3"] and r.code == 2 and "aborted" not in r.recap()


class TestExitCodes:
    """Every exit-code bit and their combinations, from one inventory narrowed with --limit:
    2 a task failed (bad), 4 a host unreachable (gone), 8 no sandbox (nobox: pinned to a
    backend this OS lacks), 16 denied by the policy (nosb: an unsandboxed task, not allowed)."""

    PLAYBOOK = """
        - hosts: all
          tasks:
            - {name: bare, exec: {argv: ["true"]}, sandbox: false, when: inventory_hostname == 'nosb'}
            - {name: main, exec: {argv: ["{{ cmd }}"]}}
        """

    @pytest.mark.parametrize(("hosts", "code"), [
        ("good", 0), ("bad", 2), ("gone", 4), ("bad:gone", 6), ("nobox", 8), ("bad:nobox", 10),
        ("gone:nobox", 12), ("bad:gone:nobox", 14), ("nosb", 16), ("bad:nosb", 18), ("nobox:nosb", 24),
        ("bad:gone:nobox:nosb", 30), ("good:bad:gone:nobox:nosb", 30),
    ])
    def test_combination(self, fleet: Fleet, hosts: str, code: int) -> None:
        inv = fleet.inventory(("good", "bad", "nobox", "nosb"), down=("gone",), group_vars={"cmd": "true"},
                              host_vars={"bad": {"cmd": "false"}, "nobox": {"sandfleet_sandbox": "seatbelt"}})
        r = fleet.run(self.PLAYBOOK, "-l", hosts, inventory=inv)
        assert r.code == code, r

    def test_ignored_failures_exit_zero(self, fleet: Fleet) -> None:
        r = fleet.run("- hosts: h1\n  tasks:\n    - {exec: {argv: ['false']}, ignore_errors: true}\n")
        assert r.code == 0 and r.recap()["hosts"]["h1"]["ignored"] == 1
