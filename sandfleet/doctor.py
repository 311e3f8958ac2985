"""``sandfleet doctor`` and ``sandfleet facts``: what sandboxing can work on a host, why not, and the fix.

Pure judgement over what a host's agent reported at its start (:class:`HostFacts`, the hello)
and, for ``doctor``, one trial command under the default sandbox intent (:class:`Trial`): the
trial is the proof that the default intent can be enforced, the facts explain why not and what
to change. :func:`diagnose` turns them into :class:`Check` lines, each with the exact fix (a
package, a sysctl line, an AppArmor profile, an inventory variable); ``sandfleet.api.doctor`` and
``sandfleet.api.facts`` reach the hosts, the command line prints :func:`doctor_text` /
:func:`facts_text` or the JSON objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from sandfleet.report.recap import EXIT_NO_HOSTS
from sandfleet.report.terminal import printable
from sandfleet_agent.binding.facts import MAX_ABI_ENV, HostFacts, split_reason
from sandfleet_agent.portable.policy import HOST_FILES

#: The states of a check, worst last: ``fail`` stops the default intent (or what the operator
#: pinned) on this host, ``warn`` weakens it or its limits, ``info`` is context.
STATES = ("ok", "info", "warn", "fail")

#: The exit bits (= docs/architecture.md §6): a host unreachable, a host that cannot enforce the
#: default sandbox intent, a host whose own policy refuses it.
EXIT_UNREACHABLE, EXIT_NO_SANDBOX, EXIT_DENIED = 4, 8, 16

BWRAP_PACKAGE = ("install bubblewrap: apt-get install bubblewrap (Debian, Ubuntu), dnf install bubblewrap (Fedora, "
                 "RHEL), apk add bubblewrap (Alpine), pacman -S bubblewrap (Arch), zypper install bubblewrap (SUSE)")
SYSCTL_FILE = "/etc/sysctl.d/60-sandfleet-userns.conf"
LANDLOCK_PIN = "sandfleet_sandbox: landlock"


def _sysctl_fix(name: str, value: str) -> str:
    return f"sysctl -w {name}={value}, and to keep it after a reboot: echo '{name} = {value}' > {SYSCTL_FILE}"


def apparmor_fix(bwrap: str = "/usr/bin/bwrap") -> str:
    """Ubuntu 23.10+: an AppArmor profile that lets bwrap (only) create user namespaces."""
    return (f"give bwrap an AppArmor profile that allows user namespaces: write /etc/apparmor.d/bwrap with "
            f"'abi <abi/4.0>, include <tunables/global> profile bwrap {bwrap} flags=(unconfined) {{ userns, "
            f"include if exists <local/bwrap> }}' and load it: apparmor_parser -r /etc/apparmor.d/bwrap (or, for "
            f"every program: {_sysctl_fix('kernel.apparmor_restrict_unprivileged_userns', '0')})")


CONTAINER_SECCOMP_FIX = ("start the agent's container with a seccomp profile that allows unshare and clone with "
                         "CLONE_NEWUSER (docker/podman run --security-opt seccomp=PROFILE.json, a copy of the "
                         "default profile with those allowed; seccomp=unconfined also works), or run the agent "
                         f"outside the container; or, for an agent run as an unprivileged user: {LANDLOCK_PIN}")


SUPERVISOR_SECCOMP_FIX = ("start the agent without that filter: for a systemd unit, drop the SystemCallFilter= "
                          "and RestrictNamespaces= lines that forbid user namespaces; for a container, see its "
                          "runtime's seccomp profile; or, for an agent run as an unprivileged user: " + LANDLOCK_PIN)


@dataclass(frozen=True)
class Check:
    """One thing looked at: its ``state`` (:data:`STATES`), what was found, and how to fix it."""

    name: str
    state: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"name": self.name, "state": self.state, "detail": self.detail}
        if self.fix:
            out["fix"] = self.fix
        return out


@dataclass(frozen=True)
class Trial:
    """The one command ``doctor`` runs on a host under the default sandbox intent (workspace
    profile, network none) and the operator's policy: its status (a wire status: ``ok``,
    ``sandbox_unavailable``, ``denied``, ...), backend, message and the policy layers it met."""

    status: str
    backend: Optional[str] = None
    message: Optional[str] = None
    policy_sources: tuple[str, ...] = ()
    limits_mechanism: Optional[str] = None


@dataclass(frozen=True)
class HostReport:
    """One host: the facts its agent reported, the trial, the checks, and the verdict."""

    host: str
    facts: Optional[HostFacts] = None
    trial: Optional[Trial] = None
    checks: tuple[Check, ...] = ()
    unreachable: Optional[str] = None
    pin: Optional[str] = None

    @property
    def enforced(self) -> bool:
        """The default sandbox intent ran sandboxed on this host: the trial command exited 0, or
        its sandbox was set up and the command failed inside it (an agent refuses a sandbox it
        cannot set up as ``sandbox_unavailable``, never as ``failed``)."""
        return self.trial is not None and (self.trial.status == "ok"
                                           or (self.trial.status == "failed" and self.trial.backend is not None))

    @property
    def exit_bits(self) -> int:
        if self.unreachable is not None:
            return EXIT_UNREACHABLE
        if self.trial is not None and self.trial.status == "denied":
            return EXIT_DENIED
        return 0 if self.enforced else EXIT_NO_SANDBOX

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.host, "enforced": self.enforced}
        if self.unreachable is not None:
            out["unreachable"] = self.unreachable
        if self.trial is not None:
            out["backend"] = self.trial.backend
            out["trial"] = {"status": self.trial.status, "backend": self.trial.backend,
                            "message": self.trial.message, "policy_sources": list(self.trial.policy_sources)}
        if self.pin:
            out["pin"] = self.pin
        out["checks"] = [c.to_json() for c in self.checks]
        if self.facts is not None:
            out["facts"] = self.facts.to_dict()
        return out


@dataclass(frozen=True)
class DoctorResult:
    """Every targeted host's report (inventory order) and the exit code: 0 every host can
    enforce the default sandbox intent; bits 4 a host unreachable, 8 a host cannot enforce it,
    16 a host's own policy refuses it; 1 when the pattern matched no host, so nothing was
    looked at (as a run that matched no host: it must not read as a clean bill of health)."""

    hosts: Mapping[str, HostReport] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if not self.hosts:
            return EXIT_NO_HOSTS
        code = 0
        for report in self.hosts.values():
            code |= report.exit_bits
        return code


# -- the checks ----------------------------------------------------------------------------------


def diagnose(host: str, facts: Optional[HostFacts], *, trial: Optional[Trial] = None, pin: Optional[str] = None,
             linux_backends: Sequence[str] = ("bwrap",), unreachable: Optional[str] = None) -> HostReport:
    """The report for one host. ``pin`` is its ``sandfleet_sandbox``, ``linux_backends`` the
    backends the operator's policy allows (in order), ``trial`` what the trial command met."""
    if facts is None:
        return HostReport(host, None, trial, (), unreachable or "the agent did not start", pin)
    checks: list[Check] = [agent_check(facts)]
    if facts.os == "linux":
        wanted = [pin] if pin else list(linux_backends)
        checks += [bwrap_check(facts, "bwrap" in wanted), userns_check(facts), landlock_check(facts, wanted, pin),
                   seccomp_check(facts), limits_check(facts)]
    elif facts.os in ("macos", "windows"):
        checks.append(_backend_check(facts, "seatbelt" if facts.os == "macos" else "windows"))
        checks.append(limits_check(facts))
    if trial is not None:
        checks += [policy_check(facts, trial), intent_check(facts, trial, checks, pin)]
    return HostReport(host, facts, trial, tuple(checks), unreachable, pin)


