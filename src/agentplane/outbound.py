"""The guard on every outbound URL a user configures (provider base URLs today): it
resolves the host, refuses addresses inside the deployment's own network (loopback,
private, link-local, cloud metadata, in any encoding) unless AGENTPLANE_OUTBOUND_ALLOW
lists them, and pins the checked address for the connection, so that a name cannot
resolve to another address between the check and the connect (DNS rebinding)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import re
import socket
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from agentplane.config import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The instance metadata services of the clouds: refused even when an allowed network
# holds them, since no model is served there and they hand out the host's credentials.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
RESOLVED_TTL = 30.0
# The legacy IPv4 spellings inet_aton reads (2130706433, 0x7f000001, 0177.0.0.1, 127.1).
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")


class OutboundRefused(Exception):
    """The URL may not be reached from here; the message says why and how to allow it."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.0/8,127.0.0.1` -> networks; ValueError naming the entry that is not one."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(out)


def kind(address: Address) -> str:
    """The address's kind in words, for the refusal."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for name in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{name}"):
            return f"a {name.replace('_', '-')} address"
    return "not a public address"


def literal(host: str) -> Address | None:
    """The address a host names by itself, in any spelling a resolver would accept."""
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not _LEGACY_IPV4.match(host):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 and 64:ff9b::7f00:1 reach the IPv4 address they embed.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in ipaddress.ip_network("64:ff9b::/96"):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return embedded
    return address


@dataclass(frozen=True)
class Guard:
    allow: tuple[Network, ...] = ()
    """Networks reachable although not public (a local Ollama, a vLLM in the VPC)."""

    def permits(self, address: Address) -> bool:
        address = literal(str(address)) or address
        if address in METADATA_ADDRESSES:
            return False
        if any(address in network for network in self.allow):
            return True
        return address.is_global and not address.is_multicast

    def refuse(self, host: str, address: Address) -> OutboundRefused:
        shown = host if host == str(address) else f"{host} ({address})"
        if address in METADATA_ADDRESSES:
            return OutboundRefused(f"{shown} is {kind(address)}; it is never reached")
        return OutboundRefused(
            f"{shown} is {kind(address)}; to reach it, add it to AGENTPLANE_OUTBOUND_ALLOW "
            "(a comma-separated list of networks, e.g. 10.0.0.0/8)"
        )

    async def check_url(self, url: str) -> None:
        """Refuse a URL whose host is, or resolves to, an address not permitted; a host
        that does not resolve now is let through (it is checked again on each call)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OutboundRefused("only http(s) URLs with a host are reached")
        with contextlib.suppress(OSError):  # no answer from DNS now
            await self.address(parts.hostname, parts.port)

    async def address(self, host: str, port: int | None) -> Address:
        """The permitted address to connect to for host; OutboundRefused or OSError
        (the name does not resolve)."""
        name = host.strip("[]").lower().rstrip(".")
        if name in METADATA_HOSTS:
            raise OutboundRefused(f"{host} is a cloud metadata service; it is never reached")
        found = literal(name)
        if found is not None:
            if not self.permits(found):
                raise self.refuse(host, found)
            return found
        return await _resolved(self, name, port or 443)


@functools.cache
def _cache() -> dict[tuple[Guard, str, int], tuple[float, Address]]:
    return {}


async def _resolved(guard: Guard, name: str, port: int) -> Address:
    cache = _cache()
    hit = cache.get((guard, name, port))
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    permitted = [a for a in addresses if guard.permits(a)]
    if not permitted:  # every address the name has is refused: name the first
        raise guard.refuse(name, literal(str(addresses[0])) or addresses[0])
    if len(cache) > 4096:
        cache.clear()
    cache[(guard, name, port)] = (now + RESOLVED_TTL, permitted[0])
    return permitted[0]


def guard(settings: Settings) -> Guard:
    return _guard(settings.env, settings.outbound_allow)


@functools.cache
def _guard(env: str, allow: str) -> Guard:
    networks = parse_networks(allow)
    # A developer's own machine runs its models on loopback; a server reachable by others
    # reaches its own host only when told to.
    return Guard(networks + LOOPBACK if env == "development" else networks)


def proxied(url: str) -> bool:
    """Whether the environment sends requests to `url` through a proxy (HTTPS_PROXY, ...):
    then the proxy resolves and connects, and only what the URL names is checked here."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    return bool(parts.hostname and proxies.get(parts.scheme)
                and not urllib.request.proxy_bypass(parts.hostname))


async def check_named(guard: Guard, request: httpx.Request) -> None:
    """For a proxied request: refuse a host that is an inner address by itself (a literal
    address, a metadata name); names are the proxy's to resolve."""
    host = request.url.host
    if host.strip("[]").lower().rstrip(".") in METADATA_HOSTS or literal(host) is not None:
        await guard.address(host, request.url.port)


class PinnedTransport(httpx.AsyncBaseTransport):
    """httpx's transport, connecting to the address the guard checked: the URL's host is
    replaced by it, while the Host header and TLS (SNI and certificate) keep the name."""

    def __init__(self, guard: Guard, **options: object) -> None:
        self.guard = guard
        self.inner = httpx.AsyncHTTPTransport(**options)  # type: ignore[arg-type]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        try:
            address = await self.guard.address(host, request.url.port)
        except OSError as exc:  # as httpx says it: a connection error, retried as one
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from None
        if str(address) != host:
            request.url = request.url.copy_with(host=str(address))
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
