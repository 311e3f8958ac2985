"""The host side of sandfleet: intent model, wire format, binding, sandbox backends, agent.

This package travels to every host and runs there alone, so it imports only the standard library
and Jinja2, never the controller. Its modules use relative imports so the package can be imported
under any name (``sandfleet.modules`` when installed, another name inside the agent's zip).
Code here stays compatible with Python 3.9, the oldest interpreter a host may offer.
"""
