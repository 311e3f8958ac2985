"""The environment that points a sandboxed command at its managed-network proxy.

Shared by every backend that offers the proxy on a loopback port (bwrap sets it with
``--setenv``, so a dry-run shows it; others may put it in ``Wrapper.env``). The variable names
follow Codex's list: the generic ``*_PROXY`` pair in both cases (curl reads only the
lower-case ``http_proxy``; Python and Go read either), ``ALL_PROXY``, and the tool-specific names
npm, yarn, pip, bundler and docker read. ``NO_PROXY`` keeps loopback direct: inside the sandbox's
network namespace it reaches only what the command itself started there. Which tools honour
these out of the box was checked, not assumed: ``bench/proxy_tools.py``.

One URL serves everything: the proxy speaks HTTP (``CONNECT`` and absolute-URI requests) and
SOCKS5 on the same port, so ``ALL_PROXY`` can stay ``http://`` (readable by every client) and
``socks5h://`` works too for clients that ask for it.
"""

from __future__ import annotations

#: The loopback port the proxy is offered on inside a private network namespace (Codex's default).
SANDBOX_PROXY_PORT = 3128

_URL_KEYS = (
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
    "WS_PROXY", "WSS_PROXY",
    "npm_config_proxy", "npm_config_http_proxy", "npm_config_https_proxy",
    "NPM_CONFIG_PROXY", "NPM_CONFIG_HTTP_PROXY", "NPM_CONFIG_HTTPS_PROXY",
    "YARN_HTTP_PROXY", "YARN_HTTPS_PROXY",
    "PIP_PROXY",
    "BUNDLE_HTTP_PROXY", "BUNDLE_HTTPS_PROXY",
    "DOCKER_HTTP_PROXY", "DOCKER_HTTPS_PROXY",
)
_NO_PROXY_KEYS = ("NO_PROXY", "no_proxy", "npm_config_noproxy", "NPM_CONFIG_NOPROXY", "YARN_NO_PROXY",
                  "BUNDLE_NO_PROXY")
NO_PROXY = "localhost,127.0.0.1,::1"


def proxy_env(port: int = SANDBOX_PROXY_PORT) -> dict[str, str]:
    """Variables (name → value, in a stable order) for a proxy on ``127.0.0.1:port``."""
    url = f"http://127.0.0.1:{port}"
    env = dict.fromkeys(_URL_KEYS, url)
    env.update(dict.fromkeys(_NO_PROXY_KEYS, NO_PROXY))
    env["NODE_USE_ENV_PROXY"] = "1"  # Node >= 24 routes fetch/http through the *_PROXY variables
    env["SANDFLEET_NETWORK_PROXY"] = url  # a marker, like Codex's CODEX_NETWORK_PROXY_ACTIVE
    return env
