"""Probe budgets: which active probes each device class may get, and how gently.

A :class:`Budget` is the resolved setting for one device class: the probe
kinds (see :data:`PROBE_KINDS`), the TCP and UDP ports, the packet rate, the
concurrent probes per target, the host timeout and the retries. The site's
``discovery.budgets`` is merged over :data:`DEFAULT_BUDGETS` key by key, so a
site that only lowers ``max_rate`` for workstations keeps the default ports.

Fragile classes (medical devices, PLC-like building and IoT controllers,
network gear) default to passive only: they are learned from inventory, SNMP,
LLDP and flows, never port-scanned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

from twin.model.site import FRAGILE_PORTS, PROBE_KINDS, ProbeBudget, ServiceSpec, SiteConfig

__all__ = [
    "PROBE_KINDS",
    "FRAGILE_PORTS",
    "DEFAULT_BUDGETS",
    "UNKNOWN_CLASS",
    "ENABLED_PASSIVE_DEFAULTS",
    "Budget",
    "budgets_for",
    "budget_for",
    "expand_ports",
    "fragile_ports_listed",
]

log = logging.getLogger(__name__)

UNKNOWN_CLASS = "unknown"

# Pacing of a class that is passive by default when the site turns it on and
# leaves a key unset: the values of the gentlest built-in active budgets
# (printer, ip_phone, camera). max_rate in packets per second (default 10),
# max_connections per target (1), host_timeout in seconds (60) and probe
# retransmissions (1, the retry count of every default budget).
ENABLED_PASSIVE_DEFAULTS = {"max_rate": 10, "max_connections": 1, "host_timeout_s": 60, "retries": 1}


@dataclass(frozen=True)
class Budget:
    """Resolved probe budget of one device class.

    Attributes
    ----------
    name : str
        Device class, or ``unknown``.
    probes : frozenset of str
        Probe kinds from :data:`PROBE_KINDS`; ``{"none"}`` for passive only.
    tcp_ports, udp_ports : tuple of int
        Sorted ports probed with ``connect`` and ``udp``. Empty when that
        probe kind is not in ``probes``; never contains :data:`FRAGILE_PORTS`.
    max_rate : int
        Packets per second (nmap ``--max-rate``).
    max_connections : int
        Concurrent probes per target (nmap ``--max-parallelism``, one target
        at a time).
    host_timeout_s : int
        Seconds before nmap gives up on a target (``--host-timeout``).
    retries : int
        Retransmissions per probe (``--max-retries``).
    scripts : tuple of str
        NSE scripts, all in nmap's ``safe`` category; empty unless
        ``scripts`` is in ``probes``.
    source : str
        Where the budget comes from: ``default`` or ``site``.
    dropped_ports : tuple of str
        Listed ports left out because they are in :data:`FRAGILE_PORTS`,
        as ``tcp/9100``; the plan warns about them.
    """

    name: str
    probes: frozenset[str]
    tcp_ports: tuple[int, ...]
    udp_ports: tuple[int, ...]
    max_rate: int
    max_connections: int
    host_timeout_s: int
    retries: int = 1
    scripts: tuple[str, ...] = ()
    source: str = "default"
    dropped_ports: tuple[str, ...] = ()

    @property
    def passive(self) -> bool:
        """True when the budget sends no packet: probes ``none`` or no port to probe."""
        return not (self.tcp_ports or self.udp_ports)

    def restrictiveness(self) -> tuple:
        """Sort key: smaller is more conservative (passive, fewer probe kinds, fewer ports, lower rate)."""
        kinds = len(self.probes - {"none"})
        return (
            0 if self.passive else 1,
            kinds,
            len(self.tcp_ports) + len(self.udp_ports),
            self.max_rate,
            self.max_connections,
            self.host_timeout_s,
            self.retries,
            len(self.scripts),
            self.name,
        )


def expand_ports(texts: list[str] | tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Expand service notation (``tcp/22``, ``udp/161``, ``tcp/8000-8080``, ``https``) to sorted TCP and UDP ports.

    Ports in :data:`FRAGILE_PORTS` are removed.

    >>> expand_ports(["ssh", "tcp/9099-9101", "udp/161"])
    ((22, 9099), (161,))
    """
    tcp: set[int] = set()
    udp: set[int] = set()
    for text in texts:
        for spec in ServiceSpec.parse_many(text):
            ports = range(spec.port_min, spec.port_max + 1)
            if spec.proto == "tcp":
                tcp.update(ports)
            elif spec.proto == "udp":
                udp.update(ports)
            else:
                raise ValueError(f"invalid port {text!r}; a budget probes tcp or udp ports, such as tcp/22 or udp/161")
    tcp -= FRAGILE_PORTS
    udp -= FRAGILE_PORTS
    tcp.discard(0)
    udp.discard(0)
    return tuple(sorted(tcp)), tuple(sorted(udp))


