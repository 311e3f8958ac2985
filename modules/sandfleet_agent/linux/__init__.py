"""Linux machinery under the bwrap and Landlock backends.

The seccomp filter every sandboxed task runs under (:mod:`.seccomp`), Landlock's syscalls and
rulesets (:mod:`.landlock_ruleset`) with their by-hand runner (:mod:`.landlock_exec`), and the
persistent bwrap sandbox (:mod:`.sandbox_pool`) with its pid 1 (:mod:`.sandbox_init`, standard
library only: it runs inside the sandbox, where nothing of sandfleet is readable).
"""
