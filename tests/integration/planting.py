"""Plant known changes into a copy of a sample site, by editing its files as the tools would have written them.

Used to test "what changed" reports against a ground truth that the test
itself makes, independently of the product's resolver and analyses.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path


def mac_oid_suffix(mac: str) -> str:
    """Return a MAC as the decimal OID index suffix SNMP tables use (``.0.26.1.233.196.191``)."""
    return "." + ".".join(str(int(part, 16)) for part in mac.split(":"))


def remove_device(site: Path, ip: str, mac: str) -> None:
    """Remove every trace of a device: inventory row, ARP and FDB entries, flows, nmap host."""
    _filter_inventory(site, lambda row: row["IP Address"] != ip)
    hex_mac = mac.replace(":", "").lower()
    suffix = mac_oid_suffix(mac)
    for walk in (site / "snmp").glob("*.snmprec"):
        lines = walk.read_text().splitlines()
        kept = [
            line
            for line in lines
            if not (
                line.split("|", 1)[0].endswith(suffix)
                or line.split("|", 1)[0].endswith("." + ip)
                or line.lower().endswith("|" + hex_mac)
            )
        ]
        walk.write_text("\n".join(kept) + "\n")
    _filter_flows(site, lambda src, dst: ip not in (src, dst))


def add_zeek_flow(site: Path, src: str, dst: str, port: int, ts: float) -> None:
    """Append one completed TCP connection to flows/conn.log, before its #close line."""
    path = site / "flows" / "conn.log"
    lines = path.read_text().splitlines()
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    values = {name: "-" for name in fields}
    values.update(
        {
            "ts": f"{ts:.6f}",
            "uid": "Cplanted0000000001",
            "id.orig_h": src,
            "id.orig_p": "51515",
            "id.resp_h": dst,
            "id.resp_p": str(port),
            "proto": "tcp",
            "duration": "1.000000",
            "orig_bytes": "300",
            "resp_bytes": "700",
            "conn_state": "SF",
            "missed_bytes": "0",
            "history": "ShADadFf",
            "orig_pkts": "6",
            "orig_ip_bytes": "620",
            "resp_pkts": "6",
            "resp_ip_bytes": "1020",
        }
    )
    row = "\t".join(values[name] for name in fields)
    at = next((i for i, line in enumerate(lines) if line.startswith("#close")), len(lines))
    lines.insert(at, row)
    path.write_text("\n".join(lines) + "\n")


def remove_flows(site: Path, src: str, dst: str, port: int) -> int:
    """Remove the flows from src to dst on a port from every flow file; return how many lines went."""
    return _filter_flows(site, lambda s, d, p=None: not (s == src and d == dst), port=port)


def _filter_inventory(site: Path, keep) -> None:
    path = next((site / "inventory").glob("*.csv"))
    text = path.read_text()
    reader = csv.DictReader(io.StringIO(text))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=reader.fieldnames, lineterminator="\n")
    writer.writeheader()
    for row in reader:
        if keep(row):
            writer.writerow(row)
    path.write_text(out.getvalue())


def _filter_flows(site: Path, keep, port: int | None = None) -> int:
    removed = 0
    zeek = site / "flows" / "conn.log"
    if zeek.exists():
        lines = zeek.read_text().splitlines()
        fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
        src_at, dst_at, port_at = fields.index("id.orig_h"), fields.index("id.resp_h"), fields.index("id.resp_p")
        kept = []
        for line in lines:
            if not line.startswith("#"):
                parts = line.split("\t")
                if not keep(parts[src_at], parts[dst_at]) and (port is None or parts[port_at] == str(port)):
                    removed += 1
                    continue
            kept.append(line)
        zeek.write_text("\n".join(kept) + "\n")
    nfdump = site / "flows" / "nfdump.csv"
    if nfdump.exists():
        lines = nfdump.read_text().splitlines()
        header = lines[0].split(",")
        src_at, dst_at, port_at = header.index("sa"), header.index("da"), header.index("dp")
        kept = [lines[0]]
        for line in lines[1:]:
            parts = line.split(",")
            if len(parts) == len(header) and not keep(parts[src_at], parts[dst_at]) and (
                port is None or parts[port_at] == str(port)
            ):
                removed += 1
                continue
            kept.append(line)
        nfdump.write_text("\n".join(kept) + "\n")
    return removed
