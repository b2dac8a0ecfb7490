"""Generate a fictional hospital site folder in real input formats, with ground truth.

>>> import tempfile
>>> summary = generate_site(tempfile.mkdtemp(), devices=30, scenario="violating")
>>> summary.findings["flat_segments"]
1
"""

from __future__ import annotations

import ipaddress

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from twin.exceptions import ConfigError
from twin.sample.catalog import LIFE_CRITICAL_CLASSES, MODALITY_CLASSES
from twin.sample.plan import (
    REMOTE_USERS_NET,
    SCENARIOS,
    VENDOR_CLOUD_NET,
    SitePlan,
    build_plan,
)
from twin.sample.proposal import build_proposed_policy, simulation_truth
from twin.sample.traffic import DEFAULT_RULE, INTERNET_RULE, INTRA_RULE, build_edges, build_policy, ground_truth
from twin.sample.writers import (
    write_flows,
    write_inventory,
    write_lldp,
    write_nmap,
    write_snmp,
    write_truth_devices,
)

__all__ = ["GenerationSummary", "generate_site", "generate_pair", "MIN_DEVICES", "MAX_DEVICES"]

logger = logging.getLogger(__name__)

# Bounds of the ``devices`` argument of generate_site for the hospital scenario.
MIN_DEVICES = 200
MAX_DEVICES = 500_000
# Files and folders generate_site owns inside out_dir; they are replaced on each run.
_OUTPUTS = ("site.yaml", "proposed_policy.yaml", "ground_truth.yaml", "ground_truth_devices.csv", "inventory", "nmap", "snmp", "lldp", "flows")

_TRUTH_HEADER = """\
# Ground truth of this sample site, derived by the generator (twin/sample) from
# what it planted, without the product's analysis code. Every query lists
# every finding it should return and nothing else.
#
# Keys that identify one finding, per query:
#   misplaced_devices:  ip (primary address), segment_id (the segment the
#                       address lies in), device_class (true class).
#   segment_violations: src_ip, dst_ip (an external address for internet
#                       endpoints), proto, dst_port, rule (the first policy
#                       rule that matches; when none matches, "default:inter-segment"
#                       between segments, "default:intra-segment" within one,
#                       "default:internet" to or from an external address).
#   external_exposure:  ip (internal device), direction (outbound: the device
#                       opened the connection; inbound: the external address
#                       did), external (address outside external.allowlist),
#                       proto, dst_port.
#   flat_segments:      segment_id of each segment holding both medical
#                       devices (infusion_pump, patient_monitor, ventilator,
#                       modalities, pacs, lab_analyzer, pharmacy_dispenser,
#                       nurse_call) and general IT devices (workstation,
#                       server, printer).
#   attack_paths:       observed mode (edges are seen communications, from
#                       source to destination). entry is "internet" (any
#                       external address) or the entry device's ip; target
#                       is the ip of a device matched by attack_paths.targets;
#                       min_hops is the length of the shortest path, at most
#                       attack_paths.max_hops. Entry and target as in site.yaml.
#
# simulation (hospital and violating sites): what `twin simulate --policy
# proposed_policy.yaml` must report against the policy in site.yaml.
#   newly_blocked, newly_allowed: src_ip, dst_ip, proto, dst_port of each
#                       observed communication whose action changes, and
#                       rule, the deciding rule of the proposed policy.
#   workflows_broken:   workflow (a rule with required: true in either
#                       policy) and blocked_by (the proposed rule, or
#                       default, that denies at least one source device,
#                       destination device and service the workflow covers,
#                       observed or not).
#   violations_resolved, violations_introduced: segment_violations keys;
#                       rule is the current policy's deciding rule for
#                       resolved ones and the proposed policy's for
#                       introduced ones.
#   attack_paths_cut, attack_paths_opened: mode (observed: edges are the
#                       observed communications the policy allows), entry
#                       and target as in attack_paths; a pair reachable
#                       within max_hops under one policy and not the other.
#   attack_paths_unenforced: pairs reachable over every observed
#                       communication (today's network) and under neither
#                       policy: gaps in enforcement, not in the policy.
#   exposure_before, exposure_after: external_exposure rows whose
#                       communication the current and the proposed policy
#                       allow.
#
# counts: devices, segments, distinct communication edges (src, dst, proto,
# dst_port), flow records, and records per file (hosts for nmap, OID rows for
# snmprec, neighbours for LLDP JSON, rows for CSV).
"""


