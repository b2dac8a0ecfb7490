"""Time the whole query catalogue on a synthetic twin of 100,000 devices and about 1,000,000 communications.

Run: ``python bench/bench_analysis_scale.py [devices] [communications]``.
The twin is random but hospital-shaped: 40 segments in clinical, IT, guest,
building and DMZ zones, workstations talking to servers, pumps to their
drug-library server, guests to the internet, plus random cross traffic.
Prints the seconds per query and the peak resident memory.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import pandas as pd

from twin.analysis import CATALOGUE, run_catalogue
from twin.model.site import SiteConfig
from twin.model.twin import Twin

ZONES = ["clinical"] * 16 + ["it"] * 12 + ["guest"] * 4 + ["building"] * 4 + ["dmz"] * 4
CLASSES = {
    "clinical": ["infusion_pump", "patient_monitor", "ventilator", "workstation"],
    "it": ["workstation", "workstation", "server", "printer", "ip_phone"],
    "guest": ["unknown", "workstation"],
    "building": ["hvac_controller", "camera", "badge_reader"],
    "dmz": ["server"],
}
PORTS = {
    "infusion_pump": [443, 8080],
    "patient_monitor": [2575],
    "ventilator": [443],
    "workstation": [3389, 445],
    "server": [443, 445, 22, 2575, 104],
    "printer": [9100],
    "ip_phone": [5060],
    "hvac_controller": [47808],
    "camera": [554, 80],
    "badge_reader": [443],
    "unknown": [],
}


def build(n_devices: int, n_comm: int, seed: int = 7) -> tuple[Twin, SiteConfig]:
    rng = np.random.default_rng(seed)
    n_seg = len(ZONES)
    segments = [
        {"id": f"seg{i:02d}", "cidrs": [f"10.{i}.0.0/16"], "zone": ZONES[i], "designated_classes": sorted(set(CLASSES[ZONES[i]]))}
        for i in range(n_seg)
    ]
    seg_of = rng.integers(0, n_seg, n_devices)
    zone_of = np.array(ZONES)[seg_of]
    classes = np.array([CLASSES[z][rng.integers(0, len(CLASSES[z]))] for z in zone_of], dtype=object)
    misplace = rng.random(n_devices) < 0.002
    classes[misplace] = "infusion_pump"
    ids = np.array([f"dev{i:06d}" for i in range(n_devices)], dtype=object)
    ips = [[f"10.{s}.{(i >> 8) & 255}.{i & 255}"] for i, s in enumerate(seg_of)]
    crit = np.where(np.isin(classes, ["infusion_pump", "ventilator"]), "life_critical", np.where(classes == "server", "high", "low"))
    devices = pd.DataFrame(
        {
            "device_id": ids,
            "macs": [[] for _ in range(n_devices)],
            "ips": ips,
            "hostname": [f"h{i}" for i in range(n_devices)],
            "device_class": classes,
            "criticality": crit,
            "role": None,
            "segment_id": [f"seg{s:02d}" for s in seg_of],
            "building": None,
        }
    )
    svc_dev, svc_port = [], []
    for i, cls in enumerate(classes):
        for port in PORTS[cls]:
            svc_dev.append(ids[i])
            svc_port.append(port)
    services = pd.DataFrame({"device_id": svc_dev, "proto": "tcp", "port": svc_port})
    services["vulnerable"] = rng.random(len(services)) < 0.01

    servers = np.flatnonzero(classes == "server")
    workstations = np.flatnonzero(classes == "workstation")
    pumps = np.flatnonzero(classes == "infusion_pump")
    guests = np.flatnonzero(zone_of == "guest")
    parts = []
    # Workstations -> servers (hubs): 50 %.
    m = n_comm // 2
    parts.append((workstations[rng.integers(0, len(workstations), m)], servers[rng.integers(0, min(len(servers), 200), m)], rng.choice([443, 445, 2575], m)))
    # Pumps -> a few drug-library servers: 10 %.
    m = n_comm // 10
    parts.append((pumps[rng.integers(0, len(pumps), m)], servers[rng.integers(0, 5, m)], np.full(m, 443)))
    # Servers -> pumps and monitors: 5 %.
    m = n_comm // 20
    parts.append((servers[rng.integers(0, len(servers), m)], pumps[rng.integers(0, len(pumps), m)], np.full(m, 8080)))
    # Random cross traffic: 25 %.
    m = n_comm // 4
    parts.append((rng.integers(0, n_devices, m), rng.integers(0, n_devices, m), rng.choice([443, 445, 3389, 22, 9100], m)))
    src = np.concatenate([p[0] for p in parts])
    dst = np.concatenate([p[1] for p in parts])
    port = np.concatenate([p[2] for p in parts])
    comm = pd.DataFrame({"src_id": ids[src], "src_kind": "device", "dst_id": ids[dst], "dst_kind": "device", "proto": "tcp", "dst_port": port})
    # Guests -> internet and inbound scans: 10 %.
    m = n_comm - len(comm)
    ext = np.array([f"203.0.113.{i}" for i in range(256)] + [f"198.51.100.{i}" for i in range(256)], dtype=object)
    half = m // 2
    out = pd.DataFrame({"src_id": ids[guests[rng.integers(0, len(guests), half)]], "src_kind": "device", "dst_id": ext[rng.integers(0, len(ext), half)], "dst_kind": "external", "proto": "tcp", "dst_port": 443})
    inbound = pd.DataFrame({"src_id": ext[rng.integers(0, len(ext), m - half)], "src_kind": "external", "dst_id": ids[rng.integers(0, n_devices, m - half)], "dst_kind": "device", "proto": "tcp", "dst_port": rng.choice([22, 443, 3389], m - half)})
    comm = pd.concat([comm, out, inbound], ignore_index=True)
    comm = comm[comm["src_id"] != comm["dst_id"]]
    comm = comm.groupby(["src_id", "src_kind", "dst_id", "dst_kind", "proto", "dst_port"], as_index=False, sort=False).size().rename(columns={"size": "flows"})
    comm["bytes"] = comm["flows"] * 1500
    comm["packets"] = comm["flows"] * 10
    comm["first_seen"] = 0.0
    comm["last_seen"] = 3600.0

    clinical = [s["id"] for s in segments if s["zone"] == "clinical"]
    rules = [
        {"name": "pumps-to-druglib", "action": "allow", "from": {"device_class": "infusion_pump"}, "to": {"device_class": "server"}, "services": ["https"], "required": True},
        {"name": "ws-to-servers", "action": "allow", "from": {"device_class": "workstation"}, "to": {"device_class": "server"}, "services": ["https", "smb", "hl7-mllp"]},
        {"name": "servers-to-clinical", "action": "allow", "from": {"device_class": "server"}, "to": {"segment": clinical}, "services": ["tcp/8080", "hl7-mllp"]},
        {"name": "guest-web", "action": "allow", "from": "zone:guest", "to": "internet", "services": ["https"]},
        {"name": "no-guest-inside", "action": "deny", "from": "zone:guest", "to": "any"},
        {"name": "dmz-in", "action": "allow", "from": "internet", "to": "zone:dmz", "services": ["https"]},
        {"name": "it-admin", "action": "allow", "from": {"zone": "it", "device_class": "workstation"}, "to": "zone:it", "services": ["rdp", "ssh"]},
        {"name": "bms", "action": "allow", "from": "zone:building", "to": "zone:building", "services": ["bacnet"]},
    ]
    site = SiteConfig.model_validate(
        {
            "site": {"name": "bench"},
            "segments": segments,
            "external": {"allowlist": ["203.0.113.0/25"]},
            "policy": {"rules": rules},
            "attack_paths": {"entry_points": ["zone:guest", "internet"], "targets": ["class:infusion_pump"], "max_hops": 6, "k": 3, "max_paths": 2000},
        }
    )
    twin = Twin(site="bench", run_id="bench", built_at=0.0, tables={"devices": devices, "services": services, "communications": comm})
    return twin, site


def main() -> None:
    n_devices = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    n_comm = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    started = time.perf_counter()
    twin, site = build(n_devices, n_comm)
    print(f"built {len(twin.devices)} devices, {len(twin.communications)} communications, {len(twin.services)} services in {time.perf_counter() - started:.1f} s")
    total = 0.0
    paths = None
    for name in CATALOGUE:
        started = time.perf_counter()
        result = run_catalogue(twin, site, [name]) if name != "choke_points" else {name: CATALOGUE[name].find(twin, site, paths=paths)}
        elapsed = time.perf_counter() - started
        if name == "attack_paths":
            paths = result[name]
            extra = f" warnings={paths.attrs.get('warnings')} modes={paths['mode'].value_counts().to_dict() if len(paths) else {}}"
        else:
            extra = ""
        total += elapsed
        print(f"{name:20s} {len(result[name]):8d} rows {elapsed:6.2f} s{extra}")
    print(f"catalogue total {total:.2f} s; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
