"""Benchmark the Zeek conn.log importer against a bare pyarrow CSV read.

The script writes a synthetic Zeek TSV conn.log of ``--lines`` rows to a
temporary folder, then times, on the same file and in the same run:

* the product: ``twin.discovery.flows.collect`` plus ``transform`` (parse,
  aggregate per (src_ip, dst_ip, proto, dst_port), normalise addresses);
* the peer: ``pyarrow.csv.read_csv`` of the file alone (the header lines
  skipped, the column names from ``#fields``, tab delimiter, quoting off,
  Zeek's ``-`` and ``(empty)`` as nulls, column types inferred).

Each runs in its own child process, ``--repeat`` times, and the best time is
kept. The script prints lines per second for both, the ratio product/peer
(1.0 means the import runs as fast as the bare read; the goal is 0.8 or
more) and the peak resident set size of each child (``ru_maxrss`` from
``os.wait4``), which includes the Python interpreter and its imports.

Run it with ``python bench/bench_zeek_import.py --lines 2000000``. It is a
benchmark, not a test, and it sends nothing over the network.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

__all__ = ["write_conn_log", "main"]

# Rows in the synthetic conn.log when --lines is not given.
DEFAULT_LINES = 2_000_000

# Timed runs per contender; the fastest run counts.
DEFAULT_REPEAT = 3

# Hosts in the synthetic hospital network (10.20.0.0/16) and external
# endpoints (documentation ranges), which bound the number of edges.
INTERNAL_HOSTS = 1500
EXTERNAL_HOSTS = 200

# Random seed, so every run writes the same file.
SEED = 20240101

# Zeek 6 conn.log fields and types, as written by its ASCII writer.
CONN_FIELDS = (
    "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration "
    "orig_bytes resp_bytes conn_state local_orig local_resp missed_bytes history "
    "orig_pkts orig_ip_bytes resp_pkts resp_ip_bytes tunnel_parents"
).split()
CONN_TYPES = (
    "time string addr port addr port enum string interval count count string bool bool "
    "count string count count count count set[string]"
).split()

# (proto, service, port, weight, server pool size): clinical and IT traffic.
# Each client picks a server from the pool with a skewed distribution, so a
# few servers take most of the traffic, as in a real hospital network.
_SERVICES = [
    ("tcp", "ssl", 443, 30, 240),
    ("tcp", "http", 80, 10, 120),
    ("tcp", "dicom", 104, 8, 6),
    ("tcp", "-", 2575, 6, 3),  # HL7 v2 over MLLP
    ("udp", "dns", 53, 20, 4),
    ("udp", "ntp", 123, 4, 2),
    ("udp", "snmp", 161, 3, 300),
    ("tcp", "smb", 445, 6, 10),
    ("tcp", "rdp", 3389, 2, 50),
    ("tcp", "http,ssl", 3128, 5, 2),
    ("icmp", "-", 0, 6, 100),
]

# Exponent of the skew: a server index is int(pool * u ** SKEW) for uniform u.
SKEW = 3.0


def _header(path_name: str = "conn") -> str:
    return (
        "#separator \\x09\n"
        "#set_separator\t,\n"
        "#empty_field\t(empty)\n"
        "#unset_field\t-\n"
        f"#path\t{path_name}\n"
        "#open\t2024-01-01-00-00-00\n"
        "#fields\t" + "\t".join(CONN_FIELDS) + "\n"
        "#types\t" + "\t".join(CONN_TYPES) + "\n"
    )


def _column(values) -> pa.Array:
    return pa.array(values).cast(pa.string())


def write_conn_log(path: Path, lines: int, *, seed: int = SEED, batch: int = 500_000) -> None:
    """Write a synthetic Zeek TSV conn.log with ``lines`` data rows.

    Parameters
    ----------
    path : Path
        File to write.
    lines : int
        Number of data rows.
    seed : int
        Random seed.
    batch : int
        Rows generated and written per step, which bounds memory use.
    """
    rng = np.random.default_rng(seed)
    internal = np.array([f"10.20.{i // 250}.{i % 250 + 1}" for i in range(INTERNAL_HOSTS)])
    external = np.array(
        [f"{net}.{i % 250 + 1}" for i, net in zip(range(EXTERNAL_HOSTS), ["192.0.2", "198.51.100", "203.0.113"] * EXTERNAL_HOSTS)]
        + ["2001:db8::1", "2001:db8::53"]
    )
    # Servers: internal hosts from the end of the range, then external ones.
    servers = np.concatenate([internal[::-1], external])
    protos = np.array([s[0] for s in _SERVICES])
    services = np.array([s[1] for s in _SERVICES])
    ports = np.array([s[2] for s in _SERVICES])
    pools = np.array([s[4] for s in _SERVICES])
    offsets = np.array([sum(s[4] for s in _SERVICES[:i]) % len(servers) for i in range(len(_SERVICES))])
    weights = np.array([s[3] for s in _SERVICES], dtype=float)
    weights /= weights.sum()
    write_options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")

    with open(path, "wb") as handle:
        handle.write(_header().encode())
        ts0 = 1_704_067_200.0
        written = 0
        while written < lines:
            n = min(batch, lines - written)
            pick = rng.choice(len(_SERVICES), size=n, p=weights)
            src = internal[rng.integers(0, INTERNAL_HOSTS, n)]
            server = (pools[pick] * rng.random(n) ** SKEW).astype(int)
            dst = servers[(offsets[pick] + server) % len(servers)]
            to_external = ~np.char.startswith(dst, "10.")
            proto = protos[pick]
            is_icmp = proto == "icmp"
            ts = ts0 + (written + np.arange(n)) * 0.01 + rng.random(n) * 0.001
            orig_bytes = rng.integers(40, 20_000, n)
            resp_bytes = rng.integers(0, 200_000, n)
            orig_pkts = rng.integers(1, 60, n)
            resp_pkts = rng.integers(0, 80, n)
            duration = np.round(rng.random(n) * 30, 6)
            unset_counts = rng.random(n) < 0.05
            table = pa.table(
                {
                    "ts": pa.array(np.round(ts, 6)).cast(pa.string()),
                    "uid": _column(np.char.add("C", rng.integers(10**15, 10**16, n).astype(str))),
                    "id.orig_h": _column(src),
                    "id.orig_p": _column(np.where(is_icmp, 8, rng.integers(1024, 65535, n))),
                    "id.resp_h": _column(dst),
                    "id.resp_p": _column(ports[pick]),
                    "proto": _column(proto),
                    "service": _column(services[pick]),
                    "duration": _column(np.where(unset_counts, "-", duration.astype(str))),
                    "orig_bytes": _column(np.where(unset_counts, "-", orig_bytes.astype(str))),
                    "resp_bytes": _column(np.where(unset_counts, "-", resp_bytes.astype(str))),
                    "conn_state": _column(rng.choice(["SF", "S0", "REJ", "RSTO", "OTH"], n)),
                    "local_orig": _column(np.full(n, "T")),
                    "local_resp": _column(np.where(to_external, "F", "T")),
                    "missed_bytes": _column(np.zeros(n, dtype=int)),
                    "history": _column(rng.choice(["ShADadFf", "S", "ShR", "-"], n)),
                    "orig_pkts": _column(orig_pkts),
                    "orig_ip_bytes": _column(orig_bytes + orig_pkts * 40),
                    "resp_pkts": _column(resp_pkts),
                    "resp_ip_bytes": _column(resp_bytes + resp_pkts * 40),
                    "tunnel_parents": _column(np.full(n, "(empty)")),
                }
            )
            pacsv.write_csv(table, handle, write_options=write_options)
            written += n
        handle.write(b"#close\t2024-01-01-06-00-00\n")


def read_with_pyarrow(path: Path) -> pa.Table:
    """Read the conn.log with a bare ``pyarrow.csv.read_csv`` (the peer)."""
    skip = 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.startswith(b"#"):
                break
            skip += 1
            if line.startswith(b"#fields"):
                names = line.rstrip(b"\n").decode().split("\t")[1:]
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(skip_rows=skip, column_names=names),
        parse_options=pacsv.ParseOptions(
            delimiter="\t",
            quote_char=False,
            invalid_row_handler=lambda row: "skip",
        ),
        convert_options=pacsv.ConvertOptions(null_values=["-", "(empty)"], strings_can_be_null=True),
    )


def import_with_product(path: Path):
    """Import the conn.log with the product (collect and transform)."""
    # Imported here, so the pyarrow child's peak memory does not include the product.
    from twin.discovery import flows

    raw = flows.collect(path)
    return flows.transform(raw, fmt="zeek-conn")


def best_time(function, *args, repeat: int) -> tuple[float, object]:
    """Return the fastest wall time of ``repeat`` calls and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def _child_main(contender: str, path: Path, repeat: int) -> None:
    """Child process: time one contender on ``path`` and print its result as JSON."""
    if contender == "pyarrow":
        seconds, table = best_time(read_with_pyarrow, path, repeat=repeat)
        print(json.dumps({"seconds": seconds, "rows": table.num_rows}))
    else:
        seconds, result = best_time(import_with_product, path, repeat=repeat)
        print(json.dumps({"seconds": seconds, "rows": result.records_read, "edges": result.counts.get("edges", 0)}))


