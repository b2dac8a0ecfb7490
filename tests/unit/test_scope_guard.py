"""Scope guard: property test against netaddr, plus one case per refusal reason."""

from __future__ import annotations

import ipaddress

import netaddr
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from twin.discovery.scope import OutOfScope, ScopeGuard, guard_for, parse_target
from twin.model.site import Discovery, parse_site

# Blocks that targets, scopes and excludes are drawn from: private, shared,
# documentation, public, loopback, link-local with the metadata address,
# multicast, broadcast, unspecified, reserved and IPv4-mapped IPv6.
POOL = (
    "10.1.0.0/24", "192.168.7.0/24", "100.64.3.0/24", "169.254.169.0/24", "127.0.0.0/24",
    "224.0.0.0/24", "8.8.8.0/24", "198.51.100.0/24", "255.255.255.0/24", "0.0.0.0/24",
    "100.100.100.0/24", "240.0.0.0/24", "11.0.0.0/24", "172.16.5.0/24", "192.0.0.0/24",
    "2001:db8::/120", "fd00:ec2::200/120", "fe80::/120", "::/120", "2606:4700::/120",
    "ff02::/120", "::ffff:10.1.0.0/120", "2001:20::/120",
)
METADATA = netaddr.IPSet(["169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32"])
ALWAYS_SPECIAL = netaddr.IPSet(["0.0.0.0/8", "::/128", "240.0.0.0/4", "255.255.255.255/32", "::ffff:0:0/96"])
LOOPBACK = netaddr.IPSet(["127.0.0.0/8", "::1/128"])


def _unmapped(address: netaddr.IPAddress) -> netaddr.IPAddress:
    return address.ipv4() if address.is_ipv4_mapped() else address


def _unmapped_net(net: netaddr.IPNetwork) -> netaddr.IPNetwork:
    if net.version == 6 and net in netaddr.IPNetwork("::ffff:0:0/96"):
        return netaddr.IPNetwork(f"{net.network.ipv4()}/{net.prefixlen - 96}")
    return net


class Oracle:
    """The expected decision, computed with netaddr instead of the guard's own range code."""

    def __init__(self, scopes, excludes, do_not_probe, subnets, site_public, flag_public):
        self.scopes = [_unmapped_net(netaddr.IPNetwork(s)) for s in scopes]
        self.scope_set = netaddr.IPSet(self.scopes)
        self.exclude_set = netaddr.IPSet(_unmapped_net(netaddr.IPNetwork(s)) for s in excludes)
        self.dnp_set = netaddr.IPSet(_unmapped_net(netaddr.IPNetwork(s)) for s in do_not_probe)
        self.public_ok = site_public and flag_public
        self.loopback_ok = {
            4: any(s.version == 4 and s in netaddr.IPNetwork("127.0.0.0/8") for s in self.scopes),
            6: any(s == netaddr.IPNetwork("::1/128") for s in self.scopes),
        }
        broadcasts = []
        for text in list(scopes) + list(subnets):
            net = _unmapped_net(netaddr.IPNetwork(text))
            if net.version == 4 and net.prefixlen <= 30:
                broadcasts.append(net.broadcast)
        # Scope and segment prefixes also reject their network address.
        for text in list(scopes) + list(subnets):
            net = _unmapped_net(netaddr.IPNetwork(text))
            if net.version == 4 and net.prefixlen <= 30:
                broadcasts.append(net.network)
        self.broadcasts = netaddr.IPSet(broadcasts)

    def special(self, address: netaddr.IPAddress) -> bool:
        if address in METADATA or address in ALWAYS_SPECIAL or address in self.broadcasts:
            return True
        if address.is_link_local() or address.is_multicast():
            return True
        return address in LOOPBACK and not self.loopback_ok[address.version]

    def allowed(self, address: netaddr.IPAddress) -> bool:
        address = _unmapped(address)
        if not self.scopes:
            return False
        if self.special(address):
            return False
        if address not in self.scope_set or address in self.exclude_set or address in self.dnp_set:
            return False
        return self.public_ok or not address.is_global()


def _prefix_in(pool_net: str, draw, low_extra: int, high_extra: int) -> str:
    net = netaddr.IPNetwork(pool_net)
    width = 32 if net.version == 4 else 128
    prefixlen = draw(st.integers(max(net.prefixlen - low_extra, 0), min(net.prefixlen + high_extra, width)))
    offset = draw(st.integers(0, net.size - 1))
    return str(netaddr.IPNetwork(f"{net.network + offset}/{prefixlen}").cidr)


@st.composite
def prefixes(draw, low_extra=4, high_extra=8):
    return _prefix_in(draw(st.sampled_from(POOL)), draw, low_extra, high_extra)


