"""Who a request really comes from behind a reverse proxy: the ``trusted_proxies`` setting, applied once.

A proxy (the nginx of ``docs/viewer.md``) connects from its own address and names the browser in
``X-Forwarded-For``; the header is believed only when the socket peer is one of ``trusted_proxies`` (addresses
or networks such as ``10.0.0.0/8``), and then the client is the nearest address of the header that is not itself
a trusted proxy — what uvicorn's proxy-headers middleware computes, with the same setting passed to it as
``forwarded_allow_ips`` (``services/service.py``). Whether uvicorn has already rewritten the peer or not (the app
run by another server, or in process by tests), :func:`client_address` gives the same answer: the rule is
idempotent. The sign-in rate limit counts failures per :func:`client_address`, so that users behind one proxy
do not share a bucket and a client that is not a proxy cannot choose its own.

Example
-------
>>> is_trusted("10.1.2.3", ["10.0.0.0/8"]), is_trusted("10.1.2.3", ["127.0.0.1"]), is_trusted("", ["*"])
(True, False, False)
>>> nearest_client("203.0.113.7, 10.0.0.2", ["10.0.0.0/8"])
'203.0.113.7'
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import Request


def is_trusted(address: str, proxies: Sequence[str]) -> bool:
    """Whether ``address`` (an IP address as text) is one of ``proxies`` (addresses, networks, or ``*``)."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address in proxies
    for entry in proxies:
        if entry == "*":
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _host_of(item: str) -> str:
    """An ``X-Forwarded-For`` item without its port (``1.2.3.4:5``, ``[::1]:5``)."""
    item = item.strip()
    if item.startswith("["):
        return item[1:item.find("]")] if "]" in item else item
    return item.rsplit(":", 1)[0] if item.count(":") == 1 else item


def nearest_client(forwarded_for: str, proxies: Sequence[str]) -> str:
    """The client named by an ``X-Forwarded-For`` value: its last address that is not a trusted proxy (every
    proxy appends the address it was reached from), else its first ("" when the value names none)."""
    hosts = [_host_of(h) for h in forwarded_for.split(",") if h.strip()]
    for host in reversed(hosts):
        if not is_trusted(host, proxies):
            return host[:64]
    return hosts[0][:64] if hosts else ""


def client_address(request: Request, proxies: Sequence[str]) -> str:
    """The address a request comes from: the socket peer, or — when the peer is a trusted proxy that sent
    ``X-Forwarded-For`` — the client that header names."""
    peer = request.client.host if request.client else ""
    if is_trusted(peer, proxies):
        named = nearest_client(",".join(request.headers.getlist("x-forwarded-for")), proxies)
        return named or peer
    return peer


def forwarded(request: Request, proxies: Sequence[str]) -> bool:
    """Whether the request came through a trusted proxy, so that its ``X-Forwarded-Proto``/``-Host`` may be
    believed: the peer is one, or uvicorn (given the same ``forwarded_allow_ips``) has already replaced the peer
    by the client that ``X-Forwarded-For`` names. (A direct client that names itself there gains nothing: its own
    ``Host`` header is believed anyway.)"""
    if not proxies:
        return False
    peer = request.client.host if request.client else ""
    if is_trusted(peer, proxies):
        return True
    named = ",".join(request.headers.getlist("x-forwarded-for"))
    return bool(named) and nearest_client(named, proxies) == peer


def uvicorn_allow_ips(proxies: Sequence[str]) -> str:
    """``trusted_proxies`` as uvicorn's ``forwarded_allow_ips`` ("" trusts no one; uvicorn's own default,
    ``127.0.0.1``, would believe any local process).

    Example
    -------
    >>> uvicorn_allow_ips(["127.0.0.1", "10.0.0.0/8"]), uvicorn_allow_ips([])
    ('127.0.0.1,10.0.0.0/8', '')
    """
    return ",".join(p.strip() for p in proxies if p.strip())