def run_child(contender: str, path: Path, repeat: int) -> dict:
    """Run one contender in a child process; return its result with its peak RSS in MiB."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", contender, "--file", str(path), "--repeat", str(repeat)],
        stdout=subprocess.PIPE, text=True,
    )
    output = process.stdout.read()
    process.stdout.close()
    # os.wait4 returns the child's own resource usage; Popen.wait would discard it.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{contender} child exited {process.returncode}: {output[-1000:]}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_mib"] = usage.ru_maxrss / 1024
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, help="data rows in the synthetic conn.log (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="timed runs per contender; the best counts (default %(default)s)")
    parser.add_argument("--child", choices=("pyarrow", "product"), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lines < 1 or args.repeat < 1:
        parser.error("--lines and --repeat must be at least 1")
    if args.child:
        _child_main(args.child, args.file, args.repeat)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-zeek-") as folder:
        path = Path(folder) / "conn.log"
        start = time.perf_counter()
        write_conn_log(path, args.lines)
        size_mib = path.stat().st_size / 2**20
        print(f"wrote {args.lines:,} lines ({size_mib:.0f} MiB) in {time.perf_counter() - start:.1f} s")

        peer = run_child("pyarrow", path, args.repeat)
        product = run_child("product", path, args.repeat)

    if peer["rows"] != args.lines or product["rows"] != args.lines:
        print(f"row count mismatch: pyarrow {peer['rows']}, product {product['rows']}, expected {args.lines}", file=sys.stderr)
        return 1
    peer_rate = args.lines / peer["seconds"]
    product_rate = args.lines / product["seconds"]
    print(f"pyarrow.csv.read_csv : {peer['seconds']:7.3f} s  {peer_rate:12,.0f} lines/s  peak RSS {peer['peak_mib']:,.0f} MiB")
    print(f"twin zeek-conn import: {product['seconds']:7.3f} s  {product_rate:12,.0f} lines/s  peak RSS {product['peak_mib']:,.0f} MiB"
          f"  ({product['edges']:,} edges)")
    print(f"ratio product/pyarrow: {product_rate / peer_rate:.2f} (goal 0.8 or more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
