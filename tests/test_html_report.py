"""``--report FILE.html``: a real local run's page read back structurally (html.parser for the page,
xml.etree for its SVG timeline), hostile strings escaped, nothing executable or external, written on
Ctrl-C too, and a real headless Chromium render when one is installed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

from test_run_local import ROOT, sandfleet, write_playbook

from sandfleet.report.events import TaskStatus
from sandfleet.report.html import COLOURS, HtmlReporter, esc
from sandfleet.report.outputs import Outputs
from sandfleet.report.recap import Recap
from support.ci import need
from support.report_fakes import event, feed, play, task

HOSTILE_HOST = '<b>h"1</svg>'
HOSTILE_TASK = 'break "><img src=x onerror=alert(1)> </svg><script>alert(2)</script> \x1b[31m\x07'
HOSTILE_OUT = "</svg><script>bad()</script>\x1b[2J\x00"

PLAYBOOK = """\
- name: "report <script>alert(0)</script>"
  hosts: all
  tasks:
    - name: say hello
      exec: {argv: [echo, hello]}
    - name: never
      exec: {argv: ['false']}
      when: false
    - name: "break \\"><img src=x onerror=alert(1)> </svg><script>alert(2)</script> \\e[31m\\a"
      exec:
        argv: [sh, -c, 'sleep 0.2; printf "partial\\n</svg><script>bad()</script>\\033[2J\\000";
               echo "no such table: users" >&2; exit 3']
"""


def write_inventory(tmp_path: Path, hosts: tuple[str, ...] = (HOSTILE_HOST, "plain")) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    path = tmp_path / "inv.yml"
    body = "".join(f"    '{h}':\n      ansible_connection: local\n      sandfleet_os: linux\n"
                   f"      sandfleet_workspace_roots: ['{ws}']\n" for h in hosts)
    path.write_text("all:\n  hosts:\n" + body)
    return path


class Page(HTMLParser):
    """Every start tag with its attributes, and the text, as a browser's parser sees them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def svg_of(text: str) -> ET.Element:
    """The one timeline: exactly one real <svg> element (a hostile ``</svg>`` is escaped), parsed as XML."""
    assert text.count("<svg") == 1 and text.count("</svg>") == 1
    return ET.fromstring(text[text.index("<svg"):text.index("</svg>") + len("</svg>")])


def assert_inert(text: str, page: Page) -> None:
    """No script, no active content, nothing that loads anything."""
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "img", "iframe", "object", "embed", "link", "base", "image", "use",
                       "foreignobject", "a", "form", "audio", "video", "source"}, tags
    for tag, attrs in page.tags:
        assert not {k for k in attrs if k.startswith("on")}, (tag, attrs)
        assert not set(attrs) & {"src", "href", "xlink:href", "srcset", "action", "background"}, (tag, attrs)
    lowered = text.lower()
    assert "<script" not in lowered and "url(" not in lowered and "@import" not in lowered
    assert "http://" not in lowered and "https://" not in lowered and "javascript:" not in lowered
    csp = page.find("meta", **{"http-equiv": "Content-Security-Policy"})
    assert csp and "default-src 'none'" in csp[0]["content"]


def bars(svg: ET.Element) -> list[dict[str, str]]:
    return [dict(r.attrib, title=r.findtext("title", "")) for r in svg.iter("rect") if "bar" in r.get("class", "")]


def test_real_run_page_structure_and_escaping(tmp_path: Path) -> None:
    need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    report = tmp_path / "run.html"
    proc = sandfleet("run", str(write_playbook(tmp_path, PLAYBOOK)), "-i", str(write_inventory(tmp_path)),
                     "--forks", "1", "--report", str(report))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    text = report.read_text(encoding="utf-8")
    page = Page(text)
    assert_inert(text, page)
    svg = svg_of(text)

    # The timeline: one row per host, one bar per task that ran, coloured by status, backend in the title.
    assert [g.get("data-host") for g in svg.iter("g")] == [HOSTILE_HOST, "plain"]
    shown_task = HOSTILE_TASK.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    found = [(b["data-host"], b["data-task"], b["data-status"], b["fill"], b["data-backend"]) for b in bars(svg)]
    assert found == [(h, t, s, COLOURS[s], "bwrap") for h in (HOSTILE_HOST, "plain")
                     for t, s in (("say hello", "ok"), (shown_task, "failed"))]
    for b in bars(svg):
        assert "bwrap" in b["title"] and b["data-host"] in b["title"] and float(b["width"]) > 0
    for host in (HOSTILE_HOST, "plain"):  # a host's tasks follow each other on the time axis
        hello, broke = [b for b in bars(svg) if b["data-host"] == host]
        assert float(hello["x"]) + float(hello["width"]) <= float(broke["x"]) + 0.5
        assert float(broke["width"]) > float(hello["width"])  # it slept 0.2 s
    assert any("[bwrap]" in (t.text or "") for t in svg.iter("text"))

    # The recap table: the same numbers as the recap.
    cells = recap_cells(text)
    assert cells[HOSTILE_HOST] == cells["plain"] == {"ok": "1", "changed": "1", "failed": "1", "unreachable": "0",
                                                     "sandbox_unavailable": "0", "denied": "0", "skipped": "1",
                                                     "ignored": "0", "cancelled": "0"}
    assert page.find("span", **{"class": "exit-code"})

    # The failures with their output tails, the policy per host.
    failures = page.find("div", **{"class": "failure"})
    assert [(f["data-host"], f["data-task"], f["data-status"]) for f in failures] == [
        (HOSTILE_HOST, shown_task, "failed"), ("plain", shown_task, "failed")]
    body = "".join(page.text)
    assert "no such table: users" in body and "rc=3" in body and "exited with 3" in body
    assert "</svg><script>bad()</script>\\x1b[2J\\x00" in body  # shown as text, controls made visible
    assert "report <script>alert(0)</script>" in body
    assert len(page.find("tr", **{"data-host": "plain"})) == 2  # recap + policy
    assert "built-in default" in body and page.find("code")
    assert not any(c in text for c in "\x00\x07\x1b")


def recap_cells(text: str) -> dict[str, dict[str, str]]:
    """``{host: {column: value}}`` from the recap table, read with html.parser."""
    class Recap(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: dict[str, dict[str, str]] = {}
            self.table = False
            self.host: str | None = None
            self.col: str | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "table":
                self.table = a.get("class") == "recap"
            elif self.table and tag == "tr" and a.get("data-host") is not None:
                self.host = a["data-host"]
                self.rows[self.host or ""] = {}
            elif self.table and tag == "td":
                self.col = a.get("data-col")

        def handle_endtag(self, tag: str) -> None:
            if tag == "table":
                self.table = False
            if tag == "td":
                self.col = None

        def handle_data(self, data: str) -> None:
            if self.table and self.host is not None and self.col is not None:
                self.rows[self.host][self.col] = data

    parser = Recap()
    parser.feed(text)
    return parser.rows


def test_every_status_has_its_colour_and_the_recap_agrees(tmp_path: Path) -> None:
    recap, path = Recap(), tmp_path / "r.html"
    outputs = Outputs(recap, [HtmlReporter(str(path), recap)])
    statuses = ["ok", "failed", "timeout", "error", "sandbox_unavailable", "denied", "cancelled"]
    cancelled = replace(event("w1", "cancelled", "error", message="interrupted"), status=TaskStatus.CANCELLED)
    feed(outputs, [(play(), ["w1", "w2"], [(task(s), [event("w1", s, s) if s != "cancelled" else cancelled])
                                           for s in statuses] + [
        (task("optional"), [event("w2", "optional", "failed", ignored=True, stderr="meh\n")]),
        (task("skip"), [event("w2", "skip", TaskStatus.SKIPPED)]),
    ])], unreachable={"w3": "connection <refused>"})
    outputs.play_aborted(play(), "any_errors_fatal")
    outputs.finish()
    text = path.read_text()
    page = Page(text)
    assert_inert(text, page)
    got = {(b["data-host"], b["data-status"]): b["fill"] for b in bars(svg_of(text))}
    assert got == {**{("w1", s): COLOURS[s] for s in statuses}, ("w2", "ignored"): COLOURS["ignored"]}
    assert len(set(COLOURS.values())) == len(COLOURS)
    cells = recap_cells(text)
    assert cells["w1"]["failed"] == "3" and cells["w1"]["denied"] == "1" and cells["w2"]["ignored"] == "1"
    assert cells["w2"]["skipped"] == "1" and cells["w3"]["unreachable"] == "1"
    assert page.find("p", **{"class": "alert unreachable", "data-host": "w3"})
    assert "connection &lt;refused&gt;" in text and "any_errors_fatal" in text
    assert len(page.find("div", **{"class": "failure"})) == len(statuses) - 1 + 1  # ok aside; the ignored one too
    # Results with no start time (the fakes') still get a visible bar, one after another.
    w1 = [b for b in bars(svg_of(text)) if b["data-host"] == "w1"]
    assert all(float(b["width"]) >= 2 for b in w1)
    assert [float(b["x"]) for b in w1] == sorted(float(b["x"]) for b in w1)


def test_esc_neutralises_markup_and_controls() -> None:
    for hostile in ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "</svg>", "'", "&amp;"):
        out = esc(hostile)
        assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
    assert esc("a\x1b[31m\x00\x7f\x85\udc80b\tc\nd") == "a\\x1b[31m\\x00\\x7f\\x85\\x80b\tc\nd"


def test_bad_paths_and_dry_run_are_refused(tmp_path: Path) -> None:
    pb, inv = str(write_playbook(tmp_path, PLAYBOOK)), str(write_inventory(tmp_path, ("plain",)))
    for extra in (["--report", str(Path(pb) / "r.html")], ["--report", str(tmp_path)],  # under a file; a dir
                  ["--dry-run", "--report", str(tmp_path / "r.html")]):
        proc = sandfleet("run", pb, "-i", inv, *extra)
        assert proc.returncode == 64 and proc.stdout == "" and "--report" in proc.stderr, (extra, proc.stderr)
    assert not (tmp_path / "r.html").exists()


def test_ctrl_c_leaves_a_whole_page_with_the_task_cancelled(tmp_path: Path) -> None:
    need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    inventory = write_inventory(tmp_path, ("plain",))
    marker = tmp_path / "ws" / "started"
    playbook = write_playbook(tmp_path, f"""\
- name: long
  hosts: all
  tasks:
    - name: first
      exec: {{argv: ['true']}}
    - name: long
      exec:
        argv: [sh, -c, 'touch {marker}; sleep 30']
        cwd: ":workspace_roots"
""")
    report = tmp_path / "r.html"
    proc = subprocess.Popen([sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory),
                             "--report", str(report)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists() and proc.poll() is None, "the long task did not start"
        assert not report.exists()  # written at the end, whole
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    text = report.read_text()
    assert text.rstrip().endswith("</html>")
    assert [(b["data-task"], b["data-status"], b["fill"]) for b in bars(svg_of(text))] == [
        ("first", "ok", COLOURS["ok"]), ("long", "cancelled", COLOURS["cancelled"])]
    assert recap_cells(text)["plain"]["cancelled"] == "1"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def screenshot(browser: str, page: Path, png: Path, tmp_path: Path) -> int:
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                           "--window-size=1200,800", f"--user-data-dir={tmp_path / 'profile'}", page.as_uri()],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert png.exists(), proc.stderr[-2000:]
    return png.stat().st_size


def test_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = chromium()
    need(browser is not None, "chromium is not installed (apt-get install chromium)")
    assert browser is not None
    recap, path = Recap(), tmp_path / "r.html"
    outputs = Outputs(recap, [HtmlReporter(str(path), recap)])
    feed(outputs, [(play(), ["w1", "w2"], [
        (task("install"), [event("w1", "install", "ok", ms=900), event("w2", "install", "ok", ms=400)]),
        (task(HOSTILE_TASK), [event("w1", HOSTILE_TASK, "failed", rc=3, stderr=HOSTILE_OUT * 3),
                              event("w2", HOSTILE_TASK, "timeout")]),
    ])])
    outputs.finish()
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    blank_size = screenshot(browser, blank, tmp_path / "blank.png", tmp_path)
    size = screenshot(browser, path, tmp_path / "report.png", tmp_path)
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert size > 4 * blank_size, (size, blank_size)