def fragile_ports_listed(texts: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return the :data:`FRAGILE_PORTS` that service notation lists, as ``tcp/9100``, sorted by protocol and port.

    >>> fragile_ports_listed(["tcp/9099-9101", "ssh"])
    ('tcp/9100', 'tcp/9101')
    """
    found: set[tuple[str, int]] = set()
    for text in texts:
        for spec in ServiceSpec.parse_many(text):
            for port in FRAGILE_PORTS:
                if spec.proto in ("tcp", "udp") and spec.port_min <= port <= spec.port_max:
                    found.add((spec.proto, port))
    return tuple(f"{proto}/{port}" for proto, port in sorted(found))


def _make(name: str, probes: list[str], ports: list[str], max_rate: int, max_connections: int,
          host_timeout_s: int, retries: int = 1, scripts: tuple[str, ...] = (), source: str = "default") -> Budget:
    kinds = frozenset(probes) or frozenset({"none"})
    tcp, udp = expand_ports(ports)
    if "connect" not in kinds:
        tcp = ()
    if "udp" not in kinds:
        udp = ()
    if "scripts" not in kinds:
        scripts = ()
    dropped = fragile_ports_listed(ports) if kinds & {"connect", "udp"} else ()
    return Budget(name, kinds, tcp, udp, max_rate, max_connections, host_timeout_s, retries, tuple(scripts), source, dropped)


def _passive(name: str) -> Budget:
    # A passive budget never uses its rate and timeout. They are the lowest
    # values, so a passive budget also sorts as the most conservative.
    return _make(name, ["none"], [], max_rate=1, max_connections=1, host_timeout_s=1, retries=0)


# Management ports of IT hosts: remote shells and desktops, web, file sharing,
# directory, e-mail and the clinical application protocols.
_IT_PORTS = ["ssh", "telnet", "ftp", "http", "https", "smb", "rdp", "vnc", "tcp/135", "tcp/139"]
_SERVER_PORTS = _IT_PORTS + ["smtp", "tcp/53", "ldap", "tcp/88", "dicom", "hl7-mllp", "tcp/1433", "tcp/3306", "tcp/5432"]

# Built-in budget per device class. Classes not listed here are passive.
# Every medical class is passive: infusion pumps, patient monitors,
# ventilators, imaging modalities, lab analyzers, pharmacy dispensers and
# nurse call. So are the PLC-like building and IoT controllers, and network
# gear (switches, routers, firewalls, wireless), which SNMP and LLDP read
# instead. PACS is a server class but keeps a short, slow list because it
# serves modalities. Printers get a connect scan of their management ports only.
DEFAULT_BUDGETS: dict[str, Budget] = {
    "workstation": _make("workstation", ["connect", "version"], _IT_PORTS, max_rate=50, max_connections=4, host_timeout_s=120),
    "server": _make("server", ["connect", "version"], _SERVER_PORTS, max_rate=50, max_connections=4, host_timeout_s=180),
    "pacs": _make("pacs", ["connect", "version"], ["ssh", "http", "https", "dicom", "hl7-mllp"],
                  max_rate=20, max_connections=2, host_timeout_s=120),
    "printer": _make("printer", ["connect"], ["tcp/22", "http", "https"], max_rate=10, max_connections=1, host_timeout_s=60),
    "ip_phone": _make("ip_phone", ["connect"], ["http", "https", "tcp/5060", "tcp/5061"],
                      max_rate=10, max_connections=1, host_timeout_s=60),
    "camera": _make("camera", ["connect"], ["http", "https", "tcp/554"], max_rate=10, max_connections=1, host_timeout_s=60),
}
# An address the twin does not know may be a medical device that no inventory
# lists, so ``unknown`` is passive: discovering unknown hosts needs an explicit
# ``budgets.unknown`` in the site (see docs/scanning.md).
for _name in (
    UNKNOWN_CLASS, "dialysis_machine", "infusion_pump", "patient_monitor", "ventilator", "ct_scanner", "mri_scanner", "xray", "ultrasound",
    "imaging_modality", "lab_analyzer", "pharmacy_dispenser", "nurse_call",
    "hvac_controller", "iot_sensor", "badge_reader",
    "switch", "router", "firewall", "wireless_ap", "wireless_controller",
):
    DEFAULT_BUDGETS[_name] = _passive(_name)
del _name


def _merge(name: str, base: Budget, config: ProbeBudget) -> Budget:
    """Merge one configured budget over a resolved one, key by key.

    A passive base has no pacing of its own (its values only sort it as the
    most conservative), so keys the site leaves unset take
    :data:`ENABLED_PASSIVE_DEFAULTS` instead.
    """
    probes = config.probes if config.probes is not None else sorted(base.probes)
    pacing = dict(ENABLED_PASSIVE_DEFAULTS) if base.passive else {
        "max_rate": base.max_rate,
        "max_connections": base.max_connections,
        "host_timeout_s": base.host_timeout_s,
        "retries": base.retries,
    }
    if config.ports is not None:
        ports = list(config.ports)
    else:
        ports = [f"tcp/{p}" for p in base.tcp_ports] + [f"udp/{p}" for p in base.udp_ports]
    if config.ports is None and (set(probes) - base.probes) & {"connect", "udp"}:
        # A class whose default is passive has no default ports: probing it
        # needs the ports listed in the site budget.
        log.warning("budget %s: probes %s without ports; the class has no default ports, so nothing is probed", name, probes)
    return _make(
        name,
        probes,
        ports,
        max_rate=config.max_rate if config.max_rate is not None else pacing["max_rate"],
        max_connections=config.max_connections if config.max_connections is not None else pacing["max_connections"],
        host_timeout_s=config.host_timeout if config.host_timeout is not None else pacing["host_timeout_s"],
        retries=config.retries if config.retries is not None else pacing["retries"],
        scripts=tuple(config.scripts or ()),
        source="site",
    )


def budgets_for(site: SiteConfig) -> dict[str, Budget]:
    """Resolve the budget of every device class for a site.

    Parameters
    ----------
    site : SiteConfig
        The site; its ``discovery.budgets`` are merged over
        :data:`DEFAULT_BUDGETS` key by key.

    Returns
    -------
    dict of str to Budget
        Device class (and ``unknown``) to its budget. Classes without a
        default or a site budget are absent; :func:`budget_for` treats them
        as passive.

    Notes
    -----
    ``unknown`` is passive unless the site sets ``budgets.unknown``. Its
    default has no ports, so ``budgets.unknown`` that probes must list them.
    """
    resolved = dict(DEFAULT_BUDGETS)
    for name, config in site.discovery.budgets.items():
        base = DEFAULT_BUDGETS.get(name) or _passive(name)
        resolved[name] = _merge(name, base, config)
    return resolved


def budget_for(device_class: str | None, budgets: Mapping[str, Budget]) -> Budget:
    """Return the budget of a device class: a missing or empty class is ``unknown``; a class without a budget is passive."""
    name = device_class or UNKNOWN_CLASS
    if name in budgets:
        return budgets[name]
    if name == UNKNOWN_CLASS:
        return _passive(UNKNOWN_CLASS)
    return _passive(name)
