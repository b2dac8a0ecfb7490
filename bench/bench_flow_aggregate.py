"""Benchmark flow-file aggregation against ``nfdump -A srcip,dstip,proto,dstport``.

The script generates ``--records`` flow records (default 2,000,000) of a
synthetic hospital network and stores the same records twice:

* as an nfdump file: the records are encoded as NetFlow v9 datagrams and sent
  over loopback to an ``nfcapd -b 127.0.0.1`` that this script starts and
  stops, paced so that none is lost (the script checks the stored count);
* as an IPFIX file (RFC 5655: a template message, then data messages of at
  most 1,500 bytes each, as an exporter sends them).

It then times, on the same records in the same run (best of ``--repeat``):

* the peer: ``nfdump -R FOLDER -A srcip,dstip,proto,dstport -q -o csv``
  with its output sent to ``/dev/null``, as a child process;
* the product, in a child process: ``twin.discovery.netflow.read_ipfix_file``
  and ``twin.discovery.flowagg.Aggregator`` (``add`` then ``edges``, with the
  default hour buckets).

It prints records per second for both, the ratio product/nfdump (goal 1.0 or
more) and the peak resident set size of each child (``ru_maxrss`` from
``os.wait4``). Both sides must agree on the number of edges and the total
bytes, or the script exits with 1. The generated records go from ephemeral
client ports to service ports, so the product turns no record around and the
edge counts are comparable.

Run it with ``python bench/bench_flow_aggregate.py --records 2000000``. It
needs nfcapd and nfdump (Debian package ``nfdump``) and sends datagrams only
to 127.0.0.1. It is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = [
    "V9_RECORD",
    "IPFIX_RECORD",
    "V9_RECORDS_PER_DATAGRAM",
    "generate_records",
    "v9_template_datagram",
    "v9_datagrams",
    "ipfix_messages",
    "send_paced",
    "has_exited",
    "wait_rusage",
    "main",
]

# Records generated when --records is not given.
DEFAULT_RECORDS = 2_000_000
# Timed runs per contender; the fastest run counts.
DEFAULT_REPEAT = 3
# Records per second sent to nfcapd while filling its file. In trials on a
# shared 2-core machine, nfcapd 1.7.1 stored 2 million records at this rate
# without loss. Lower it with --fill-rate if the count check fails.
DEFAULT_FILL_RATE = 200_000
# Random seed, so every run writes the same records.
SEED = 20240105

# Hosts of the synthetic network (10.20.0.0/16) and external endpoints, which
# bound the number of distinct edges.
INTERNAL_HOSTS = 1500
EXTERNAL_HOSTS = 200
# (IP protocol, destination port, weight, server pool size), as in the Zeek
# benchmark: HTTPS, HTTP, DICOM, HL7 MLLP, DNS, NTP, SNMP, SMB, RDP, proxy.
SERVICES = [
    (6, 443, 30, 240),
    (6, 80, 10, 120),
    (6, 104, 8, 6),
    (6, 2575, 6, 3),
    (17, 53, 20, 4),
    (17, 123, 4, 2),
    (17, 161, 3, 300),
    (6, 445, 6, 10),
    (6, 3389, 2, 50),
    (6, 3128, 5, 2),
]
# Exponent of the server skew: a server index is int(pool * u ** SKEW).
SKEW = 3.0
# Start of the generated records (2024-01-01 00:00 UTC) and their time span.
START_S = 1_704_067_200
SPAN_S = 6 * 3600
# The exporter booted this long before the first record (v9 sysUptime base).
UPTIME_AT_START_MS = 86_400_000

# NetFlow v9 data record of the template below: 30 bytes, no padding.
V9_RECORD = np.dtype([
    ("src", ">u4"), ("dst", ">u4"), ("proto", "u1"), ("src_port", ">u2"), ("dst_port", ">u2"),
    ("bytes", ">u4"), ("packets", ">u4"), ("first", ">u4"), ("last", ">u4"), ("tcp_flags", "u1"),
])
# (field type, length) in V9_RECORD order: IPV4_SRC_ADDR, IPV4_DST_ADDR,
# PROTOCOL, L4_SRC_PORT, L4_DST_PORT, IN_BYTES, IN_PKTS, FIRST_SWITCHED,
# LAST_SWITCHED, TCP_FLAGS (RFC 3954 section 8).
V9_FIELDS = [(8, 4), (12, 4), (4, 1), (7, 2), (11, 2), (1, 4), (2, 4), (22, 4), (21, 4), (6, 1)]
V9_HEADER = np.dtype([("version", ">u2"), ("count", ">u2"), ("uptime", ">u4"), ("unix_secs", ">u4"),
                      ("sequence", ">u4"), ("source_id", ">u4")])
# Data records per datagram: 20-byte header, 4-byte set header, 48 x 30 bytes
# = 1,464 bytes, within a 1,500-byte MTU with IP and UDP headers.
V9_RECORDS_PER_DATAGRAM = 48

# IPFIX data record: 8-byte counters and absolute millisecond times, 46 bytes.
IPFIX_RECORD = np.dtype([
    ("src", ">u4"), ("dst", ">u4"), ("proto", "u1"), ("src_port", ">u2"), ("dst_port", ">u2"),
    ("bytes", ">u8"), ("packets", ">u8"), ("start_ms", ">u8"), ("end_ms", ">u8"), ("tcp_flags", "u1"),
])
# sourceIPv4Address, destinationIPv4Address, protocolIdentifier,
# sourceTransportPort, destinationTransportPort, octetDeltaCount,
# packetDeltaCount, flowStartMilliseconds, flowEndMilliseconds,
# tcpControlBits (IANA IPFIX information elements).
IPFIX_FIELDS = [(8, 4), (12, 4), (4, 1), (7, 2), (11, 2), (1, 8), (2, 8), (152, 8), (153, 8), (6, 1)]
IPFIX_HEADER = np.dtype([("version", ">u2"), ("length", ">u2"), ("export_time", ">u4"),
                         ("sequence", ">u4"), ("domain", ">u4")])
# 16-byte header, 4-byte set header, 31 x 46 bytes = 1,446 bytes.
IPFIX_RECORDS_PER_MESSAGE = 31
TEMPLATE_ID = 256


# ----------------------------------------------------------------- records


def generate_records(count: int, *, seed: int = SEED, start_s: int = START_S) -> np.ndarray:
    """Return ``count`` synthetic flow records as an :data:`IPFIX_RECORD` array.

    Clients are internal hosts on ephemeral ports (32768 to 60999), servers
    are drawn from per-service pools with a skew, so a few servers take most
    of the traffic. Start times are sorted and spread over :data:`SPAN_S`
    seconds from ``start_s`` (epoch seconds).
    """
    rng = np.random.default_rng(seed)
    internal = (10 << 24) | (20 << 16) | (np.arange(INTERNAL_HOSTS) // 250 << 8) | (np.arange(INTERNAL_HOSTS) % 250 + 1)
    external = np.array([(192 << 24) | (0 << 16) | (2 << 8), (198 << 24) | (51 << 16) | (100 << 8),
                         (203 << 24) | (0 << 16) | (113 << 8)])[np.arange(EXTERNAL_HOSTS) % 3] + np.arange(EXTERNAL_HOSTS) % 250 + 1
    servers = np.concatenate([internal[::-1], external]).astype(np.uint32)
    protos = np.array([s[0] for s in SERVICES], dtype=np.uint8)
    ports = np.array([s[1] for s in SERVICES], dtype=np.uint16)
    pools = np.array([s[3] for s in SERVICES])
    offsets = np.cumsum([0] + [s[3] for s in SERVICES[:-1]]) % len(servers)
    weights = np.array([s[2] for s in SERVICES], dtype=float)
    weights /= weights.sum()

    pick = rng.choice(len(SERVICES), size=count, p=weights)
    records = np.zeros(count, dtype=IPFIX_RECORD)
    records["src"] = internal[rng.integers(0, INTERNAL_HOSTS, count)]
    server = (pools[pick] * rng.random(count) ** SKEW).astype(np.int64)
    records["dst"] = servers[(offsets[pick] + server) % len(servers)]
    records["proto"] = protos[pick]
    records["src_port"] = rng.integers(32768, 61000, count)
    records["dst_port"] = ports[pick]
    records["packets"] = rng.integers(1, 200, count)
    records["bytes"] = records["packets"] * rng.integers(40, 1500, count)
    start_ms = start_s * 1000 + np.sort(rng.integers(0, SPAN_S * 1000, count))
    records["start_ms"] = start_ms
    records["end_ms"] = start_ms + rng.integers(0, 60_000, count)
    records["tcp_flags"] = np.where(protos[pick] == 6, 0x1B, 0)
    return records


# ------------------------------------------------------------- NetFlow v9


def v9_template_datagram(*, sequence: int, unix_secs: int, uptime_ms: int, source_id: int = 1) -> bytes:
    """Return a NetFlow v9 datagram with the template of :data:`V9_RECORD` (id 256)."""
    fields = b"".join(int(t).to_bytes(2, "big") + int(n).to_bytes(2, "big") for t, n in V9_FIELDS)
    template = TEMPLATE_ID.to_bytes(2, "big") + len(V9_FIELDS).to_bytes(2, "big") + fields
    flowset = (0).to_bytes(2, "big") + (4 + len(template)).to_bytes(2, "big") + template
    header = np.zeros(1, dtype=V9_HEADER)
    header[0] = (9, 1, uptime_ms, unix_secs, sequence, source_id)
    return header.tobytes() + flowset


def v9_datagrams(records: np.ndarray, *, export_secs: int, first_sequence: int = 0, source_id: int = 1) -> np.ndarray:
    """Encode records as NetFlow v9 data datagrams of :data:`V9_RECORDS_PER_DATAGRAM` records.

    Returns a structured array with one element per full datagram, whose
    ``tobytes()`` is the datagrams back to back. Records that do not fill a
    last datagram are left out. Every datagram carries the export time
    ``export_secs`` and the sysUptime that goes with it, so collectors
    compute each record's absolute times from FIRST_SWITCHED and
    LAST_SWITCHED. The exporter's boot time is :data:`UPTIME_AT_START_MS`
    before the earliest record, so sysUptime fits its 32 bits when
    ``export_secs`` is within a few weeks of the records.
    """
    per = V9_RECORDS_PER_DATAGRAM
    datagrams = len(records) // per
    boot_ms = int(records["start_ms"].min()) - UPTIME_AT_START_MS
    layout = np.dtype([("header", V9_HEADER), ("set_id", ">u2"), ("set_length", ">u2"), ("records", V9_RECORD, (per,))])
    out = np.zeros(datagrams, dtype=layout)
    out["header"]["version"] = 9
    out["header"]["count"] = per
    out["header"]["uptime"] = export_secs * 1000 - boot_ms
    out["header"]["unix_secs"] = export_secs
    out["header"]["sequence"] = first_sequence + np.arange(datagrams)
    out["header"]["source_id"] = source_id
    out["set_id"] = TEMPLATE_ID
    out["set_length"] = 4 + per * V9_RECORD.itemsize
    body = out["records"]
    chunk = records[: datagrams * per].reshape(datagrams, per)
    for name in ("src", "dst", "proto", "src_port", "dst_port", "bytes", "packets", "tcp_flags"):
        body[name] = chunk[name]
    body["first"] = chunk["start_ms"] - boot_ms
    body["last"] = chunk["end_ms"] - boot_ms
    return out


# ------------------------------------------------------------------ IPFIX


def ipfix_messages(records: np.ndarray, *, export_secs: int, domain: int = 1) -> bytes:
    """Encode records as an IPFIX message stream: one template message, then data messages.

    This is the content of an RFC 5655 IPFIX file. The sequence number of
    each message counts the data records sent before it (RFC 7011 section 3.1).
    """
    fields = b"".join(int(t).to_bytes(2, "big") + int(n).to_bytes(2, "big") for t, n in IPFIX_FIELDS)
    template = TEMPLATE_ID.to_bytes(2, "big") + len(IPFIX_FIELDS).to_bytes(2, "big") + fields
    template_set = (2).to_bytes(2, "big") + (4 + len(template)).to_bytes(2, "big") + template
    header = np.zeros(1, dtype=IPFIX_HEADER)
    header[0] = (10, IPFIX_HEADER.itemsize + len(template_set), export_secs, 0, domain)
    parts = [header.tobytes() + template_set]

    per = IPFIX_RECORDS_PER_MESSAGE
    full = len(records) // per
    layout = np.dtype([("header", IPFIX_HEADER), ("set_id", ">u2"), ("set_length", ">u2"), ("records", IPFIX_RECORD, (per,))])
    messages = np.zeros(full, dtype=layout)
    messages["header"]["version"] = 10
    messages["header"]["length"] = layout.itemsize
    messages["header"]["export_time"] = export_secs
    messages["header"]["sequence"] = np.arange(full) * per
    messages["header"]["domain"] = domain
    messages["set_id"] = TEMPLATE_ID
    messages["set_length"] = 4 + per * IPFIX_RECORD.itemsize
    messages["records"] = records[: full * per].reshape(full, per)
    parts.append(messages.tobytes())

    rest = records[full * per:]
    if len(rest):
        last = np.zeros(1, dtype=IPFIX_HEADER)
        last[0] = (10, IPFIX_HEADER.itemsize + 4 + rest.nbytes, export_secs, full * per, domain)
        parts.append(last.tobytes() + TEMPLATE_ID.to_bytes(2, "big") + (4 + rest.nbytes).to_bytes(2, "big") + rest.tobytes())
    return b"".join(parts)


# ------------------------------------------------------------------ sending


def send_paced(sock: socket.socket, address: tuple[str, int], datagrams: list, *, records_per_second: float,
               records_per_datagram: int, template: bytes | None = None, template_every_s: float = 1.0) -> dict:
    """Send ``datagrams`` to ``address`` at ``records_per_second``, in bursts every millisecond.

    ``template``, when given, is sent first and again every
    ``template_every_s`` seconds, as exporters resend templates. Returns the
    datagrams sent, the seconds it took and the achieved record rate.
    """
    per_second = records_per_second / records_per_datagram
    start = time.perf_counter()
    next_template = start
    sent = 0
    total = len(datagrams)
    while sent < total:
        now = time.perf_counter()
        if template is not None and now >= next_template:
            sock.sendto(template, address)
            next_template = now + template_every_s
        due = min(total, int((now - start) * per_second) + 1)
        while sent < due:
            sock.sendto(datagrams[sent], address)
            sent += 1
        if sent < total:
            time.sleep(0.001)
    elapsed = time.perf_counter() - start
    return {"datagrams": sent, "seconds": elapsed, "records_per_second": sent * records_per_datagram / max(elapsed, 1e-9)}


def has_exited(process: subprocess.Popen) -> bool:
    """Return True when a child has exited, without reaping it, so :func:`wait_rusage` still gets its usage."""
    return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def wait_rusage(process: subprocess.Popen, timeout: float) -> tuple[int, float]:
    """Wait for a child and return its exit code and peak RSS in MiB (``os.wait4``).

    The child is killed (SIGKILL) when it has not exited after ``timeout``
    seconds. Do not call ``process.poll()`` or ``wait()`` before: they reap
    the child and its usage is lost (use :func:`has_exited`).
    """
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_maxrss / 1024
        if time.monotonic() > deadline:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            raise TimeoutError(f"{process.args[0]} did not exit within {timeout} s; killed")
        time.sleep(0.01)


# ------------------------------------------------------------ the two sides


def fill_nfcapd(folder: Path, records: np.ndarray, rate: float) -> int:
    """Store ``records`` in an nfdump file through nfcapd on 127.0.0.1; return the stored flow count."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    capture = folder / "nfcapd"
    capture.mkdir()
    log = open(folder / "nfcapd.log", "wb")
    # -B: 16 MiB socket buffer for the bursts; -t 86400: one file for the run.
    nfcapd = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(capture), "-t", "86400", "-B", str(16 << 20)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_text(folder / "nfcapd.log", "Startup nfcapd", nfcapd, timeout=10)
        export_secs = START_S + SPAN_S + 120
        datagrams = v9_datagrams(records, export_secs=export_secs, first_sequence=1)
        raw = memoryview(datagrams.tobytes())
        size = datagrams.dtype.itemsize
        chunks = [raw[i * size:(i + 1) * size] for i in range(len(datagrams))]
        template = v9_template_datagram(sequence=0, unix_secs=export_secs, uptime_ms=int(datagrams["header"]["uptime"][0]))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sent = send_paced(sock, ("127.0.0.1", port), chunks, records_per_second=rate,
                              records_per_datagram=V9_RECORDS_PER_DATAGRAM, template=template, template_every_s=3600)
        print(f"sent {sent['datagrams']:,} v9 datagrams to nfcapd in {sent['seconds']:.1f} s")
        time.sleep(1.0)
    finally:
        if nfcapd.poll() is None:
            nfcapd.send_signal(signal.SIGTERM)
        nfcapd.wait(timeout=60)
        log.close()
    stat = subprocess.run(["nfdump", "-R", str(capture), "-I"], capture_output=True, text=True, timeout=120, check=True)
    for line in stat.stdout.splitlines():
        if line.startswith("Flows:"):
            return int(line.split()[1])
    raise RuntimeError(f"nfdump -I printed no 'Flows:' line: {stat.stdout[:500]!r}")


