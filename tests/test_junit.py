"""``--junit``: the mapping of every status, validity against the common junit-10 schema (tests/data/junit.xsd),
hostile output, atomic writes, and a CI-style consumer reading failures back."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandfleet.report.events import TaskStatus
from sandfleet.report.junit import UNREACHABLE_CASE, JUnitReporter, xml_text
from support.report_fakes import event, feed, play, task

XSD = Path(__file__).resolve().parent / "data" / "junit.xsd"


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def write(path: Path, plays: list, unreachable: dict[str, str] | None = None, abort: str | None = None) -> ET.Element:
    reporter = JUnitReporter(str(path))
    feed(reporter, plays, unreachable)
    if abort:
        reporter.play_aborted(plays[-1][0], abort)
    reporter.finish()
    return ET.parse(path).getroot()


def cases(root: ET.Element) -> dict[tuple[str, str], ET.Element]:
    return {(c.get("classname", ""), c.get("name", "")): c for c in root.iter("testcase")}


def ci_failures(path: Path) -> list[dict[str, Any]]:
    """What a CI system does with the file: every testcase that failed or errored, with its output."""
    found = []
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for case in suite.iter("testcase"):
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            if problem is None:
                continue
            found.append({"suite": suite.get("name"), "host": case.get("classname"), "task": case.get("name"),
                          "kind": problem.tag, "type": problem.get("type"), "message": problem.get("message"),
                          "stderr": case.findtext("system-err", ""), "stdout": case.findtext("system-out", "")})
    return found


ALL_STATUSES = [
    (play(), ["web1", "web2"], [
        (task("install"), [event("web2", "install", "ok", ms=1500), event("web1", "install", "ok", changed=False)]),
        (task("migrate"), [event("web1", "migrate", "failed", rc=3, stdout="partial\n", stderr="boom\nno table\n"),
                           event("web2", "migrate", "timeout")]),
        (task("probe"), [event("web1", "probe", "error"), event("web2", "probe", "sandbox_unavailable")]),
        (task("optional"), [event("web2", "optional", "failed", ignored=True, stderr="meh\n")]),
        (task("when false"), [event("web2", "when false", TaskStatus.SKIPPED)]),
        (task("loop"), [event("web2", "loop", "ok", item="a"), event("web2", "loop", "failed", item="b", label="B")]),
    ]),
]


def test_every_status_maps_as_documented(tmp_path: Path, schema: xmlschema.XMLSchema) -> None:
    path = tmp_path / "report.xml"
    root = write(path, ALL_STATUSES, unreachable={"web3": "connection refused"}, abort="any_errors_fatal")
    schema.validate(str(path))
    c = cases(root)
    assert list(c[("web2", "install")]) == [] and c[("web2", "install")].get("time") == "1.500"
    assert list(c[("web1", "install")]) == []
    migrate = c[("web1", "migrate")]
    failure = migrate.find("failure")
    assert failure is not None and failure.get("type") == "failed" and failure.get("message") == "rc=3: exited with 3"
    assert "no table" in (failure.text or "")
    assert migrate.findtext("system-out") == "partial\n" and migrate.findtext("system-err") == "boom\nno table\n"
    assert c[("web2", "migrate")].find("failure").get("type") == "timeout"  # type: ignore[union-attr]
    assert c[("web1", "probe")].find("failure").get("type") == "error"  # type: ignore[union-attr]
    unavailable = c[("web2", "probe")].find("error")
    assert unavailable is not None and unavailable.get("type") == "sandbox_unavailable"
    ignored = c[("web2", "optional")]
    assert ignored.find("failure") is None and ignored.find("error") is None
    assert ignored.findtext("system-out", "").startswith("ignored failure (rc=1: exited with 1)")
    assert c[("web2", "when false")].find("skipped") is not None
    assert c[("web2", "loop (item=a)")].find("failure") is None
    assert c[("web2", "loop (item=B)")].find("failure") is not None
    gone = c[("web3", UNREACHABLE_CASE)].find("error")
    assert gone is not None and gone.get("type") == "unreachable" and gone.get("message") == "connection refused"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "deploy"
    counts = (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped"))
    assert counts == ("11", "4", "2", "1")
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("11", "4", "2")
    assert suite.find("properties/property[@name='aborted']").get("value") == "any_errors_fatal"  # type: ignore[union-attr]


def test_cases_are_ordered_by_host_then_run_order(tmp_path: Path) -> None:
    root = write(tmp_path / "r.xml", ALL_STATUSES)
    order = [(c.get("classname"), c.get("name")) for c in root.iter("testcase")]
    assert order[:4] == [("web1", "install"), ("web1", "migrate"), ("web1", "probe"), ("web2", "install")]


def test_a_ci_consumer_reads_failures(tmp_path: Path) -> None:
    path = tmp_path / "report.xml"
    write(path, ALL_STATUSES, unreachable={"web3": "connection refused"})
    failures = ci_failures(path)
    assert [(f["host"], f["task"], f["kind"]) for f in failures] == [
        ("web1", "migrate", "failure"), ("web1", "probe", "failure"), ("web2", "migrate", "failure"),
        ("web2", "probe", "error"), ("web2", "loop (item=B)", "failure"), ("web3", UNREACHABLE_CASE, "error")]
    first = failures[0]
    assert first["suite"] == "deploy" and first["message"] == "rc=3: exited with 3" and "no table" in first["stderr"]


def test_one_suite_per_play_and_empty_plays_are_valid(tmp_path: Path, schema: xmlschema.XMLSchema) -> None:
    path = tmp_path / "r.xml"
    root = write(path, [(play("first"), ["h"], [(task("t"), [event("h", "t", play_name="first")])]),
                        (play("nobody"), [], [])])
    schema.validate(str(path))
    assert [(s.get("name"), s.get("tests")) for s in root.iter("testsuite")] == [("first", "1"), ("nobody", "0")]


def test_written_atomically_with_no_temp_file_left(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    path.write_text("old")
    write(path, ALL_STATUSES)
    assert os.listdir(tmp_path) == ["r.xml"] and path.read_bytes().startswith(b"<?xml")


def test_a_failed_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.xml"
    path.write_text("old")

    def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        write(path, ALL_STATUSES)
    assert os.listdir(tmp_path) == ["r.xml"] and path.read_text() == "old"


def test_xml_text_keeps_legal_text_and_escapes_the_rest() -> None:
    assert xml_text("tab\tline\r\nüñí € 𝄞 <&>") == "tab\tline\r\nüñí € 𝄞 <&>"
    assert xml_text("\x00\x08\x0b\x1b\udc80\ud800\ufffe\uffff") == "\\x00\\x08\\x0b\\x1b\\x80\\ud800\\ufffe\\uffff"


# Any code point, lone surrogates included, with the troublesome ones drawn often.
TROUBLE = ["\x00", "\x1b", "\x0c", "\r", "\udc80", "\ud800", "\ufffe", "]", ">", "&"]
hostile = st.text(st.one_of(st.characters(exclude_categories=()), st.sampled_from(TROUBLE)), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=hostile, name=hostile, out=hostile, err=hostile, message=hostile)
def test_hostile_text_still_gives_valid_junit(tmp_path: Path, schema: xmlschema.XMLSchema, host: str, name: str,
                                              out: str, err: str, message: str) -> None:
    path = tmp_path / "hostile.xml"
    p = play(name or "p")
    write(path, [(p, [host], [(task(name), [
        event(host, name, "failed", stdout=out, stderr=err, message=message or None, play_name=p.name),
        event(host, name, "ok", stdout=out, item=message, play_name=p.name),
    ])])], unreachable={host: message})
    schema.validate(str(path))
    failures = ci_failures(path)
    assert failures[0]["host"] == xml_text(host) and failures[0]["task"] == xml_text(name)
    assert failures[0]["stderr"] == xml_text(err).replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.parametrize("broken", [
    '<testsuites><testsuite tests="1"><testcase name="a"/></testsuite></testsuites>',  # suite without name
    '<testsuites><testsuite name="p" tests="1"><testcase classname="h"/></testsuite></testsuites>',  # case without name
    '<testsuites><testsuite name="p" tests="x"/></testsuites>',  # count not a number
    '<testsuites><testsuite name="p" tests="1"><testcase name="a"><oops/></testcase></testsuite></testsuites>',
])
def test_the_schema_rejects_what_ci_servers_reject(broken: str, schema: xmlschema.XMLSchema) -> None:
    assert not schema.is_valid(broken)
