"""sandfleet_agent: the host side of sandfleet, the one package that travels to every host.

It runs there alone (from the agent's zip, or installed beside the controller under this same
name), so it imports only the standard library and Jinja2, never :mod:`sandfleet`; a test holds
it to that. Code here stays compatible with Python 3.9, the oldest interpreter a host may offer.

The flow of one task on a host, folder by folder (docs/architecture.md draws the tree):

- :mod:`.portable`: what travels and means the same on every OS: the intent, the wire format,
  file URIs, deny globs, the policy layers and task limits.
- :mod:`.binding`: this host's facts, what host code may see of its filesystem, admission, and
  binding the symbolic intent to concrete paths.
- :mod:`.backends`: choosing the sandbox and rendering its wrapper from the templates beside it
  (bwrap, Landlock, Seatbelt, Windows).
- :mod:`.linux`: Linux machinery under those backends: seccomp, Landlock syscalls, the persistent
  bwrap sandbox and its init.
- :mod:`.network`: the managed network: the allow/deny decision, the proxy, its namespace.
- here: :mod:`.agent` (the loop over stdin/stdout), :mod:`.executor` (one request in, one
  result out), :mod:`.spawn` (the process), :mod:`.bounds` (its limits made real), :mod:`.paths`,
  :mod:`.dataclass_code` (what the agent's start keeps compiled between runs).

Lower layers never import higher ones; docs/architecture.md lists who may import whom and
tests/test_layers.py holds the code to it.
"""

__version__ = "0.1.0"  # sandfleet's one version (the controller and pyproject read it here)
