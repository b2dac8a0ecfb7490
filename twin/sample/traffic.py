"""Communication edges of the sample site, the site policy, and the ground truth.

Normal traffic follows the clinical and IT workflows the policy allows;
planted traffic breaks it on purpose. :func:`evaluate` is the generator's own
first-match evaluation of the policy, written apart from the product's
analysis code, so the ground truth is an independent statement of what the
product should find.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from twin.model.site import NAMED_SERVICES
from twin.sample.catalog import IT_CLASSES, MEDICAL_CLASSES, MODALITY_CLASSES
from twin.sample.plan import (
    ROGUE_EXFIL_IP,
    ROGUE_SCANNER_IP,
    VENDOR_CLOUD_NET,
    SitePlan,
)

__all__ = ["Edges", "build_policy", "build_edges", "evaluate", "ground_truth", "DEFAULT_RULE", "INTRA_RULE", "INTERNET_RULE"]

# Names recorded as the deciding rule when no policy rule matches.
# Names of the policy defaults, as the policy engine reports them.
DEFAULT_RULE = "default:inter-segment"
INTRA_RULE = "default:intra-segment"
INTERNET_RULE = "default:internet"
TCP, UDP = 6, 17
PROTO_NAMES = {TCP: "tcp", UDP: "udp"}
DC_KINDS = ("dc-imaging", "dc-clinical", "dc-it", "dmz")


@dataclass
class Edges:
    """Distinct communication edges (src, dst, proto, dst_port) as parallel arrays.

    Nodes ``0 .. n_devices-1`` are the plan's devices; higher node ids are
    external addresses, in the order of ``externals``.
    """

    src: np.ndarray
    dst: np.ndarray
    proto: np.ndarray
    port: np.ndarray
    planted: np.ndarray
    externals: list[str]


def _ips(plan: SitePlan, role: str) -> list[str]:
    return [d.ip_text for d in plan.roles.get(role, [])]


def build_policy(plan: SitePlan) -> dict:
    """Return the ordered policy (site.yaml form) for the plan's servers."""
    rules = [
        _rule("deny-guest-to-internal", "deny", "zone:guest", "any",
              description="Guest Wi-Fi reaches the internet only."),
        _rule("deny-internal-to-guest", "deny", "any", "zone:guest"),
        _rule("deny-remote-access-to-clinical", "deny", "any", "zone:clinical", ["telnet", "rdp", "vnc"],
              description="No interactive remote access to clinical segments, not even inside one."),
        _rule("pumps-to-drug-library", "allow", "class:infusion_pump", {"device": _ips(plan, "druglib")}, ["https"],
              True, "Infusion pumps fetch drug libraries and send events."),
        _rule("modalities-to-pacs", "allow", {"device_class": list(MODALITY_CLASSES)}, "class:pacs", ["dicom"], True,
              "Imaging modalities store studies on the PACS."),
        _rule("monitors-to-central-station", "allow", {"device_class": ["patient_monitor", "ventilator"]},
              {"device": _ips(plan, "central") + _ips(plan, "hl7")}, ["hl7-mllp"], True,
              "Monitors and ventilators send waveforms and alarms to the central stations."),
        _rule("lab-to-hl7-engine", "allow", "class:lab_analyzer", {"device": _ips(plan, "hl7")}, ["hl7-mllp"], True),
        _rule("workstations-to-ehr", "allow", "class:workstation", {"device": _ips(plan, "ehr")}, ["https"], True),
        _rule("pharmacy-to-ehr", "allow", "class:pharmacy_dispenser", {"device": _ips(plan, "ehr")}, ["https"], True),
        _rule("dns-and-ntp", "allow", "any", {"device": _ips(plan, "dns")}, ["dns", "ntp"], True),
        _rule("voice-to-call-manager", "allow", {"device_class": ["ip_phone", "nurse_call"]},
              {"device": _ips(plan, "callmgr")}, ["sip"], True),
        _rule("workstations-to-directory", "allow", "class:workstation", {"device": _ips(plan, "dns")},
              ["ldap", "kerberos"]),
        _rule("workstations-to-file-servers", "allow", "class:workstation", {"device": _ips(plan, "file")}, ["smb"]),
        _rule("workstations-to-pacs-viewer", "allow", "class:workstation", "class:pacs", ["https"]),
        _rule("ehr-to-hl7-engine", "allow", {"device": _ips(plan, "ehr")}, {"device": _ips(plan, "hl7")}, ["hl7-mllp"]),
        _rule("hl7-engine-to-ehr", "allow", {"device": _ips(plan, "hl7")}, {"device": _ips(plan, "ehr")}, ["hl7-mllp"]),
        _rule("building-systems-to-bms", "allow", "zone:building", {"device": _ips(plan, "bms")}, ["bacnet", "https"]),
        _rule("internet-to-portal", "allow", "internet", {"device": _ips(plan, "portal")}, ["https"]),
        _rule("internet-to-vpn", "allow", "internet", {"device": _ips(plan, "vpn")}, ["https", "udp/500", "udp/4500"]),
        _rule("remote-access-to-ehr", "allow", {"device": _ips(plan, "portal") + _ips(plan, "vpn")},
              {"device": _ips(plan, "ehr")}, ["https"]),
        _rule("modalities-to-vendor-cloud", "allow", {"device_class": list(MODALITY_CLASSES)},
              {"internet": True, "cidr": [VENDOR_CLOUD_NET]}, ["https"],
              description="Remote service by the modality vendors."),
        _rule("drug-library-updates", "allow", {"device": _ips(plan, "druglib")},
              {"internet": True, "cidr": [VENDOR_CLOUD_NET]}, ["https"]),
        _rule("nms-to-network", "allow", {"device": _ips(plan, "nms")}, "zone:management", ["snmp", "ssh"]),
        _rule("network-to-nms", "allow", "zone:management", {"device": _ips(plan, "nms")}, ["syslog", "snmp-trap"]),
    ]
    return {"default_action": "deny", "intra_segment": "allow", "rules": rules}


