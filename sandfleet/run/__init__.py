"""Run: select hosts, schedule them, and take each host through its tasks.

:mod:`.command` is ``sandfleet run`` (load, select, run or dry-run, report), :mod:`.scheduler`
orders plays, batches and hosts, :mod:`.hostloop` is one host's tasks (``when``, ``loop``,
``register``), :mod:`.requests` turns a task and a host's variables into its wire request, and
:mod:`.dry` is the dry-run connection. Imports load, inventory, templating, transports and
report; nothing imports run but the command line.
"""
