"""``--report FILE.html``: the run as one self-contained page people open in a browser.

What the page shows, top to bottom:

- the run's headline: plays, hosts, exit code, an abort (``any_errors_fatal`` /
  ``max_fail_percentage``) and every unreachable host with its message;
- a timeline per host (inline SVG): each task (each loop item) a bar from its ``started`` to
  ``started + duration_ms``, coloured by status (a failure under ``ignore_errors`` has its own
  colour), with the backend in its label and its ``<title>`` (hover: host, task, status, backend,
  duration, start); a task that never reached a sandbox says why instead (``TaskEvent.backend_label``:
  "no sandbox", "not run"). A result without a start time (an older agent, a task refused before
  it spawned) is a thin bar after the host's previous one; a skipped task has no bar;
- the recap table (the same :class:`Recap` every other output reads, so the numbers agree);
- each failure (failed, timeout, error, sandbox_unavailable, denied, cancelled, and ignored ones
  marked as such) with its message, rc and the last lines of its stdout and stderr;
- each host's effective policy: its digest and the layers it came from.

Self-contained: inline CSS and SVG, no JavaScript, no link, image, font or URL of any kind, and
a Content-Security-Policy that forbids loading anything should a browser find something anyway.
Every string from a playbook, an inventory or a host goes through :func:`esc`: HTML-escaped
(quotes too, so it is safe in attributes) after every control character is replaced by its
visible escape (``\\x1b``), so hostile task names or output can neither inject markup nor hide
text. The file is written atomically at ``finish``, which also runs on Ctrl-C: an interrupted run
leaves a complete page showing the tasks in flight as ``cancelled``.
"""

from __future__ import annotations

import html
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

from sandfleet.load.playbook import Play
from sandfleet.report.atomic import write_atomic
from sandfleet.report.events import Reporter, TaskEvent
from sandfleet.report.recap import HostTally, Recap
from sandfleet.report.terminal import escape_char

TAIL_LINES = 20
#: The bar colour of each status (and of a failure under ignore_errors: "ignored").
COLOURS = {
    "ok": "#2e7d32", "failed": "#c62828", "timeout": "#ef6c00", "error": "#6a1b9a",
    "sandbox_unavailable": "#ad1457", "denied": "#4e342e", "cancelled": "#546e7a",
    "ignored": "#f9a825", "skipped": "#9e9e9e",
}
RECAP_COLUMNS = ("ok", "changed", "failed", "unreachable", "sandbox_unavailable", "denied", "skipped", "ignored",
                 "cancelled")
LABEL_W, CHART_W, ROW_H, BAR_H, AXIS_H = 180, 960, 28, 20, 24
MIN_BAR_W = 2.0
DOT = " \u00b7 "
# Everything but tab, newline and printable characters: C0/C1 controls, DEL, lone surrogates, noncharacters.
_UNPRINTABLE = re.compile("[^\t\n\x20-\x7e\xa0-\ud7ff\ue000-\ufdcf\ufdf0-\ufffd\U00010000-\U0010ffff]")


def esc(text: object) -> str:
    """``text`` safe anywhere in the page: controls made visible, then HTML-escaped (quotes too)."""
    return html.escape(_UNPRINTABLE.sub(escape_char, str(text)), quote=True)


def bar_status(event: TaskEvent) -> str:
    """The key into :data:`COLOURS`: the status, or ``ignored`` for a failure ignore_errors covers."""
    return "ignored" if event.failed and event.ignored else str(event.status)


@dataclass
class _Host:
    events: list[TaskEvent] = field(default_factory=list)
    policy: Optional[tuple[str, tuple[str, ...]]] = None  # (digest, sources)


class HtmlReporter(Reporter):
    def __init__(self, path: str, recap: Recap) -> None:
        self.path, self.recap = path, recap
        self._hosts: dict[str, _Host] = {}
        self._plays: list[str] = []
        self._lock = threading.Lock()

    def play_start(self, play: Play, hosts: list[str]) -> None:
        with self._lock:
            self._plays.append(play.name)
            for host in hosts:
                self._hosts.setdefault(host, _Host())

    def task_event(self, event: TaskEvent) -> None:
        with self._lock:
            host = self._hosts.setdefault(event.host, _Host())
            host.events.append(event)
            r = event.result
            if r is not None and r.policy_digest and host.policy is None:
                host.policy = (r.policy_digest, tuple(r.policy_sources))

    def host_unreachable(self, host: str, message: str) -> None:
        with self._lock:
            self._hosts.setdefault(host, _Host())

    def finish(self) -> None:
        with self._lock:
            page = render(self._plays, self._hosts, self.recap, datetime.now(timezone.utc))
        write_atomic(self.path, page.encode("utf-8", "surrogatepass"))