def agent_check(facts: HostFacts) -> Check:
    who = "root" if facts.euid == 0 else f"{facts.user or '?'} (uid {facts.euid})" if facts.euid >= 0 else facts.user
    where = f"; in a {facts.container} container" if facts.container else ""
    machine = f" {facts.machine}" if facts.machine else ""
    kernel = f", kernel {facts.kernel}" if facts.kernel else ""
    return Check("agent", "ok", f"Python {facts.python} as {who} on {facts.os}{machine}{kernel}{where}")


def bwrap_check(facts: HostFacts, wanted: bool) -> Check:
    """bwrap present (its version) and able to start a sandbox; its fix when not."""
    status = facts.backend("bwrap")
    bad = "fail" if wanted else "info"
    unused = "" if wanted else " (not used: the operator chose another backend for this host)"
    if status is None:
        return Check("bwrap", bad, "not probed by this agent" + unused)
    version = status.version or "bwrap (version unknown)"
    if status.available:
        if not status.proc:
            return Check("bwrap", "warn", f"{version} at {status.path} works, but sandboxes get an empty /proc: "
                         f"{status.proc_reason}", "nothing needed; for a real /proc run the agent where /proc "
                         "is not overmounted (the host, or a privileged container)")
        return Check("bwrap", "ok", f"{version} at {status.path}{unused}")
    if status.path is None:  # not installed, or not where only root could have put it
        return Check("bwrap", bad, status.reason.split("; install the")[0] + unused, BWRAP_PACKAGE)
    cause, fix = userns_problem(facts)
    if not cause:  # not a user namespace problem: bwrap's own words, split into cause and fix
        cause, fix, _ = split_reason(status.reason)
    return Check("bwrap", bad, f"{version} at {status.path} cannot start a sandbox: {cause}" + unused, fix)


