"""Network-namespace lab: hosts on one Ethernet segment behind a Linux bridge.

Layout::

    <prefix>-sw    switch namespace: bridge ``br0`` with one port per host
    <prefix>-NAME  one namespace per host: interface ``eth0`` and ``lo``

Every veth pair is created inside the switch namespace with its peer moved
straight into the host namespace, so the lab never adds an interface to the
root namespace. Every namespace name starts with a per-lab prefix
(``twl`` plus the test process id and a random suffix), and teardown removes
exactly those namespaces and kills exactly the processes the lab started,
by process group id. IPv6 is disabled in every lab namespace, so the kernel
sends no router solicitations or MLD reports that would pollute captures.

MAC addresses are fixed and locally administered (``02:..``): host ``N``
(address ``subnet + N``) gets ``02:00:0a:e7:00:NN`` and its bridge port
``02:01:0a:e7:00:NN``, so captures and any later LLDP chassis ids are the
same on every run.

Example
-------
>>> with Lab() as lab:                                # doctest: +SKIP
...     ws1 = lab.add_host("ws1", 11)
...     scanner = lab.add_host("scanner", 2)
...     scanner.run(["ping", "-c", "1", ws1.ip])
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = [
    "LAB_SUBNET",
    "COMMAND_TIMEOUT_S",
    "READY_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "BRIDGE_AGEING_S",
    "Lab",
    "Namespace",
    "Host",
    "Capture",
    "LabError",
    "lab_unavailable",
]

log = logging.getLogger(__name__)

# Private prefix used only inside lab namespaces (default 10.231.0.0/24).
LAB_SUBNET = "10.231.0.0/24"
# Seconds one lab command (ip, sysctl) may take before it is killed (default 20).
COMMAND_TIMEOUT_S = 20.0
# Seconds to wait for a spawned program (tcpdump, a service) to report that it
# is ready (default 10).
READY_TIMEOUT_S = 10.0
# Seconds a process gets to exit after SIGINT/SIGTERM before SIGKILL (default 5).
STOP_TIMEOUT_S = 5.0
# Bridge FDB ageing time in seconds (default 600), long enough that learned
# MAC addresses stay put for the length of a test.
BRIDGE_AGEING_S = 600

_TOOLS = ("ip", "tcpdump")


class LabError(RuntimeError):
    """A lab command failed or a lab program did not become ready."""


def lab_unavailable(tools: Sequence[str] = _TOOLS) -> str | None:
    """Return why the lab cannot run here (not root, a tool missing), or None when it can."""
    if os.geteuid() != 0:
        return "the network lab needs root (network namespaces, veth, bridge)"
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"the network lab needs {', '.join(missing)} on PATH (apt-get install iproute2 tcpdump nmap)"
    return None


@dataclass
class Namespace:
    """One network namespace of a lab; runs and spawns programs inside it."""

    lab: "Lab"
    name: str

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """Run ``argv`` inside this namespace; see :meth:`Lab.run`."""
        return self.lab.run(self.name, argv, **kwargs)

    def spawn(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start ``argv`` inside this namespace; see :meth:`Lab.spawn`."""
        return self.lab.spawn(self.name, argv, **kwargs)

    def capture(self, iface: str, path: str | Path, **kwargs) -> "Capture":
        """Start tcpdump on ``iface`` inside this namespace; see :meth:`Lab.capture`."""
        return self.lab.capture(self.name, iface, path, **kwargs)


@dataclass
class Host(Namespace):
    """A lab host: its namespace, address, MAC and the bridge port it hangs on."""

    ip: str = ""
    mac: str = ""
    iface: str = "eth0"
    switch_port: str = ""
    number: int = 0


