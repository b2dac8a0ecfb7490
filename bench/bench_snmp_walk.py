"""Benchmark the live SNMP walker against net-snmp's snmpbulkwalk.

The script writes one distinct walk per agent with the sample-network
generator (``twin.sample``). Access switches have ifTable, ifXTable,
BRIDGE-MIB and Q-BRIDGE-MIB forwarding tables and LLDP neighbours, and the
core router has its ARP table. snmpsim serves the walks on ``--agents``
ports of 127.0.0.1 (spread over ``--processes`` responder processes; agents
are taken from the processes in turn, so concurrent walks load them all).
Then, in the same run and over the same agents and roots
(:data:`twin.discovery.snmp_live.WALK_ROOTS`):

* the product: :func:`walk_device` on every agent, at most
  ``--concurrency`` walks in flight (SNMP v2c, max-repetitions 25);
* the peer: ``snmpbulkwalk -v2c -c COMMUNITY -On -Cr25 127.0.0.1:PORT OID``,
  one process per agent and root, run one after another.

Both contenders run once straight to snmpsim ("latency 0 ms"), then once
for each value of ``--agent-latency-ms`` through a UDP relay that delays
every response by that many milliseconds.
The relay emulates the time a real agent and the network take per request
(a switch's SNMP agent takes milliseconds per PDU). snmpsim cannot do this
itself, because its ``delay`` variation module sleeps in the one thread that
serves every port of the process. The relay runs in its own process, listens
on one 127.0.0.1 port per agent and delays both contenders alike.

Each round prints devices per second for each contender and their ratio.
It prints the varbinds each one got, compared agent by agent. The peer's
count leaves out the endOfMibView lines that snmpbulkwalk prints past the
end of the MIB view. It also prints the walker's timeouts, the
retransmissions the relay saw, and the CPU seconds that snmpsim and the
relay spent while each contender ran. At the end it
prints the peak resident set size of this process, of each snmpsim process
and of the relay (``VmHWM`` from ``/proc``, read before they stop).

NOTE: snmpsim is written in Python and runs on the same cores as both
contenders, so unlike real agents it does not add CPU as agents are added.
At latency 0 its CPU time bounds both contenders; the delayed round shows
how much of the agents' response time the concurrent walker overlaps.

Run it with ``python bench/bench_snmp_walk.py --agents 200``. It is a
benchmark, not a test; it needs snmpsim (with pysmi) and net-snmp's tools,
and it sends traffic only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# The snmpsim runner lives with the test lab helpers at the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.lab.snmpsim import Snmpsim, snmpsim_unavailable  # noqa: E402
from twin.discovery.snmp_live import WALK_ROOTS, SnmpCredentials, WalkSettings, walk_device  # noqa: E402
from twin.sample.plan import build_plan  # noqa: E402
from twin.sample.writers import write_snmp  # noqa: E402

__all__ = ["write_walks", "main"]

DEFAULT_AGENTS = 200
# Devices per generated site: the generator writes one walk per access switch
# plus the core router, so several sites (seeds) are generated until every
# agent has its own walk. 200 devices give 4 walks of 400 to 2,300 lines.
DEFAULT_SITE_DEVICES = 200
DEFAULT_PROCESSES = 2
# Walks in flight at once: the default of the site setting
# discovery.snmp.concurrency.
DEFAULT_CONCURRENCY = 16
# Delays added to every response in the relayed rounds, in milliseconds.
# Estimates of a switch agent's time per GETBULK PDU plus the LAN round
# trip: 5 ms for a typical one, 20 ms for a slow one.
DEFAULT_AGENT_LATENCIES_MS = "5,20"
MAX_REPETITIONS = 25
# Seconds one snmpbulkwalk may take before the benchmark gives up on it.
PEER_TIMEOUT_S = 60
# Seconds the relay process gets to start, reply to a command or exit.
RELAY_TIMEOUT_S = 30
# The relay closes its socket towards snmpsim for a client that has been
# silent this long (snmpbulkwalk uses a new client port for every root).
RELAY_IDLE_S = 10.0
# Requests remembered per client to recognise a retransmission: a datagram
# identical to one of them (same request-id) is a resend after a timeout.
RELAY_RECENT_REQUESTS = 64
GOAL_RATIO = 10.0

# Lines of `snmpbulkwalk -On` that carry no varbind value: the exception
# values noSuchObject, noSuchInstance and endOfMibView in net-snmp 5.9's words.
PEER_EXCEPTION_TEXTS = ("No Such Object", "No Such Instance", "No more variables left in this MIB View")


def write_walks(folder: Path, count: int, site_devices: int) -> list[str]:
    """Write ``count`` generated walks into ``folder``; return their communities."""
    communities: list[str] = []
    seed = 1
    # Bounded: each seed gives at least one walk (the core router).
    while len(communities) < count and seed <= count + 1:
        site = Path(tempfile.mkdtemp(dir=folder, prefix=f"site{seed}-"))
        write_snmp(build_plan(site_devices, seed, f"bench{seed}", "hospital"), site)
        for path in sorted(site.glob("*.snmprec")):
            if len(communities) == count:
                break
            community = f"s{seed}-{path.stem}"
            path.rename(folder / f"{community}.snmprec")
            communities.append(community)
        for leftover in site.glob("*"):
            leftover.unlink()
        site.rmdir()
        seed += 1
    return communities


# --------------------------------------------------------------------------
# Latency relay (runs in its own process)
# --------------------------------------------------------------------------


@dataclass
class _RelayCounters:
    requests: int = 0
    retransmissions: int = 0
    responses: int = 0
    dropped: int = 0


class _AgentRelay(asyncio.DatagramProtocol):
    """One relay port: forwards each client's requests to one snmpsim port, delays the responses."""

    def __init__(self, upstream: tuple[str, int], latency: list[float], counters: _RelayCounters) -> None:
        self.upstream = upstream
        self.latency = latency
        self.counters = counters
        self.transport: asyncio.DatagramTransport | None = None
        # client address -> (socket connected to snmpsim, time of last request)
        self.clients: dict[tuple, tuple[socket.socket, float]] = {}
        self.recent: dict[tuple, collections.deque] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, client: tuple) -> None:
        loop = asyncio.get_running_loop()
        self.counters.requests += 1
        recent = self.recent.setdefault(client, collections.deque(maxlen=RELAY_RECENT_REQUESTS))
        if data in recent:
            self.counters.retransmissions += 1
        recent.append(data)
        entry = self.clients.get(client)
        if entry is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(self.upstream)
            loop.add_reader(sock.fileno(), self._response_ready, sock, client)
        else:
            sock = entry[0]
        self.clients[client] = (sock, time.monotonic())
        try:
            sock.send(data)
        except OSError:
            self.counters.dropped += 1

    def _response_ready(self, sock: socket.socket, client: tuple) -> None:
        try:
            data = sock.recv(65535)
        except OSError:
            return
        self.counters.responses += 1
        if self.latency[0] > 0:
            asyncio.get_running_loop().call_later(self.latency[0], self._deliver, data, client)
        else:
            self._deliver(data, client)

    def _deliver(self, data: bytes, client: tuple) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, client)

    def close_idle(self, now: float, idle_s: float) -> None:
        loop = asyncio.get_running_loop()
        for client, (sock, last) in list(self.clients.items()):
            if now - last > idle_s:
                loop.remove_reader(sock.fileno())
                sock.close()
                del self.clients[client]
                self.recent.pop(client, None)


