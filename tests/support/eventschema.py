"""Every ``--format json`` event a test reads is checked against ``docs/events.schema.json``.

The test helpers that parse a run's or dry-run's stdout go through :func:`parse`, so every event
the suite produces is validated; ``run_start`` must come first, exactly once, and is returned
apart so the helpers' callers keep indexing task results as before.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "events.schema.json"


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)  # type: ignore[no-any-return]


def validate(event: dict[str, Any]) -> None:
    _validator().validate(event)


#: Progress events (docs/events.md): validated, and left out of what :func:`parse` returns
#: unless asked for, so the results the helpers' callers index stay where they were.
PROGRESS = ("play_start", "task_start")


def parse(stdout: str, progress: bool = False) -> list[dict[str, Any]]:
    """The events of one ``--format json`` stdout after ``run_start``, each validated;
    ``play_start``/``task_start`` only with ``progress``."""
    events = [json.loads(line) for line in stdout.splitlines()]
    for event in events:
        validate(event)
    if not events:
        return []
    assert events[0]["event"] == "run_start", events[0]
    assert [e["event"] for e in events].count("run_start") == 1
    return [e for e in events[1:] if progress or e["event"] not in PROGRESS]
