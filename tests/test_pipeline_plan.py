"""Which tasks may travel to a host together (sandfleet/run/pipeline.py): the play's keywords, the
tasks that end a batch, what a task rendered ahead may not read, and the inventory's switch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandfleet.errors import InputError
from sandfleet.inventory import HostConfig, load_inventory
from sandfleet.load.playbook import Play, load_playbook_data
from sandfleet.run import pipeline


def play(tasks: list[dict[str, Any]], **keywords: Any) -> Play:
    return load_playbook_data([{"hosts": "all", **keywords, "tasks": tasks}], "test").plays[0]


def echo(name: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "exec": {"argv": ["echo", name]}, **more}


def after(p: Play, selected: list[int] | None = None) -> dict[int, list[int]]:
    tasks = [(i, t) for i, t in enumerate(p.tasks) if selected is None or i in selected]
    plan = pipeline.plan(p, tasks)
    return {i: [j for j, _ in plan.after(i)] for i, _ in tasks if plan.after(i)}


@pytest.mark.parametrize("keywords, why", [
    ({"any_errors_fatal": True}, "any_errors_fatal"),
    ({"max_fail_percentage": 50}, "max_fail_percentage"),
    ({"serial": 1}, "serial"),
    ({"strategy": "free", "serial": 2}, "serial"),
    ({"strategy": "free", "any_errors_fatal": True}, "any_errors_fatal"),
], ids=lambda v: str(v))
def test_keywords_that_let_hosts_observe_each_other_turn_it_off(keywords: dict[str, Any], why: str) -> None:
    p = play([echo("a"), echo("b")], **keywords)
    assert pipeline.refusal(p) == why and after(p) == {}


def test_run_once_anywhere_in_the_play_turns_it_off() -> None:
    p = play([echo("a"), echo("b"), echo("c", run_once=True)])
    assert pipeline.refusal(p) == "run_once" and after(p) == {}


@pytest.mark.parametrize("strategy", ["linear", "free"])
def test_a_plain_play_sends_each_task_with_every_task_after_it(strategy: str) -> None:
    p = play([echo("a"), echo("b"), echo("c")], strategy=strategy)
    assert pipeline.refusal(p) is None
    assert after(p) == {0: [1, 2], 1: [2]}


def test_a_task_the_controller_judges_ends_its_batch() -> None:
    p = play([echo("a"), echo("b", failed_when="false"), echo("c"), echo("d", changed_when="false"), echo("e")])
    assert after(p) == {0: [1], 2: [3]}  # b and d only as the last of a batch, never first of a longer one


def test_a_loop_that_pauses_is_never_pipelined_and_splits_the_batches() -> None:
    p = play([echo("a"), echo("b", loop=[1, 2], loop_control={"pause": 1}), echo("c"), echo("d")])
    assert after(p) == {2: [3]}
    assert not pipeline.pipelined(p.tasks[1])


def test_the_batches_follow_the_tasks_the_tags_select() -> None:
    p = play([echo("a"), echo("b"), echo("c"), echo("d")])
    assert after(p, [0, 2, 3]) == {0: [2, 3], 2: [3]}


class TestReads:
    """What a task rendered ahead may not read, followed through variables as the host has them."""

    RAW = {"via": "{{ out.stdout }}", "deeper": "{{ via }}", "plain": "text", "loopy": "{{ loopy }}",
           "mapped": {"k": "{{ out }}"}}

    def reads(self, task: dict[str, Any], names: set[str] | None = None) -> set[str]:
        t = play([task]).tasks[0]
        return pipeline.task_reads(t, {"out"} | pipeline.BARRIERS if names is None else names, self.RAW.get)

    @pytest.mark.parametrize("task", [
        {"exec": {"argv": ["echo", "{{ out.rc }}"]}},
        {"exec": {"argv": ["echo"], "cwd": "/srv/{{ out.stdout }}"}},
        {"exec": {"argv": ["echo"], "env": {"X": "{{ out }}"}}},
        {"exec": {"argv": ["true"]}, "when": "out.rc == 0"},
        {"exec": {"argv": ["echo", "{{ item }}"]}, "loop": "{{ out.stdout_lines }}"},
        {"exec": {"argv": ["echo"]}, "loop": [1], "loop_control": {"label": "{{ out.rc }}"}},
        {"exec": {"argv": ["echo", "{{ deeper }}"]}},
        {"exec": {"argv": ["echo", "{{ mapped.k }}"]}},
    ], ids=["argv", "cwd", "env", "when", "loop", "label", "through variables", "through a mapping"])
    def test_a_registered_result_read_anywhere_before_the_request_is_sent(self, task: dict[str, Any]) -> None:
        assert self.reads(task) == {"out"}

    @pytest.mark.parametrize("name", sorted(pipeline.BARRIERS))
    def test_what_other_hosts_change_is_a_barrier(self, name: str) -> None:
        assert self.reads({"exec": {"argv": ["echo", "{{ " + name + " }}"]}}) == {name}

    def test_conditions_judged_after_the_result_and_plain_values_are_not_reads(self) -> None:
        task = {"exec": {"argv": ["echo", "{{ plain }}", "{{ loopy }}"]}, "failed_when": "out.rc != 0",
                "changed_when": "out.stdout != ''", "register": "out"}
        assert self.reads(task) == set()


class TestSwitch:
    """``sandfleet_pipelining``: on unless the inventory says otherwise, per host or group."""

    def config(self, tmp_path: Path, text: str) -> HostConfig:
        path = tmp_path / "hosts.ini"
        path.write_text(text)
        return load_inventory([str(path)]).host_config("web1")

    def test_on_by_default_off_where_the_inventory_says(self, tmp_path: Path) -> None:
        assert self.config(tmp_path, "web1\n").pipelining is True
        assert self.config(tmp_path, "web1 sandfleet_pipelining=false\n").pipelining is False
        assert self.config(tmp_path, "[g]\nweb1\n[g:vars]\nsandfleet_pipelining=no\n").pipelining is False

    def test_a_value_that_is_not_a_boolean_is_refused_where_it_was_written(self, tmp_path: Path) -> None:
        with pytest.raises(InputError, match=r"hosts.ini:1.*sandfleet_pipelining: must be a boolean"):
            self.config(tmp_path, "web1 sandfleet_pipelining=sometimes\n")