def _rule(name, action, src, dst, services=None, required=False, description=""):
    rule = {"name": name, "action": action, "from": src, "to": dst, "services": services or ["any"]}
    if required:
        rule["required"] = True
    if description:
        rule["description"] = description
    return rule


# ---------------------------------------------------------------------------
# Edges


class _EdgeBuilder:
    def __init__(self) -> None:
        self.parts: list[tuple] = []

    def fan(self, src: np.ndarray, pool: np.ndarray, k: int, proto: int, port: int, planted=False) -> None:
        """Connect each source to ``k`` distinct members of ``pool`` (fewer when the pool is small)."""
        k = min(k, len(pool))
        if k == 0 or len(src) == 0:
            return
        offsets = np.arange(len(src))[:, None] + np.arange(k)[None, :]
        dst = pool[offsets % len(pool)].ravel()
        self.parts.append((np.repeat(src, k), dst, proto, port, planted))

    def one(self, src: int, dst: int, proto: int, port: int) -> None:
        self.parts.append((np.array([src]), np.array([dst]), proto, port, True))

    def build(self, externals: list[str]) -> Edges:
        src = np.concatenate([p[0] for p in self.parts]).astype(np.int64)
        dst = np.concatenate([p[1] for p in self.parts]).astype(np.int64)
        proto = np.concatenate([np.full(len(p[0]), p[2], np.int64) for p in self.parts])
        port = np.concatenate([np.full(len(p[0]), p[3], np.int64) for p in self.parts])
        planted = np.concatenate([np.full(len(p[0]), p[4], bool) for p in self.parts])
        keep = src != dst
        src, dst, proto, port, planted = src[keep], dst[keep], proto[keep], port[keep], planted[keep]
        # Distinct edges; a planted copy of an edge wins over a normal one.
        order = np.lexsort((~planted, port, proto, dst, src))
        src, dst, proto, port, planted = src[order], dst[order], proto[order], port[order], planted[order]
        first = np.ones(len(src), bool)
        first[1:] = (np.diff(src) != 0) | (np.diff(dst) != 0) | (np.diff(proto) != 0) | (np.diff(port) != 0)
        return Edges(src[first], dst[first], proto[first], port[first], planted[first], externals)


def _fanout(n_devices: int) -> dict[str, int]:
    """Destinations per source for each workflow; larger sites spread over more servers."""
    big = n_devices >= 20000
    return {"ehr": 8 if big else 2, "dns": 3 if big else 2, "file": 4 if big else 1, "printer": 4 if big else 2,
            "callmgr": 3 if big else 2, "pacs": 2 if big else 1}