def userns_problem(facts: HostFacts) -> tuple[str, str]:
    """Why user namespaces are refused to this agent and the exact fix, from its sysctls, its
    container and bwrap's own failure; ``("", "")`` when nothing points at them."""
    sysctl = dict(facts.sysctls)
    status = facts.backend("bwrap")
    failed = status is not None and not status.available and status.path is not None
    reason = status.reason if status is not None else ""
    root = facts.euid == 0
    if not root and sysctl.get("kernel.unprivileged_userns_clone") == "0":
        return ("kernel.unprivileged_userns_clone=0: this kernel lets only root create user namespaces",
                _sysctl_fix("kernel.unprivileged_userns_clone", "1"))
    if sysctl.get("user.max_user_namespaces") == "0":
        return ("user.max_user_namespaces=0: no user namespace may be created here",
                _sysctl_fix("user.max_user_namespaces", "15000"))
    if not root and sysctl.get("kernel.apparmor_restrict_unprivileged_userns") == "1" and (failed or status is None
                                                                                          or status.path is None):
        return ("kernel.apparmor_restrict_unprivileged_userns=1: AppArmor refuses user namespaces to programs "
                "without a profile that allows them (Ubuntu 23.10+)",
                apparmor_fix(status.path if status is not None and status.path else "/usr/bin/bwrap"))
    cause, fix, userns = split_reason(reason)
    # EPERM, in bwrap's words or in Debian's patched ones ("No permissions to create new namespace,
    # likely because the kernel does not allow ..."), while no sysctl above refuses: the filter the
    # agent runs under is what forbids it (Docker's and podman's default profiles do).
    refused = "not permitted" in reason.lower() or "no permissions to creat" in reason.lower()
    if failed and userns and facts.seccomp_mode == 2 and refused:
        if facts.container:
            return (f"this {facts.container} container runs the agent under a seccomp filter that forbids "
                    f"unshare/clone of user namespaces ({cause})", CONTAINER_SECCOMP_FIX)
        return (f"the agent runs under a seccomp filter, set by whatever started it, that forbids unshare/clone "
                f"of user namespaces ({cause})", SUPERVISOR_SECCOMP_FIX)
    if failed and userns:
        return cause, fix
    return "", ""