async def _serve_relay(connection, upstreams: list[tuple[str, int]], latency_s: float) -> None:
    loop = asyncio.get_running_loop()
    latency = [latency_s]
    counters = _RelayCounters()
    relays: list[_AgentRelay] = []
    ports: list[int] = []
    for upstream in upstreams:
        transport, relay = await loop.create_datagram_endpoint(
            lambda upstream=upstream: _AgentRelay(upstream, latency, counters), local_addr=("127.0.0.1", 0)
        )
        relays.append(relay)
        ports.append(transport.get_extra_info("sockname")[1])
    connection.send(ports)

    stopped = loop.create_future()

    def command_ready() -> None:
        command, argument = connection.recv()
        if command == "stats":
            connection.send(dict(vars(counters)))
        elif command == "reset":
            for key in vars(counters):
                setattr(counters, key, 0)
            connection.send(True)
        elif command == "latency":
            latency[0] = float(argument)
            connection.send(True)
        elif not stopped.done():
            stopped.set_result(None)

    loop.add_reader(connection.fileno(), command_ready)
    while not stopped.done():
        await asyncio.wait([stopped], timeout=RELAY_IDLE_S / 2)
        now = time.monotonic()
        for relay in relays:
            relay.close_idle(now, RELAY_IDLE_S)
    for relay in relays:
        relay.close_idle(float("inf"), 0)
        relay.transport.close()


