"""What travels between controller and host and means the same on every OS.

The sandbox intent (:mod:`.intent`), its wire format (:mod:`.wire`), concrete paths as file URIs
(:mod:`.pathuri`), deny globs (:mod:`.globs`, validated on the controller with the hosts' own
rules), the policy layers and their check (:mod:`.policy`) and task limits (:mod:`.limits`).
Imports only the standard library and :mod:`sandfleet_agent.paths`; the controller imports
these modules to speak the wire.
"""