@st.composite
def addresses(draw):
    net = netaddr.IPNetwork(draw(st.sampled_from(POOL)))
    return str(net.network + draw(st.integers(0, net.size - 1)))


@st.composite
def guard_cases(draw):
    scopes = draw(st.lists(prefixes(), min_size=0, max_size=3))
    excludes = draw(st.lists(prefixes(0, 8), max_size=3))
    do_not_probe = draw(st.lists(prefixes(0, 8), max_size=2))
    subnets = draw(st.lists(prefixes(0, 6), max_size=2))
    names = {f"host{i}.example": draw(st.lists(addresses(), max_size=3)) for i in range(3)}
    return {
        "scopes": scopes,
        "excludes": excludes,
        "do_not_probe": do_not_probe,
        "subnets": subnets,
        "names": names,
        "site_public": draw(st.booleans()),
        "flag_public": draw(st.booleans()),
        "targets": draw(st.lists(st.one_of(addresses(), prefixes(0, 8), st.sampled_from(sorted(names) + ["missing.example"])), min_size=1, max_size=4)),
    }


def _canonical(text: str) -> str:
    # Discovery stores canonical prefixes, as the site loader writes them.
    return str(ipaddress.ip_network(text, strict=False))


def _build(case) -> tuple[ScopeGuard, Oracle]:
    discovery = Discovery(
        scopes=[_canonical(s) for s in case["scopes"]],
        exclude=[_canonical(s) for s in case["excludes"]],
        allow_public=case["site_public"],
        do_not_probe={"addresses": [_canonical(s) for s in case["do_not_probe"]]},
    )

    def resolve(name: str) -> list[str]:
        if name not in case["names"]:
            raise OSError(f"name {name} not found")
        return list(case["names"][name])

    guard = ScopeGuard(discovery, allow_public=case["flag_public"], resolve=resolve, subnets=case["subnets"])
    oracle = Oracle(case["scopes"], case["excludes"], case["do_not_probe"], case["subnets"], case["site_public"], case["flag_public"])
    return guard, oracle


def _expected_addresses(target: str, case) -> list[netaddr.IPAddress] | None:
    """Return the addresses a target stands for, or None for a name that does not resolve."""
    if target.endswith(".example"):
        resolved = case["names"].get(target)
        return [netaddr.IPAddress(a) for a in resolved] if resolved else None
    if "/" in target:
        return list(netaddr.IPNetwork(target))
    return [netaddr.IPAddress(target)]


