"""Where webhooks may connect: public addresses, and the networks an app allows.

A webhook URL comes from an app file or an environment variable, and its host
name from DNS, which someone else may control. Without a check, a URL (or a
name that resolves) into loopback, the private network or the cloud metadata
address (169.254.169.254) makes rulebus a proxy into places its callers cannot
reach. So the client resolves the name once per connection, checks every
address, and connects to the address it checked: a second lookup could answer
differently (DNS rebinding).

Refused by default: every address that is not globally routable (loopback,
private, shared/CGNAT, link-local, unique-local, documentation, benchmarking,
reserved, unspecified, broadcast) and multicast, in IPv4 and IPv6, and IPv6
forms that carry an IPv4 address (mapped, NAT64, 6to4, Teredo) by the address
they carry. ``egress: {allow: [CIDR, ...]}`` in the app file lets the listed
networks through.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from rulebus.errors import BadInput

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
# ipaddress's is_private also covers documentation, benchmarking and other
# special ranges; "private" here means what people mean by it (RFC 1918, ULA).
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
# Names that never leave the machine, whatever a resolver says (RFC 6761).
_LOCAL_NAMES = ("localhost", "localhost.")


@dataclass(frozen=True)
class Egress:
    """The networks webhooks may reach beyond the public internet."""

    allow: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, networks: Iterable[str]) -> Egress:
        """From CIDR strings (``10.0.0.0/8``, ``::1/128``, or one address); raises BadInput."""
        parsed = []
        for text in networks:
            try:
                parsed.append(ipaddress.ip_network(text.strip(), strict=True))
            except ValueError as exc:
                raise BadInput(f"{text!r} is not a network in CIDR form: {exc}") from None
        return cls(tuple(parsed))

    def refusal(self, address: Address) -> str | None:
        """Why ``address`` may not be reached, or None if it may."""
        if any(address.version == net.version and address in net for net in self.allow):
            return None
        kind = refused_kind(address)
        if kind is None:
            return None
        return f"{address} is {kind}; allow it with egress: {{allow: [...]}} in the app file"

    def check(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The addresses ``host`` resolved to, all of them allowed; raises EgressRefused."""
        checked = []
        for text in addresses:
            address = ipaddress.ip_address(text.partition("%")[0])
            reason = self.refusal(address)
            if reason is not None:
                via = "" if host == str(address) else f"{host} resolves to "
                raise EgressRefused(host, f"{via}{reason}")
            checked.append(text)
        return checked

    def literal_refusal(self, host: str) -> str | None:
        """Why a URL's host refuses without a lookup: an address or a local-only name."""
        name = host.lower()
        if name in _LOCAL_NAMES or name.endswith((".localhost", ".localhost.")):
            loopback = ipaddress.ip_address("127.0.0.1")
            return None if self.refusal(loopback) is None else f"{host} is loopback"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        return self.refusal(address)


class EgressRefused(BadInput):
    """A webhook's host is, or resolves to, an address the app does not allow."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"refused to connect: {reason}")
        self.host = host


def refused_kind(address: Address) -> str | None:
    """What kind of non-public address this is, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = _carried_ipv4(address)
        if carried is not None:
            kind = refused_kind(carried)
            return None if kind is None else f"{kind} (as {carried})"
    # Checked most specific first, so the message names the likely mistake.
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata lives here)"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared address space (carrier-grade NAT)"
    if any(address.version == net.version and address in net for net in _PRIVATE):
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


def _carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address, which the relay forwards to
    return None
