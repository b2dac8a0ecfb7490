"""Benchmark the live flow collector's loss-free rate on loopback against nfcapd.

The script tries each rate of ``--rates`` (flow records per second) in
increasing order. At each rate, a sender process sends NetFlow v9 datagrams
to 127.0.0.1 for ``--seconds`` seconds, paced in bursts every millisecond.
The datagrams carry 48 records each and are built in advance with the
encoder of ``bench_flow_aggregate.py``. A template datagram goes first and
again every second. The receiver is started fresh for each rate:

* the product: ``twin collect flows --listen 127.0.0.1:PORT --out FOLDER``
  as a child process, stopped with SIGINT once its decoded count stops
  growing. The records it decoded are read from its counters
  (``--stats-file``).
* the peer: ``nfcapd -b 127.0.0.1 -p PORT -w FOLDER -B BYTES`` (nfdump
  1.7.1), stopped with SIGTERM; the records it stored are counted with
  ``nfdump -I``. ``-B`` requests the same socket receive buffer as the
  product's default ``--receive-buffer`` (32 MiB), so both get what
  ``net.core.rmem_max`` allows; ``--nfcapd-buffer 0`` keeps nfcapd's default.

A rate is loss-free when the receiver has every record the sender sent.
Each contender stops at its first rate with loss. The script prints every
step, the highest loss-free rate of each, and the ratio product/nfcapd (goal
0.5 or more). The ratio is only a bound when a receiver lost nothing at the
highest rate. It also prints whether 50,000 flows/s was loss-free for the
product, and the peak resident set size of each receiver (``os.wait4``) and
of the sender.

The product's queue holds up to 65,536 datagrams (about 3.1 million
records), so over a short ``--seconds`` it absorbs a rate above what its
decoder sustains. nfcapd has only its socket buffer. Use ``--seconds 20`` or
more to compare sustained rates.

Run it with ``python bench/bench_collector.py``. Every datagram goes to
127.0.0.1 only. It is a benchmark, not a test: keep ``--seconds`` small on a
shared machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_flow_aggregate as flowgen  # noqa: E402  (the encoder lives next to this script)

__all__ = ["StepResult", "run_sender", "main"]

# Flow records per second tried in order until the first loss.
DEFAULT_RATES = (10_000, 25_000, 50_000, 100_000, 200_000, 400_000, 800_000, 1_000_000, 1_200_000, 1_600_000, 2_400_000, 3_200_000)
# Seconds the sender sends at each rate.
DEFAULT_SECONDS = 5.0
# Distinct records the sender encodes once and sends in a cycle.
DEFAULT_POOL = 96_000
# Rate at which the product's collector must lose no record.
REQUIRED_RATE = 50_000
# Seconds a receiver may take to start, to drain after the sender ends, and to exit.
START_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 120.0
# Socket receive buffer requested from nfcapd (-B), equal to the default of
# ``twin collect flows --receive-buffer``.
DEFAULT_NFCAPD_BUFFER = 32 << 20
# Offset of the sequence number in a NetFlow v9 header.
_SEQUENCE_OFFSET = 12


@dataclass
class StepResult:
    """One rate step of one receiver."""

    receiver: str
    rate: int
    sent_records: int
    sent_rate: float
    received_records: int
    dropped: int | None
    peak_mib: float
    sender_peak_mib: float

    @property
    def lost(self) -> int:
        return self.sent_records - self.received_records


# ------------------------------------------------------------------- sender


def run_sender(host: str, port: int, rate: float, seconds: float, pool: int) -> dict:
    """Send v9 datagrams to ``host:port`` at ``rate`` records per second for ``seconds``; return counts."""
    per = flowgen.V9_RECORDS_PER_DATAGRAM
    export_secs = int(time.time())
    records = flowgen.generate_records(pool, start_s=export_secs - flowgen.SPAN_S - 120)
    datagrams = flowgen.v9_datagrams(records, export_secs=export_secs)
    raw = datagrams.tobytes()
    size = datagrams.dtype.itemsize
    count = len(datagrams)
    uptime = int(datagrams["header"]["uptime"][0])
    total = int(rate * seconds / per)
    per_second = rate / per

    sequence = 0
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        address = (host, port)
        start = time.perf_counter()
        next_template = start
        while sent < total:
            now = time.perf_counter()
            if now >= next_template:
                sock.sendto(flowgen.v9_template_datagram(sequence=sequence, unix_secs=export_secs, uptime_ms=uptime), address)
                sequence += 1
                next_template = now + 1.0
            due = min(total, int((now - start) * per_second) + 1)
            while sent < due:
                index = sent % count
                datagram = bytearray(raw[index * size:(index + 1) * size])
                struct.pack_into(">I", datagram, _SEQUENCE_OFFSET, sequence)
                sock.sendto(datagram, address)
                sequence += 1
                sent += 1
            if sent < total:
                time.sleep(0.001)
        elapsed = time.perf_counter() - start
    return {"records": sent * per, "seconds": elapsed, "records_per_second": sent * per / max(elapsed, 1e-9)}


def _sender_process(port: int, rate: float, seconds: float, pool: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--sender", str(port), "--rates", str(int(rate)),
         "--seconds", str(seconds), "--pool", str(pool)],
        stdout=subprocess.PIPE, text=True,
    )


def _finish_sender(process: subprocess.Popen, seconds: float) -> tuple[dict, float]:
    output = process.stdout.read()
    process.stdout.close()
    code, peak = flowgen.wait_rusage(process, timeout=seconds * 3 + 60)
    if code != 0:
        raise RuntimeError(f"sender exited {code}: {output[-500:]}")
    return json.loads(output.strip().splitlines()[-1]), peak


# ---------------------------------------------------------------- receivers


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _udp_bound(port: int) -> bool:
    """Return True when some socket is bound to 127.0.0.1:``port`` (read from /proc/net/udp)."""
    local_address = f"0100007F:{port:04X}"
    with open("/proc/net/udp", encoding="ascii") as handle:
        return any(line.split()[1] == local_address for line in handle.readlines()[1:])


def _wait_bound(process: subprocess.Popen, port: int, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if flowgen.has_exited(process):
            raise RuntimeError(f"{name} exited before binding 127.0.0.1:{port}; see its log in the work folder")
        if _udp_bound(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not bind 127.0.0.1:{port} within {START_TIMEOUT_S} s")


def _twin_argv() -> list[str]:
    # Importing twin.cli.collect registers the ``collect`` commands with the app.
    return [sys.executable, "-c", "import sys; import twin.cli.collect; from twin.cli.main import app; sys.argv[0] = 'twin'; app()"]


def _read_stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _decoded_records(stats: dict) -> int:
    """Return the flow records the collector decoded, from its ``--stats-file`` counters."""
    return int(stats.get("records", 0))


def step_twin(folder: Path, rate: int, seconds: float, pool: int) -> StepResult:
    """Run one rate step against ``twin collect flows``."""
    port = _free_udp_port()
    out = folder / f"twin-{rate}"
    stats_path = folder / f"twin-{rate}.json"
    log = open(folder / f"twin-{rate}.log", "wb")
    collector = subprocess.Popen(
        [*_twin_argv(), "collect", "flows", "--listen", f"127.0.0.1:{port}", "--out", str(out),
         "--stats-file", str(stats_path), "--stats-interval", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_bound(collector, port, "twin collect flows")
        sender = _sender_process(port, rate, seconds, pool)
        sent, sender_peak = _finish_sender(sender, seconds)
        # Wait until every record is decoded or the count stops growing for 2 s.
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            decoded = _decoded_records(_read_stats(stats_path))
            if decoded >= sent["records"]:
                break
            if decoded != last:
                last, last_change = decoded, time.monotonic()
            elif time.monotonic() - last_change > 2.0:
                break
            time.sleep(0.2)
    finally:
        if not flowgen.has_exited(collector):
            collector.send_signal(signal.SIGINT)
        code, peak = flowgen.wait_rusage(collector, timeout=STOP_TIMEOUT_S)
        log.close()
    if code != 0:
        raise RuntimeError(f"twin collect flows exited {code}: {(folder / f'twin-{rate}.log').read_text(errors='replace')[-1000:]}")
    stats = _read_stats(stats_path)
    return StepResult("twin", rate, sent["records"], sent["records_per_second"], _decoded_records(stats),
                      int(stats.get("dropped", 0)), peak, sender_peak)


def step_nfcapd(folder: Path, rate: int, seconds: float, pool: int, buffer: int) -> StepResult:
    """Run one rate step against nfcapd; ``buffer`` is its -B value in bytes, 0 for its default."""
    port = _free_udp_port()
    out = folder / f"nfcapd-{rate}"
    out.mkdir()
    log = open(folder / f"nfcapd-{rate}.log", "wb")
    argv = ["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(out), "-t", "86400"]
    if buffer:
        argv += ["-B", str(buffer)]
    nfcapd = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_bound(nfcapd, port, "nfcapd")
        sender = _sender_process(port, rate, seconds, pool)
        sent, sender_peak = _finish_sender(sender, seconds)
        # nfcapd has no live counter, so give it 1 s to drain its socket buffer.
        time.sleep(1.0)
    finally:
        if not flowgen.has_exited(nfcapd):
            nfcapd.send_signal(signal.SIGTERM)
        code, peak = flowgen.wait_rusage(nfcapd, timeout=STOP_TIMEOUT_S)
        log.close()
    stat = subprocess.run(["nfdump", "-R", str(out), "-I"], capture_output=True, text=True, timeout=120, check=True)
    stored = next((int(line.split()[1]) for line in stat.stdout.splitlines() if line.startswith("Flows:")), 0)
    return StepResult("nfcapd", rate, sent["records"], sent["records_per_second"], stored, None, peak, sender_peak)


def _print_step(step: StepResult) -> None:
    dropped = "" if step.dropped is None else f", dropped counter {step.dropped:,}"
    print(f"{step.receiver:7} {step.rate:>9,}/s: sent {step.sent_records:>10,} at {step.sent_rate:>10,.0f}/s, "
          f"received {step.received_records:>10,}, lost {step.lost:>9,}{dropped}; "
          f"receiver peak RSS {step.peak_mib:,.0f} MiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default=",".join(str(r) for r in DEFAULT_RATES),
                        help="comma-separated flow records per second, tried in order (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="seconds of sending per rate (default %(default)s)")
    parser.add_argument("--pool", type=int, default=DEFAULT_POOL, help="distinct records the sender cycles through (default %(default)s)")
    parser.add_argument("--receivers", default="twin,nfcapd", help="receivers to measure, comma-separated (default %(default)s)")
    parser.add_argument("--nfcapd-buffer", type=int, default=DEFAULT_NFCAPD_BUFFER,
                        help="socket receive buffer in bytes that nfcapd requests with -B; 0 keeps its default (default %(default)s)")
    parser.add_argument("--sender", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        rates = sorted(int(value) for value in args.rates.split(","))
    except ValueError:
        parser.error(f"--rates must be comma-separated integers, got {args.rates!r}")
    if not rates or rates[0] < 1 or args.seconds <= 0 or args.pool < flowgen.V9_RECORDS_PER_DATAGRAM:
        parser.error("--rates must be positive, --seconds above 0 and --pool at least 48")

    if args.sender is not None:
        print(json.dumps(run_sender("127.0.0.1", args.sender, rates[0], args.seconds, args.pool)))
        return 0

    receivers = [name.strip() for name in args.receivers.split(",") if name.strip()]
    unknown = set(receivers) - {"twin", "nfcapd"}
    if unknown:
        parser.error(f"unknown receivers {sorted(unknown)}; expected twin and/or nfcapd")
    if "nfcapd" in receivers and (shutil.which("nfcapd") is None or shutil.which("nfdump") is None):
        print("nfcapd or nfdump not found on PATH; install the Debian package nfdump", file=sys.stderr)
        return 2

    try:
        rmem_max = Path("/proc/sys/net/core/rmem_max").read_text().strip()
    except OSError:
        rmem_max = "unknown"
    print(f"net.core.rmem_max: {rmem_max} bytes; nfcapd -B: {args.nfcapd_buffer or 'not given'}", flush=True)
    steps = {
        "twin": step_twin,
        "nfcapd": lambda folder, rate, seconds, pool: step_nfcapd(folder, rate, seconds, pool, args.nfcapd_buffer),
    }
    best: dict[str, int] = {}
    # Receivers that lost records at some rate, so their highest loss-free rate is their limit.
    limited: set[str] = set()
    peaks: dict[str, float] = {}
    sender_peak = 0.0
    results: list[StepResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as folder:
        for name in receivers:
            best[name] = 0
            for rate in rates:
                step = steps[name](Path(folder), rate, args.seconds, args.pool)
                results.append(step)
                _print_step(step)
                peaks[name] = max(peaks.get(name, 0.0), step.peak_mib)
                sender_peak = max(sender_peak, step.sender_peak_mib)
                if step.lost != 0:
                    limited.add(name)
                    break
                best[name] = rate
            else:
                print(f"{name}: no loss up to the highest rate tried ({rates[-1]:,}/s); add higher --rates to find its limit")

    for name in receivers:
        print(f"{name:7} highest loss-free rate: {best[name]:>9,} flows/s; peak RSS {peaks[name]:,.0f} MiB")
    print(f"sender peak RSS: {sender_peak:,.0f} MiB")
    if "twin" in best and "nfcapd" in best and best["nfcapd"]:
        print(_ratio_line(best["twin"], best["nfcapd"], "twin" in limited, "nfcapd" in limited))
    if "twin" in best:
        at_required = [r for r in results if r.receiver == "twin" and r.rate == REQUIRED_RATE]
        if at_required:
            verdict = "yes" if at_required[0].lost == 0 else f"no ({at_required[0].lost:,} lost)"
        else:
            verdict = f"not measured (add {REQUIRED_RATE} to --rates)"
        print(f"twin loss-free at {REQUIRED_RATE:,} flows/s: {verdict}")
    return 0


def _ratio_line(twin: int, nfcapd: int, twin_limited: bool, nfcapd_limited: bool) -> str:
    """Return the ratio line. A receiver without loss at the highest rate only bounds the ratio."""
    ratio = twin / nfcapd
    if twin_limited and nfcapd_limited:
        return f"ratio twin/nfcapd: {ratio:.2f} (goal 0.5 or more)"
    if nfcapd_limited:
        return f"ratio twin/nfcapd: {ratio:.2f} or more, twin lost nothing at the highest rate (goal 0.5 or more)"
    if twin_limited:
        return f"ratio twin/nfcapd: {ratio:.2f} or less, nfcapd lost nothing at the highest rate (goal 0.5 or more)"
    return "ratio twin/nfcapd: unknown, neither lost records at the highest rate; add higher --rates (goal 0.5 or more)"


if __name__ == "__main__":
    sys.exit(main())
