"""Run: schedule the selected hosts and take each through its tasks.

:mod:`.scheduler` orders plays, batches and hosts (a :class:`~.scheduler.HostSet` is the hosts of
a run or of an open fleet), :mod:`.hostloop` is one host's tasks (``when``, ``loop``,
``register``), :mod:`.requests` turns a task and a host's variables into its wire request, and
:mod:`.dry` is the dry-run connection, :mod:`.pipeline` which tasks a host may be sent ahead
in one batch, :mod:`.fleetvars` what one host's templates see of the others (``hostvars``, the
play's host lists) and :mod:`.slicing` which hosts a ``--slice K/N`` run takes. Imports load,
inventory, templating, transports and report; only :mod:`sandfleet.api` imports run.
"""