def userns_check(facts: HostFacts) -> Check:
    sysctls = ", ".join(f"{k}={v}" for k, v in facts.sysctls) or "none of the gating sysctls exist here"
    status = facts.backend("bwrap")
    cause, fix = userns_problem(facts)
    who = "root" if facts.euid == 0 else "unprivileged"
    if status is not None and status.available:
        return Check("userns", "ok", f"user namespaces can be created by this agent ({who}; {sysctls})")
    if cause and status is not None and status.path is not None:
        return Check("userns", "fail", f"user namespaces are refused: {cause}", fix)
    if status is not None and status.path is not None:  # bwrap fails for another reason (loopback, /proc/sys)
        return Check("userns", "info", f"not what stops bwrap here ({sysctls}); see bwrap")
    if cause:  # bwrap is missing; this would stop it next
        return Check("userns", "warn", f"once bwrap is installed: {cause}", fix)
    return Check("userns", "info", f"not tried without a working bwrap ({sysctls})")


def landlock_check(facts: HostFacts, wanted: Sequence[str], pin: Optional[str]) -> Check:
    """Landlock's ABI, and that it is used only where the operator pins it and never for root."""
    status = facts.backend("landlock")
    chosen = "landlock" in wanted
    how = "pinned by sandfleet_sandbox" if pin == "landlock" else "listed in the policy's linux_backends"
    rule = (f"used only where the operator pins it ({LANDLOCK_PIN} in the inventory, or linux_backends in "
            "sandfleet_policy), never for an agent run as root")
    privileged = facts.euid == 0 or facts.cap_eff != 0
    who = "as root" if facts.euid == 0 else f"with capabilities (CapEff {facts.cap_eff:#x})"
    if status is None or not status.available:
        why = status.reason if status is not None else "not probed by this agent"
        fix = landlock_fix(why)
        if chosen:
            return Check("landlock", "fail", f"{how}, but {why}", f"{fix}; or drop {LANDLOCK_PIN} to use bwrap")
        return Check("landlock", "info", f"{why}; {rule}")
    abi = facts.landlock_abi
    if chosen and privileged:
        return Check("landlock", "fail", f"ABI {abi}, {how}, but the agent runs {who} and Landlock never runs "
                     "a privileged agent's tasks (it takes no capability away)",
                     f"run the agent as an unprivileged user (ansible_user in the inventory), or drop {LANDLOCK_PIN}"
                     " so bwrap (which drops root's powers) is used")
    if chosen and abi < 4:
        return Check("landlock", "warn", f"ABI {abi}, {how}: network none needs ABI 4 (Linux 6.7), so tasks "
                     "without network are refused", "upgrade the kernel to 6.7 or later")
    if chosen:
        return Check("landlock", "ok", f"ABI {abi}, {how}")
    bwrap = facts.backend("bwrap")
    if privileged:
        return Check("landlock", "info", f"ABI {abi}; {rule}: this agent runs {who}, so not here")
    if bwrap is not None and not bwrap.available:
        return Check("landlock", "info", f"ABI {abi}; {rule}", f"a way out while bwrap cannot run: {LANDLOCK_PIN} "
                     "for this host in the inventory (Landlock has no managed network and hides no processes)")
    return Check("landlock", "info", f"ABI {abi}; {rule}")


def landlock_fix(why: str) -> str:
    """The fix for the reason the agent gave (facts.probe_landlock): the variable that turned it
    off, the boot parameter of a kernel that has it, or a kernel that has it."""
    if MAX_ABI_ENV in why:
        return (f"remove {MAX_ABI_ENV} from the agent's environment (it caps the Landlock ABI, 0 turns "
                "Landlock off; over SSH the login's environment: sshd's SetEnv or ~/.ssh/environment)")
    if "disabled at boot" in why:
        return ("add landlock to the lsm= kernel boot parameter and reboot (e.g. "
                "lsm=landlock,lockdown,yama,integrity,apparmor; >= 6.7 for network none)")
    return ("boot a kernel >= 5.13 (>= 6.7 for network none) with landlock in the lsm= boot parameter "
            "(e.g. lsm=landlock,lockdown,yama,integrity,apparmor)")


