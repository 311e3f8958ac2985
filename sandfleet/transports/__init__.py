"""Transports: how the agent reaches and runs on a host.

The seam (:mod:`.base`: a connection that starts the agent and runs requests), the local
subprocess (:mod:`.local`), SSH over paramiko (:mod:`.ssh`, with :mod:`.sshconfig` for where and
how, :mod:`.hostkeys` for known_hosts and :mod:`.bootstrap` for the zip that carries the host side).
Imports the host side's wire format and :mod:`sandfleet.inventory` for a host's configuration;
never run or report.
"""
