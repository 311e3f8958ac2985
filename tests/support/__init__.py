"""Helpers the tests (and ``bench/``) import as ``from support.x import y``; no tests here.

``tests/`` is on ``sys.path`` because pytest (prepend import mode) inserts the directory of
``tests/conftest.py``; ``bench/`` scripts insert it themselves. Each module imports only what it
needs, so a bench script importing :mod:`support.sshd` does not pull in the test dependencies.

- :mod:`support.ci`: :func:`~support.ci.need`, skip locally but fail under CI.
- :mod:`support.eventschema`: every ``--format json`` event checked against the schema.
- :mod:`support.netservers`: real HTTP/HTTPS/echo/UDP servers for the managed network.
- :mod:`support.policies`: the widest operator policy, for tests about something else.
- :mod:`support.report_fakes`: plain-data plays, tasks and events for the output tests.
- :mod:`support.sshd`: real OpenSSH test hosts on loopback (tests/runner, bench/).
- :mod:`support.unprivileged`: running test code as the unprivileged test user.
- :mod:`support.wrappers`: running a rendered bwrap wrapper by hand, as the agent does.
"""