def _relay_main(connection, upstreams: list[tuple[str, int]], latency_s: float) -> None:
    asyncio.run(_serve_relay(connection, upstreams, latency_s))


class LatencyRelay:
    """The relay process, as a context manager; stops the process it started."""

    def __init__(self, upstreams: list[tuple[str, int]], latency_ms: float) -> None:
        self.upstreams = upstreams
        self.latency_ms = latency_ms
        self.ports: list[int] = []
        self._connection = None
        self._process = None

    def __enter__(self) -> "LatencyRelay":
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_relay_main, args=(child, self.upstreams, self.latency_ms / 1000), daemon=True)
        self._process.start()
        if not self._connection.poll(RELAY_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"the latency relay (pid {self._process.pid}) did not start within {RELAY_TIMEOUT_S} s")
        self.ports = self._connection.recv()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self, name: str, argument=None):
        self._connection.send((name, argument))
        if not self._connection.poll(RELAY_TIMEOUT_S):
            raise RuntimeError(f"the latency relay did not reply to command {name!r} within {RELAY_TIMEOUT_S} s")
        return self._connection.recv()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            self._connection.send(("stop", None))
        process.join(RELAY_TIMEOUT_S)
        if process.is_alive():
            process.terminate()
            process.join(RELAY_TIMEOUT_S)


# --------------------------------------------------------------------------
# Contenders
# --------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """Return the user plus system CPU seconds that the running processes ``pids`` have used."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # Fields 14 and 15 of proc(5) (utime, stime), counted after the name.
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def peak_rss_mib(pid: int) -> float | None:
    """Return the peak resident set size (VmHWM) of a running process in MiB, or None when unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


class _TimeoutCounter(logging.Handler):
    """Counts the walker's log records of requests that timed out and were sent again smaller."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "did not answer GETBULK in" in record.getMessage():
            self.count += 1


async def walk_all(endpoints: list[tuple[str, int, str]], concurrency: int) -> list:
    settings = WalkSettings(max_repetitions=MAX_REPETITIONS)
    limit = asyncio.Semaphore(concurrency)

    async def one(host: str, port: int, community: str):
        async with limit:
            credentials = [SnmpCredentials(name="v2c", version="2c", community=community)]
            return await walk_device(host, port, credentials, settings)

    return await asyncio.gather(*(one(*endpoint) for endpoint in endpoints))


def peer_varbind_count(output: str, root: tuple[int, ...]) -> int:
    """Count the varbinds under ``root`` in ``snmpbulkwalk -On`` output, exception values left out."""
    prefix = "." + ".".join(map(str, root)) + "."
    count = 0
    for line in output.splitlines():
        oid, separator, value = line.partition(" = ")
        if not separator or not oid.startswith(prefix):
            continue
        if value.startswith(PEER_EXCEPTION_TEXTS):
            continue
        count += 1
    return count


def peer_walk(host: str, port: int, community: str) -> int:
    """Walk every root with snmpbulkwalk; return the varbinds it printed."""
    varbinds = 0
    for _, oid in WALK_ROOTS:
        completed = subprocess.run(
            ["snmpbulkwalk", "-v2c", "-c", community, "-On", f"-Cr{MAX_REPETITIONS}", f"{host}:{port}", ".".join(map(str, oid))],
            capture_output=True,
            text=True,
            timeout=PEER_TIMEOUT_S,
        )
        varbinds += peer_varbind_count(completed.stdout, oid)
    return varbinds


