"""What a test needs from the machine: skipped on a developer's machine, failed under CI.

:func:`need` skips a test whose tool is missing on a developer's machine, but fails it under CI
(``CI`` set), where .ci/run installs everything: nothing may skip there.
"""

from __future__ import annotations

import os

import pytest


def need(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)