def seccomp_check(facts: HostFacts) -> Check:
    if not facts.machine:
        return Check("seccomp", "info", "the agent did not report its machine (an older agent)")
    from sandfleet_agent.linux.seccomp import machine_name  # only here: its syscall tables are not free

    name = machine_name(facts.machine)
    if name is None:
        return Check("seccomp", "fail", f"sandfleet has no seccomp filter for {facts.machine} (only x86_64 and "
                     "aarch64): every sandboxed task needs it, so none can run here",
                     "run sandboxed tasks on an x86_64 or aarch64 host")
    own = " (the agent itself runs under a seccomp filter)" if facts.seccomp_mode == 2 else ""
    return Check("seccomp", "ok", f"filter for {name}{own}")


def limits_check(facts: HostFacts) -> Check:
    """How memory and process limits are made real: a cgroup (v2 delegated, v1 as root) or rlimits."""
    if facts.limits == "cgroup2":
        return Check("limits", "ok", "cgroup v2: a delegated cgroup with the memory and pids controllers")
    if facts.limits == "cgroup1":
        return Check("limits", "ok", "cgroup v1 (the agent runs as root): memory and pids controllers")
    if facts.limits == "rlimit" and facts.os == "macos":
        return Check("limits", "info", "rlimits (macOS has no cgroups)")
    if facts.limits == "rlimit":
        fix = ("give the agent a delegated cgroup v2 with memory and pids: run it in a systemd unit or scope "
               "with Delegate=yes (systemd-run --user --scope -p Delegate=yes ..., or for all users "
               "'systemctl edit user@.service' with [Service] Delegate=memory pids), or run the agent as root "
               "on a cgroup v1 host")
        return Check("limits", "warn", f"rlimits only: {facts.limits_reason or 'no cgroup can be created here'}",
                     fix)
    return Check("limits", "info", facts.limits_reason or "not reported by this agent")


def _backend_check(facts: HostFacts, name: str) -> Check:
    status = facts.backend(name)
    if status is None:
        return Check(name, "fail", "not probed by this agent")
    if status.available:
        return Check(name, "ok", f"{status.path or name}")
    return Check(name, "fail", status.reason, "reinstall the OS component named" if name == "windows"
                 else "restore /usr/bin/sandbox-exec (part of macOS)")


def _host_file(source: str, home: str) -> bool:
    return any(source == (home.rstrip("/") + name[1:] if name.startswith("~/") else name) for name in HOST_FILES)


def policy_check(facts: HostFacts, trial: Trial) -> Check:
    """The policy layers in force: the operator's, ``--policy``, and the host owner's files."""
    if not trial.policy_sources:
        if trial.status == "denied":
            return Check("policy", "fail", trial.message or "the policy refuses the default intent",
                         "fix or remove the file named (the agent refuses every task while it is invalid)"
                         if "invalid" in (trial.message or "") else "")
        return Check("policy", "info", "the layers were not reported")
    owner = [s for s in trial.policy_sources if _host_file(s, facts.home)]
    operator = [s for s in trial.policy_sources if s not in owner]
    looked = ", ".join(HOST_FILES)
    mine = ", ".join(owner) if owner else f"none ({looked} do not exist)"
    return Check("policy", "ok", f"operator: {'; '.join(operator)}; host owner's files: {mine}")


