"""Site configuration: scopes, segments, criticality, attack-path ends, policy.

One YAML file per site (``site.yaml`` in the site folder), validated with
pydantic. :func:`load_site` reports every error with the file, the line and
the field, so a user can fix the file without guessing.

Selectors
---------
Policy rules, entry points and targets select devices with a *selector*: a
mapping whose keys are ANDed and whose list values are ORed, or one of the
shorthand strings ``any``, ``internet``, ``segment:ID``, ``zone:NAME``,
``class:DEVICE_CLASS``, ``device:ID_OR_IP_OR_HOSTNAME``,
``criticality:LEVEL`` and ``cidr:PREFIX``.

>>> Selector.parse("zone:clinical").zone
['clinical']
>>> Selector.parse({"segment": "pumps", "device_class": ["infusion_pump"]}).segment
['pumps']
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import zoneinfo
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from twin.exceptions import ConfigError
from twin.model.classes import DEVICE_CLASSES

__all__ = [
    "SiteConfig",
    "Segment",
    "Selector",
    "PolicyRule",
    "Policy",
    "ServiceSpec",
    "NAMED_SERVICES",
    "CRITICALITY_LEVELS",
    "load_site",
    "parse_site",
    "Discovery",
    "FlowSettings",
    "SnmpDiscovery",
    "SnmpProfile",
    "Credentials",
    "CRAWL_CAPABILITIES",
    "parse_seed",
    "DoNotProbe",
    "MaintenanceWindow",
    "ProbeBudget",
    "PROBE_KINDS",
    "FRAGILE_PORTS",
    "WEEKDAYS",
    "nmap_script_categories",
    "normalise_mac_prefix",
    "parse_duration_s",
]

CRITICALITY_LEVELS = ("life_critical", "high", "medium", "low")

# Named services that policy rules may use in place of proto/port. Ports are
# the IANA assignments plus the ports medical vendors use in practice
# (DICOM on 104 and 11112, HL7 MLLP on 2575).
NAMED_SERVICES: dict[str, tuple[tuple[str, int, int], ...]] = {
    "dicom": (("tcp", 104, 104), ("tcp", 11112, 11112)),
    "hl7-mllp": (("tcp", 2575, 2575),),
    "http": (("tcp", 80, 80), ("tcp", 8080, 8080)),
    "https": (("tcp", 443, 443), ("tcp", 8443, 8443)),
    "ssh": (("tcp", 22, 22),),
    "telnet": (("tcp", 23, 23),),
    "ftp": (("tcp", 21, 21),),
    "smtp": (("tcp", 25, 25), ("tcp", 587, 587)),
    "dns": (("udp", 53, 53), ("tcp", 53, 53)),
    "ntp": (("udp", 123, 123),),
    "snmp": (("udp", 161, 161),),
    "snmp-trap": (("udp", 162, 162),),
    "syslog": (("udp", 514, 514), ("tcp", 6514, 6514)),
    "ldap": (("tcp", 389, 389), ("tcp", 636, 636)),
    "kerberos": (("tcp", 88, 88), ("udp", 88, 88)),
    "smb": (("tcp", 445, 445),),
    "rdp": (("tcp", 3389, 3389),),
    "vnc": (("tcp", 5900, 5900),),
    "sip": (("udp", 5060, 5060), ("tcp", 5060, 5060), ("tcp", 5061, 5061)),
    "mqtt": (("tcp", 1883, 1883), ("tcp", 8883, 8883)),
    "bacnet": (("udp", 47808, 47808),),
    "modbus": (("tcp", 502, 502),),
    "printing": (("tcp", 9100, 9100), ("tcp", 631, 631), ("tcp", 515, 515)),
    "dhcp": (("udp", 67, 68),),
    "icmp": (("icmp", 0, 0),),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _check_classes(value: list[str]) -> list[str]:
    for name in value:
        if name not in DEVICE_CLASSES:
            raise ValueError(f"unknown device class {name!r}; valid: {', '.join(DEVICE_CLASSES)}")
    return value


def _check_network(text: str, example: str) -> str:
    """Return a prefix in canonical form; reject host bits, which usually mean a typo."""
    try:
        net = ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        raise ValueError(f"invalid prefix {text!r}; expected CIDR notation such as {example}") from None
    if str(net) != str(text).strip() and net.network_address != ipaddress.ip_interface(str(text)).ip:
        raise ValueError(f"invalid prefix {text!r}: host bits are set; did you mean {net}?")
    return str(net)


def _as_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, (str, int)):
        return [value]
    return value


class Selector(_Strict):
    """Devices a policy rule, entry point or target applies to.

    Keys are ANDed; list values within one key are ORed. ``any`` matches
    every device, ``internet`` matches every External endpoint.
    """

    any: bool = False
    internet: bool = False
    segment: list[str] = Field(default_factory=list)
    zone: list[str] = Field(default_factory=list)
    device_class: list[str] = Field(default_factory=list)
    device: list[str] = Field(default_factory=list)
    criticality: list[str] = Field(default_factory=list)
    cidr: list[str] = Field(default_factory=list)
    building: list[str] = Field(default_factory=list)

    @field_validator("segment", "zone", "device_class", "device", "criticality", "cidr", "building", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [str(v) for v in _as_list(value)]

    @field_validator("cidr")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        return [_check_network(text, "10.20.0.0/16") for text in value]

    @field_validator("device_class")
    @classmethod
    def _check_device_class(cls, value: list[str]) -> list[str]:
        return _check_classes(value)

    @field_validator("criticality")
    @classmethod
    def _check_criticality(cls, value: list[str]) -> list[str]:
        for level in value:
            if level not in CRITICALITY_LEVELS:
                raise ValueError(f"unknown criticality {level!r}; valid: {', '.join(CRITICALITY_LEVELS)}")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> "Selector":
        fields = (self.segment, self.zone, self.device_class, self.device, self.criticality, self.cidr, self.building)
        if not (self.any or self.internet or any(fields)):
            raise ValueError(
                "empty selector; set one of any, internet, segment, zone, device_class, device, criticality, cidr, building"
            )
        return self

    @classmethod
    def parse(cls, value: Any) -> "Selector":
        """Build a selector from a mapping or a shorthand string."""
        if isinstance(value, Selector):
            return value
        return cls.model_validate(_selector_input(value))

    def describe(self) -> str:
        """Return the selector in shorthand form, for tables and messages."""
        if self.any:
            return "any"
        parts = ["internet"] if self.internet else []
        for key in ("segment", "zone", "device_class", "device", "criticality", "cidr", "building"):
            values = getattr(self, key)
            if values:
                parts.append(f"{key}:{'|'.join(values)}")
        return " & ".join(parts)


_SHORTHAND_KEYS = {
    "segment": "segment",
    "zone": "zone",
    "class": "device_class",
    "device_class": "device_class",
    "device": "device",
    "criticality": "criticality",
    "cidr": "cidr",
    "building": "building",
}


def _selector_input(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text in ("any", "*"):
            return {"any": True}
        if text == "internet":
            return {"internet": True}
        key, sep, rest = text.partition(":")
        if sep and key in _SHORTHAND_KEYS:
            return {_SHORTHAND_KEYS[key]: rest}
        raise ValueError(
            f"invalid selector {value!r}; expected any, internet, or KEY:VALUE with KEY one of "
            + ", ".join(sorted(_SHORTHAND_KEYS))
        )
    return value


class ServiceSpec(BaseModel):
    """A protocol and inclusive port range, parsed from ``tcp/443``, ``udp/1000-2000`` or a name."""

    model_config = ConfigDict(frozen=True)

    proto: str
    port_min: int
    port_max: int
    label: str

    def matches(self, proto: str, port: int) -> bool:
        if self.proto not in ("any", proto):
            return False
        return self.port_min <= int(port) <= self.port_max

    @classmethod
    def parse_many(cls, text: str) -> list["ServiceSpec"]:
        text = str(text).strip().lower()
        if text in ("any", "*"):
            return [cls(proto="any", port_min=0, port_max=65535, label="any")]
        if text in NAMED_SERVICES:
            return [cls(proto=p, port_min=a, port_max=b, label=text) for p, a, b in NAMED_SERVICES[text]]
        proto, sep, ports = text.partition("/")
        if not sep or proto not in ("tcp", "udp", "icmp", "sctp", "any"):
            raise ValueError(
                f"invalid service {text!r}; expected PROTO/PORT such as tcp/443 or udp/1000-2000, "
                f"or a name: any, {', '.join(sorted(NAMED_SERVICES))}"
            )
        low, dash, high = ports.partition("-")
        try:
            port_min = int(low)
            port_max = int(high) if dash else port_min
        except ValueError:
            raise ValueError(f"invalid port in service {text!r}; expected a number or a range such as 1000-2000") from None
        if not (0 <= port_min <= port_max <= 65535):
            raise ValueError(f"invalid port range in service {text!r}; expected 0-65535 with low <= high")
        return [cls(proto=proto, port_min=port_min, port_max=port_max, label=text)]


class PolicyRule(_Strict):
    """One ordered rule of the site policy. The first matching rule decides."""

    name: str
    action: Literal["allow", "deny"]
    from_: Selector = Field(alias="from")
    to: Selector
    services: list[str] = Field(default_factory=lambda: ["any"])
    required: bool = False
    description: str = ""

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _parse_selector(cls, value: Any) -> Any:
        return _selector_input(value)

    @field_validator("services", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [str(v) for v in _as_list(value)]

    @field_validator("services")
    @classmethod
    def _check_services(cls, value: list[str]) -> list[str]:
        for text in value:
            ServiceSpec.parse_many(text)
        return value

    @model_validator(mode="after")
    def _required_is_allow(self) -> "PolicyRule":
        if self.required and self.action != "allow":
            raise ValueError(f"rule {self.name!r} is required but its action is deny; a required workflow must be allowed")
        return self

    def service_specs(self) -> list[ServiceSpec]:
        specs: list[ServiceSpec] = []
        for text in self.services:
            specs.extend(ServiceSpec.parse_many(text))
        return specs


class Policy(_Strict):
    """Ordered segmentation policy. First match wins; otherwise the defaults apply.

    ``default_action`` applies to traffic between different segments (and to
    and from the internet); ``intra_segment`` applies within one segment when
    no rule matches.
    """

    default_action: Literal["allow", "deny"] = "deny"
    intra_segment: Literal["allow", "deny"] = "allow"
    rules: list[PolicyRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> "Policy":
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"duplicate rule name {rule.name!r}; rule names must be unique")
            seen.add(rule.name)
        return self


class Segment(_Strict):
    """A network segment: prefixes, VLANs, zone and the device classes that belong in it."""

    id: str
    name: str = ""
    cidrs: list[str] = Field(default_factory=list)
    vlan_ids: list[int] = Field(default_factory=list)
    zone: str = "unassigned"
    building: str | None = None
    designated_classes: list[str] = Field(default_factory=list)
    trust: Literal["high", "medium", "low", "untrusted"] = "medium"

    @field_validator("cidrs", "designated_classes", "vlan_ids", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("cidrs")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        return [_check_network(text, "10.20.0.0/24") for text in value]

    @field_validator("designated_classes")
    @classmethod
    def _check_designated(cls, value: list[str]) -> list[str]:
        return _check_classes(value)

    @field_validator("vlan_ids")
    @classmethod
    def _check_vlans(cls, value: list[int]) -> list[int]:
        for vlan in value:
            if not 1 <= int(vlan) <= 4094:
                raise ValueError(f"invalid VLAN id {vlan}; expected 1-4094")
        return value


class CriticalityRule(_Strict):
    """Assign a criticality to devices matched by a selector. First match wins."""

    match: Selector
    criticality: Literal["life_critical", "high", "medium", "low"]

    @field_validator("match", mode="before")
    @classmethod
    def _parse_selector(cls, value: Any) -> Any:
        return _selector_input(value)


class Criticality(_Strict):
    default: Literal["life_critical", "high", "medium", "low"] = "low"
    rules: list[CriticalityRule] = Field(default_factory=list)


class AttackPaths(_Strict):
    """Entry points, targets and bounds for attack-path analysis."""

    entry_points: list[Selector] = Field(default_factory=list)
    targets: list[Selector] = Field(default_factory=list)
    max_hops: int = Field(default=6, ge=1, le=12)
    k: int = Field(default=3, ge=1, le=50)
    max_paths: int = Field(default=2000, ge=1, le=100000)

    @field_validator("entry_points", "targets", mode="before")
    @classmethod
    def _parse_selectors(cls, value: Any) -> Any:
        return [_selector_input(v) for v in _as_list(value)]


class External(_Strict):
    """Internal prefixes besides the segments, and the expected external endpoints."""

    internal_cidrs: list[str] = Field(default_factory=list)
    allowlist: list[str] = Field(default_factory=list)


# Probe kinds a budget may list. ``none`` alone means passive only.
# ``connect`` is a TCP connect scan (nmap -sT) of the budget's TCP ports,
# never a half-open SYN scan. ``udp`` probes the budget's UDP ports (nmap -sU).
# ``version`` is nmap -sV --version-light, ``os`` is nmap -O, and ``scripts``
# runs the budget's NSE scripts. version, os and scripts need ``connect``.
PROBE_KINDS = ("none", "connect", "udp", "version", "os", "scripts")

# Printer raw-print ports: JetDirect/AppSocket 9100-9107, LPD 515, IPP 631.
# Printers print whatever bytes reach them there, so no budget may probe them
# on a printer (rejected at load) and the planner removes them from every
# budget as a second guard.
FRAGILE_PORTS = frozenset(range(9100, 9108)) | frozenset({515, 631})

# Device classes whose configured budget may not list FRAGILE_PORTS: printers,
# and unknown devices because an unknown device may be a printer.
FRAGILE_PORT_CLASSES = ("printer", "unknown")

# Folders searched, in order, for nmap's script.db (the NSE script index with
# each script's categories). ``$NMAPDIR`` comes first when set, as in nmap.
NMAP_DATA_DIRS = ("/usr/local/share/nmap", "/usr/share/nmap")

# NSE categories a budget's script must have, and categories it must not have.
# ``broadcast`` scripts send to broadcast or multicast addresses and
# ``external`` scripts query third-party servers, so both would leave the
# scope even when nmap rates them safe.
SCRIPT_REQUIRED_CATEGORY = "safe"
SCRIPT_FORBIDDEN_CATEGORIES = frozenset({"broadcast", "external", "intrusive", "dos", "exploit", "brute", "malware"})

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = {name: name for name in WEEKDAYS} | {
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu",
    "friday": "fri", "saturday": "sat", "sunday": "sun",
}

# Upper bounds of the budget settings. They catch typos such as a rate with
# an extra zero; they are not recommendations.
MAX_RATE_LIMIT = 10000          # packets per second
MAX_CONNECTIONS_LIMIT = 64      # concurrent probes per target
MAX_HOST_TIMEOUT_S = 86400      # seconds
MAX_RETRIES = 10

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h)?\s*$")
_TIME_OF_DAY = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
_MAC_SEPARATORS = re.compile(r"[\s:.\-]")


def nmap_script_db() -> Path | None:
    """Return the path of nmap's ``script.db``, or None when no nmap data folder has one."""
    folders = [os.environ["NMAPDIR"]] if os.environ.get("NMAPDIR") else []
    for folder in folders + list(NMAP_DATA_DIRS):
        path = Path(folder) / "scripts" / "script.db"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=4)