def build_edges(plan: SitePlan) -> Edges:
    """Build the distinct edges: normal workflows, then the planted ones."""
    devs = plan.devices
    n = len(devs)
    cls = np.array([d.device_class for d in devs])
    zone = np.array([d.segment.zone for d in devs])
    seg = np.array([d.segment.id for d in devs])
    planted_dev = np.array([bool(d.planted) for d in devs])
    role = {r: np.array([d.index for d in lst]) for r, lst in plan.roles.items()}
    fan = _fanout(n)
    externals = list(plan.remote_users) + list(plan.vendor_cloud)
    if plan.scenario != "compliant":
        externals += [ROGUE_EXFIL_IP, ROGUE_SCANNER_IP]
    ext = {ip: n + i for i, ip in enumerate(externals)}

    def of(*classes: str) -> np.ndarray:
        return np.flatnonzero(np.isin(cls, classes))

    e = _EdgeBuilder()
    e.fan(of("infusion_pump")[~planted_dev[of("infusion_pump")]], role["druglib"], 2, TCP, 443)
    e.fan(of(*MODALITY_CLASSES), role["pacs"], fan["pacs"] + 1, TCP, 104)
    e.fan(of(*MODALITY_CLASSES), np.array([ext[ip] for ip in plan.vendor_cloud]), 1, TCP, 443)
    for building_index, central in enumerate(role["central"]):
        building = plan.buildings[building_index]
        monitors = np.array([d.index for d in devs if d.device_class in ("patient_monitor", "ventilator")
                             and d.building == building], dtype=np.int64)
        e.fan(monitors, np.array([central]), 1, TCP, 2575)
    e.fan(of("lab_analyzer"), role["hl7"], 1, TCP, 2575)
    e.fan(of("pharmacy_dispenser"), role["ehr"], 1, TCP, 443)
    e.fan(of("ip_phone", "nurse_call"), role["callmgr"], fan["callmgr"], UDP, 5060)
    workstations = of("workstation")
    e.fan(workstations, role["ehr"], fan["ehr"], TCP, 443)
    e.fan(workstations, role["dns"], fan["dns"], TCP, 389)
    e.fan(workstations, role["dns"], 1, TCP, 88)
    e.fan(workstations, role["file"], fan["file"], TCP, 445)
    e.fan(workstations, role["pacs"], fan["pacs"], TCP, 443)
    for segment_id in np.unique(seg[workstations]):
        in_segment = seg == segment_id
        printers = np.flatnonzero(in_segment & (cls == "printer"))
        e.fan(np.flatnonzero(in_segment & (cls == "workstation")), printers, fan["printer"], TCP, 9100)
    e.fan(of("hvac_controller", "iot_sensor"), role["bms"], 1, UDP, 47808)
    e.fan(of("badge_reader", "camera"), role["bms"], 1, TCP, 443)
    # Infrastructure: every internal device except guests resolves names and syncs time.
    clients = np.flatnonzero(zone != "guest")
    e.fan(clients, role["dns"], fan["dns"], UDP, 53)
    e.fan(clients, role["dns"], 1, UDP, 123)
    e.fan(role["ehr"], role["hl7"], 1, TCP, 2575)
    e.fan(role["hl7"], role["ehr"], len(role["ehr"]), TCP, 2575)
    e.fan(np.concatenate([role["portal"], role["vpn"]]), role["ehr"], 2, TCP, 443)
    e.fan(role["druglib"], np.array([ext[plan.vendor_cloud[1]]]), 1, TCP, 443)
    users = np.array([ext[ip] for ip in plan.remote_users])
    e.fan(users, role["portal"], 1, TCP, 443)
    e.fan(users[::2], role["vpn"], 1, UDP, 500)
    e.fan(users[::2], role["vpn"], 1, UDP, 4500)
    network = np.flatnonzero(zone == "management")
    e.fan(role["nms"], network, len(network), UDP, 161)
    e.fan(network[network != role["nms"][0]], role["nms"], 1, UDP, 514)
    _plant(plan, e, ext)
    return e.build(externals)


