"""Python API: the twin and its query catalogue as pandas DataFrames.

>>> from twin.api import Workspace                      # doctest: +SKIP
>>> ws = Workspace(".twin/workspace.sqlite")            # doctest: +SKIP
>>> ws.build("sample_networks/hospital")                # doctest: +SKIP
>>> ws.segment_violations().head()                      # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from twin.exceptions import DeviceNotFound
from twin.graph.embedded import DEFAULT_WORKSPACE, EmbeddedStore
from twin.model.observation import normalise_hostname, normalise_ip, normalise_mac
from twin.model.site import SiteConfig, parse_site
from twin.model.twin import Twin

__all__ = ["Workspace", "DeviceDetail", "default_workspace"]

WORKSPACE_ENV = "TWIN_WORKSPACE"


def default_workspace() -> Path:
    """Return the workspace path from ``TWIN_WORKSPACE`` or the default ``.twin/workspace.sqlite``."""
    return Path(os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE)


@dataclass
class DeviceDetail:
    """Everything the twin stores about one device."""

    device: dict[str, Any]
    observations: pd.DataFrame
    interfaces: pd.DataFrame
    links: pd.DataFrame
    services: pd.DataFrame
    communications: pd.DataFrame
    findings: dict[str, pd.DataFrame]


class Workspace:
    """A workspace file: builds, snapshots and the query catalogue.

    Parameters
    ----------
    path : str or Path, optional
        Workspace file; defaults to :func:`default_workspace`.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_workspace()
        self._twins: dict[str, Twin] = {}

    def store(self) -> EmbeddedStore:
        """Open the workspace for reading; a missing workspace is an error, not created."""
        return EmbeddedStore(self.path, create=False)

    def build(self, site_dir: str | Path, **callbacks):
        """Build a new snapshot from a site folder; see :func:`twin.pipeline.build`."""
        from twin.pipeline import build

        return build(site_dir, self.path, **callbacks)

    def snapshots(self) -> pd.DataFrame:
        """Return the committed snapshots, oldest first."""
        with self.store() as store:
            runs = store.runs()
        rows = [
            {
                "run_id": r.run_id,
                "site": r.site,
                "finished_at": pd.Timestamp(r.finished_at, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
                "devices": (r.summary.get("stats") or {}).get("devices"),
                "communications": (r.summary.get("stats") or {}).get("communications"),
                "kind": "collector" if r.summary.get("collector") else "build",
            }
            for r in runs
        ]
        return pd.DataFrame(rows, columns=["run_id", "site", "finished_at", "devices", "communications", "kind"])

    def twin(self, snapshot: str | None = None) -> Twin:
        """Return one snapshot of the twin (the latest by default)."""
        with self.store() as store:
            run = store.resolve_snapshot(snapshot)
            if run.run_id not in self._twins:
                self._twins[run.run_id] = store.load_twin(run.run_id)
        return self._twins[run.run_id]

    def site(self, snapshot: str | None = None) -> SiteConfig:
        """Return the site configuration recorded with a snapshot."""
        with self.store() as store:
            run = store.resolve_snapshot(snapshot)
            site_dir, text = store.config_yaml(run.run_id)
        return parse_site(text, str(Path(site_dir) / "site.yaml"))

    def query(self, name: str, snapshot: str | None = None, **params) -> pd.DataFrame:
        """Run one catalogue query by name and return its findings."""
        from twin.analysis import CATALOGUE

        if name not in CATALOGUE:
            raise KeyError(f"unknown query {name!r}; known: {', '.join(CATALOGUE)}")
        return CATALOGUE[name].find(self.twin(snapshot), self.site(snapshot), **params)

    def findings(self, snapshot: str | None = None, names=None) -> dict[str, pd.DataFrame]:
        """Run the whole catalogue (or ``names``) and return findings per query."""
        from twin.analysis import run_catalogue

        return run_catalogue(self.twin(snapshot), self.site(snapshot), names=names)

    def devices(self, snapshot: str | None = None) -> pd.DataFrame:
        return self.twin(snapshot).devices

    def communications(self, snapshot: str | None = None) -> pd.DataFrame:
        return self.twin(snapshot).communications

    def flow_hours(self, snapshot: str | None = None) -> pd.DataFrame:
        """Return the hourly flow buckets of a snapshot and of the runs it derives from.

        Columns: ``src_ip``, ``dst_ip``, ``proto``, ``dst_port``, ``hour``
        (start of the UTC hour, epoch seconds), ``bytes``, ``packets``,
        ``flows``, and the ``run_id``, ``source`` and ``origin`` that stored
        each bucket. Buckets of one key from several batches are separate
        rows; sum them with ``groupby``.
        """
        with self.store() as store:
            return store.flow_hours(snapshot)

    def misplaced_devices(self, snapshot: str | None = None, **params) -> pd.DataFrame:
        return self.query("misplaced_devices", snapshot, **params)

    def segment_violations(self, snapshot: str | None = None, **params) -> pd.DataFrame:
        return self.query("segment_violations", snapshot, **params)

    def external_exposure(self, snapshot: str | None = None, **params) -> pd.DataFrame:
        return self.query("external_exposure", snapshot, **params)

    def flat_segments(self, snapshot: str | None = None, **params) -> pd.DataFrame:
        return self.query("flat_segments", snapshot, **params)

    def attack_paths(self, snapshot: str | None = None, **params) -> pd.DataFrame:
        return self.query("attack_paths", snapshot, **params)

    def choke_points(self, snapshot: str | None = None, **params) -> pd.DataFrame:
        return self.query("choke_points", snapshot, **params)

    def simulate(self, proposed, snapshot: str | None = None, **params):
        """Simulate a proposed policy against one snapshot (the latest by default).

        ``proposed`` is a :class:`~twin.model.site.Policy`, a YAML file path,
        YAML text or a mapping; see :func:`twin.policy.simulate.simulate`.
        """
        from twin.policy.simulate import simulate

        return simulate(self.twin(snapshot), self.site(snapshot), proposed, **params)

    def report_context(self, snapshot: str | None = None):
        """Return the report context of a snapshot: counts, imported files, query descriptions."""
        from twin.report import ImportSummary, ReportContext, TwinCounts, describe_queries

        twin = self.twin(snapshot)
        with self.store() as store:
            files = store.import_files(twin.run_id)
        counts = TwinCounts.of(twin)
        imports = [
            ImportSummary(
                path=f["path"],
                format=f["format"] or "unrecognised",
                records_read=f["records_read"] or 0,
                records_skipped=f["records_skipped"] or 0,
                issues=list(f["issues"]),
            )
            for f in files
        ]
        descriptions, limitations = describe_queries()
        return ReportContext(
            site=twin.site,
            run_id=twin.run_id,
            built_at=twin.built_at,
            workspace=str(self.path),
            counts=counts,
            imports=imports,
            descriptions=descriptions,
            limitations=limitations,
        )

    def find_device(self, ident: str, snapshot: str | None = None) -> dict[str, Any]:
        """Return the device row matching a device id, IP, MAC, host name, asset tag or serial."""
        devices = self.twin(snapshot).devices
        text = str(ident).strip()
        mac = normalise_mac(text)
        ip = normalise_ip(text)
        name = normalise_hostname(text)
        hit = devices["device_id"] == text
        if mac:
            hit |= devices["macs"].map(lambda macs: mac in macs)
        if ip:
            hit |= devices["ips"].map(lambda ips: ip in ips)
        if "asset_tag" in devices.columns:
            hit |= devices["asset_tag"].map(lambda tag: isinstance(tag, str) and tag.lower() == text.lower())
        if "serial" in devices.columns:
            hit |= devices["serial"].map(lambda serial: isinstance(serial, str) and serial == text.upper())
        if name and not hit.any():
            short = name.split(".", 1)[0]
            hit |= devices["hostname"].map(lambda h: isinstance(h, str) and (h == name or h.split(".", 1)[0] == short))
        rows = devices[hit]
        if rows.empty:
            raise DeviceNotFound(
                f"no device matches {ident!r}; give a device id (dev-...), an IP, a MAC, a host name, "
                "an asset tag or a serial number "
                "('twin analyze' and the report list them)"
            )
        if len(rows) > 1:
            ids = ", ".join(rows["device_id"].head(10))
            raise DeviceNotFound(f"{ident!r} matches {len(rows)} devices ({ids}); give a device id instead")
        return rows.iloc[0].to_dict()

    def device(self, ident: str, snapshot: str | None = None) -> DeviceDetail:
        """Return one device with its evidence, links, services, flows and findings."""
        twin = self.twin(snapshot)
        row = self.find_device(ident, snapshot)
        device_id = row["device_id"]
        with self.store() as store:
            observations = store.observations_for(device_id, twin.run_id)
        links = twin.links
        if not links.empty:
            links = links[(links["a_device_id"] == device_id) | (links["b_device_id"] == device_id)]
        comms = twin.communications
        if not comms.empty:
            comms = comms[(comms["src_id"] == device_id) | (comms["dst_id"] == device_id)]
        interfaces = twin.interfaces
        if not interfaces.empty:
            interfaces = interfaces[interfaces["device_id"] == device_id]
        services = twin.services
        if not services.empty:
            services = services[services["device_id"] == device_id]
        findings = {}
        for name, frame in self.findings(snapshot).items():
            if frame.empty:
                continue
            mask = pd.Series(False, index=frame.index)
            for col in ("device_id", "src_id", "dst_id", "entry_id", "target_id"):
                if col in frame.columns:
                    mask |= frame[col] == device_id
            if "path" in frame.columns:
                mask |= frame["path"].map(lambda p: isinstance(p, (list, tuple)) and device_id in p)
            if mask.any():
                findings[name] = frame[mask]
        return DeviceDetail(
            device=row,
            observations=observations,
            interfaces=interfaces,
            links=links,
            services=services,
            communications=comms,
            findings=findings,
        )
