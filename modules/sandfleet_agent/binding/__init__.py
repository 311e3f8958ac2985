"""From a portable intent to this host's concrete policy, and whether it may run at all.

The host's facts (:mod:`.facts`), what host-side code may know of its filesystem
(:mod:`.hostfs`), admission of one request against the effective policy (:mod:`.admission`) and
binding symbols to ordered, canonical paths (:mod:`.bind`). Imports :mod:`sandfleet_agent.portable`,
:mod:`sandfleet_agent.bounds` and, to probe what works here, :mod:`sandfleet_agent.linux`; never a
backend.
"""