@dataclass
class GenerationSummary:
    """Summary of the files :func:`generate_site` wrote."""

    out_dir: Path
    scenario: str
    seed: int
    devices: int
    segments: int
    edges: int
    flow_records: int
    files: dict[str, int] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def site_config(plan: SitePlan, policy: dict) -> dict:
    """Return the site.yaml content for a plan, as plain data."""
    clinical = [str(s.network) for s in plan.segments if s.zone == "clinical" and s.kind not in ("dc-imaging", "dc-clinical")]
    return {
        "site": {
            "name": plan.name,
            "timezone": "UTC",
            "description": f"Fictional {plan.scenario} site made by the iomt-twin sample generator (seed {plan.seed}).",
        },
        "discovery": {
            "scopes": ["10.16.0.0/12"],
            "allow_public": False,
            "exclude": clinical,
            # The live SNMP crawl starts at the core router and follows LLDP to the switches.
            "snmp": {"seeds": [str(ipaddress.IPv4Address(plan.core.ip))], "depth": 2},
        },
        # SNMPv3 authPriv is tried first; v2c only for devices that lack v3.
        "credentials": {
            "snmp": [
                {
                    "version": 3,
                    "user": "twin-monitor",
                    "auth_protocol": "sha256",
                    "auth_key_env": "TWIN_SNMP_AUTH_KEY",
                    "priv_protocol": "aes128",
                    "priv_key_env": "TWIN_SNMP_PRIV_KEY",
                },
                {"version": "2c", "community_env": "TWIN_SNMP_COMMUNITY"},
            ]
        },
        "segments": [s.to_yaml() for s in plan.segments],
        "criticality": {
            "default": "low",
            "rules": [
                {"match": {"device_class": list(LIFE_CRITICAL_CLASSES)}, "criticality": "life_critical"},
                {"match": {"device_class": [*MODALITY_CLASSES, "imaging_modality", "pacs", "server"]},
                 "criticality": "high"},
                {"match": {"device_class": ["lab_analyzer", "pharmacy_dispenser", "nurse_call", "workstation"]},
                 "criticality": "medium"},
            ],
        },
        "external": {"internal_cidrs": ["10.0.0.0/8"], "allowlist": [VENDOR_CLOUD_NET, REMOTE_USERS_NET]},
        "attack_paths": {
            "entry_points": ["internet", "zone:guest", "class:workstation"],
            "targets": ["criticality:life_critical"],
            "max_hops": 6,
            "k": 3,
        },
        "policy": policy,
    }


def _dump_yaml(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)


