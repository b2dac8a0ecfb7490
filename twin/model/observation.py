"""Observations: every fact the twin learns, with its provenance.

Importers in ``twin.discovery`` turn raw files into :class:`Observation`
records (and, for flows, an aggregated DataFrame with the columns in
:data:`FLOW_COLUMNS`). Resolution in ``twin.resolve`` merges them into
devices. The store keeps every observation with the run id of the build that
read it, so a label in the twin can always show why it is there.

Observation kinds and the keys of ``attrs`` each carries
---------------------------------------------------------
``device``
    Identifiers and properties of the subject device: ``hostname``,
    ``vendor``, ``model``, ``firmware``, ``os``, ``serial``, ``sys_descr``,
    ``sys_object_id``, ``sys_location``, ``sys_contact``, ``sys_services``,
    ``os_classes`` (list of dicts), ``cpes`` (list), ``device_class`` (a hint
    from the source, such as an inventory category), ``asset_tag``,
    ``department``, ``location``, ``building``, ``managed`` (bool),
    ``snmp_agent`` (bool, the device answered an SNMP walk).
``interface``
    ``if_index``, ``if_name``, ``if_descr``, ``if_alias``, ``if_type``,
    ``mac``, ``speed`` (bit/s), ``mtu``, ``admin_status``, ``oper_status``,
    ``vlan`` (access or PVID), ``ips`` (list of addresses with prefix length,
    ``"10.0.0.1/24"``).
``neighbor``
    An LLDP or CDP neighbour heard on one of the subject's ports:
    ``protocol`` (``lldp`` or ``cdp``), ``local_port`` (normalised interface
    name), ``local_if_index``, ``remote_chassis_id``,
    ``remote_chassis_id_subtype`` (LLDP subtype name, such as
    ``mac_address``), ``remote_mac`` (when the chassis id is a MAC, including
    MACs sent as text), ``remote_port_id``, ``remote_port_id_subtype``,
    ``remote_port_descr``, ``remote_sys_name``, ``remote_sys_descr``,
    ``remote_platform`` (CDP), ``remote_mgmt_ips`` (list),
    ``remote_capabilities`` (list of names such as ``bridge``, ``router``,
    ``telephone``, ``wlan``, ``station``).
``fdb``
    A MAC address learned on one of the subject switch's ports: ``mac``,
    ``vlan``, ``bridge_port``, ``if_index``, ``if_name``, ``status``.
``arp``
    An IP-to-MAC entry in the subject's ARP or neighbour table: ``ip``,
    ``mac``, ``if_index``.
``service``
    An open port on the subject: ``proto`` (``tcp``/``udp``), ``port``,
    ``state``, ``name``, ``product``, ``version``, ``extrainfo``, ``cpes``
    (list), ``tls`` (bool or None).

Times are float seconds since the Unix epoch, UTC. MAC addresses are
lower-case and colon-separated (:func:`normalise_mac`); host names are
lower-case without a trailing dot.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "Kind",
    "Identity",
    "Observation",
    "ImportIssue",
    "ImportResult",
    "FLOW_COLUMNS",
    "normalise_mac",
    "normalise_hostname",
    "normalise_serial",
    "normalise_ip",
    "escape_text",
]


class Kind(StrEnum):
    """Kind of fact an observation states about its subject."""

    DEVICE = "device"
    INTERFACE = "interface"
    NEIGHBOR = "neighbor"
    FDB = "fdb"
    ARP = "arp"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Identity:
    """Identifiers of the device an observation is about.

    Resolution matches devices on these, strongest first: MAC, serial, IP
    within a time window, host name. Any of them may be empty.
    """

    macs: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    hostname: str | None = None
    serial: str | None = None

    def is_empty(self) -> bool:
        return not (self.macs or self.ips or self.hostname or self.serial)

    def to_dict(self) -> dict[str, Any]:
        return {
            "macs": list(self.macs),
            "ips": list(self.ips),
            "hostname": self.hostname,
            "serial": self.serial,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Identity":
        return cls(
            macs=tuple(data.get("macs") or ()),
            ips=tuple(data.get("ips") or ()),
            hostname=data.get("hostname"),
            serial=data.get("serial"),
        )


@dataclass(slots=True)
class Observation:
    """One fact about one device, with where and when it was seen.

    Attributes
    ----------
    kind : Kind
        What the fact is (see the module docstring for ``attrs`` per kind).
    source : str
        Importer or collector name: ``nmap``, ``snmp``, ``lldpd``,
        ``inventory``, ``zeek``, ``nfdump``.
    origin : str
        File path, with ``:line`` where the record sits on one line, or the
        collector name for live discovery.
    seen_at : float
        When the source saw the fact, seconds since the epoch (UTC).
    subject : Identity
        The device the fact is about.
    attrs : dict
        The fact itself.
    evidence : dict
        Raw values the fact was derived from (sysDescr, OUI, LLDP chassis
        id, port line), kept for ``twin show device``.
    """

    kind: Kind
    source: str
    origin: str
    seen_at: float
    subject: Identity
    attrs: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImportIssue:
    """A record an importer skipped or had to repair, and why."""

    path: str
    message: str
    line: int | None = None
    offset: int | None = None
    field: str | None = None
    severity: str = "warning"

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
        if self.offset is not None:
            where += f" (offset {self.offset})"
        if self.field:
            where += f" field {self.field!r}"
        return f"{where}: {self.message}"


# Columns of the aggregated flow DataFrame an importer returns. One row per
# (src_ip, dst_ip, proto, dst_port); times in epoch seconds; counters summed.
FLOW_COLUMNS = (
    "src_ip",
    "dst_ip",
    "proto",
    "dst_port",
    "bytes",
    "packets",
    "flows",
    "first_seen",
    "last_seen",
)


@dataclass(slots=True)
class ImportResult:
    """Everything one importer read from one file.

    ``records_read`` counts the records in the file that the importer
    understood (hosts, OIDs, flows, rows); ``records_skipped`` counts the bad
    ones, each with an entry in ``issues``. ``counts`` breaks the read
    records down by table or kind, for tests and progress output.
    """

    source: str
    path: str
    observations: list[Observation] = field(default_factory=list)
    flows: Any = None  # pandas.DataFrame with FLOW_COLUMNS, or None
    # pandas.DataFrame of hourly buckets (src_ip, dst_ip, proto, dst_port,
    # hour, bytes, packets, flows; hour = start of the UTC hour in epoch
    # seconds), or None when the importer keeps none.
    flow_hours: Any = None
    issues: list[ImportIssue] = field(default_factory=list)
    records_read: int = 0
    records_skipped: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def skip(self, message: str, *, line=None, offset=None, field=None) -> None:
        """Record one skipped record with the reason."""
        self.issues.append(
            ImportIssue(self.path, message, line=line, offset=offset, field=field)
        )
        self.records_skipped += 1

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


_HEX_MAC = re.compile(r"^[0-9a-f]{12}$")


def normalise_mac(value: str | bytes | None) -> str | None:
    """Return a MAC as ``aa:bb:cc:dd:ee:ff``, or None when it is not one.

    Takes colon, dash, dot (Cisco ``aabb.ccdd.eeff``) and bare-hex forms,
    one-digit octets (``0:1b:2c:...``, as some agents print them), and
    six raw bytes.

    >>> normalise_mac("00-1B-2C-3D-4E-5F")
    '00:1b:2c:3d:4e:5f'
    >>> normalise_mac("001b.2c3d.4e5f")
    '00:1b:2c:3d:4e:5f'
    >>> normalise_mac("0:1b:2c:3d:4e:5f")
    '00:1b:2c:3d:4e:5f'
    >>> normalise_mac("not a mac") is None
    True
    """
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 6:
            return None
        return ":".join(f"{b:02x}" for b in value)
    text = value.strip().lower()
    if not text:
        return None
    parts = re.split(r"[:\-\s]", text)
    if len(parts) == 6 and all(1 <= len(p) <= 2 for p in parts):
        try:
            octets = [int(p, 16) for p in parts]
        except ValueError:
            return None
        return ":".join(f"{o:02x}" for o in octets)
    bare = text.replace(".", "").replace(":", "").replace("-", "")
    if _HEX_MAC.match(bare):
        return ":".join(bare[i : i + 2] for i in range(0, 12, 2))
    return None


def normalise_hostname(value: str | None) -> str | None:
    """Return a host name lower-cased without a trailing dot, or None.

    >>> normalise_hostname("PUMP-0042.Example.ORG.")
    'pump-0042.example.org'
    """
    if value is None:
        return None
    text = escape_text(value).strip().rstrip(".").lower()
    return text or None


def normalise_serial(value: str | None) -> str | None:
    """Return a serial number stripped and upper-cased, or None when empty."""
    if value is None:
        return None
    text = escape_text(value).strip().upper()
    if not text or text in {"N/A", "NA", "NONE", "UNKNOWN", "-", "0"}:
        return None
    return text


def normalise_ip(value: str | None) -> str | None:
    """Return an IP address in its canonical text form, or None.

    >>> normalise_ip("010.0.0.1") is None
    True
    >>> normalise_ip("2001:DB8::1")
    '2001:db8::1'
    """
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        return None


def escape_text(value: str | bytes) -> str:
    """Return text safe to store: non-UTF-8 bytes and control characters escaped.

    NUL and other C0 controls (except tab) become ``\\xNN``; bytes that are
    not UTF-8 become ``\\xNN`` too, so nothing binary reaches the store.

    >>> escape_text(b"ab\\x00c\\xff")
    'ab\\\\x00c\\\\xff'
    """
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="backslashreplace")
    out = []
    for ch in value:
        code = ord(ch)
        if (code < 0x20 and ch != "\t") or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)
