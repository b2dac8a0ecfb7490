"""Scope guard: the one place that decides whether an address may be probed.

Every active code path (nmap scans, live SNMP walks, any later probe) calls
:class:`ScopeGuard` before it sends a packet, and sends only to the
addresses :meth:`ScopeGuard.check` returns. An address may be probed only
when all of these hold:

1. the site has at least one discovery scope (an empty scope list means no
   active discovery);
2. it is not special: cloud metadata services (169.254.169.254,
   fd00:ec2::254, 100.100.100.200), unspecified (0.0.0.0/8, ::), loopback
   (unless a scope is itself a loopback prefix), link-local (169.254.0.0/16,
   fe80::/10), multicast, broadcast (255.255.255.255 and the broadcast address
   of every IPv4 scope and segment prefix), the network address of every
   IPv4 scope and segment prefix, or reserved (240.0.0.0/4);
3. it lies inside a scope;
4. it lies outside every ``exclude`` prefix;
5. it is not on ``do_not_probe.addresses``;
6. it is not global (public), unless the site sets ``allow_public`` and the
   caller passes ``allow_public=True`` (the command-line override) as well.

IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``) are checked as the IPv4
address they carry. A CIDR target is allowed only when every address in it
is. A host name is resolved first, and it is allowed only when every
address it resolves to is.

The checks work on integer address ranges, so a /8 scope costs as much as a
/32; only :meth:`ScopeGuard.allowed_hosts` enumerates addresses, up to a limit.
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Union

from twin.exceptions import ScopeError
from twin.model.site import Discovery, SiteConfig

__all__ = [
    "MAX_TARGETS",
    "METADATA_ADDRESSES",
    "NON_GLOBAL_PREFIXES",
    "GLOBAL_EXCEPTIONS",
    "OutOfScope",
    "ScopeGuard",
    "guard_for",
    "parse_target",
]

log = logging.getLogger(__name__)

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# Addresses one check or plan may return (default 4096). Larger allowed sets
# are cut at this many addresses and the rest reported, so a /8 scope never
# turns into millions of probes by accident.
MAX_TARGETS = 4096

# Cloud instance-metadata services: AWS/GCP/Azure/OpenStack (169.254.169.254),
# AWS IPv6 (fd00:ec2::254) and Alibaba Cloud (100.100.100.200).
METADATA_ADDRESSES = ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")

# Prefixes that are not globally reachable, from the IANA IPv4 and IPv6
# Special-Purpose Address Registries ("Globally Reachable: False"), minus the
# global holes in GLOBAL_EXCEPTIONS. Every other address counts as public
# and needs both public overrides. 2002::/16 (6to4) is not listed, so it
# counts as public.
NON_GLOBAL_PREFIXES = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "240.0.0.0/4",
    "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
    "fc00::/7", "fe80::/10",
)

# Globally reachable prefixes inside NON_GLOBAL_PREFIXES (same registries):
# PCP and TURN anycast, and the AMT, ORCHIDv2 and other 2001::/23 assignments.
GLOBAL_EXCEPTIONS = (
    "192.0.0.9/32", "192.0.0.10/32",
    "2001:1::1/128", "2001:1::2/128", "2001:3::/32", "2001:4:112::/48", "2001:20::/28", "2001:30::/28",
)

_SPECIAL_PREFIXES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("metadata", "a cloud metadata service address", tuple(f"{a}/{32 if '.' in a else 128}" for a in METADATA_ADDRESSES)),
    ("unspecified", "an unspecified address (0.0.0.0/8 or ::)", ("0.0.0.0/8", "::/128")),
    ("loopback", "a loopback address, allowed only when a scope is itself a loopback prefix", ("127.0.0.0/8", "::1/128")),
    ("link-local", "a link-local address (169.254.0.0/16, fe80::/10)", ("169.254.0.0/16", "fe80::/10")),
    ("multicast", "a multicast address (224.0.0.0/4, ff00::/8)", ("224.0.0.0/4", "ff00::/8")),
    ("broadcast", "the limited broadcast address 255.255.255.255", ("255.255.255.255/32",)),
    ("reserved", "a reserved address (240.0.0.0/4)", ("240.0.0.0/4",)),
    ("ipv4-mapped", "an IPv4-mapped range inside a wider IPv6 prefix; give the IPv4 prefix instead", ("::ffff:0:0/96",)),
)

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_LOOPBACK = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}\.?$){_LABEL}(?:\.{_LABEL})*\.?$")

# Fixes shown when the allowed part of a refused CIDR is listed.
MAX_LISTED_PREFIXES = 8


class OutOfScope(ScopeError):
    """A target, or an address it resolves to, may not be probed.

    Attributes
    ----------
    target : str
        The target as given.
    address : str or None
        The refused address or prefix (after resolution), when there is one.
    reason : str
        Why it is refused.
    fix : str
        What to change.
    """

    def __init__(self, target: str, reason: str, fix: str, *, address: str | None = None):
        self.target = str(target)
        self.address = address
        self.reason = reason
        self.fix = fix
        where = self.target if address in (None, self.target) else f"{self.target} ({address})"
        super().__init__(f"target {where} rejected: {reason}; {fix}")


class _Ranges:
    """A set of addresses of both IP versions, as sorted, merged inclusive integer ranges."""

    def __init__(self, ranges: dict[int, list[tuple[int, int]]] | None = None):
        self.ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for version, items in (ranges or {}).items():
            self.ranges[version] = _merge(items)

    @classmethod
    def of(cls, networks: Iterable[Network]) -> "_Ranges":
        items: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for net in networks:
            items[net.version].append((int(net.network_address), int(net.broadcast_address)))
        return cls(items)

    def union(self, other: "_Ranges") -> "_Ranges":
        return _Ranges({v: self.ranges[v] + other.ranges[v] for v in (4, 6)})

    def intersect(self, other: "_Ranges") -> "_Ranges":
        out: dict[int, list[tuple[int, int]]] = {}
        for v in (4, 6):
            result, a, b = [], self.ranges[v], other.ranges[v]
            i = j = 0
            while i < len(a) and j < len(b):
                lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
                if lo <= hi:
                    result.append((lo, hi))
                if a[i][1] < b[j][1]:
                    i += 1
                else:
                    j += 1
            out[v] = result
        return _Ranges(out)

    def subtract(self, other: "_Ranges") -> "_Ranges":
        out: dict[int, list[tuple[int, int]]] = {}
        for v in (4, 6):
            result = []
            cuts = other.ranges[v]
            for lo, hi in self.ranges[v]:
                start = lo
                index = max(0, bisect.bisect_left(cuts, (lo, lo)) - 1)
                while index < len(cuts) and cuts[index][0] <= hi:
                    c_lo, c_hi = cuts[index]
                    if c_hi >= start:
                        if c_lo > start:
                            result.append((start, c_lo - 1))
                        start = max(start, c_hi + 1)
                    index += 1
                if start <= hi:
                    result.append((start, hi))
            out[v] = result
        return _Ranges(out)

    def __bool__(self) -> bool:
        return bool(self.ranges[4] or self.ranges[6])

    def count(self) -> int:
        return sum(hi - lo + 1 for v in (4, 6) for lo, hi in self.ranges[v])

    def contains(self, address: Address) -> bool:
        items = self.ranges[address.version]
        value = int(address)
        index = bisect.bisect_right(items, (value, float("inf"))) - 1
        return index >= 0 and items[index][0] <= value <= items[index][1]

    def addresses(self) -> Iterator[Address]:
        for v in (4, 6):
            make = ipaddress.IPv4Address if v == 4 else ipaddress.IPv6Address
            for lo, hi in self.ranges[v]:
                for value in range(lo, hi + 1):
                    yield make(value)

    def first(self) -> Address | None:
        for address in self.addresses():
            return address
        return None

    def prefixes(self) -> list[Network]:
        nets: list[Network] = []
        for v in (4, 6):
            make = ipaddress.IPv4Address if v == 4 else ipaddress.IPv6Address
            for lo, hi in self.ranges[v]:
                nets.extend(ipaddress.summarize_address_range(make(lo), make(hi)))
        return nets


def _merge(items: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(items):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _unmap_network(net: Network) -> Network:
    """Return an IPv4-mapped IPv6 prefix (``::ffff:10.0.0.0/104``) as its IPv4 prefix."""
    if net.version == 6 and net.subnet_of(_MAPPED):
        return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


def _unmap(address: Address) -> Address:
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_target(target: str) -> Address | Network | str:
    """Classify a target as an address, a prefix, or a host name (returned as a lower-case string).

    IPv4-mapped IPv6 addresses and prefixes come back as IPv4.

    Raises
    ------
    OutOfScope
        When the target is not one of these forms. Examples are nmap's range
        syntax ``10.0.0.1-20`` or ``10.0.0.*``, and text that starts with ``-``.

    >>> parse_target("::ffff:10.0.0.1")
    IPv4Address('10.0.0.1')
    >>> parse_target("10.0.0.7/24")
    IPv4Network('10.0.0.0/24')
    """
    text = str(target).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "/" in text:
        try:
            return _unmap_network(ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
    else:
        try:
            return _unmap(ipaddress.ip_address(text))
        except ValueError:
            pass
    last_label = text.rstrip(".").rsplit(".", 1)[-1]
    if not _HOSTNAME.match(text) or re.fullmatch(r"[0-9-]+", last_label) or last_label.lower().startswith("0x"):
        raise OutOfScope(
            target,
            "it is not an IP address, a CIDR prefix or a host name",
            "give one address (10.16.4.20), one prefix (10.16.4.0/24) or one host name; nmap ranges such as "
            "10.16.4.1-20 and wildcards are not accepted",
        )
    return text.lower().rstrip(".")


def _default_resolve(name: str) -> list[str]:
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    return [info[4][0] for info in infos]


@dataclass(frozen=True)
class _Rule:
    label: str
    reason: str
    refused: _Ranges


class ScopeGuard:
    """Decide which addresses active discovery may touch.

    Parameters
    ----------
    discovery : Discovery
        The site's ``discovery`` settings: scopes, exclude, allow_public,
        do_not_probe.addresses.
    allow_public : bool
        The caller's public-range override (the ``--allow-public`` flag).
        Public addresses are allowed only when this *and*
        ``discovery.allow_public`` are true.
    resolve : callable, optional
        Host name to list of address strings; defaults to
        :func:`socket.getaddrinfo`. Any exception it raises means the name
        does not resolve.
    subnets : iterable of str
        Further IPv4 prefixes (the site's segments) whose broadcast addresses
        are refused like those of the scopes.

    Examples
    --------
    >>> guard = ScopeGuard(Discovery(scopes=["10.16.0.0/24"], exclude=["10.16.0.128/25"]))
    >>> [str(a) for a in guard.check("10.16.0.5")]
    ['10.16.0.5']
    >>> guard.check("10.16.0.200")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    twin.discovery.scope.OutOfScope: target 10.16.0.200 rejected: it is inside excluded prefix 10.16.0.128/25; ...
    """

    def __init__(
        self,
        discovery: Discovery,
        *,
        allow_public: bool = False,
        resolve: Callable[[str], list[str]] | None = None,
        subnets: Iterable[str] = (),
    ):
        self.discovery = discovery
        self.allow_public_flag = bool(allow_public)
        self.public_allowed = bool(allow_public and discovery.allow_public)
        self.resolve = resolve or _default_resolve

        self.scopes = [_unmap_network(ipaddress.ip_network(s, strict=False)) for s in discovery.scopes]
        self.excludes = [_unmap_network(ipaddress.ip_network(s, strict=False)) for s in discovery.exclude]
        self.do_not_probe = [
            _unmap_network(ipaddress.ip_network(s, strict=False)) for s in discovery.do_not_probe.addresses
        ]

        # A loopback prefix is refused unless a scope lies inside it (127.0.0.0/8 or ::1/128).
        loopback_scoped = {
            str(loop) for net in self.scopes for loop in _LOOPBACK if net.version == loop.version and net.subnet_of(loop)
        }
        rules: list[_Rule] = []
        for label, reason, prefixes in _SPECIAL_PREFIXES:
            if label == "loopback":
                prefixes = tuple(p for p in prefixes if p not in loopback_scoped)
            rules.append(_Rule(label, f"it is {reason}", _Ranges.of(ipaddress.ip_network(p) for p in prefixes)))

        broadcasts = []
        for text in [*discovery.scopes, *subnets]:
            net = _unmap_network(ipaddress.ip_network(text, strict=False))
            if net.version == 4 and net.prefixlen <= 30:
                broadcasts.append((net, ipaddress.IPv4Network(net.broadcast_address)))
        for net, address in broadcasts:
            rules.append(_Rule("broadcast", f"it is the broadcast address of {net}", _Ranges.of([address])))
        # The network address of a scope or segment names the subnet, not a
        # host; routers may treat a probe to it as a broadcast.
        for kind, texts in (("scope", discovery.scopes), ("segment prefix", subnets)):
            for text in texts:
                net = _unmap_network(ipaddress.ip_network(text, strict=False))
                if net.version == 4 and net.prefixlen <= 30:
                    network = ipaddress.IPv4Network(net.network_address)
                    rules.append(_Rule("network", f"it is the network address of {kind} {net}", _Ranges.of([network])))
        self._special = rules

        self._scope = _Ranges.of(self.scopes)
        self._exclude = _Ranges.of(self.excludes)
        self._do_not_probe = _Ranges.of(self.do_not_probe)
        self._non_global = _Ranges.of(ipaddress.ip_network(p) for p in NON_GLOBAL_PREFIXES).subtract(
            _Ranges.of(ipaddress.ip_network(p) for p in GLOBAL_EXCEPTIONS)
        )
        self._public = _Ranges.of([ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]).subtract(
            self._non_global
        )

        allowed = self._scope.subtract(self._exclude).subtract(self._do_not_probe)
        for rule in self._special:
            allowed = allowed.subtract(rule.refused)
        if not self.public_allowed:
            allowed = allowed.subtract(self._public)
        self._allowed = allowed

    # -- decisions ---------------------------------------------------------

    def _first_refusal(self, wanted: _Ranges) -> tuple[str, str, _Ranges]:
        """Return (reason, fix, refused part) of the first rule that refuses part of ``wanted``."""
        if not self.scopes:
            return (
                "the site has no discovery scopes, so active discovery is off",
                "add the prefixes that may be probed to discovery.scopes in site.yaml",
                wanted,
            )
        for rule in self._special:
            part = wanted.intersect(rule.refused)
            if part:
                if rule.label == "loopback":
                    return rule.reason, "add the loopback prefix to discovery.scopes to allow it, or remove the target", part
                return rule.reason, "such addresses are never probed, so remove the target", part
        outside = wanted.subtract(self._scope)
        if outside:
            return (
                f"it is outside every discovery scope ({', '.join(map(str, self.scopes))})",
                "pick a target inside the scopes, or add its prefix to discovery.scopes in site.yaml",
                outside,
            )
        for net in self.excludes:
            part = wanted.intersect(_Ranges.of([net]))
            if part:
                return (
                    f"it is inside excluded prefix {net}",
                    f"remove {net} from discovery.exclude in site.yaml if it may be probed",
                    part,
                )
        for net in self.do_not_probe:
            part = wanted.intersect(_Ranges.of([net]))
            if part:
                return (
                    f"it is on the do_not_probe list ({net})",
                    f"remove {net} from discovery.do_not_probe.addresses in site.yaml if it may be probed",
                    part,
                )
        part = wanted.intersect(self._public)
        why, fix = self._public_override()
        return f"it is a public address and {why}", fix, part

    def _public_override(self) -> tuple[str, str]:
        """Return (which public override is missing, the fix); both are needed."""
        site, flag = bool(self.discovery.allow_public), self.allow_public_flag
        if site and not flag:
            return "the --allow-public flag was not given", "pass --allow-public to probe public addresses"
        if flag and not site:
            return (
                "the site does not set discovery.allow_public (--allow-public alone is not enough)",
                "set discovery.allow_public: true in site.yaml to probe public addresses",
            )
        return (
            "neither the site's discovery.allow_public nor the --allow-public flag is set",
            "set discovery.allow_public: true in site.yaml and pass --allow-public to probe public addresses",
        )

    def _main_refusal(self, refused: _Ranges) -> tuple[str, str, _Ranges]:
        """Return (reason, fix, part) of the rule that rejects the largest part of ``refused``.

        The fix is the rule's own; :meth:`_fix` replaces it with the allowed
        part when there is one.
        """
        best = self._first_refusal(refused)
        remaining = refused.subtract(best[2])
        while remaining:
            candidate = self._first_refusal(remaining)
            if candidate[2].count() > best[2].count():
                best = candidate
            remaining = remaining.subtract(candidate[2])
        return best

    def _fix(self, wanted: _Ranges, fix: str) -> str:
        """Return one fix: the allowed part of ``wanted`` to give instead when there is one, else ``fix``."""
        allowed = wanted.intersect(self._allowed)
        if not allowed:
            return fix
        prefixes = allowed.prefixes()
        shown = ", ".join(map(str, prefixes[:MAX_LISTED_PREFIXES]))
        more = f" and {len(prefixes) - MAX_LISTED_PREFIXES} more prefixes" if len(prefixes) > MAX_LISTED_PREFIXES else ""
        count = allowed.count()
        return f"give the allowed part instead: {shown}{more} ({count} address{'es' if count != 1 else ''})"

    def is_allowed(self, address: str | Address) -> bool:
        """Return True when one address may be probed."""
        value = parse_target(str(address))
        if isinstance(value, str):
            return False
        if not isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        return self._allowed.contains(value)

    def check(self, target: str, *, limit: int = MAX_TARGETS) -> list[Address]:
        """Return the addresses of a target after checking that every one may be probed.

        Parameters
        ----------
        target : str
            An address, a CIDR prefix, or a host name.
        limit : int
            Most addresses a prefix may expand to (default :data:`MAX_TARGETS`).

        Returns
        -------
        list of IPv4Address or IPv6Address
            Sorted, without duplicates; IPv4-mapped addresses as IPv4.

        Raises
        ------
        OutOfScope
            When any address of the target is refused, when a host name does
            not resolve, or when a prefix has more than ``limit`` addresses.
        """
        value = parse_target(target)
        if isinstance(value, str):
            return self._check_hostname(target, value)
        if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            wanted = _Ranges.of([ipaddress.ip_network(value)])
        else:
            wanted = _Ranges.of([value])
        refused = wanted.subtract(self._allowed)
        if refused:
            raise self._cidr_refusal(target, wanted, refused)
        size = wanted.count()
        if size > limit:
            raise OutOfScope(
                target,
                f"it has {size} addresses, more than the limit of {limit} targets per scan",
                f"split it into prefixes of at most {limit} addresses and scan them one after the other",
            )
        return list(wanted.addresses())

    def _cidr_refusal(self, target: str, wanted: _Ranges, refused: _Ranges) -> OutOfScope:
        """Build the error for a target with rejected addresses: the main reason, the part it rejects, one fix."""
        reason, fix, part = self._main_refusal(refused)
        prefixes = part.prefixes()
        shown = ", ".join(str(p.network_address) if p.num_addresses == 1 else str(p) for p in prefixes[:MAX_LISTED_PREFIXES])
        if len(prefixes) > MAX_LISTED_PREFIXES:
            shown += f" and {len(prefixes) - MAX_LISTED_PREFIXES} more prefixes"
        size = wanted.count()
        if size > 1:
            count = part.count()
            reason = f"{count} of its {size} addresses {'is' if count == 1 else 'are'} rejected because {reason}"
            others = refused.count() - part.count()
            if others:
                other_reasons = [r.removeprefix("it is ") for r, _ in self._reasons_of(refused.subtract(part))]
                reason += f", and {others} more for other reasons: {'; '.join(other_reasons)}"
        return OutOfScope(target, reason, self._fix(wanted, fix), address=shown)

    def _reasons_of(self, refused: _Ranges) -> Iterator[tuple[str, _Ranges]]:
        remaining = refused
        while remaining:
            reason, _, part = self._first_refusal(remaining)
            yield reason, part
            remaining = remaining.subtract(part)

    def _check_hostname(self, target: str, name: str) -> list[Address]:
        try:
            resolved = self.resolve(name)
        except (OSError, UnicodeError, LookupError, ValueError) as exc:
            raise OutOfScope(target, f"the host name does not resolve ({exc})", "check the name or give its address") from None
        addresses: set[Address] = set()
        for text in resolved or ():
            try:
                addresses.add(_unmap(ipaddress.ip_address(str(text).split("%", 1)[0])))
            except ValueError:
                raise OutOfScope(
                    target, f"the resolver returned {text!r}, which is not an IP address", "check the resolver"
                ) from None
        if not addresses:
            raise OutOfScope(target, "the host name resolves to no address", "check the name or give its address")
        ordered = sorted(addresses, key=lambda a: (a.version, int(a)))
        rejected = [a for a in ordered if not self._allowed.contains(a)]
        if not rejected:
            return ordered
        address = rejected[0]
        reason, fix, _ = self._first_refusal(_Ranges.of([ipaddress.ip_network(address)]))
        allowed = [str(a) for a in ordered if a not in rejected]
        if allowed:
            # A name is allowed only when every address it resolves to is.
            fix = f"give the allowed address{'es' if len(allowed) > 1 else ''} instead: {', '.join(allowed)}"
        elif fix.startswith("such addresses are never probed"):
            fix = f"such addresses are never probed, so remove {target} from the targets"
        raise OutOfScope(
            target,
            f"it resolves to {', '.join(map(str, ordered))}, and {address} is rejected: {reason}",
            fix,
            address=str(address),
        )

    def allowed_hosts(self, cidr: str, limit: int = MAX_TARGETS) -> list[Address]:
        """Return the allowed addresses of a prefix: scope ∩ prefix − exclude − do_not_probe − special.

        At most ``limit`` addresses, lowest first; :meth:`allowed_count`
        returns the full count.
        """
        wanted = self._target_ranges(cidr)
        result = []
        for address in wanted.intersect(self._allowed).addresses():
            if len(result) >= limit:
                break
            result.append(address)
        return result

    def allowed_count(self, cidr: str) -> int:
        """Return how many addresses of a prefix are allowed, without enumerating them."""
        return self._target_ranges(cidr).intersect(self._allowed).count()

    def refused_parts(self, cidr: str) -> list[tuple[str, str]]:
        """Return ``(prefixes, reason)`` for the refused parts of a prefix.

        One entry per exclude prefix, do-not-probe prefix, the part outside
        the scopes, each special range and the public part, in that order,
        so a scope with many excludes reads as one line per exclude. The
        reasons of excluded and do-not-probe parts end with the setting to
        change if the part may be probed.
        """
        remaining = self._target_ranges(cidr).subtract(self._allowed)
        if not self.scopes:
            reason = "the site has no discovery scopes, so active discovery is off; add the prefixes that may be probed to discovery.scopes in site.yaml"
            return [(cidr, reason)] if remaining else []
        rules: list[tuple[str, _Ranges]] = []
        rules += [
            (
                f"it is inside excluded prefix {net}; remove {net} from discovery.exclude in site.yaml if it may be probed",
                _Ranges.of([net]),
            )
            for net in self.excludes
        ]
        rules += [
            (
                f"it is on the do_not_probe list ({net}); remove {net} from discovery.do_not_probe.addresses "
                "in site.yaml if it may be probed",
                _Ranges.of([net]),
            )
            for net in self.do_not_probe
        ]
        rules.append(("it is outside every discovery scope", _Ranges.of([ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]).subtract(self._scope)))
        rules += [(rule.reason, rule.refused) for rule in self._special]
        rules.append((f"it is a public address and {self._public_override()[0]}", self._public))
        parts: list[tuple[str, str]] = []
        for reason, refused in rules:
            part = remaining.intersect(refused)
            if not part:
                continue
            prefixes = part.prefixes()
            shown = ", ".join(map(str, prefixes[:MAX_LISTED_PREFIXES]))
            if len(prefixes) > MAX_LISTED_PREFIXES:
                shown += f" and {len(prefixes) - MAX_LISTED_PREFIXES} more prefixes"
            parts.append((shown, reason))
            remaining = remaining.subtract(part)
        return parts

    def _target_ranges(self, cidr: str) -> _Ranges:
        value = parse_target(cidr)
        if isinstance(value, str):
            raise OutOfScope(cidr, "it is a host name, not a prefix", "give a CIDR prefix such as 10.16.4.0/24")
        return _Ranges.of([ipaddress.ip_network(value)])

    def filter(self, targets: Iterable[str]) -> tuple[list[Address], list[tuple[str, str]]]:
        """Split targets into allowed addresses and refused ``(target, reason)`` pairs.

        Allowed addresses keep the order of the targets, without duplicates.
        """
        allowed: list[Address] = []
        seen: set[Address] = set()
        refused: list[tuple[str, str]] = []
        for target in targets:
            try:
                addresses = self.check(target)
            except OutOfScope as exc:
                refused.append((str(target), str(exc)))
                continue
            for address in addresses:
                if address not in seen:
                    seen.add(address)
                    allowed.append(address)
        return allowed, refused


def guard_for(site: SiteConfig, *, allow_public: bool = False, resolve: Callable[[str], list[str]] | None = None) -> ScopeGuard:
    """Build the scope guard of a site; segment prefixes add their network and broadcast addresses to the rejected set."""
    subnets = [cidr for segment in site.segments for cidr in segment.cidrs]
    return ScopeGuard(site.discovery, allow_public=allow_public, resolve=resolve, subnets=subnets)