def _read_script_db(path: str, mtime: float) -> dict[str, frozenset[str]]:
    entries: dict[str, frozenset[str]] = {}
    pattern = re.compile(r'filename\s*=\s*"([^"]+)\.nse"\s*,\s*categories\s*=\s*\{([^}]*)\}')
    for match in pattern.finditer(Path(path).read_text(encoding="utf-8", errors="replace")):
        entries[match.group(1)] = frozenset(re.findall(r'"([^"]+)"', match.group(2)))
    return entries


def nmap_script_categories() -> dict[str, frozenset[str]] | None:
    """Read nmap's script index: script name (without ``.nse``) to its categories.

    Returns None when no ``script.db`` is found (see :data:`NMAP_DATA_DIRS`).
    """
    path = nmap_script_db()
    if path is None:
        return None
    return _read_script_db(str(path), path.stat().st_mtime)


def normalise_mac_prefix(text: str) -> str:
    """Return a MAC prefix of 3 to 6 octets as lower-case colon-separated hex.

    Accepts the common spellings: ``00:1A:2B``, ``00-1a-2b``, ``001a2b3c``,
    ``001a.2b3c``.

    >>> normalise_mac_prefix("001A.2B3C")
    '00:1a:2b:3c'
    """
    digits = _MAC_SEPARATORS.sub("", str(text)).lower()
    if not re.fullmatch(r"[0-9a-f]+", digits) or len(digits) % 2 or not 6 <= len(digits) <= 12:
        raise ValueError(
            f"invalid MAC prefix {text!r}; expected 3 to 6 octets of hex such as 00:1A:2B or 001a2b3c"
        )
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def parse_duration_s(value: Any) -> int:
    """Return whole seconds from a number or a string such as ``90``, ``120s``, ``5m`` or ``1h``."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}; expected seconds or a string such as 120s, 5m or 1h")
    if isinstance(value, (int, float)):
        return int(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"invalid duration {value!r}; expected seconds or a string such as 120s, 5m or 1h")
    number, unit = int(match.group(1)), match.group(2) or "s"
    seconds = {"ms": number / 1000, "s": number, "m": number * 60, "h": number * 3600}[unit]
    return max(1, int(seconds)) if number else 0


class DoNotProbe(_Strict):
    """Devices that no active probe may touch, whatever their budget allows."""

    addresses: list[str] = Field(default_factory=list, description="Addresses or prefixes.")
    mac_prefixes: list[str] = Field(default_factory=list, description="MAC prefixes of 3 to 6 octets, any common spelling.")
    classes: list[str] = Field(default_factory=list, description="Device classes.")

    @field_validator("addresses", "mac_prefixes", "classes", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [str(v) for v in _as_list(value)]

    @field_validator("addresses")
    @classmethod
    def _check_addresses(cls, value: list[str]) -> list[str]:
        return [_check_network(text, "10.20.4.10 or 10.20.9.0/24") for text in value]

    @field_validator("mac_prefixes")
    @classmethod
    def _check_macs(cls, value: list[str]) -> list[str]:
        return [normalise_mac_prefix(text) for text in value]

    @field_validator("classes")
    @classmethod
    def _check_do_not_probe_classes(cls, value: list[str]) -> list[str]:
        return _check_classes(value)


def _time_of_day(value: Any) -> str:
    # PyYAML reads an unquoted 01:30 as the base-60 integer 90 (YAML 1.1), so
    # integers are taken as minutes since midnight.
    if isinstance(value, int) and not isinstance(value, bool):
        hour, minute = divmod(value, 60)
    else:
        match = _TIME_OF_DAY.match(str(value))
        if not match:
            raise ValueError(f"invalid time {value!r}; expected HH:MM such as \"01:00\" (quote it in YAML)")
        hour, minute = int(match.group(1)), int(match.group(2))
    if not (0 <= hour <= 24 and 0 <= minute <= 59) or (hour == 24 and minute):
        raise ValueError(f"invalid time {value!r}; expected 00:00 to 24:00")
    return f"{hour:02d}:{minute:02d}"


class MaintenanceWindow(_Strict):
    """A weekly time range, in the site's timezone, in which active scans may start.

    ``days`` are the days the window starts on. An ``end`` earlier than
    ``start`` crosses midnight into the next day; ``24:00`` is the end of the day.
    """

    days: list[str] = Field(default_factory=lambda: list(WEEKDAYS))
    start: str
    end: str

    @field_validator("days", mode="before")
    @classmethod
    def _check_days(cls, value: Any) -> Any:
        days = []
        for day in _as_list(value):
            name = _WEEKDAY_NAMES.get(str(day).strip().lower())
            if name is None:
                raise ValueError(f"invalid day {day!r}; expected one of {', '.join(WEEKDAYS)}")
            days.append(name)
        if not days:
            raise ValueError(f"empty days; list at least one of {', '.join(WEEKDAYS)} or leave days out for every day")
        return days

    @field_validator("start", "end", mode="before")
    @classmethod
    def _check_time(cls, value: Any) -> str:
        return _time_of_day(value)

    @model_validator(mode="after")
    def _not_empty(self) -> "MaintenanceWindow":
        if self.start == self.end or (self.start, self.end) == ("24:00", "00:00"):
            raise ValueError(
                f"empty maintenance window {self.start}-{self.end}; for a whole day use start 00:00 and end 24:00"
            )
        if self.start == "24:00":
            raise ValueError("invalid start 24:00; a window starts at 00:00 to 23:59")
        return self


class ProbeBudget(_Strict):
    """Probe budget of one device class; unset keys keep the built-in default of that class."""

    probes: list[str] | None = None
    ports: list[str] | None = None
    scripts: list[str] | None = None
    max_rate: int | None = Field(default=None, ge=1, le=MAX_RATE_LIMIT, description="Packets per second (nmap --max-rate).")
    max_connections: int | None = Field(
        default=None, ge=1, le=MAX_CONNECTIONS_LIMIT, description="Concurrent probes per target (nmap --max-parallelism)."
    )
    host_timeout: int | None = Field(
        default=None, ge=1, le=MAX_HOST_TIMEOUT_S, description="Seconds per target before nmap gives up (nmap --host-timeout)."
    )
    retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES, description="Probe retransmissions (nmap --max-retries).")

    @field_validator("probes", "ports", "scripts", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if value is None:
            return None
        return [str(v).strip() for v in _as_list(value)]

    @field_validator("host_timeout", mode="before")
    @classmethod
    def _parse_timeout(cls, value: Any) -> Any:
        if value is None:
            return None
        return parse_duration_s(value)

    @field_validator("probes")
    @classmethod
    def _check_probes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for kind in value:
            if kind not in PROBE_KINDS:
                raise ValueError(f"unknown probe {kind!r}; valid: {', '.join(PROBE_KINDS)}")
        if "none" in value and len(value) > 1:
            raise ValueError(f"probe 'none' means passive only and must be alone, got {value}")
        if not value:
            raise ValueError("empty probes; write [none] for passive only")
        needs_connect = [kind for kind in ("version", "os", "scripts") if kind in value]
        if needs_connect and "connect" not in value:
            raise ValueError(f"probes {', '.join(needs_connect)} need 'connect' in the same list, got {value}")
        return value

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for text in value:
            for spec in ServiceSpec.parse_many(text):
                if spec.proto not in ("tcp", "udp"):
                    raise ValueError(f"invalid port {text!r}; a budget probes tcp or udp ports, such as tcp/22, udp/161 or ssh")
        return value

    @field_validator("scripts")
    @classmethod
    def _check_scripts(cls, value: list[str] | None) -> list[str] | None:
        if not value:
            return value
        categories = nmap_script_categories()
        if categories is None:
            raise ValueError(
                "scripts cannot be checked because nmap's script.db was not found in $NMAPDIR or "
                f"{', '.join(NMAP_DATA_DIRS)}; install nmap or remove the scripts"
            )
        for name in value:
            name = name.removesuffix(".nse")
            if name not in categories:
                raise ValueError(f"unknown nmap script {name!r}; expected a script name listed in nmap's script.db")
            found = categories[name]
            forbidden = sorted(found & SCRIPT_FORBIDDEN_CATEGORIES)
            if SCRIPT_REQUIRED_CATEGORY not in found or forbidden:
                raise ValueError(
                    f"nmap script {name!r} has categories {', '.join(sorted(found))}; a budget may run only scripts "
                    f"in the '{SCRIPT_REQUIRED_CATEGORY}' category and in none of {', '.join(sorted(SCRIPT_FORBIDDEN_CATEGORIES))}"
                )
        return [name.removesuffix(".nse") for name in value]

    @model_validator(mode="after")
    def _scripts_need_probe(self) -> "ProbeBudget":
        listed = bool(self.scripts)
        enabled = "scripts" in (self.probes or [])
        if listed and not enabled:
            raise ValueError("scripts are listed but probes has no 'scripts'; add scripts (and connect) to probes")
        if enabled and not listed:
            raise ValueError("probes has 'scripts' but no scripts are listed; add scripts: [NAME, ...]")
        return self


# LLDP system capability names (LLDP-MIB LldpSystemCapabilitiesMap, as
# twin.discovery.mib decodes them) that crawl_capabilities may list, and the
# spellings accepted for them.
CRAWL_CAPABILITIES = ("other", "repeater", "bridge", "wlan", "router", "telephone", "docsis", "station")
_CAPABILITY_ALIASES = {"wlan-access-point": "wlan", "wlan_access_point": "wlan", "switch": "bridge", "station-only": "station"}

# Upper bounds of the SNMP crawl settings; like the budget limits they catch
# typos, they are not recommendations.
MAX_CRAWL_DEPTH = 16
MAX_CRAWL_CONCURRENCY = 256
MAX_SNMP_TIMEOUT_S = 60.0
MAX_REPETITIONS_LIMIT = 1000


def parse_seed(text: str, default_port: int = 161) -> tuple[str, int]:
    """Split a crawl seed into (host, port).

    Accepts ``10.0.0.1``, ``10.0.0.1:1161``, ``switch1.example.org``,
    ``switch1:1161``, ``2001:db8::1`` and ``[2001:db8::1]:1161``.

    >>> parse_seed("127.0.0.1:1161")
    ('127.0.0.1', 1161)
    >>> parse_seed("[2001:db8::1]:1161")
    ('2001:db8::1', 1161)
    """
    text = str(text).strip()
    example = "an address, a host name, ADDRESS:PORT or [IPv6]:PORT such as 10.0.0.1:161"
    if not text:
        raise ValueError(f"empty seed; expected {example}")
    host, port_text = text, None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid seed {text!r}; expected {example}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if port_text is None:
        port = default_port
    else:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"invalid port in seed {text!r}; expected 1-65535")
        port = int(port_text)
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,253}", host) or host.startswith(("-", ".")):
            raise ValueError(f"invalid seed {text!r}; expected {example}") from None
    return host, port


class SnmpDiscovery(_Strict):
    """Live SNMP crawl: seeds, depth and walk settings (``discovery.snmp``)."""

    seeds: list[str] = Field(default_factory=list, description="Addresses, host names or ADDRESS:PORT walked first.")
    port: int = Field(default=161, ge=1, le=65535, description="UDP port of seeds without a port and of every neighbour.")
    depth: int = Field(default=2, ge=0, le=MAX_CRAWL_DEPTH, description="Hops from the seeds; 0 walks the seeds only.")
    concurrency: int = Field(default=16, ge=1, le=MAX_CRAWL_CONCURRENCY, description="Devices walked at once.")
    timeout_s: float = Field(default=2.0, gt=0, le=MAX_SNMP_TIMEOUT_S, description="Seconds to wait for each SNMP response.")
    retries: int = Field(default=1, ge=0, le=MAX_RETRIES, description="Retransmissions of an unanswered request.")
    max_repetitions: int = Field(default=25, ge=1, le=MAX_REPETITIONS_LIMIT, description="Start value of GETBULK max-repetitions.")
    device_time_cap_s: float = Field(default=300.0, gt=0, le=MAX_HOST_TIMEOUT_S, description="Seconds one device walk may take in total.")
    crawl_capabilities: list[str] = Field(
        default_factory=lambda: ["bridge", "router", "wlan"],
        description="LLDP/CDP capabilities a neighbour must advertise to be walked; others are placed from tables only.",
    )

    @field_validator("seeds", "crawl_capabilities", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [str(v) for v in _as_list(value)]

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_seed(text)
        return value

    @field_validator("crawl_capabilities")
    @classmethod
    def _check_capabilities(cls, value: list[str]) -> list[str]:
        names = []
        for text in value:
            name = _CAPABILITY_ALIASES.get(text.strip().lower(), text.strip().lower())
            if name not in CRAWL_CAPABILITIES:
                raise ValueError(f"unknown LLDP capability {text!r}; valid: {', '.join(CRAWL_CAPABILITIES)}")
            if name not in names:
                names.append(name)
        return names

    def seed_targets(self) -> list[tuple[str, int]]:
        """Return the seeds as (host, port), with ``port`` for seeds that name none."""
        return [parse_seed(text, self.port) for text in self.seeds]


class Discovery(_Strict):
    """Active discovery: scope, do-not-probe list, maintenance windows and probe budgets.

    An empty scope means no active discovery.
    """

    scopes: list[str] = Field(default_factory=list)
    allow_public: bool = False
    exclude: list[str] = Field(default_factory=list)
    do_not_probe: DoNotProbe = Field(default_factory=DoNotProbe)
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    budgets: dict[str, ProbeBudget] = Field(default_factory=dict)
    snmp: SnmpDiscovery = Field(default_factory=SnmpDiscovery)

    @field_validator("scopes", "exclude", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [str(v) for v in _as_list(value)]

    @field_validator("scopes", "exclude")
    @classmethod
    def _check_prefixes(cls, value: list[str]) -> list[str]:
        return [_check_network(text, "10.20.0.0/16") for text in value]

    @field_validator("budgets")
    @classmethod
    def _check_budget_classes(cls, value: dict[str, ProbeBudget]) -> dict[str, ProbeBudget]:
        return dict(zip(_check_classes(list(value)), value.values()))


# Keys of an SNMP credential profile that would hold a secret in the file;
# each has an ``_env`` counterpart naming the environment variable instead.
_SECRET_KEYS = {
    "community": "community_env",
    "auth_key": "auth_key_env",
    "auth_password": "auth_key_env",
    "password": "auth_key_env",
    "priv_key": "priv_key_env",
    "priv_password": "priv_key_env",
}
SNMP_AUTH_PROTOCOLS = ("md5", "sha", "sha224", "sha256", "sha384", "sha512")
SNMP_PRIV_PROTOCOLS = ("des", "aes128", "aes192", "aes256")
_PROTOCOL_ALIASES = {"aes": "aes128", "sha1": "sha"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SnmpProfile(_Strict):
    """One SNMP credential profile; secrets are named environment variables, never values."""

    version: str
    community_env: str | None = None
    user: str | None = None
    user_env: str | None = None
    auth_protocol: str | None = None
    auth_key_env: str | None = None
    priv_protocol: str | None = None
    priv_key_env: str | None = None
    context: str = ""
    name: str | None = Field(default=None, description="Label in logs and recordings; default v2c or v3 USER.")

    @model_validator(mode="before")
    @classmethod
    def _no_literal_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, env_key in _SECRET_KEYS.items():
                if key in data:
                    raise ValueError(
                        f"{key} contains a secret, and secrets may not be written in site.yaml; "
                        f"remove it and set {env_key} to the name of an environment variable that holds it"
                    )
        return data

    @field_validator("version", mode="before")
    @classmethod
    def _check_version(cls, value: Any) -> str:
        text = str(value).strip().lower().removeprefix("v")
        if text not in ("1", "2c", "3"):
            raise ValueError(f"invalid SNMP version {value!r}; expected 1, 2c or 3")
        return text

    @field_validator("community_env", "user_env", "auth_key_env", "priv_key_env")
    @classmethod
    def _check_env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"invalid environment variable name {value!r}; expected letters, digits and underscores")
        return value

    @field_validator("auth_protocol", "priv_protocol", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip().lower().replace("-", "")
        return _PROTOCOL_ALIASES.get(text, text)

    @model_validator(mode="after")
    def _complete(self) -> "SnmpProfile":
        if self.version in ("1", "2c"):
            if not self.community_env:
                raise ValueError(f"SNMP v{self.version} needs community_env, the environment variable that contains the community")
            extra = [key for key in ("user", "user_env", "auth_protocol", "auth_key_env", "priv_protocol", "priv_key_env") if getattr(self, key)]
            if extra:
                raise ValueError(f"{', '.join(extra)} {'applies' if len(extra) == 1 else 'apply'} to SNMP v3 only; remove or set version: 3")
            return self
        if self.community_env:
            raise ValueError("community_env applies to SNMP v1 and v2c only; remove it or set version: 2c")
        if bool(self.user) == bool(self.user_env):
            raise ValueError("SNMP v3 needs exactly one of user (the user name) or user_env")
        if self.auth_protocol is not None and self.auth_protocol not in SNMP_AUTH_PROTOCOLS:
            raise ValueError(f"unknown auth_protocol {self.auth_protocol!r}; valid: {', '.join(SNMP_AUTH_PROTOCOLS)}")
        if self.priv_protocol is not None and self.priv_protocol not in SNMP_PRIV_PROTOCOLS:
            raise ValueError(f"unknown priv_protocol {self.priv_protocol!r}; valid: {', '.join(SNMP_PRIV_PROTOCOLS)}")
        if bool(self.auth_protocol) != bool(self.auth_key_env):
            raise ValueError("auth_protocol and auth_key_env go together; set both for authNoPriv or authPriv, or neither")
        if bool(self.priv_protocol) != bool(self.priv_key_env):
            raise ValueError("priv_protocol and priv_key_env go together; set both for authPriv, or neither")
        if self.priv_protocol and not self.auth_protocol:
            raise ValueError("privacy needs authentication; set auth_protocol and auth_key_env as well")
        return self


class Credentials(BaseModel):
    """Credential references. ``snmp`` is one profile or a list tried in order; other keys are kept as given."""

    model_config = ConfigDict(extra="allow")

    snmp: list[SnmpProfile] = Field(default_factory=list)

    @field_validator("snmp", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, dict) else value

    def get(self, key: str, default: Any = None) -> Any:
        """Return one credential entry as plain data (``snmp`` as a list of dicts), like ``dict.get``."""
        if key == "snmp":
            return [profile.model_dump(exclude_none=True, exclude_defaults=True) | {"version": profile.version} for profile in self.snmp] or default
        return (self.model_extra or {}).get(key, default)

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


class Inventory(_Strict):
    """Column mapping for a CMMS asset-inventory export: field name to CSV header."""

    column_map: dict[str, str] = Field(default_factory=dict)


class Classification(_Strict):
    """Extra classification rules: host-name regex patterns per device class."""

    hostname_patterns: dict[str, list[str]] = Field(default_factory=dict)
    model_patterns: dict[str, list[str]] = Field(default_factory=dict)


class FlowSettings(_Strict):
    """Flow files of the site (``flows``): UDP ports on which captures carry flow exports."""

    export_ports: list[int] = Field(
        default_factory=lambda: [2055, 4739, 6343, 9995, 9996],
        description="UDP ports whose datagrams in pcap files are decoded as NetFlow, IPFIX or sFlow exports.",
    )

    @field_validator("export_ports")
    @classmethod
    def _check_ports(cls, value: list[int]) -> list[int]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"invalid port {port}; expected UDP ports from 1 to 65535")
        return sorted(set(value))


class Resolution(_Strict):
    """Identity-resolution settings."""

    ip_time_window_s: float = Field(default=86400.0, gt=0, description="Seconds within which two observations of one IP are one device.")


class EmailDelivery(_Strict):
    """Email delivery over SMTP; credentials come from the named environment variables."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    sender: str = Field(alias="from")
    to: list[str]
    username_env: str | None = None
    password_env: str | None = None
    retries: int = Field(default=3, ge=0, le=20, description="Attempts after the first one.")
    backoff_s: float = Field(default=2.0, ge=0, le=3600, description="Seconds before the first retry; doubles each time.")
    timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("to", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)