@dataclass
class Capture:
    """A running tcpdump; :meth:`stop` ends it and returns the pcap path."""

    lab: "Lab"
    process: subprocess.Popen
    path: Path
    iface: str
    namespace: str
    summary: str = ""

    def stop(self) -> Path:
        """Stop tcpdump with SIGINT (it flushes the file) and return the pcap path.

        Raises
        ------
        LabError
            When the kernel dropped packets, because a capture with gaps
            cannot prove that something was not sent.
        """
        if self.process.poll() is None:
            # Give packets in flight a moment to reach the capture buffer.
            time.sleep(0.2)
            self.process.send_signal(signal.SIGINT)
            try:
                _, stderr = self.process.communicate(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.lab._kill(self.process)
                _, stderr = self.process.communicate()
            self.summary = (stderr or b"").decode("utf-8", "replace")
        dropped = [line for line in self.summary.splitlines() if "dropped by kernel" in line]
        if dropped and not dropped[0].strip().startswith("0 "):
            raise LabError(f"tcpdump on {self.namespace}/{self.iface} lost packets: {dropped[0].strip()}")
        return self.path


@dataclass
class Lab:
    """Build and tear down a namespace lab; use it as a context manager.

    Parameters
    ----------
    subnet : str
        IPv4 prefix of the lab segment (default :data:`LAB_SUBNET`). Host
        numbers passed to :meth:`add_host` are offsets into it.
    prefix : str, optional
        Namespace name prefix; by default ``twl`` plus the process id and
        a random suffix, unique per lab.
    """

    subnet: str = LAB_SUBNET
    prefix: str = ""
    hosts: dict[str, Host] = field(default_factory=dict)
    _namespaces: list[str] = field(default_factory=list)
    _processes: list[subprocess.Popen] = field(default_factory=list)
    _switch: Namespace | None = None

    def __post_init__(self) -> None:
        self.network = ipaddress.ip_network(self.subnet)
        # Absolute path, so a program started with an empty PATH (a test of
        # a missing tool) still runs inside its namespace.
        self.ip_command = shutil.which("ip") or "/usr/sbin/ip"
        if not self.prefix:
            self.prefix = f"twl{os.getpid()}{secrets.token_hex(2)}"

    # ------------------------------------------------------------------ set-up

    def __enter__(self) -> "Lab":
        reason = lab_unavailable(("ip",))
        if reason:
            raise LabError(reason)
        try:
            self._build_switch()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def switch(self) -> Namespace:
        """The switch namespace holding bridge ``br0``."""
        if self._switch is None:
            raise LabError("the lab is not started; use it as a context manager")
        return self._switch

    def _add_namespace(self, suffix: str) -> Namespace:
        name = f"{self.prefix}-{suffix}"
        self._ip(["netns", "add", name])
        self._namespaces.append(name)
        # Disable IPv6 before any interface exists, so none ever gets an address.
        self.run(name, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        self._ip(["-n", name, "link", "set", "lo", "up"])
        return Namespace(self, name)

    def _build_switch(self) -> None:
        self._switch = self._add_namespace("sw")
        sw = self._switch.name
        self._ip(["-n", sw, "link", "add", "br0", "address", "02:02:0a:e7:00:01", "type", "bridge",
                  "ageing_time", str(BRIDGE_AGEING_S * 100), "stp_state", "0"])
        self._ip(["-n", sw, "link", "set", "br0", "up"])

    def add_host(self, name: str, number: int, *, mac: str | None = None) -> Host:
        """Create host namespace ``<prefix>-NAME`` with address ``subnet + number`` on the bridge.

        Parameters
        ----------
        name : str
            Short host name (letters and digits, at most 9 characters, so the
            bridge port name ``p-NAME`` fits the 15-character limit).
        number : int
            Host number inside the subnet, 1 to 254 for a /24.
        mac : str, optional
            MAC address of ``eth0``; default ``02:00:0a:e7:00:NN``.
        """
        if not name.isalnum() or len(name) > 9:
            raise LabError(f"invalid lab host name {name!r}; expected at most 9 letters and digits")
        if name in self.hosts:
            raise LabError(f"lab host {name!r} exists already")
        if not 0 < number < self.network.num_addresses - 1:
            raise LabError(f"host number {number} is outside {self.network}")
        ip = str(self.network.network_address + number)
        mac = mac or f"02:00:0a:e7:{number >> 8:02x}:{number & 0xFF:02x}"
        port_mac = f"02:01:0a:e7:{number >> 8:02x}:{number & 0xFF:02x}"
        namespace = self._add_namespace(name)
        port = f"p-{name}"
        sw = self.switch.name
        self._ip(["-n", sw, "link", "add", port, "address", port_mac, "type", "veth",
                  "peer", "name", "eth0", "address", mac, "netns", namespace.name])
        self._ip(["-n", sw, "link", "set", port, "master", "br0", "up"])
        self._ip(["-n", namespace.name, "addr", "add", f"{ip}/{self.network.prefixlen}", "dev", "eth0"])
        self._ip(["-n", namespace.name, "link", "set", "eth0", "up"])
        host = Host(self, namespace.name, ip=ip, mac=mac, switch_port=port, number=number)
        self.hosts[name] = host
        log.info("lab host %s: %s %s in namespace %s", name, ip, mac, namespace.name)
        return host

    # -------------------------------------------------------------- processes

    def _ip(self, args: Sequence[str]) -> None:
        self._command([self.ip_command, *args])

    def _command(self, argv: Sequence[str]) -> subprocess.CompletedProcess:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        if result.returncode != 0:
            raise LabError(f"lab command failed ({result.returncode}): {' '.join(argv)}: {result.stderr.strip()}")
        return result

    def run(
        self,
        namespace: str,
        argv: Sequence[str],
        *,
        timeout: float = COMMAND_TIMEOUT_S,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` inside a lab namespace and wait for it, with a hard timeout.

        Output is captured as text. On timeout the whole process group is
        killed and :class:`subprocess.TimeoutExpired` propagates.
        """
        self._check_own(namespace)
        process = subprocess.Popen(
            [self.ip_command, "netns", "exec", namespace, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(process)
            process.communicate()
            raise
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        if check and result.returncode != 0:
            raise LabError(f"{' '.join(argv)} in {namespace} exited {result.returncode}: {stderr.strip()[-2000:]}")
        return result

    def spawn(
        self,
        namespace: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) -> subprocess.Popen:
        """Start ``argv`` inside a lab namespace in its own process group; teardown kills it.

        ``ip netns exec`` replaces itself with the program, so the returned
        process id is the program's own.
        """
        self._check_own(namespace)
        process = subprocess.Popen(
            [self.ip_command, "netns", "exec", namespace, *argv],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self._processes.append(process)
        return process

    def capture(
        self,
        namespace: str,
        iface: str,
        path: str | Path,
        *,
        bpf: str | None = None,
        snaplen: int = 256,
    ) -> Capture:
        """Start tcpdump on ``iface`` in ``namespace``, writing ``path``; return once it listens.

        tcpdump runs with ``-Z root`` (no privilege drop, so it can write into
        root-owned temporary folders), ``-U`` (each packet flushed) and ``-n``.
        """
        path = Path(path)
        argv = ["tcpdump", "-i", iface, "-n", "-U", "-Z", "root", "-s", str(snaplen), "-w", str(path)]
        if bpf:
            argv.append(bpf)
        process = self.spawn(namespace, argv, stdout=subprocess.DEVNULL)
        line = _read_line_until(process, process.stderr, "listening on", READY_TIMEOUT_S)
        if line is None:
            self._kill(process)
            raise LabError(f"tcpdump on {namespace}/{iface} did not start within {READY_TIMEOUT_S} s")
        return Capture(self, process, path, iface, namespace)

    def _check_own(self, namespace: str) -> None:
        if namespace not in self._namespaces:
            raise LabError(f"namespace {namespace!r} does not belong to this lab ({self.prefix})")

    def _kill(self, process: subprocess.Popen) -> None:
        """Stop a process group this lab started: SIGTERM, then SIGKILL after STOP_TIMEOUT_S."""
        if process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
                return
            except subprocess.TimeoutExpired:
                continue

    # --------------------------------------------------------------- teardown

    def close(self) -> None:
        """Kill every process the lab started, then delete its namespaces (and with them the veths)."""
        for process in reversed(self._processes):
            self._kill(process)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self._processes.clear()
        for name in reversed(self._namespaces):
            result = subprocess.run([self.ip_command, "netns", "del", name], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
            if result.returncode != 0:
                log.warning("could not delete lab namespace %s: %s", name, result.stderr.strip())
        self._namespaces.clear()
        self.hosts.clear()
        self._switch = None

    def namespaces(self) -> list[str]:
        """Return the names of the namespaces this lab created and has not deleted yet."""
        return list(self._namespaces)


def _read_line_until(process: subprocess.Popen, stream, needle: str, timeout: float) -> str | None:
    """Read lines from ``stream`` until one contains ``needle``; None on timeout or exit."""
    deadline = time.monotonic() + timeout
    buffer = b""
    fd = stream.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            text = line.decode("utf-8", "replace")
            if needle in text:
                return text
        if process.poll() is not None and needle.encode() not in buffer:
            return None
    return None