def _start(event: TaskEvent) -> Optional[datetime]:
    r = event.result
    if r is None or not r.started:
        return None
    try:
        stamp = datetime.fromisoformat(r.started.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _timeline(hosts: dict[str, _Host]) -> str:
    """One SVG row per host, one bar per timed result, on one time axis shared by all hosts."""
    spans = [(s, s.timestamp() + (e.result.duration_ms if e.result else 0) / 1000)
             for h in hosts.values() for e in h.events if (s := _start(e)) is not None]
    t0 = min((s.timestamp() for s, _ in spans), default=0.0)
    total = max((end for _, end in spans), default=t0) - t0
    total = total if total > 0 else 1.0
    scale = CHART_W / total
    height = AXIS_H + ROW_H * max(len(hosts), 1) + 4
    width = LABEL_W + CHART_W + 30
    out = [f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'role="img" aria-label="timeline per host">']
    for i in range(6):  # the time axis: six ticks, in seconds since the first task started
        x = LABEL_W + CHART_W * i / 5
        out.append(f'<line class="tick" x1="{x:.1f}" y1="{AXIS_H - 6}" x2="{x:.1f}" y2="{height}" '
                   f'stroke="#ddd" stroke-width="1"/>')
        out.append(f'<text class="axis" x="{x:.1f}" y="{AXIS_H - 10}" text-anchor="middle" font-size="11">'
                   f'{total * i / 5:.2f} s</text>')
    for row, (name, host) in enumerate(hosts.items()):
        y = AXIS_H + row * ROW_H
        out.append(f'<g class="host" data-host="{esc(name)}">')
        out.append(f'<text class="host-label" x="{LABEL_W - 8}" y="{y + ROW_H / 2 + 4:.1f}" text-anchor="end" '
                   f'font-size="12">{esc(_clip(name, 24))}<title>{esc(name)}</title></text>')
        cursor = 0.0
        for event in host.events:
            if event.result is None:  # skipped: nothing ran, nothing to draw
                continue
            start = _start(event)
            r = event.result
            x = (start.timestamp() - t0) * scale if start is not None else cursor
            w = max(r.duration_ms / 1000 * scale if start is not None else 0.0, MIN_BAR_W)
            cursor = x + w
            status = bar_status(event)
            backend = event.backend_label  # "no sandbox" only when the host had none that could hold it
            tip = (f"{name} \u00b7 {event.display_name} \u00b7 {status} \u00b7 {backend} \u00b7 "
                   f"{r.duration_ms} ms \u00b7 " + (f"started {r.started}" if start is not None else "no start time"))
            out.append(f'<rect class="bar status-{status}" data-host="{esc(name)}" '
                       f'data-task="{esc(event.display_name)}" '
                       f'data-status="{status}" data-backend="{esc(backend)}" x="{LABEL_W + x:.1f}" '
                       f'y="{y + (ROW_H - BAR_H) / 2:.1f}" width="{w:.1f}" height="{BAR_H}" rx="3" '
                       f'fill="{COLOURS[status]}"><title>{esc(tip)}</title></rect>')
            label = _bar_label(event.display_name, backend, int(w // 7))
            if label:
                out.append(f'<text class="bar-label" x="{LABEL_W + x + 4:.1f}" y="{y + ROW_H / 2 + 4:.1f}" '
                           f'font-size="11" fill="#fff">{esc(label)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _bar_label(task: str, backend: str, chars: int) -> str:
    """What fits in a bar ``chars`` characters wide: the task, clipped, then always its backend."""
    suffix = f" [{backend}]"
    if chars >= len(suffix) + 2:
        return _clip(task, chars - len(suffix)) + suffix
    return _clip(f"[{backend}]", chars) if chars >= 4 else ""


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:max(chars - 1, 1)] + "\u2026"


def _recap_table(recap: Recap) -> str:
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in RECAP_COLUMNS)
    rows = []
    for host, tally in recap.hosts.items():
        cells = "".join(_cell(tally, c) for c in RECAP_COLUMNS)
        rows.append(f'<tr data-host="{esc(host)}"><th scope="row">{esc(host)}</th>{cells}</tr>')
    return (f'<table class="recap"><thead><tr><th>host</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _cell(tally: HostTally, column: str) -> str:
    value = getattr(tally, column)
    mark = f' class="nonzero {column}"' if value and column not in ("ok", "changed", "skipped") else ""
    return f'<td data-col="{column}"{mark}>{value}</td>'


def _tail(text: str) -> str:
    lines = text.rstrip("\n").splitlines()
    cut = len(lines) > TAIL_LINES
    return (f"\u2026 (last {TAIL_LINES} lines)\n" if cut else "") + "\n".join(lines[-TAIL_LINES:])


def _failures(hosts: dict[str, _Host]) -> str:
    items = []
    for name, host in hosts.items():
        for event in host.events:
            if not event.failed:
                continue
            r, status = event.result, bar_status(event)
            parts = [f'<div class="failure" data-host="{esc(name)}" data-task="{esc(event.display_name)}" '
                     f'data-status="{status}">',
                     f'<h3><span class="chip" style="background:{COLOURS[status]}">{esc(status)}</span> '
                     f'{esc(name)}: {esc(event.display_name)}</h3>']
            if event.ignored:
                parts.append(f"<p>ignored (ignore_errors): the run went on; status {esc(event.status)}</p>")
            if r is not None:
                facts = [f"rc={r.rc}" if r.rc is not None else "no rc",
                         f"backend {r.backend}" if r.backend else event.backend_label, f"{r.duration_ms} ms"]
                parts.append(f'<p class="facts">{esc(DOT.join(facts))}</p>')
                if r.message:
                    parts.append(f'<p class="message">{esc(r.message)}</p>')
                for label, text, truncated in (("stdout", r.stdout, r.stdout_truncated),
                                               ("stderr", r.stderr, r.stderr_truncated)):
                    if text.strip():
                        note = " (truncated by the host)" if truncated else ""
                        parts.append(f'<h4>{label}{note}</h4><pre class="{label}">{esc(_tail(text))}</pre>')
            parts.append("</div>")
            items.append("\n".join(parts))
    return "\n".join(items) if items else '<p class="none">No task failed.</p>'


def _policies(hosts: dict[str, _Host]) -> str:
    rows = [f'<tr data-host="{esc(name)}"><th scope="row">{esc(name)}</th><td><code>{esc(h.policy[0])}</code></td>'
            f'<td>{esc(" > ".join(h.policy[1]))}</td></tr>'
            for name, h in hosts.items() if h.policy is not None]
    if not rows:
        return '<p class="none">No host reported its policy.</p>'
    return ('<table class="policy"><thead><tr><th>host</th><th>digest</th><th>sources (lowest first)</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:12px 0 4px}h4{font-size:12px;margin:8px 0 2px;color:#555}
table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
td{text-align:right}td.nonzero{background:#fde0dc;font-weight:bold}.policy td{text-align:left}
pre{background:#f6f6f6;border:1px solid #e3e3e3;padding:6px;overflow:auto;max-height:24em;white-space:pre-wrap}
.chip{color:#fff;border-radius:3px;padding:1px 6px;font-size:12px}.legend .chip{margin-right:6px}
.failure{border-left:4px solid #c62828;padding-left:10px;margin-bottom:14px}
.alert{background:#fde0dc;border:1px solid #c62828;padding:6px 10px}.meta{color:#555}
svg.timeline{font-family:system-ui,sans-serif;background:#fafafa;border:1px solid #e3e3e3}
"""


def render(plays: list[str], hosts: dict[str, _Host], recap: Recap, now: datetime) -> str:
    """The whole page; every value from the run goes through :func:`esc`."""
    code = recap.exit_code()
    alerts = []
    if recap.aborted is not None:
        alerts.append(f'<p class="alert aborted">play {esc(recap.aborted.play)} aborted: '
                      f'{esc(recap.aborted.reason)}</p>')
    for host, message in recap.unreachable_messages.items():
        alerts.append(f'<p class="alert unreachable" data-host="{esc(host)}">{esc(host)} unreachable: '
                      f'{esc(message)}</p>')
    legend = "".join(f'<span class="chip" style="background:{c}">{s.replace("_", " ")}</span>'
                     for s, c in COLOURS.items())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="referrer" content="no-referrer">
<title>sandfleet run report</title>
<style>{_CSS}</style>
</head>
<body>
<h1>sandfleet run report</h1>
<p class="meta">plays: {esc(", ".join(plays)) or "none"} &middot; hosts: {len(recap.hosts)} &middot;
exit code <span class="exit-code">{code}</span> &middot; written {now.strftime("%Y-%m-%d %H:%M:%S")} UTC</p>
{"".join(alerts)}
<h2>Timeline</h2>
<p class="legend">{legend}</p>
{_timeline(hosts)}
<h2>Recap</h2>
{_recap_table(recap)}
<h2>Failures</h2>
{_failures(hosts)}
<h2>Policy</h2>
{_policies(hosts)}
</body>
</html>
"""


__all__ = ["COLOURS", "HtmlReporter", "bar_status", "esc", "render"]