class WebhookDelivery(_Strict):
    """HTTP POST of the JSON change report; header values come from environment variables."""

    url: str
    retries: int = Field(default=3, ge=0, le=20, description="Attempts after the first one.")
    backoff_s: float = Field(default=2.0, ge=0, le=3600, description="Seconds before the first retry; doubles each time.")
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    headers_env: dict[str, str] = Field(default_factory=dict, description="Header name to environment variable name.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"invalid webhook URL {value!r}; expected http:// or https://")
        return value


class Reports(_Strict):
    """Scheduled reports: where they go, how many are kept, and how they are delivered."""

    output_dir: str = Field(default="reports", description="Folder for report runs, relative to the site folder unless absolute.")
    keep: int = Field(default=12, ge=1, le=10000, description="Report runs kept in output_dir; older ones are deleted.")
    formats: list[str] = Field(default_factory=lambda: ["html", "md", "json", "csv"])
    fail_on: Literal["critical", "high", "medium", "low", "info"] | None = None
    trend_runs: int = Field(default=8, ge=2, le=1000, description="Snapshots shown in trend charts.")
    email: EmailDelivery | None = None
    webhook: WebhookDelivery | None = None

    @field_validator("formats", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("formats")
    @classmethod
    def _check_formats(cls, value: list[str]) -> list[str]:
        valid = ("html", "pdf", "md", "json", "csv")
        for fmt in value:
            if fmt not in valid:
                raise ValueError(f"unknown report format {fmt!r}; valid: {', '.join(valid)}")
        return value


class SiteInfo(_Strict):
    name: str
    timezone: str = "UTC"
    description: str = ""

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}; expected an IANA name such as UTC or Europe/Berlin") from None
        return value


class SiteConfig(_Strict):
    """A whole site configuration file."""

    site: SiteInfo
    discovery: Discovery = Field(default_factory=Discovery)
    credentials: Credentials = Field(default_factory=Credentials)
    segments: list[Segment] = Field(default_factory=list)
    criticality: Criticality = Field(default_factory=Criticality)
    classification: Classification = Field(default_factory=Classification)
    external: External = Field(default_factory=External)
    attack_paths: AttackPaths = Field(default_factory=AttackPaths)
    policy: Policy = Field(default_factory=Policy)
    inventory: Inventory = Field(default_factory=Inventory)
    resolution: Resolution = Field(default_factory=Resolution)
    reports: Reports = Field(default_factory=Reports)
    flows: FlowSettings = Field(default_factory=FlowSettings)
    path: str | None = Field(default=None, exclude=True)

    def segment(self, segment_id: str) -> Segment:
        for seg in self.segments:
            if seg.id == segment_id:
                return seg
        raise KeyError(f"no segment {segment_id!r}; known: {', '.join(s.id for s in self.segments)}")


def _line_map(text: str) -> dict[tuple, int]:
    """Map each YAML path (keys and list indices) to its 1-based line."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node, path):
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (key.value,)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
                lines[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, path + (index,))

    if root is not None:
        walk(root, ())
    return lines


def _reference_errors(config: SiteConfig) -> list[tuple[tuple, str]]:
    """Return (YAML path, message) for duplicate segment ids and unknown segment references."""
    errors: list[tuple[tuple, str]] = []
    seen: set[str] = set()
    for index, seg in enumerate(config.segments):
        if seg.id in seen:
            errors.append((("segments", index, "id"), f"duplicate segment id {seg.id!r}; segment ids must be unique"))
        seen.add(seg.id)
    known = ", ".join(sorted(seen)) or "(none defined)"
    places: list[tuple[tuple, Selector]] = []
    for index, rule in enumerate(config.policy.rules):
        places += [(("policy", "rules", index, "from"), rule.from_), (("policy", "rules", index, "to"), rule.to)]
    for index, rule in enumerate(config.criticality.rules):
        places.append((("criticality", "rules", index, "match"), rule.match))
    for key in ("entry_points", "targets"):
        for index, selector in enumerate(getattr(config.attack_paths, key)):
            places.append((("attack_paths", key, index), selector))
    for path, selector in places:
        for name in selector.segment:
            if name not in seen:
                errors.append((path, f"names segment {name!r}, which is not defined; known: {known}"))
    errors.extend(_fragile_port_errors(config.discovery))
    return errors


def _fragile_port_errors(discovery: Discovery) -> list[tuple[tuple, str]]:
    """Return (YAML path, message) for each printer or unknown budget port that covers a FRAGILE_PORTS port."""
    errors: list[tuple[tuple, str]] = []
    for device_class in FRAGILE_PORT_CLASSES:
        budget = discovery.budgets.get(device_class)
        if budget is None or budget.ports is None:
            continue
        for index, text in enumerate(budget.ports):
            hits = sorted(
                port for spec in ServiceSpec.parse_many(text) for port in FRAGILE_PORTS if spec.port_min <= port <= spec.port_max
            )
            if hits:
                errors.append((
                    ("discovery", "budgets", device_class, "ports", index),
                    f"port {text!r} covers {', '.join(map(str, hits))}, which the {device_class} budget may not probe "
                    "because printers print what reaches their raw-print ports (9100-9107, 515, 631); "
                    "remove them or split the range around them",
                ))
    return errors


def _line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None


def _loc_to_path(loc: tuple) -> tuple:
    # pydantic reports the alias-less field name "from_" for the "from" key.
    return tuple("from" if part == "from_" else part for part in loc)


def parse_site(text: str, path: str = "<string>") -> SiteConfig:
    """Parse and validate site YAML text; raise ConfigError naming file, line and field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        raise ConfigError(f"{path}: the site configuration is empty; it needs at least 'site: {{name: ...}}' (see docs/site-config.md)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with at least 'site: {{name: ...}}', got {type(data).__name__}")
    try:
        config = SiteConfig.model_validate(data)
    except ValidationError as exc:
        lines = _line_map(text)
        messages = []
        for error in exc.errors():
            loc = _loc_to_path(tuple(p for p in error["loc"] if not isinstance(p, str) or not p.startswith("function-")))
            line = _line_of(lines, loc)
            field = ".".join(str(p) for p in loc) or "(top level)"
            msg = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                msg = "unknown field; check the spelling against the site configuration reference in docs/site-config.md"
            where = f"{path}:{line}" if line else path
            messages.append(f"{where}: field {field}: {msg}")
        raise ConfigError("invalid site configuration:\n  " + "\n  ".join(messages)) from None
    references = _reference_errors(config)
    if references:
        lines = _line_map(text)
        messages = []
        for loc, msg in references:
            line = _line_of(lines, loc)
            where = f"{path}:{line}" if line else path
            messages.append(f"{where}: field {'.'.join(str(p) for p in loc)}: {msg}")
        raise ConfigError("invalid site configuration:\n  " + "\n  ".join(messages))
    config.path = path
    return config


def load_site(path: str | Path) -> SiteConfig:
    """Load a site configuration from a YAML file or a site folder holding ``site.yaml``."""
    path = Path(path)
    if path.is_dir():
        path = path / "site.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: site configuration not found; create site.yaml in the site folder (see docs/site-config.md)")
    return parse_site(path.read_text(encoding="utf-8"), str(path))