@seed(20240601)
@settings(max_examples=3000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(guard_cases())
def test_guard_matches_netaddr_oracle(case):
    guard, oracle = _build(case)
    for target in case["targets"]:
        wanted = _expected_addresses(target, case)
        expected_ok = bool(wanted) and all(oracle.allowed(a) for a in wanted)
        try:
            got = guard.check(target)
        except OutOfScope:
            got = None
        assert (got is not None) == expected_ok, (target, case)
        if got is not None:
            assert {str(a) for a in got} == {str(_unmapped(a)) for a in wanted}
            for address in got:
                assert oracle.allowed(netaddr.IPAddress(str(address)))
        if "/" in target:
            expected_hosts = sorted({_unmapped(a) for a in netaddr.IPNetwork(target) if oracle.allowed(a)})
            assert [str(a) for a in guard.allowed_hosts(target, limit=1 << 20)] == [str(a) for a in expected_hosts]
            assert guard.allowed_count(target) == len(expected_hosts)


@seed(20240602)
@settings(max_examples=500, deadline=None, database=None)
@given(guard_cases())
def test_filter_splits_targets(case):
    guard, oracle = _build(case)
    allowed, refused = guard.filter(case["targets"])
    for address in allowed:
        assert oracle.allowed(netaddr.IPAddress(str(address)))
    refused_targets = {target for target, _ in refused}
    for target in case["targets"]:
        wanted = _expected_addresses(target, case)
        ok = bool(wanted) and all(oracle.allowed(a) for a in wanted)
        assert (target not in refused_targets) == ok


# -- one case per refusal reason ---------------------------------------------

SITE = """\
site: {name: Guard test}
segments:
  - {id: clinical, cidrs: [10.16.8.0/24]}
discovery:
  scopes: [10.16.0.0/16, 8.8.8.0/29, 127.0.0.0/30]
  exclude: [10.16.1.0/28]
  allow_public: true
  do_not_probe:
    addresses: [10.16.4.10]
"""

RESOLVER = {
    "ws1.example": ["10.16.2.5"],
    "mixed.example": ["10.16.2.5", "10.17.0.1"],
    "mapped.example": ["::ffff:10.16.2.6"],
    "empty.example": [],
}


def _resolve(name):
    if name not in RESOLVER:
        raise OSError("Name or service not known")
    return RESOLVER[name]


@pytest.fixture
def guard():
    return guard_for(parse_site(SITE, "site.yaml"), resolve=_resolve)


@pytest.mark.parametrize(
    "target, address, reason",
    [
        ("10.17.0.1", "10.17.0.1", "outside every discovery scope"),
        ("10.16.1.5", "10.16.1.5", "inside excluded prefix 10.16.1.0/28"),
        ("10.16.4.10", "10.16.4.10", "on the do_not_probe list"),
        ("8.8.8.1", "8.8.8.1", "public address and the --allow-public flag was not given"),
        ("169.254.169.254", "169.254.169.254", "cloud metadata service"),
        ("fd00:ec2::254", "fd00:ec2::254", "cloud metadata service"),
        ("100.100.100.200", "100.100.100.200", "cloud metadata service"),
        ("169.254.1.1", "169.254.1.1", "link-local"),
        ("fe80::1", "fe80::1", "link-local"),
        ("224.0.0.251", "224.0.0.251", "multicast"),
        ("ff02::1", "ff02::1", "multicast"),
        ("255.255.255.255", "255.255.255.255", "limited broadcast"),
        ("10.16.255.255", "10.16.255.255", "broadcast address of 10.16.0.0/16"),
        ("10.16.8.255", "10.16.8.255", "broadcast address of 10.16.8.0/24"),
        ("0.0.0.0", "0.0.0.0", "unspecified"),
        ("::", "::", "unspecified"),
        ("::1", "::1", "loopback"),
        ("240.0.0.1", "240.0.0.1", "reserved"),
        ("::ffff:10.17.0.1", "10.17.0.1", "outside every discovery scope"),
        ("10.16.0.0/23", "10.16.1.0/28", "inside excluded prefix"),
        ("missing.example", None, "does not resolve"),
        ("empty.example", None, "resolves to no address"),
        ("mixed.example", "10.17.0.1", "10.17.0.1 is rejected: it is outside every discovery scope"),
        ("10.16.0.0", "10.16.0.0", "network address of scope 10.16.0.0/16"),
        ("10.16.0.1-20", None, "not an IP address, a CIDR prefix or a host name"),
        ("-iL", None, "not an IP address, a CIDR prefix or a host name"),
        ("10.16.0.*", None, "not an IP address, a CIDR prefix or a host name"),
    ],
)
def test_refusal_reason_and_message(guard, target, address, reason):
    with pytest.raises(OutOfScope) as info:
        guard.check(target)
    error = info.value
    assert error.target == target
    assert error.address == address
    assert reason in error.reason
    assert reason in str(error)
    assert str(error).startswith(f"target {target}")
    assert error.fix


def test_allowed_targets_resolve(guard):
    assert [str(a) for a in guard.check("ws1.example")] == ["10.16.2.5"]
    assert [str(a) for a in guard.check("mapped.example")] == ["10.16.2.6"]
    assert [str(a) for a in guard.check("::ffff:10.16.2.7")] == ["10.16.2.7"]
    # 127.0.0.0/30 is a scope, so loopback is allowed there; its network and broadcast addresses are not.
    assert [str(a) for a in guard.check("127.0.0.1")] == ["127.0.0.1"]
    assert [str(a) for a in guard.check("127.0.0.1/32")] == ["127.0.0.1"]
    # 127.0.0.0 is the network address of that scope.
    with pytest.raises(OutOfScope, match="network address of scope 127.0.0.0/30"):
        guard.check("127.0.0.0/31")


def test_partial_cidr_lists_allowed_part(guard):
    with pytest.raises(OutOfScope) as info:
        guard.check("10.16.1.0/27")
    assert info.value.fix == "give the allowed part instead: 10.16.1.16/28 (16 addresses)"


def test_public_needs_both_overrides():
    site = parse_site(SITE, "site.yaml")
    assert [str(a) for a in guard_for(site, allow_public=True).check("8.8.8.1")] == ["8.8.8.1"]
    no_site = parse_site(SITE.replace("allow_public: true", "allow_public: false"), "site.yaml")
    with pytest.raises(OutOfScope, match="site does not set discovery.allow_public") as info:
        guard_for(no_site, allow_public=True).check("8.8.8.1")
    assert info.value.fix == "set discovery.allow_public: true in site.yaml to probe public addresses"
    with pytest.raises(OutOfScope) as info:
        guard_for(no_site).check("8.8.8.1")
    assert "neither the site's discovery.allow_public nor the --allow-public flag is set" in info.value.reason
    with pytest.raises(OutOfScope) as info:
        guard_for(site).check("8.8.8.1")
    assert info.value.fix == "pass --allow-public to probe public addresses"


def test_empty_scopes_refuse_everything():
    site = parse_site("site: {name: No scopes}\n", "site.yaml")
    guard = guard_for(site)
    with pytest.raises(OutOfScope, match="no discovery scopes, so active discovery is off") as info:
        guard.check("10.0.0.1")
    assert "discovery.scopes" in info.value.fix
    assert guard.allowed_hosts("10.0.0.0/24") == []
    assert guard.filter(["10.0.0.1", "10.0.0.0/30"])[0] == []


def test_large_prefix_over_limit(guard):
    with pytest.raises(OutOfScope, match="more than the limit of 16"):
        guard.check("10.16.2.0/27", limit=16)


def test_refused_parts_of_scope(guard):
    parts = guard.refused_parts("10.16.0.0/16")
    assert parts == [
        ("10.16.1.0/28", "it is inside excluded prefix 10.16.1.0/28; remove 10.16.1.0/28 from discovery.exclude "
                         "in site.yaml if it may be probed"),
        ("10.16.4.10/32", "it is on the do_not_probe list (10.16.4.10/32); remove 10.16.4.10/32 from "
                          "discovery.do_not_probe.addresses in site.yaml if it may be probed"),
        ("10.16.255.255/32", "it is the broadcast address of 10.16.0.0/16"),
        ("10.16.8.255/32", "it is the broadcast address of 10.16.8.0/24"),
        ("10.16.0.0/32", "it is the network address of scope 10.16.0.0/16"),
        ("10.16.8.0/32", "it is the network address of segment prefix 10.16.8.0/24"),
    ]


def test_half_outside_cidr_names_main_reason_and_one_fix():
    site = parse_site(
        "site: {name: Half}\nsegments: [{id: w, cidrs: [10.232.0.0/24]}]\n"
        "discovery: {scopes: [10.232.0.0/24], do_not_probe: {addresses: [10.232.0.50]}}\n",
        "site.yaml",
    )
    with pytest.raises(OutOfScope) as info:
        guard_for(site).check("10.232.0.0/23")
    error = info.value
    assert error.address == "10.232.1.0/24"
    assert error.reason.startswith("256 of its 512 addresses are rejected because it is outside every discovery scope")
    assert "3 more for other reasons" in error.reason
    assert error.fix.startswith("give the allowed part instead: 10.232.0.1/32")
    assert error.fix.endswith("(253 addresses)")
    assert " or " not in error.fix


def test_one_rejected_address_is_singular():
    site = parse_site(
        "site: {name: One}\ndiscovery: {scopes: [10.232.0.0/24], do_not_probe: {addresses: [10.232.0.50]}}\n",
        "site.yaml",
    )
    with pytest.raises(OutOfScope) as info:
        guard_for(site).check("10.232.0.48/30")
    assert info.value.reason == "1 of its 4 addresses is rejected because it is on the do_not_probe list (10.232.0.50/32)"


def test_hostname_to_loopback_gives_one_fix():
    site = parse_site("site: {name: Names}\ndiscovery: {scopes: [10.232.0.0/24]}\n", "site.yaml")
    guard = guard_for(site, resolve=lambda name: ["127.0.0.1", "::1"])
    with pytest.raises(OutOfScope) as info:
        guard.check("localhost")
    assert "127.0.0.1 is rejected: it is a loopback address" in info.value.reason
    assert info.value.fix == "add the loopback prefix to discovery.scopes to allow it, or remove the target"
    mixed = guard_for(site, resolve=lambda name: ["10.232.0.7", "10.9.9.9"])
    with pytest.raises(OutOfScope) as info:
        mixed.check("mixed.example")
    assert info.value.fix == "give the allowed address instead: 10.232.0.7"


def test_over_limit_fix_names_no_setting(guard):
    with pytest.raises(OutOfScope) as info:
        guard.check("10.16.2.0/27", limit=16)
    assert info.value.fix == "split it into prefixes of at most 16 addresses and scan them one after the other"


def test_empty_scope_parts_carry_fix():
    guard = guard_for(parse_site("site: {name: No scopes}\n", "site.yaml"))
    [(prefix, reason)] = guard.refused_parts("10.0.0.0/24")
    assert prefix == "10.0.0.0/24"
    assert reason.endswith("add the prefixes that may be probed to discovery.scopes in site.yaml")


def test_parse_target_forms():
    assert parse_target("[2001:db8::1]") == ipaddress.ip_address("2001:db8::1")
    assert parse_target("::ffff:10.0.0.0/120") == ipaddress.ip_network("10.0.0.0/24")
    assert parse_target("WS1.Example.") == "ws1.example"