@dataclass
class Round:
    """Measurements of both contenders over one set of endpoints."""

    latency_ms: float
    agents: int
    product_s: float = 0.0
    product_cpu_s: float = 0.0
    product_varbinds: list[int] = field(default_factory=list)
    product_issues: int = 0
    product_timeouts: int = 0
    product_retransmissions: int | None = None
    # CPU seconds snmpsim and the relay spent while each contender ran.
    product_agent_cpu_s: float = 0.0
    peer_agent_cpu_s: float = 0.0
    peer_s: float = 0.0
    peer_varbinds: list[int] = field(default_factory=list)
    peer_retransmissions: int | None = None

    @property
    def product_rate(self) -> float:
        return self.agents / self.product_s

    @property
    def peer_rate(self) -> float:
        return self.agents / self.peer_s

    @property
    def ratio(self) -> float:
        return self.product_rate / self.peer_rate

    @property
    def mismatched(self) -> list[int]:
        return [index for index, (ours, theirs) in enumerate(zip(self.product_varbinds, self.peer_varbinds)) if ours != theirs]


def run_round(
    endpoints: list[tuple[str, int, str]], concurrency: int, latency_ms: float, relay: LatencyRelay | None, agent_pids: list[int]
) -> Round:
    measured = Round(latency_ms=latency_ms, agents=len(endpoints))
    counter = _TimeoutCounter()
    walker_log = logging.getLogger("twin.discovery.snmp_live")
    walker_log.addHandler(counter)
    previous_level = walker_log.level
    walker_log.setLevel(logging.INFO)
    if relay is not None:
        relay.command("reset")
    try:
        started = time.perf_counter()
        cpu_started = time.process_time()
        agent_cpu_started = cpu_seconds(agent_pids)
        results = asyncio.run(walk_all(endpoints, concurrency))
        measured.product_s = time.perf_counter() - started
        measured.product_cpu_s = time.process_time() - cpu_started
        measured.product_agent_cpu_s = cpu_seconds(agent_pids) - agent_cpu_started
    finally:
        walker_log.removeHandler(counter)
        walker_log.setLevel(previous_level)
    measured.product_varbinds = [len(result.varbinds) for result in results]
    measured.product_issues = sum(1 for result in results if not result.answered or result.issues)
    measured.product_timeouts = counter.count + sum(
        1 for result in results for issue in result.issues if issue.kind == "timeout"
    )
    if relay is not None:
        measured.product_retransmissions = relay.command("stats")["retransmissions"]
        relay.command("reset")

    started = time.perf_counter()
    agent_cpu_started = cpu_seconds(agent_pids)
    measured.peer_varbinds = [peer_walk(host, port, community) for host, port, community in endpoints]
    measured.peer_s = time.perf_counter() - started
    measured.peer_agent_cpu_s = cpu_seconds(agent_pids) - agent_cpu_started
    if relay is not None:
        measured.peer_retransmissions = relay.command("stats")["retransmissions"]
    return measured