def generate_site(out_dir, *, devices: int = 1500, seed: int = 7, name: str | None = None,
                  scenario: str = "hospital") -> GenerationSummary:
    """Write a fictional site folder in real input formats, with its ground truth.

    Parameters
    ----------
    out_dir : str or Path
        Folder to write; created if missing. The generator's own files and
        folders in it (site.yaml, ground_truth.*, inventory/, nmap/, snmp/,
        lldp/, flows/) are replaced; other files are left alone.
    devices : int
        Target device count for the ``hospital`` scenario (200 to 500,000);
        the small scenarios ignore it and hold about 40 devices.
    seed : int
        Seed of every random choice, and of the timestamps (the capture day
        is 2024-03-04 plus ``seed % 28`` days). Same arguments give
        byte-identical files.
    name : str, optional
        Site name in site.yaml.
    scenario : {"hospital", "compliant", "violating"}
        ``hospital`` plants every finding kind several times; ``violating``
        plants one of each; ``compliant`` plants none.

    Returns
    -------
    GenerationSummary

    Notes
    -----
    Time and memory grow linearly with the device count: 100,000 devices
    give about a million distinct edges. Past NMAP_MAX_HOSTS hosts per scan
    and SNMP_MAX_SWITCHES access switches, the nmap and snmprec files are a
    sample. The inventory, the core router's ARP table and the flows always
    cover every device.
    """
    started = time.perf_counter()
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown sample scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    if scenario == "hospital" and not MIN_DEVICES <= devices <= MAX_DEVICES:
        raise ConfigError(
            f"invalid device count {devices}; expected {MIN_DEVICES} to {MAX_DEVICES} for the hospital scenario "
            "(use scenario 'compliant' or 'violating' for a small site)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for item in _OUTPUTS:
        target = out / item
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    logger.info("generating %s sample site in %s: devices=%d seed=%d", scenario, out, devices, seed)

    plan = build_plan(devices, seed, name, scenario)
    policy = build_policy(plan)
    site = site_config(plan, policy)
    edges = build_edges(plan)
    truth = ground_truth(plan, site, edges)
    proposed = build_proposed_policy(plan, policy) if scenario != "compliant" else None

    files: dict[str, int] = {}
    (out / "site.yaml").write_text(
        f"# Site configuration of a fictional {plan.scenario} site, written by twin.sample.\n" + _dump_yaml(site),
        encoding="utf-8",
    )
    if proposed is not None:
        (out / "proposed_policy.yaml").write_text(
            f"# Proposed policy for the fictional {plan.scenario} site, written by twin.sample.\n"
            "# Simulate it with: twin simulate --policy proposed_policy.yaml\n" + _dump_yaml({"policy": proposed}),
            encoding="utf-8",
        )
    files["inventory/cmms_export.csv"] = write_inventory(plan, out / "inventory" / "cmms_export.csv")
    files.update(write_nmap(plan, out / "nmap"))
    files.update(write_snmp(plan, out / "snmp"))
    files.update(write_lldp(plan, out / "lldp"))
    files.update(write_flows(plan, edges, out / "flows", seed))
    files["ground_truth_devices.csv"] = write_truth_devices(plan, out / "ground_truth_devices.csv")

    flow_records = files["flows/conn.log"] + files["flows/nfdump.csv"]
    counts = {
        "devices": len(plan.devices),
        "segments": len(plan.segments),
        "edges": int(len(edges.src)),
        "planted_edges": int(np.count_nonzero(edges.planted)),
        "flow_records": flow_records,
        "files": dict(sorted(files.items())),
    }
    document = {
        "site": plan.name,
        "scenario": scenario,
        "seed": seed,
        "deciding_rule_names": {"no_rule_between_segments": DEFAULT_RULE, "no_rule_within_segment": INTRA_RULE, "no_rule_internet": INTERNET_RULE},
        "counts": counts,
        "findings": truth,
    }
    if proposed is not None:
        document["simulation"] = simulation_truth(plan, site, proposed, edges)
    (out / "ground_truth.yaml").write_text(_TRUTH_HEADER + _dump_yaml(document), encoding="utf-8")

    summary = GenerationSummary(
        out_dir=out, scenario=scenario, seed=seed, devices=len(plan.devices), segments=len(plan.segments),
        edges=int(len(edges.src)), flow_records=flow_records, files=counts["files"],
        findings={query: len(rows) for query, rows in truth.items()},
        seconds=time.perf_counter() - started,
    )
    logger.info("generated %s: %d devices, %d edges, %d flow records in %.1f s", out, summary.devices,
                summary.edges, summary.flow_records, summary.seconds)
    return summary


def generate_pair(out_dir, seed: int = 7) -> dict[str, GenerationSummary]:
    """Write the paired small sites ``compliant/`` and ``violating/`` under ``out_dir``.

    Both share one layout (about 40 devices in building A). ``violating``
    adds one planted finding of each kind. A workstation sits in the patient
    monitoring segment (misplaced, and the segment becomes flat). A
    workstation uses telnet to an infusion pump (a violation and a one-hop
    attack path). A CT scanner sends to an address outside the allowlist
    (exposure, and a violation of the default rule). ``compliant`` has no
    findings.
    """
    out = Path(out_dir)
    return {
        scenario: generate_site(out / scenario, seed=seed, scenario=scenario)
        for scenario in ("compliant", "violating")
    }
