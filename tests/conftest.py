"""Fixtures and hooks shared by every test folder (none yet); helpers live in ``tests/support/``.

This file also puts ``tests/`` on ``sys.path``: pytest's default (prepend) import mode inserts the
directory of a rootdir-level ``conftest.py``, which is how ``from support.ci import need`` resolves
from any folder, even when a single test file is run. Keep it, even empty.
"""