def print_round(measured: Round, concurrency: int) -> None:
    where = "straight to snmpsim" if measured.latency_ms == 0 else "through the relay"
    print(f"\nround: agent latency {measured.latency_ms:g} ms ({where})")
    retransmitted = "" if measured.product_retransmissions is None else f", {measured.product_retransmissions} retransmissions"
    print(
        f"  product walk_device x{concurrency}: {measured.product_s:8.2f} s {measured.product_rate:7.2f} devices/s "
        f"{sum(measured.product_varbinds)} varbinds, {measured.product_issues} walks with issues, "
        f"{measured.product_timeouts} timeouts{retransmitted}, {measured.product_cpu_s:.1f} s CPU in this process, "
        f"{measured.product_agent_cpu_s:.1f} s in the agents"
    )
    retransmitted = "" if measured.peer_retransmissions is None else f", {measured.peer_retransmissions} retransmissions"
    print(
        f"  peer snmpbulkwalk sequential: {measured.peer_s:8.2f} s {measured.peer_rate:7.2f} devices/s "
        f"{sum(measured.peer_varbinds)} varbinds{retransmitted}, {measured.peer_agent_cpu_s:.1f} s CPU in the agents"
    )
    mismatched = measured.mismatched
    if mismatched:
        print(f"  varbinds differ on {len(mismatched)} of {measured.agents} agents, first at agent index {mismatched[0]}")
    else:
        print(f"  varbinds equal on all {measured.agents} agents")
    print(f"  ratio product/peer: {measured.ratio:.2f}x (goal >= {GOAL_RATIO:g}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=DEFAULT_AGENTS, help="snmpsim agents (ports) to walk")
    parser.add_argument("--site-devices", type=int, default=DEFAULT_SITE_DEVICES, help="devices per generated site")
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES, help="snmpsim responder processes")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="walks in flight at once")
    parser.add_argument(
        "--agent-latency-ms",
        default=DEFAULT_AGENT_LATENCIES_MS,
        help="comma-separated milliseconds the relay adds to every response, one round each; empty skips the relay",
    )
    args = parser.parse_args(argv)
    reason = snmpsim_unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    if args.agents < 1 or args.processes < 1 or args.concurrency < 1:
        parser.error("--agents, --processes and --concurrency must be at least 1")
    try:
        latencies_ms = [float(text) for text in args.agent_latency_ms.split(",") if text.strip()]
    except ValueError:
        parser.error(f"--agent-latency-ms: expected comma-separated numbers of milliseconds, got {args.agent_latency_ms!r}")
    if any(latency <= 0 for latency in latencies_ms):
        parser.error("--agent-latency-ms: every latency must be above 0 (the first round is the one without delay)")

    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="twin-bench-snmp-") as temporary:
        data = Path(temporary) / "data"
        data.mkdir()
        communities = write_walks(data, args.agents, args.site_devices)
        if len(communities) < args.agents:
            print(f"generated only {len(communities)} walks for {args.agents} agents", file=sys.stderr)
            return 2
        lines = sum(path.read_text().count("\n") for path in data.glob("*.snmprec"))
        print(f"walks: {len(communities)} generated, {lines} snmprec lines in total")

        per_process = -(-args.agents // args.processes)
        with contextlib.ExitStack() as stack:
            direct: list[tuple[str, int]] = []
            simulators: list[Snmpsim] = []
            for start in range(0, args.agents, per_process):
                count = min(per_process, args.agents - start)
                simulators.append(stack.enter_context(Snmpsim(data, count)))
                direct += simulators[-1].endpoints
            # Every process serves every walk, so agents are taken from the
            # processes in turn: the walks in flight (started in agent order)
            # then keep every process busy, not only the first.
            direct = [
                simulator.endpoints[index]
                for index in range(per_process)
                for simulator in simulators
                if index < len(simulator.endpoints)
            ]
            endpoints = [(host, port, community) for (host, port), community in zip(direct, communities)]
            print(f"agents: {len(endpoints)} on 127.0.0.1 in {-(-args.agents // per_process)} snmpsim processes")

            # Warm-up: snmpsim opens and indexes each data file on its first request.
            asyncio.run(walk_all(endpoints, args.concurrency))

            simulator_pids = [simulator.process.pid for simulator in simulators if simulator.process]
            rounds.append(run_round(endpoints, args.concurrency, 0.0, None, simulator_pids))
            print_round(rounds[-1], args.concurrency)
            relay = None
            if latencies_ms:
                relay = stack.enter_context(LatencyRelay(direct, latencies_ms[0]))
                relayed = [("127.0.0.1", port, community) for port, community in zip(relay.ports, communities)]
                for latency_ms in latencies_ms:
                    relay.command("latency", latency_ms / 1000)
                    rounds.append(run_round(relayed, args.concurrency, latency_ms, relay, simulator_pids + [relay.pid]))
                    print_round(rounds[-1], args.concurrency)
            product_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            simulator_peaks = [peak_rss_mib(simulator.process.pid) for simulator in simulators if simulator.process]
            relay_peak = peak_rss_mib(relay.pid) if relay is not None and relay.pid else None

    def mib(value: float | None) -> str:
        return "unknown" if value is None else f"{value:.0f} MiB"

    print(
        f"\npeak RSS: {product_peak_mib:.0f} MiB this process; snmpsim {', '.join(map(mib, simulator_peaks))}; "
        f"relay {mib(relay_peak)}"
    )
    for measured in rounds:
        verdict = "meets" if measured.ratio >= GOAL_RATIO else "misses"
        print(f"agent latency {measured.latency_ms:g} ms: ratio {measured.ratio:.2f}x {verdict} the {GOAL_RATIO:g}x goal")
    return 0 if all(not measured.mismatched for measured in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
