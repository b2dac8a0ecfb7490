"""Identity resolution: which observations describe the same device.

Observations are merged in order of identifier strength: MAC address, then
serial number, then IP address within a time window, then host name. A
merge that would join two devices with different MAC addresses (or
different serial numbers) is not made. It is reported as a conflict instead,
so a reused IP or a duplicated host name never fuses two devices silently.

Notes
-----
Union-find with path halving and union by size: near-linear in the number
of identity records. Each observation contributes one record for its
subject, and ARP, FDB and LLDP/CDP entries contribute one more for the
device they name.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field

from twin.model.observation import Identity, Kind, Observation, normalise_hostname
from twin.resolve.addresses import AddressPlan, usable_mac

__all__ = ["IdentityRecord", "Conflict", "Clusters", "cluster_identities", "build_records", "device_id_for"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IdentityRecord:
    """Identifiers seen together, with the time span they were seen in."""

    macs: tuple[str, ...]
    ips: tuple[str, ...]
    hostname: str | None
    serial: str | None
    t0: float
    t1: float
    source: str
    # Observations whose subject (or, when ``named``, the device an ARP, FDB
    # or neighbour entry names) carries exactly these identifiers.
    obs_indices: list[int] = field(default_factory=list)
    named: bool = False


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two devices that share an identifier but were kept apart."""

    key: str  # "ip" or "hostname"
    value: str
    devices: tuple[str, ...]  # identifying MACs or serials of the devices involved
    message: str


@dataclass
class Clusters:
    """Result of identity resolution."""

    records: list[IdentityRecord]
    root_of: list[int]
    conflicts: list[Conflict] = field(default_factory=list)

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for index, root in enumerate(self.root_of):
            out[root].append(index)
        return out


def _short(hostname: str | None) -> str | None:
    if not hostname:
        return None
    first = hostname.split(".", 1)[0]
    # An IP address written as a host name is not a name.
    return None if first.isdigit() else first


def build_records(observations: list[Observation], plan: AddressPlan) -> list[IdentityRecord]:
    """Return the identity records of a list of observations.

    Each observation contributes its subject, and ARP, FDB and LLDP/CDP
    entries also the device they name. Records with the same identifiers
    from the same source are kept once, with every observation index and
    the widest time span, because one switch walk repeats the switch's own
    identity in every FDB entry it reports.
    """
    records: list[IdentityRecord] = []
    index_of: dict[tuple, int] = {}

    def add(identity: Identity, source: str, seen_at: float, obs_index: int, named: bool) -> None:
        key = (identity, source, named)
        at = index_of.get(key)
        if at is None:
            # A device's own or announced addresses are kept even when public,
            # as for a switch managed on a public address. Flows alone never
            # make a public address a device.
            record = IdentityRecord(
                macs=tuple(m for m in identity.macs if usable_mac(m)),
                ips=tuple(ip for ip in identity.ips if plan.kind(ip) != "ignore"),
                hostname=normalise_hostname(identity.hostname),
                serial=identity.serial,
                t0=seen_at,
                t1=seen_at,
                source=source,
                named=named,
            )
            if not (record.macs or record.ips or record.hostname or record.serial):
                return
            index_of[key] = at = len(records)
            records.append(record)
        record = records[at]
        record.obs_indices.append(obs_index)
        if seen_at < record.t0:
            record.t0 = seen_at
        if seen_at > record.t1:
            record.t1 = seen_at

    for index, obs in enumerate(observations):
        add(obs.subject, obs.source, obs.seen_at, index, False)
        named = named_identity(obs, plan)
        if named is not None:
            add(named, obs.source, obs.seen_at, index, True)
    return records


_CDP_SERIAL_SUFFIX = re.compile(r"^(?P<name>.+?)\((?P<serial>[A-Za-z0-9]{6,})\)$")


def split_cdp_device_id(device_id: str | None) -> tuple[str | None, str | None]:
    """Split a CDP device id such as ``nexus-01(SSI183706KP)`` into host name and serial.

    NX-OS and some IOS releases append the chassis serial number in brackets.

    >>> split_cdp_device_id("nwpu-ca-5548-01(SSI183706KP)")
    ('nwpu-ca-5548-01', 'SSI183706KP')
    >>> split_cdp_device_id("sw-a-01")
    ('sw-a-01', None)
    """
    if not device_id:
        return None, None
    match = _CDP_SERIAL_SUFFIX.match(device_id.strip())
    if match:
        return match["name"], match["serial"].upper()
    return device_id, None


def named_identity(obs: Observation, plan: AddressPlan) -> Identity | None:
    """Return the identity of the other device an ARP, FDB or neighbour entry names."""
    attrs = obs.attrs
    if obs.kind == Kind.ARP:
        mac, ip = attrs.get("mac"), attrs.get("ip")
        macs = (mac,) if usable_mac(mac) else ()
        ips = (ip,) if ip and plan.kind(ip) == "internal" else ()
        if not macs:
            return None
        return Identity(macs=macs, ips=ips)
    if obs.kind == Kind.FDB:
        mac = attrs.get("mac")
        return Identity(macs=(mac,)) if usable_mac(mac) else None
    if obs.kind == Kind.NEIGHBOR:
        mac = attrs.get("remote_mac")
        ips = tuple(ip for ip in attrs.get("remote_mgmt_ips") or () if plan.kind(ip) != "ignore")
        name, serial = split_cdp_device_id(attrs.get("remote_sys_name"))
        return Identity(
            macs=(mac,) if usable_mac(mac) else (),
            ips=ips,
            hostname=normalise_hostname(name),
            serial=serial,
        )
    return None


