"""SNMP and LLDP lab: a managed switch, a router and hosts in network namespaces.

Built on :class:`tests.lab.netns.Lab` (one bridge ``br0`` in the switch
namespace, one namespace per host). On top of it:

- the switch gets management address ``subnet + 1`` on ``br0`` (MAC
  ``02:02:0a:e7:00:01``), net-snmp's snmpd listening on that address only,
  the BRIDGE-MIB from :mod:`tests.lab.bridge_mib` (``pass_persist``) and
  lldpd on the bridge ports (never on ``br0``) as snmpd's AgentX subagent,
  so LLDP-MIB is served;
- hosts with ``snmp=True`` (the router) get their own snmpd and lldpd the
  same way. A ``router=True`` host has ``net.ipv4.ip_forward=1`` and a second
  network on interface ``lan2`` (one end of a veth pair kept in the router), so lldpd advertises the router
  capability;
- hosts with ``lldp=True`` only run lldpd; hosts with neither are seen only
  in the switch's FDB and ARP tables.

Every snmpd runs with ``-C`` and an explicit config, ``[snmp] mibs :`` (no
MIB files are loaded), its own ``SNMP_PERSISTENT_DIR`` (which contains the
``createUser`` line of the v3 user) and an AgentX master socket in the lab's
work folder. It serves a v2c read-only community and a v3 authPriv user
(SHA-256, AES-128). Each snmpd starts before its lldpd, because lldpd
1.0.16 retries AgentX only every 15 s. Every lldpd has its own control
socket (``-u``) and config (``-O``) with ``tx-interval 1`` and
``portidsubtype ifname``, and its system hostname set explicitly, because
namespaces share one UTS name.

Every daemon runs inside a lab namespace and is killed when the lab closes,
also when a test fails. Nothing runs in the root namespace.

Example
-------
>>> with SnmpLab(tmp_path) as lab:                    # doctest: +SKIP
...     lab.generate_traffic()
...     lab.wait_for_lldp()
...     rows = lab.snmp_walk(lab.switch, "1.0.8802.1.1.2.1.4.1", version="3")
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tests.lab.netns import LAB_SUBNET, Host, Lab, LabError, Namespace, lab_unavailable

__all__ = [
    "COMMUNITY",
    "V3_USER",
    "V3_AUTH_PROTOCOL",
    "V3_AUTH_KEY",
    "V3_PRIV_PROTOCOL",
    "V3_PRIV_KEY",
    "SWITCH_NAME",
    "SWITCH_NUMBER",
    "SWITCH_MAC",
    "HostSpec",
    "DEFAULT_HOSTS",
    "Agent",
    "SnmpLab",
    "snmp_lab_unavailable",
    "parse_walk_output",
]

log = logging.getLogger(__name__)

# Lab-only SNMP secrets: they exist only inside the lab's namespaces.
COMMUNITY = "lab-public"
V3_USER = "twin-monitor"
V3_AUTH_PROTOCOL = "SHA-256"
V3_AUTH_KEY = "lab-auth-key-0001"
V3_PRIV_PROTOCOL = "AES"
V3_PRIV_KEY = "lab-priv-key-0001"

SWITCH_NAME = "sw1"
SWITCH_NUMBER = 1
# MAC that tests.lab.netns gives br0.
SWITCH_MAC = "02:02:0a:e7:00:01"

# Second network of a router host, on interface lan2.
ROUTER_LAN2_ADDRESS = "10.232.0.1/24"
ROUTER_LAN2_MAC = "02:03:0a:e8:00:01"

# Seconds to wait for snmpd to answer, and for lldpd to open its socket.
DAEMON_READY_TIMEOUT_S = 15.0
# Seconds to wait until every LLDP neighbour is known (tx-interval is 1 s).
LLDP_READY_TIMEOUT_S = 30.0
# Seconds one snmpbulkwalk may run inside the lab.
WALK_TIMEOUT_S = 30.0

_TOOLS = ("ip", "bridge", "snmpd", "lldpd", "lldpcli", "snmpbulkwalk", "snmpget")


def snmp_lab_unavailable() -> str | None:
    """Return why the SNMP lab cannot run here (not root, a tool missing), or None when it can."""
    reason = lab_unavailable(("ip",))
    if reason:
        return reason
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"the SNMP lab needs {', '.join(missing)} on PATH (apt-get install iproute2 snmpd snmp lldpd)"
    return None


@dataclass(frozen=True)
class HostSpec:
    """One lab host: name, host number in the subnet, and what it runs."""

    name: str
    number: int
    snmp: bool = False
    lldp: bool = False
    router: bool = False
    # snmpd engineID text; default "iomt-lab-NAME", unique per agent.
    engine_id: str | None = None


# router: SNMP + LLDP, forwarding; ws1, ws2, pacs1: LLDP only; pump1: neither.
DEFAULT_HOSTS: tuple[HostSpec, ...] = (
    HostSpec("router", 254, snmp=True, lldp=True, router=True),
    HostSpec("ws1", 11, lldp=True),
    HostSpec("ws2", 12, lldp=True),
    HostSpec("pacs1", 13, lldp=True),
    HostSpec("pump1", 14),
)


@dataclass
class Agent:
    """Daemons of one lab namespace: snmpd (optional) and lldpd (optional)."""

    name: str
    namespace: Namespace
    address: str
    mac: str
    folder: Path
    engine_id: str | None = None
    lldp_interfaces: str = "eth0"
    snmpd: subprocess.Popen | None = None
    lldpd: subprocess.Popen | None = None
    lldp_socket: Path | None = None
    agentx_socket: Path | None = None

    def lldp_neighbors(self) -> list[dict]:
        """Return ``lldpcli -f json0 show neighbors`` interface entries of this lldpd."""
        if self.lldp_socket is None:
            raise LabError(f"{self.name} runs no lldpd")
        result = self.namespace.run(["lldpcli", "-u", str(self.lldp_socket), "-f", "json0", "show", "neighbors"], timeout=10)
        document = json.loads(result.stdout or "{}")
        interfaces: list[dict] = []
        for block in document.get("lldp", []):
            interfaces.extend(block.get("interface", []))
        return interfaces


@dataclass
class SnmpLab:
    """Build the SNMP/LLDP lab in ``folder``; use it as a context manager.

    Parameters
    ----------
    folder : Path
        Work folder for configs, sockets, persistent dirs and daemon logs.
        Unix socket paths must stay under 108 bytes, so keep it short.
    hosts : sequence of HostSpec
        Hosts to add (default :data:`DEFAULT_HOSTS`).
    subnet : str
        Lab prefix (default 10.231.0.0/24); the switch takes ``subnet + 1``.
    switch_snmp : bool
        Run snmpd and lldpd in the switch namespace (default True).
    """

    folder: Path
    hosts: Sequence[HostSpec] = DEFAULT_HOSTS
    subnet: str = LAB_SUBNET
    switch_snmp: bool = True
    lab: Lab | None = None
    agents: dict[str, Agent] = field(default_factory=dict)
    _logs: list = field(default_factory=list)
    _sockets: Path | None = None

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.python = sys.executable

    # ------------------------------------------------------------------ set-up

    def __enter__(self) -> "SnmpLab":
        reason = snmp_lab_unavailable()
        if reason:
            raise LabError(reason)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lab = Lab(self.subnet)
        self.lab.__enter__()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop every daemon and delete every namespace of the lab."""
        if self.lab is not None:
            self.lab.close()
        for handle in self._logs:
            handle.close()
        self._logs.clear()
        if self._sockets is not None:
            shutil.rmtree(self._sockets, ignore_errors=True)
            self._sockets = None

    @property
    def switch(self) -> Agent:
        """Daemons of the switch namespace."""
        return self.agents[SWITCH_NAME]

    @property
    def switch_ip(self) -> str:
        """Management address of the switch, on br0."""
        return str(self.lab.network.network_address + SWITCH_NUMBER)

    def host(self, name: str) -> Host:
        """Return lab host ``name``."""
        return self.lab.hosts[name]

    def spec(self, name: str) -> HostSpec:
        """Return the spec of lab host ``name``."""
        return next(spec for spec in self.hosts if spec.name == name)

    def _build(self) -> None:
        lab = self.lab
        switch = lab.switch
        switch.run(["ip", "addr", "add", f"{self.switch_ip}/{lab.network.prefixlen}", "dev", "br0"])
        self.agents[SWITCH_NAME] = Agent(
            SWITCH_NAME, switch, self.switch_ip, SWITCH_MAC, self.folder / SWITCH_NAME,
            engine_id=f"iomt-lab-{SWITCH_NAME}", lldp_interfaces="p-*",
        )
        for spec in self.hosts:
            host = lab.add_host(spec.name, spec.number)
            if spec.router:
                host.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
                # The kernel may lack the dummy driver, so the second network
                # sits on a veth pair whose both ends stay in the router.
                host.run(["ip", "link", "add", "lan2", "address", ROUTER_LAN2_MAC, "type", "veth", "peer", "name", "lan2-peer"])
                host.run(["ip", "addr", "add", ROUTER_LAN2_ADDRESS, "dev", "lan2"])
                host.run(["ip", "link", "set", "lan2-peer", "up"])
                host.run(["ip", "link", "set", "lan2", "up"])
            if spec.snmp or spec.lldp:
                self.agents[spec.name] = Agent(
                    spec.name, host, host.ip, host.mac, self.folder / spec.name,
                    engine_id=spec.engine_id or f"iomt-lab-{spec.name}",
                )

        # snmpd first everywhere, so each lldpd finds its AgentX master at once.
        if self.switch_snmp:
            self._start_snmpd(self.switch, bridge="br0")
        for spec in self.hosts:
            if spec.snmp:
                self._start_snmpd(self.agents[spec.name])
        if self.switch_snmp:
            self._start_lldpd(self.switch)
        for spec in self.hosts:
            if spec.lldp:
                self._start_lldpd(self.agents[spec.name])

    def _socket_folder(self) -> Path:
        """Return a folder for lldpd sockets and configs that every user can traverse (mode 0711).

        The work folder may sit under a private parent (pytest's tmp_path
        is under a 0700 folder), which the unprivileged lldpcli cannot enter.
        """
        if self._sockets is None:
            self._sockets = Path(tempfile.mkdtemp(prefix="twl-lldp-"))
            self._sockets.chmod(0o711)
        return self._sockets

    def _log_file(self, agent: Agent, daemon: str):
        handle = open(agent.folder / f"{daemon}.log", "ab")
        self._logs.append(handle)
        return handle

    # ------------------------------------------------------------------- snmpd

    def _start_snmpd(self, agent: Agent, *, bridge: str | None = None) -> None:
        agent.folder.mkdir(parents=True, exist_ok=True)
        persistent = agent.folder / "persist"
        persistent.mkdir(exist_ok=True)
        agent.agentx_socket = agent.folder / "agentx.sock"
        # net-snmp expects createUser in the persistent snmpd.conf; snmpd
        # rewrites that file with the localized usmUser entry when it stops.
        (persistent / "snmpd.conf").write_text(
            f'createUser {V3_USER} {V3_AUTH_PROTOCOL} "{V3_AUTH_KEY}" {V3_PRIV_PROTOCOL} "{V3_PRIV_KEY}"\n',
            encoding="utf-8",
        )
        lines = [
            "[snmp] mibs :",
            f"[snmp] persistentDir {persistent}",
            f"agentaddress udp:{agent.address}:161",
            "master agentx",
            f"agentXSocket unix:{agent.agentx_socket}",
            f"engineID {agent.engine_id}",
            f"sysName {agent.name}",
            f"sysLocation iomt-twin lab, namespace {agent.namespace.name}",
            "sysContact lab@example.invalid",
            # sysServices: 2 (bridge) for the switch, 76 (internet, end-to-end,
            # applications) for a router.
            f"sysServices {2 if bridge else 76}",
            f"rocommunity {COMMUNITY} {self.lab.network}",
            f"rouser {V3_USER} priv",
            "dontLogTCPWrappersConnects yes",
        ]
        if bridge:
            script = Path(__file__).resolve().with_name("bridge_mib.py")
            lines.append(f"pass_persist .1.3.6.1.2.1.17 {self.python} {script} --bridge {bridge}")
        config = agent.folder / "snmpd.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")

        env = {**os.environ, "SNMP_PERSISTENT_DIR": str(persistent), "MIBS": "", "MIBDIRS": "/nonexistent"}
        log_handle = self._log_file(agent, "snmpd")
        agent.snmpd = agent.namespace.spawn(
            # -C skips every default config file, the persistent one too, so
            # the persistent snmpd.conf (createUser) is named explicitly.
            ["snmpd", "-f", "-C", "-c", f"{config},{persistent / 'snmpd.conf'}", "-Lo", "-p", str(agent.folder / "snmpd.pid")],
            env=env, stdout=log_handle, stderr=subprocess.STDOUT,
        )

        deadline = time.monotonic() + DAEMON_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if agent.snmpd.poll() is not None:
                raise LabError(f"snmpd in {agent.name} exited {agent.snmpd.returncode}; see {agent.folder / 'snmpd.log'}")
            probe = agent.namespace.run(
                ["snmpget", "-v2c", "-c", COMMUNITY, "-On", "-t", "0.5", "-r", "0", agent.address, "1.3.6.1.2.1.1.5.0"],
                check=False, env=self._client_env(),
            )
            if probe.returncode == 0 and agent.name in probe.stdout:
                log.info("snmpd in %s answers on %s", agent.name, agent.address)
                return
            time.sleep(0.2)
        raise LabError(f"snmpd in {agent.name} did not answer on {agent.address} within {DAEMON_READY_TIMEOUT_S} s")

    # ------------------------------------------------------------------- lldpd

    def _start_lldpd(self, agent: Agent) -> None:
        agent.folder.mkdir(parents=True, exist_ok=True)
        # lldpd runs lldpcli as user _lldpd to apply -O, so the control
        # socket and config live in a folder that user can traverse.
        agent.lldp_socket = self._socket_folder() / f"{agent.name}.sock"
        # lldpcli reads the -O file as user _lldpd too, and skips it silently
        # when it cannot, so it sits next to the socket, readable by all.
        config = self._socket_folder() / f"{agent.name}.conf"
        config.write_text(
            "\n".join([
                f"configure system hostname {agent.name}",
                f'configure system description "iomt-twin lab {agent.name}"',
                f"configure system ip management pattern {agent.address}",
                f"configure system interface pattern {agent.lldp_interfaces}",
                "configure lldp tx-interval 1",
                "configure lldp portidsubtype ifname",
            ]) + "\n",
            encoding="utf-8",
        )
        config.chmod(0o644)

        argv = ["lldpd", "-d", "-u", str(agent.lldp_socket), "-O", str(config), "-L", shutil.which("lldpcli") or "lldpcli"]
        if agent.snmpd is not None:
            argv += ["-x", "-X", str(agent.agentx_socket)]
        log_handle = self._log_file(agent, "lldpd")
        agent.lldpd = agent.namespace.spawn(argv, stdout=log_handle, stderr=subprocess.STDOUT)

        deadline = time.monotonic() + DAEMON_READY_TIMEOUT_S
        probe = None
        while time.monotonic() < deadline:
            if agent.lldpd.poll() is not None:
                raise LabError(f"lldpd in {agent.name} exited {agent.lldpd.returncode}; see {agent.folder / 'lldpd.log'}")
            if agent.lldp_socket.exists():
                probe = agent.namespace.run(["lldpcli", "-u", str(agent.lldp_socket), "-f", "keyvalue", "show", "configuration"],
                                            check=False)
                settings = dict(line.partition("=")[::2] for line in probe.stdout.splitlines())
                if settings.get("configuration.config.tx-delay") == "1" and settings.get("configuration.config.hostname") == agent.name:
                    return
            time.sleep(0.2)
        shown = (probe.stdout + probe.stderr).strip()[-1500:] if probe else "no control socket"
        raise LabError(f"lldpd in {agent.name} did not apply its config within {DAEMON_READY_TIMEOUT_S} s: {shown}")

    # ---------------------------------------------------------------- helpers

    def generate_traffic(self) -> None:
        """Send one UDP datagram between the switch and every host, both ways.

        ARP resolution fills the switch's FDB (learned MACs per port) and
        ARP table, and each host's ARP table, including hosts without LLDP.
        """
        sender = (
            "import socket, sys, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for address in sys.argv[1:]:\n"
            "    s.sendto(b'lab', (address, 9))\n"
            "time.sleep(0.3)\n"
        )
        addresses = [host.ip for host in self.lab.hosts.values()]
        self.lab.switch.run([self.python, "-c", sender, *addresses])
        for host in self.lab.hosts.values():
            host.run([self.python, "-c", sender, self.switch_ip])

    def wait_for_lldp(self, timeout: float = LLDP_READY_TIMEOUT_S) -> None:
        """Wait until the switch's lldpd sees every LLDP host and each host's lldpd sees the switch."""
        expected = {spec.name for spec in self.hosts if spec.lldp}
        deadline = time.monotonic() + timeout
        missing: set[str] = set(expected)
        while time.monotonic() < deadline:
            missing = set(expected) if self.switch.lldp_socket is None else expected - self._neighbor_names(self.switch)
            for name in expected:
                if SWITCH_NAME not in self._neighbor_names(self.agents[name]):
                    missing.add(f"{name} (does not see {SWITCH_NAME})")
            if not missing:
                return
            time.sleep(0.5)
        raise LabError(f"LLDP neighbours missing after {timeout} s: {', '.join(sorted(missing))}")

    @staticmethod
    def _neighbor_names(agent: Agent) -> set[str]:
        if agent.lldp_socket is None:
            return set()
        names = set()
        for entry in agent.lldp_neighbors():
            for chassis in entry.get("chassis", []):
                for name in chassis.get("name", []):
                    names.add(name.get("value"))
        return names

    def _client_env(self) -> dict[str, str]:
        # net-snmp clients load no MIB files, so OIDs stay numeric.
        return {**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"}

    def snmp_walk(self, agent: Agent, oid: str, *, version: str = "2c", from_namespace: Namespace | None = None) -> list[tuple[str, str, str]]:
        """Walk ``oid`` on ``agent`` with net-snmp's snmpbulkwalk; return ``(oid, type, value)`` rows.

        The walk runs inside ``from_namespace`` (default the switch
        namespace). ``version`` is ``"2c"`` (the lab community) or ``"3"``
        (the lab's authPriv user).
        """
        namespace = from_namespace or self.lab.switch
        argv = ["snmpbulkwalk", "-On", "-Oe", "-t", "2", "-r", "1", *self.client_auth(version), agent.address, oid]
        result = namespace.run(argv, check=False, timeout=WALK_TIMEOUT_S, env=self._client_env())
        if result.returncode != 0:
            raise LabError(f"snmpbulkwalk -v{version} {agent.address} {oid} failed ({result.returncode}): {result.stderr.strip()}")
        return parse_walk_output(result.stdout)

    @staticmethod
    def client_auth(version: str) -> list[str]:
        """Return net-snmp client options for the lab's v2c community or v3 user."""
        if version == "3":
            return ["-v3", "-l", "authPriv", "-u", V3_USER, "-a", V3_AUTH_PROTOCOL, "-A", V3_AUTH_KEY,
                    "-x", V3_PRIV_PROTOCOL, "-X", V3_PRIV_KEY]
        if version == "2c":
            return ["-v2c", "-c", COMMUNITY]
        raise ValueError(f"invalid SNMP version {version!r}; expected '2c' or '3'")

    def expected_lldp_links(self) -> set[tuple[tuple[str, str], tuple[str, str]]]:
        """Return the LLDP links the lab wired: ``((switch, port), (host, eth0))`` per LLDP host."""
        links = set()
        for spec in self.hosts:
            if spec.lldp:
                links.add(((SWITCH_NAME, self.host(spec.name).switch_port), (spec.name, "eth0")))
        return links


def parse_walk_output(text: str) -> list[tuple[str, str, str]]:
    """Parse ``snmpbulkwalk -On`` lines (``.OID = TYPE: value``) into ``(oid, type, value)``.

    Continuation lines of a multi-line string are joined to their varbind.
    A value without a type (``""``) gets the type ``""``.
    """
    rows: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        if line.startswith(".") and " = " in line:
            oid, _, rest = line.partition(" = ")
            kind, separator, value = rest.partition(": ")
            if not separator:
                kind, value = "", rest
            rows.append((oid.lstrip("."), kind, value))
        elif rows:
            oid, kind, value = rows[-1]
            rows[-1] = (oid, kind, value + "\n" + line)
    return rows