def _plant(plan: SitePlan, e: _EdgeBuilder, ext: dict[str, int]) -> None:
    """Add the planted flows of the scenario (each one denied by the policy)."""
    if plan.scenario == "compliant":
        return
    by_class: dict[tuple[str, str], list] = {}
    for d in plan.devices:
        if not d.planted:
            by_class.setdefault((d.segment.id, d.device_class), []).append(d)
    a = plan.buildings[0].lower()
    ws_a = by_class[(f"{a}-it", "workstation")][0]
    pump_a = by_class[(f"{a}-pumps", "infusion_pump")][0]
    ct_a = by_class[(f"{a}-imaging", "ct_scanner")][0]
    # A staff workstation opens telnet to an infusion pump.
    e.one(ws_a.index, pump_a.index, TCP, 23)
    # A CT scanner sends data to an address outside the vendor-cloud allowlist.
    e.one(ct_a.index, ext[ROGUE_EXFIL_IP], TCP, 443)
    if plan.scenario == "violating":
        return
    b = plan.buildings[1].lower()
    c = plan.buildings[min(2, len(plan.buildings) - 1)].lower()
    guests = by_class[(f"{a}-guest", "unknown")]
    monitor_b = by_class[(f"{b}-monitors", "patient_monitor")][0]
    flat_ws = plan.planted["flat_workstation"]
    hvac = by_class[(f"{c}-bms", "hvac_controller")][0]
    pacs, ehr = plan.roles["pacs"][0], plan.roles["ehr"][0]
    druglib, vpn = plan.roles["druglib"][0], plan.roles["vpn"][0]
    e.one(plan.planted["pump_on_guest"].index, druglib.index, TCP, 443)
    e.one(guests[0].index, pacs.index, TCP, 445)
    e.one(hvac.index, ehr.index, TCP, 443)
    # Attack chain from the internet: scanner -> VPN gateway (ssh) -> workstation (rdp) -> pump (telnet).
    e.one(ext[ROGUE_SCANNER_IP], vpn.index, TCP, 22)
    e.one(vpn.index, ws_a.index, TCP, 3389)
    # Attack chain from guest Wi-Fi through the flat monitoring segment.
    e.one(guests[1].index, flat_ws.index, TCP, 3389)
    e.one(flat_ws.index, monitor_b.index, TCP, 5900)


# ---------------------------------------------------------------------------
# Policy evaluation (the generator's own, independent of twin.analysis)


@dataclass
class _NodeTable:
    external: np.ndarray
    ip: np.ndarray  # uint32 address of every node
    seg: np.ndarray
    zone: np.ndarray
    cls: np.ndarray
    crit: np.ndarray
    building: np.ndarray


def node_table(plan: SitePlan, externals: list[str]) -> _NodeTable:
    devs = plan.devices
    ips = [d.ip for d in devs] + [int(ipaddress.IPv4Address(x)) for x in externals]
    pad = [""] * len(externals)
    return _NodeTable(
        external=np.array([False] * len(devs) + [True] * len(externals)),
        ip=np.array(ips, dtype=np.int64),
        seg=np.array([d.segment.id for d in devs] + pad),
        zone=np.array([d.segment.zone for d in devs] + pad),
        cls=np.array([d.device_class for d in devs] + pad),
        crit=np.array([d.criticality for d in devs] + pad),
        building=np.array([d.building for d in devs] + pad),
    )


def _selector(spec) -> dict:
    if isinstance(spec, dict):
        return spec
    if spec == "any":
        return {"any": True}
    if spec == "internet":
        return {"internet": True}
    key, _, value = spec.partition(":")
    return {{"class": "device_class"}.get(key, key): [value]}


def _selector_mask(spec, nodes: _NodeTable, idx: np.ndarray) -> np.ndarray:
    sel = _selector(spec)
    external = nodes.external[idx]
    if sel.get("any"):
        return ~external
    mask = external.copy() if sel.get("internet") else ~external
    columns = {"segment": nodes.seg, "zone": nodes.zone, "device_class": nodes.cls, "criticality": nodes.crit,
               "building": nodes.building}
    for key, column in columns.items():
        if key in sel:
            mask &= np.isin(column[idx], _as_list(sel[key]))
    if "device" in sel:
        wanted = np.array([int(ipaddress.IPv4Address(x)) for x in _as_list(sel["device"])], dtype=np.int64)
        mask &= np.isin(nodes.ip[idx], wanted)
    if "cidr" in sel:
        inside = np.zeros(len(idx), bool)
        for text in _as_list(sel["cidr"]):
            net = ipaddress.IPv4Network(text)
            low, high = int(net.network_address), int(net.broadcast_address)
            inside |= (nodes.ip[idx] >= low) & (nodes.ip[idx] <= high)
        mask &= inside
    return mask


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _service_mask(services: list[str], proto: np.ndarray, port: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(proto), bool)
    for text in services:
        if text == "any":
            return np.ones(len(proto), bool)
        if text in NAMED_SERVICES:
            ranges = NAMED_SERVICES[text]
        else:
            name, _, ports = text.partition("/")
            low, _, high = ports.partition("-")
            ranges = ((name, int(low), int(high or low)),)
        for name, low, high in ranges:
            number = {"tcp": TCP, "udp": UDP}.get(name, -1)
            mask |= (proto == number) & (port >= low) & (port <= high)
    return mask


