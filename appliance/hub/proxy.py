"""Who is really asking, behind the HTTPS reverse proxy the hub runs behind.

A proxy connects from its own address and says who its client was in
``X-Forwarded-For`` (and the scheme in ``X-Forwarded-Proto``). Those headers are believed
only from ``hub_trusted_proxies``: from anyone else they are whatever a client chose to
write. Through a trusted proxy the client is the right-most address in the chain that
is not itself a trusted proxy (each proxy appends the peer it saw; what the client wrote
is further left). The login throttle keys on this address, the session cookie is marked
Secure when the scheme is https.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


class TrustedProxies:
    """WSGI middleware: sets ``REMOTE_ADDR`` and ``wsgi.url_scheme`` from a trusted
    proxy's headers; leaves every other request as it came."""

    def __init__(self, app: Any, trusted: Iterable[str]) -> None:
        self.app = app
        self.networks: list[Network] = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        address = _address(peer)
        if not self.trusted(address):
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",") if forwarded_for else []):
            hop_address = _address(hop)
            if hop_address is None:
                break  # not written by a proxy: stop at the last address one did write
            client = hop_address.compressed
            if not self.trusted(hop_address):
                break
        return client

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        peer = environ.get("REMOTE_ADDR", "")
        if self.trusted(_address(peer)):
            environ["REMOTE_ADDR"] = self.client(peer, environ.get("HTTP_X_FORWARDED_FOR", ""))
            scheme = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[-1].strip().lower()
            if scheme in ("http", "https"):
                environ["wsgi.url_scheme"] = scheme
        return self.app(environ, start_response)
