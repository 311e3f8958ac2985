"""The managed network: a task's only way out is a proxy that asks the operator's allowlist.

The allow/deny decision (:mod:`.netpolicy`), the proxy itself (:mod:`.netproxy`), the environment
that points a task at it (:mod:`.proxyenv`) and, on Linux, the private network namespace whose one
route is that proxy (:mod:`.netns`, also run as a standalone script, hence standard library only).
"""