def evaluate(policy: dict, edges: Edges, nodes: _NodeTable) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate the policy on every edge, first match wins.

    Returns
    -------
    allowed : numpy.ndarray of bool
    rule : numpy.ndarray of str
        The deciding rule's name, or :data:`INTRA_RULE`, :data:`DEFAULT_RULE`
        or :data:`INTERNET_RULE` when no rule matches.
    """
    count = len(edges.src)
    rule = np.full(count, "", dtype=object)
    allowed = np.zeros(count, bool)
    undecided = np.ones(count, bool)
    for spec in policy["rules"]:
        candidates = np.flatnonzero(undecided)
        hit = _service_mask(spec["services"], edges.proto[candidates], edges.port[candidates])
        hit &= _selector_mask(spec["from"], nodes, edges.src[candidates])
        hit &= _selector_mask(spec["to"], nodes, edges.dst[candidates])
        chosen = candidates[hit]
        rule[chosen] = spec["name"]
        allowed[chosen] = spec["action"] == "allow"
        undecided[chosen] = False
    rest = np.flatnonzero(undecided)
    same = ~nodes.external[edges.src[rest]] & ~nodes.external[edges.dst[rest]]
    same &= nodes.seg[edges.src[rest]] == nodes.seg[edges.dst[rest]]
    rule[rest[same]] = INTRA_RULE
    allowed[rest[same]] = policy["intra_segment"] == "allow"
    rule[rest[~same]] = DEFAULT_RULE
    allowed[rest[~same]] = policy["default_action"] == "allow"
    internet = nodes.external[edges.src[rest]] | nodes.external[edges.dst[rest]]
    rule[rest[internet]] = INTERNET_RULE
    return allowed, rule


# ---------------------------------------------------------------------------
# Ground truth


def _ip_text(values: np.ndarray) -> list[str]:
    return [str(ipaddress.IPv4Address(int(v))) for v in values]


def ground_truth(plan: SitePlan, site: dict, edges: Edges) -> dict[str, list[dict]]:
    """Derive every finding the product should report, from the plan and the edges.

    Raises
    ------
    RuntimeError
        When a normal edge is denied or a planted edge allowed: the generator
        would then promise findings it did not plant.
    """
    nodes = node_table(plan, edges.externals)
    allowed, rule = evaluate(site["policy"], edges, nodes)
    wrong_normal = np.flatnonzero(~allowed & ~edges.planted)
    wrong_planted = np.flatnonzero(allowed & edges.planted)
    if len(wrong_normal) or len(wrong_planted):
        sample = np.concatenate([wrong_normal[:3], wrong_planted[:3]])
        detail = [(nodes.ip[edges.src[i]], nodes.ip[edges.dst[i]], edges.port[i], rule[i]) for i in sample]
        raise RuntimeError(
            f"sample generator bug: {len(wrong_normal)} normal edge(s) denied and {len(wrong_planted)} planted "
            f"edge(s) allowed, for example {detail}; fix the workflows or the policy in twin/sample/traffic.py"
        )
    denied = np.flatnonzero(~allowed)
    violations = [
        {"src_ip": s, "dst_ip": d, "proto": PROTO_NAMES[int(p)], "dst_port": int(q), "rule": str(r)}
        for s, d, p, q, r in zip(_ip_text(nodes.ip[edges.src[denied]]), _ip_text(nodes.ip[edges.dst[denied]]),
                                 edges.proto[denied], edges.port[denied], rule[denied])
    ]
    return {
        "misplaced_devices": _misplaced(plan),
        "segment_violations": sorted(violations, key=lambda v: (v["src_ip"], v["dst_ip"], v["dst_port"])),
        "external_exposure": _exposure(site, edges, nodes),
        "flat_segments": _flat(plan),
        "attack_paths": _attack_paths(plan, site, edges, nodes),
    }


def _misplaced(plan: SitePlan) -> list[dict]:
    rows = [{"ip": d.ip_text, "segment_id": d.segment.id, "device_class": d.device_class}
            for d in plan.devices if d.device_class not in d.segment.designated]
    return sorted(rows, key=lambda r: r["ip"])


def _flat(plan: SitePlan) -> list[dict]:
    medical: set[str] = set()
    general_it: set[str] = set()
    for d in plan.devices:
        if d.device_class in MEDICAL_CLASSES:
            medical.add(d.segment.id)
        elif d.device_class in IT_CLASSES:
            general_it.add(d.segment.id)
    return [{"segment_id": s} for s in sorted(medical & general_it)]


def _exposure(site: dict, edges: Edges, nodes: _NodeTable) -> list[dict]:
    allow = [ipaddress.IPv4Network(x) for x in site["external"]["allowlist"]]
    rows = []
    for i in np.flatnonzero(nodes.external[edges.src] | nodes.external[edges.dst]):
        outbound = bool(nodes.external[edges.dst[i]])
        internal, external = (edges.src[i], edges.dst[i]) if outbound else (edges.dst[i], edges.src[i])
        address = ipaddress.IPv4Address(int(nodes.ip[external]))
        if any(address in net for net in allow):
            continue
        rows.append({"ip": str(ipaddress.IPv4Address(int(nodes.ip[internal]))),
                     "direction": "outbound" if outbound else "inbound", "external": str(address),
                     "proto": PROTO_NAMES[int(edges.proto[i])], "dst_port": int(edges.port[i])})
    return sorted(rows, key=lambda r: (r["ip"], r["external"], r["dst_port"]))


def _attack_paths(plan: SitePlan, site: dict, edges: Edges, nodes: _NodeTable, keep: np.ndarray | None = None) -> list[dict]:
    """Return (entry, target, min hops) pairs over observed edges, bounded by max_hops.

    ``keep`` (bool per edge) limits the search to those edges, for example
    the ones a policy allows.

    Notes
    -----
    A multi-source reverse breadth-first search from all targets first marks
    the nodes that reach any target within ``max_hops``. It makes one
    vectorised pass over the edge arrays per hop, so it costs O(max_hops * E). Forward searches then
    start only from entries among the marked nodes, which keeps the cost low
    at a million edges.
    """
    if keep is not None:
        edges = Edges(edges.src[keep], edges.dst[keep], edges.proto[keep], edges.port[keep], edges.planted[keep],
                      edges.externals)
    paths = site["attack_paths"]
    max_hops = int(paths["max_hops"])
    every = np.arange(len(nodes.external))
    targets = np.zeros(len(every), bool)
    for spec in paths["targets"]:
        targets |= _selector_mask(spec, nodes, every)
    entries = np.zeros(len(every), bool)
    for spec in paths["entry_points"]:
        entries |= _selector_mask(spec, nodes, every)

    reach = targets.copy()
    for _ in range(max_hops):
        grown = reach.copy()
        grown[edges.src[reach[edges.dst]]] = True
        if (grown == reach).all():
            break
        reach = grown
    relevant = np.flatnonzero(reach)
    keep = reach[edges.src] & reach[edges.dst]
    adjacency: dict[int, list[int]] = {}
    for s, d in zip(edges.src[keep].tolist(), edges.dst[keep].tolist()):
        adjacency.setdefault(s, []).append(d)

    best: dict[tuple[str, int], int] = {}
    for start in relevant[entries[relevant]].tolist():
        label = "internet" if nodes.external[start] else str(ipaddress.IPv4Address(int(nodes.ip[start])))
        seen = {start: 0}
        frontier = [start]
        for hops in range(1, max_hops + 1):
            nxt = []
            for node in frontier:
                for peer in adjacency.get(node, ()):
                    if peer not in seen:
                        seen[peer] = hops
                        nxt.append(peer)
            frontier = nxt
        for node, hops in seen.items():
            if hops and targets[node] and node != start:
                key = (label, node)
                best[key] = min(hops, best.get(key, hops))
    rows = [{"entry": label, "target": str(ipaddress.IPv4Address(int(nodes.ip[t]))), "min_hops": h}
            for (label, t), h in best.items()]
    return sorted(rows, key=lambda r: (r["entry"], r["target"]))
