"""What every sandbox backend provides: render a bound policy into the exact wrapper to run.

A backend is a small class plus a Jinja2 template. ``render`` is pure (it may look at the
filesystem through the policy's binding, but starts nothing), so a dry-run calls the very same
code as a run. Backends that must act inside the child (Landlock) also give a ``preexec`` hook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

from sandfleet_agent.backends.escaping import sh_join
from sandfleet_agent.binding.bind import BoundPolicy
from sandfleet_agent.binding.facts import HostFacts

#: The descriptor on which the agent hands bwrap the task's seccomp filter (``--seccomp 3``).
SECCOMP_FD = 3
#: The descriptor bwrap writes its JSON status on (``--json-status-fd 4``): the agent reads from it
#: whether the task's command itself started (:func:`.bwrap.start_failure`).
STATUS_FD = 4


class Refused(Exception):
    """This backend cannot enforce the policy as asked; the task fails closed with the reason."""


@dataclass(frozen=True)
class Wrapper:
    """The exact command that runs: ``argv`` for execve, plus any generated files (shown in a
    dry-run, e.g. the Landlock ruleset) and environment the sandbox adds."""

    backend: str
    argv: tuple[str, ...]
    files: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Optional[str] = None
    notes: tuple[str, ...] = ()  # what the backend did differently from the letter of the policy
    #: Empty mount points the sandbox leaves on the host (bwrap blocking a missing ``.git``). They
    #: are deliberately *not* removed: since Linux 3.18 removing a directory that is a mount point
    #: in another mount namespace detaches that mount, so cleaning up after one task could strip
    #: the read-only ``.git`` from a concurrent task's sandbox in the same workspace.
    placeholders: tuple[str, ...] = ()
    #: The socket mode of the seccomp filter the agent hands the sandbox (bwrap: on fd 3, see
    #: :mod:`..seccomp`); None when the backend installs its own (Landlock) or has none.
    seccomp: Optional[str] = None
    #: Private temp dirs the agent creates empty on the host before the task and removes after
    #: (Landlock's ``:tmpdir``; bwrap mounts a tmpfs instead, see ``sandbox_scratch``).
    host_scratch: tuple[str, ...] = ()
    #: Private temp dirs that exist only inside the sandbox (bwrap's tmpfs for ``:tmpdir``): a
    #: persistent sandbox empties them between tasks.
    sandbox_scratch: tuple[str, ...] = ()
    #: The descriptor the wrapper writes a status report on for the agent (bwrap: ``STATUS_FD``);
    #: None when it has none.
    status_fd: Optional[int] = None

    @property
    def display(self) -> str:
        return sh_join(self.argv)

    def inputs(self) -> Optional[dict[int, bytes]]:
        """What the command reads on extra descriptors when it starts: the seccomp filter."""
        if self.seccomp is None:
            return None
        from sandfleet_agent.linux import seccomp

        return {SECCOMP_FD: seccomp.program(self.seccomp)}


@dataclass(frozen=True)
class ProxyEndpoint:
    """Where the host-side proxy of a managed-network task can be reached.

    ``port`` is the loopback TCP port the sandboxed command is pointed at (``HTTP_PROXY`` and
    friends); ``socket_path`` is the proxy's Unix hand-off socket on the host, for backends that
    give the command a private network namespace (bwrap: the netns helper listens on ``port``
    inside it and passes that listener to the proxy through this socket, see ``netns.py``); it is
    ``None`` when the proxy listens on the host's own loopback ``port`` (Seatbelt). A backend asked
    for a managed network without an endpoint it can use refuses: there is nothing to route
    through, and it must never fall back to full.
    """

    port: int
    socket_path: Optional[str] = None


class Backend:
    name = "none"

    def __init__(self, facts: HostFacts, proxy: Optional[ProxyEndpoint] = None) -> None:
        self.facts = facts
        self.proxy = proxy

    def render(self, policy: BoundPolicy, argv: Sequence[str]) -> Wrapper:
        raise NotImplementedError

    def preexec(self, wrapper: Wrapper) -> Optional[Callable[[], None]]:
        """A hook to run in the child between fork and exec; ``None`` for most backends."""
        return None


class Bare(Backend):
    """No sandbox at all: only for tasks that said ``sandbox: false`` with the operator's consent."""

    name = "none"

    def render(self, policy: BoundPolicy, argv: Sequence[str]) -> Wrapper:
        return self.render_bare(argv, policy.cwd)

    def render_bare(self, argv: Sequence[str], cwd: Optional[str]) -> Wrapper:
        return Wrapper(self.name, tuple(argv), cwd=cwd)