def intent_check(facts: HostFacts, trial: Trial, checks: Sequence[Check], pin: Optional[str]) -> Check:
    """The verdict of the trial command, with the first fix the other checks found."""
    if trial.status == "ok":
        return Check("default intent", "ok", f"enforced with {trial.backend} (a trial command ran in the workspace "
                     "profile with network none)")
    message = trial.message or trial.status
    if trial.status == "failed" and trial.backend is not None:
        return Check("default intent", "warn", f"enforced with {trial.backend}, but the trial command failed "
                     f"inside the sandbox: {message}", "nothing for the sandbox; /bin/sh -c 'exit 0' itself failed "
                     "in it (the message says why), and tasks that start a shell will fail the same way")
    if trial.status == "denied":
        return Check("default intent", "fail", f"refused by the policy: {message}",
                     "the layer named sets what may run; its owner can widen it")
    fixes = [c.fix for c in checks if c.state == "fail" and c.fix]
    fix = fixes[0] if fixes else ""
    if not fix and facts.os == "linux" and not pin:
        fix = f"make bwrap work here, or (agent not root) {LANDLOCK_PIN}"
    return Check("default intent", "fail", f"cannot be enforced ({trial.status}): {message}", fix)


# -- output --------------------------------------------------------------------------------------


def doctor_text(result: DoctorResult) -> str:
    """One block per host: each check on a line, its fix under it; a verdict per host."""
    lines: list[str] = []
    for report in result.hosts.values():
        if report.unreachable is not None:
            lines.append(f"{report.host} | UNREACHABLE | {report.unreachable}")
            continue
        verdict = ("the default sandbox can be enforced" if report.enforced
                   else "the default sandbox is refused by a policy" if report.exit_bits == EXIT_DENIED
                   else "the default sandbox CANNOT be enforced")
        lines.append(f"{report.host} | {'OK' if report.enforced else 'PROBLEM'} | {verdict}")
        for check in report.checks:
            lines.append(f"  {check.state:<5} {check.name:<15} {check.detail}")
            if check.fix:
                lines.append(f"        {'':<15} fix: {check.fix}")
    return printable("\n".join(lines)) + "\n" if lines else ""


def doctor_json(result: DoctorResult) -> str:
    """One JSON object per host, one per line."""
    return "".join(json.dumps(r.to_json(), sort_keys=False) + "\n" for r in result.hosts.values())


@dataclass(frozen=True)
class HostFactsResult:
    """What ``sandfleet facts`` shows for one host: its agent's facts, or why it was not reached."""

    host: str
    facts: Optional[HostFacts] = None
    unreachable: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        if self.facts is None:
            return {"host": self.host, "unreachable": self.unreachable}
        return {"host": self.host, "facts": self.facts.to_dict()}


def facts_text(results: Sequence[HostFactsResult]) -> str:
    """One readable block per host: ``host | OK`` then one ``key: value`` line per fact."""
    lines: list[str] = []
    for r in results:
        if r.facts is None:
            lines.append(f"{r.host} | UNREACHABLE | {r.unreachable}")
            continue
        lines.append(f"{r.host} | OK | {r.facts.os} {r.facts.machine}".rstrip())
        for key, value in r.facts.to_dict().items():
            if key == "backends":
                for b in value:
                    state = "available" if b["available"] else "unavailable"
                    extra = [x for x in (b.get("version"), b.get("path"), b.get("reason")) if x]
                    proc = [] if b.get("proc", True) else [f"no fresh /proc: {b.get('proc_reason')}"]
                    lines.append(f"  backend {b['name']}: {state}" + (f" ({'; '.join(extra + proc)})"
                                                                      if extra or proc else ""))
            elif key == "sysctls":
                for name, v in value:
                    lines.append(f"  sysctl {name}: {v}")
            elif isinstance(value, (list, tuple)):
                lines.append(f"  {key}: {', '.join(map(str, value)) if value else '-'}")
            else:
                lines.append(f"  {key}: {value if value not in ('', None) else '-'}")
    return printable("\n".join(lines)) + "\n" if lines else ""


def facts_json(results: Sequence[HostFactsResult]) -> str:
    return "".join(json.dumps(r.to_json()) + "\n" for r in results)