class _UnionFind:
    def __init__(self, records: list[IdentityRecord]):
        n = len(records)
        self.parent = list(range(n))
        self.size = [1] * n
        self.macs = [set(r.macs) for r in records]
        self.serials = [{r.serial} if r.serial else set() for r in records]
        self.t0 = [r.t0 for r in records]
        self.t1 = [r.t1 for r in records]

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]
        self.macs[a] |= self.macs[b]
        self.serials[a] |= self.serials[b]
        self.t0[a] = min(self.t0[a], self.t0[b])
        self.t1[a] = max(self.t1[a], self.t1[b])
        self.macs[b] = set()
        self.serials[b] = set()
        return a

    def anchored(self, root: int) -> bool:
        return bool(self.macs[root] or self.serials[root])

    def clash(self, a: int, b: int) -> bool:
        """True when two clusters are provably different devices."""
        if self.macs[a] and self.macs[b] and not (self.macs[a] & self.macs[b]):
            return True
        return bool(self.serials[a] and self.serials[b] and not (self.serials[a] & self.serials[b]))

    def label(self, root: int) -> str:
        if self.macs[root]:
            return min(self.macs[root])
        if self.serials[root]:
            return "serial " + min(self.serials[root])
        return f"record {root}"


def _gap(uf: _UnionFind, a: int, b: int) -> float:
    """Seconds between the time spans of two clusters (0 when they overlap)."""
    if uf.t1[a] < uf.t0[b]:
        return uf.t0[b] - uf.t1[a]
    if uf.t1[b] < uf.t0[a]:
        return uf.t0[a] - uf.t1[b]
    return 0.0


def cluster_identities(records: list[IdentityRecord], *, ip_window_s: float) -> Clusters:
    """Merge identity records into devices; return clusters and conflicts.

    Parameters
    ----------
    records : list of IdentityRecord
    ip_window_s : float
        Two MAC-anchored devices seen with one IP within this many seconds of
        each other are a conflict (a duplicate IP). When they are further
        apart, the IP was reused, and both stay separate without a conflict.
    """
    uf = _UnionFind(records)
    conflicts: list[Conflict] = []

    # 1. MAC: records sharing a MAC are one device.
    first_with: dict[str, int] = {}
    for i, rec in enumerate(records):
        for mac in rec.macs:
            j = first_with.setdefault(mac, i)
            if j != i:
                uf.union(i, j)

    # 2. Serial number: one serial is one device, whatever its NICs.
    first_with = {}
    for i, rec in enumerate(records):
        if rec.serial:
            j = first_with.setdefault(rec.serial, i)
            if j != i:
                uf.union(i, j)

    # 3. IP within the time window, then 4. host name.
    by_ip: dict[str, list[int]] = defaultdict(list)
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        for ip in rec.ips:
            by_ip[ip].append(i)
        short = _short(rec.hostname)
        if short:
            by_name[short].append(i)
    _merge_shared_key(uf, by_ip, "ip", ip_window_s, conflicts)
    _merge_shared_key(uf, by_name, "hostname", ip_window_s, conflicts)

    roots = [uf.find(i) for i in range(len(records))]
    if conflicts:
        log.warning("identity resolution kept %d pairs of devices apart; see the build's conflict list", len(conflicts))
    return Clusters(records=records, root_of=roots, conflicts=conflicts)


def _merge_shared_key(uf, members_by_key, key_name, window, conflicts) -> None:
    for value in sorted(members_by_key):
        members = members_by_key[value]
        roots = sorted({uf.find(i) for i in members})
        if len(roots) < 2:
            continue
        anchored = [r for r in roots if uf.anchored(r)]
        loose = [r for r in roots if not uf.anchored(r)]

        # Anchored devices sharing the key: merge unless they provably differ.
        kept: list[int] = []
        for root in anchored:
            root = uf.find(root)
            target = next((k for k in kept if not uf.clash(uf.find(k), root)), None)
            if target is None:
                for other in kept:
                    other = uf.find(other)
                    if key_name == "ip" and _gap(uf, other, root) > window:
                        continue  # the address was reused later, not duplicated
                    conflicts.append(
                        Conflict(
                            key=key_name,
                            value=value,
                            devices=(uf.label(other), uf.label(root)),
                            message=(
                                f"{key_name} {value} is claimed by two devices ({uf.label(other)} and "
                                f"{uf.label(root)}); kept apart, check for a duplicate {key_name}"
                            ),
                        )
                    )
                kept.append(root)
            else:
                kept[kept.index(target)] = uf.union(target, root)

        # Records with no MAC or serial join the anchored device nearest in time.
        if not kept:
            if loose:
                first = loose[0]
                for root in loose[1:]:
                    first = uf.union(first, root)
            continue
        for root in loose:
            root = uf.find(root)
            best = min(kept, key=lambda k: (_gap(uf, uf.find(k), root), uf.label(uf.find(k))))
            if len(kept) > 1 and key_name == "hostname":
                continue  # ambiguous: the name belongs to several devices
            kept[kept.index(best)] = uf.union(best, root)


def device_id_for(macs, serials, ips, hostnames) -> str:
    """Return a stable device id from the strongest identifier of a device.

    >>> device_id_for(["00:1b:2c:3d:4e:5f"], [], [], [])
    'dev-7611862633fa'
    """
    if macs:
        key = "mac:" + min(macs)
    elif serials:
        key = "serial:" + min(serials)
    elif ips:
        key = "ip:" + min(ips)
    elif hostnames:
        key = "host:" + min(hostnames)
    else:
        raise ValueError("a device needs at least one identifier (MAC, serial, IP or host name)")
    return "dev-" + hashlib.sha1(key.encode()).hexdigest()[:12]