def _wait_for_text(path: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if has_exited(process):
            raise RuntimeError(f"{process.args[0]} exited early: {path.read_text(errors='replace')[-500:]}")
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{process.args[0]} did not log {text!r} within {timeout} s")


NFDUMP_KEYS = "srcip,dstip,proto,dstport"


def time_nfdump(capture: Path, repeat: int) -> tuple[float, float]:
    """Return nfdump's best wall time over ``repeat`` runs and its largest peak RSS in MiB."""
    best, peak = float("inf"), 0.0
    for _ in range(repeat):
        with open(os.devnull, "wb") as sink:
            start = time.perf_counter()
            process = subprocess.Popen(["nfdump", "-R", str(capture), "-A", NFDUMP_KEYS, "-q", "-o", "csv"], stdout=sink)
            code, rss = wait_rusage(process, timeout=600)
            elapsed = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"nfdump exited {code}")
        best, peak = min(best, elapsed), max(peak, rss)
    return best, peak


def nfdump_totals(capture: Path) -> tuple[int, int]:
    """Return nfdump's number of aggregated rows and their total bytes."""
    result = subprocess.run(["nfdump", "-R", str(capture), "-A", NFDUMP_KEYS, "-q", "-N", "-o", "fmt:%byt"],
                            capture_output=True, text=True, timeout=600, check=True)
    values = [int(line) for line in result.stdout.split()]
    return len(values), sum(values)


def run_product_child(path: Path, repeat: int) -> dict:
    """Run the product side in a child process; return its JSON result and peak RSS."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import bench_flow_aggregate as b; "
        "b._product_main(sys.argv[2], int(sys.argv[3]))"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(path), str(repeat)],
                               stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    process.stdout.close()
    exit_code, rss = wait_rusage(process, timeout=1800)
    if exit_code != 0:
        raise RuntimeError(f"product child exited {exit_code}: {output[-1000:]}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_mib"] = rss
    return result


def _product_main(path: str, repeat: int) -> None:
    """Child process: time read_ipfix_file plus Aggregator on ``path`` and print JSON."""
    from twin.discovery.flowagg import Aggregator
    from twin.discovery.netflow import read_ipfix_file

    best = float("inf")
    edges = None
    problems = []
    for _ in range(repeat):
        start = time.perf_counter()
        records, problems, counters = read_ipfix_file(path)
        aggregator = Aggregator()
        aggregator.add(records)
        edges = aggregator.edges()
        best = min(best, time.perf_counter() - start)
        del records, aggregator
    print(json.dumps({
        "seconds": best,
        "records": int(counters.records),
        "problems": len(problems),
        "edges": int(len(edges)),
        "bytes": int(edges["bytes"].sum()),
    }))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="flow records to generate (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="timed runs per contender; the best counts (default %(default)s)")
    parser.add_argument("--fill-rate", type=float, default=DEFAULT_FILL_RATE,
                        help="records per second sent to nfcapd while writing its file (default %(default)s)")
    args = parser.parse_args(argv)
    if args.records < V9_RECORDS_PER_DATAGRAM or args.repeat < 1:
        parser.error(f"--records must be at least {V9_RECORDS_PER_DATAGRAM} and --repeat at least 1")
    missing = [tool for tool in ("nfcapd", "nfdump") if shutil.which(tool) is None]
    if missing:
        print(f"{', '.join(missing)} not found on PATH; install the Debian package nfdump", file=sys.stderr)
        return 2

    # Whole datagrams only, so both files hold exactly the same records.
    count = args.records - args.records % V9_RECORDS_PER_DATAGRAM
    with tempfile.TemporaryDirectory(prefix="bench-flowagg-") as folder:
        folder = Path(folder)
        start = time.perf_counter()
        records = generate_records(count)
        ipfix_path = folder / "flows.ipfix"
        ipfix_path.write_bytes(ipfix_messages(records, export_secs=START_S + SPAN_S + 120))
        print(f"generated {count:,} records and wrote {ipfix_path.stat().st_size / 2**20:.0f} MiB of IPFIX "
              f"in {time.perf_counter() - start:.1f} s")
        stored = fill_nfcapd(folder, records, args.fill_rate)
        capture = folder / "nfcapd"
        nfdump_size = sum(p.stat().st_size for p in capture.iterdir())
        print(f"nfcapd stored {stored:,} flows ({nfdump_size / 2**20:.0f} MiB)")
        if stored != count:
            print(f"nfcapd stored {stored:,} of {count:,} records (loss on loopback); rerun with a lower --fill-rate",
                  file=sys.stderr)
            return 1
        del records

        peer_s, peer_peak = time_nfdump(capture, args.repeat)
        peer_rows, peer_bytes = nfdump_totals(capture)
        product = run_product_child(ipfix_path, args.repeat)

    if product["records"] != count or product["edges"] != peer_rows or product["bytes"] != peer_bytes:
        print(f"results differ: nfdump {peer_rows:,} edges / {peer_bytes:,} bytes, product {product['edges']:,} edges / "
              f"{product['bytes']:,} bytes from {product['records']:,} records ({product['problems']} problems)",
              file=sys.stderr)
        return 1
    peer_rate = count / peer_s
    product_rate = count / product["seconds"]
    print(f"nfdump -A {NFDUMP_KEYS}: {peer_s:7.3f} s  {peer_rate:12,.0f} records/s  peak RSS {peer_peak:,.0f} MiB")
    print(f"twin IPFIX read + Aggregator    : {product['seconds']:7.3f} s  {product_rate:12,.0f} records/s  "
          f"peak RSS {product['peak_mib']:,.0f} MiB")
    print(f"edges: {peer_rows:,} (both)")
    print(f"ratio product/nfdump: {product_rate / peer_rate:.2f} (goal 1.0 or more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
