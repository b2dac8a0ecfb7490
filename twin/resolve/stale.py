"""Stale devices: keep what an earlier live SNMP crawl found and the latest crawl did not.

A build that includes a live crawl reads the live observations (origin
``snmp://TARGET``) of the site's previous snapshot. Two kinds of device can
be missing from the new crawl:

- a *walked* device that this crawl did not walk: no fresh walk has its
  origin or shares a MAC or serial number with its walk. All observations
  of its previous walk are carried forward, even when a neighbour still
  lists it in LLDP, because its own tables (ports, FDB, ARP) are missing;
- a device that the previous walks only *named* (an FDB, ARP or neighbour
  entry) and that the new resolution no longer has. The previous
  observations naming it are carried forward.

Carried observations keep their original times. After resolving again, a
walked device whose walk was carried and not refreshed is marked ``stale``,
and so is any device that only carried observations touch. A device that
this crawl walks or a fresh observation names is not stale.
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

import pandas as pd

from twin.model.observation import Identity, Kind, Observation
from twin.model.twin import Twin

__all__ = [
    "LIVE_ORIGIN_PREFIX",
    "previous_live_observations",
    "absent_walks",
    "absent_devices",
    "carry_forward",
    "stale_devices",
    "mark_stale",
]

LIVE_ORIGIN_PREFIX = "snmp://"

# A stored observation with the devices resolution attributed it to: the
# subject's device_id and the device_id of the device it names.
StoredObservation = tuple[Observation, str | None, str | None]


def previous_live_observations(store, site: str) -> list[StoredObservation]:
    """Return the live SNMP observations of the site's latest snapshot in ``store`` (an EmbeddedStore).

    A snapshot derived from another one (by the flow collector) has no
    observations of its own, so the build run at the root of its lineage is read.
    """
    runs = [run for run in store.runs() if run.site == site]
    if not runs:
        return []
    run_id = runs[-1].run_id
    if hasattr(store, "build_run_of"):
        run_id = store.build_run_of(run_id)
    rows = store.conn.execute(
        "SELECT kind, source, origin, seen_at, subject, attrs, evidence, device_id, about_id FROM observations "
        "WHERE run_id=? AND substr(origin, 1, ?)=? ORDER BY rowid",
        (run_id, len(LIVE_ORIGIN_PREFIX), LIVE_ORIGIN_PREFIX),
    )
    out = []
    for kind, source, origin, seen_at, subject, attrs, evidence, device_id, about_id in rows:
        observation = Observation(
            Kind(kind),
            source,
            origin,
            seen_at,
            Identity.from_dict(json.loads(subject) if subject else {}),
            json.loads(attrs) if attrs else {},
            json.loads(evidence) if evidence else {},
        )
        out.append((observation, device_id, about_id))
    return out


def _is_live(observation: Observation) -> bool:
    return observation.origin.startswith(LIVE_ORIGIN_PREFIX)


def absent_walks(previous: Iterable[StoredObservation], fresh: Iterable[Observation], *, files: bool = False) -> set[str]:
    """Return the origins of previous walks whose device no fresh walk covers.

    A fresh walk covers a previous one when it has the same origin (target),
    or when its device shares a MAC or serial number with the previous walk's
    device, as when a switch responds on another management address. With
    ``files``, walks read from files (such as the crawl's own recordings)
    cover previous walks too.
    """
    origins: set[str] = set()
    macs: set[str] = set()
    serials: set[str] = set()
    for observation in fresh:
        walked = _is_live(observation) or (files and observation.source == "snmp")
        if walked and observation.kind == Kind.DEVICE:
            origins.add(observation.origin)
            macs.update(observation.subject.macs)
            if observation.subject.serial:
                serials.add(observation.subject.serial)
    absent = set()
    for observation, _, _ in previous:
        if observation.kind != Kind.DEVICE or observation.origin in origins:
            continue
        subject = observation.subject
        if set(subject.macs) & macs or (subject.serial and subject.serial in serials):
            continue
        absent.add(observation.origin)
    return absent


def absent_devices(previous: Iterable[StoredObservation], twin: Twin) -> set[str]:
    """Return the device ids that ``previous`` names and ``twin`` does not contain.

    A device whose id changed (it gained a lower MAC) but that still shares a
    MAC or serial number with a device of ``twin`` counts as present.
    """
    devices = twin.devices
    present = set(devices["device_id"])
    macs = {mac for value in devices["macs"] if isinstance(value, list) for mac in value}
    serials = {serial for serial in devices["serial"] if isinstance(serial, str)}
    named: dict[str, tuple[set[str], set[str]]] = {}
    for observation, device_id, about_id in previous:
        if device_id:
            entry = named.setdefault(device_id, (set(), set()))
            entry[0].update(observation.subject.macs)
            if observation.subject.serial:
                entry[1].add(observation.subject.serial)
        if about_id:
            entry = named.setdefault(about_id, (set(), set()))
            mac = observation.attrs.get("mac") or observation.attrs.get("remote_mac")
            if mac:
                entry[0].add(mac)
    absent = set()
    for device_id, (device_macs, device_serials) in named.items():
        if device_id in present or device_macs & macs or device_serials & serials:
            continue
        absent.add(device_id)
    return absent


def carry_forward(previous: Iterable[StoredObservation], walks: set[str], devices: set[str]) -> list[Observation]:
    """Return the previous observations of the absent ``walks`` (origins) or naming absent ``devices``.

    The observations are returned unchanged, original times included.
    """
    return [
        observation
        for observation, device_id, about_id in previous
        if observation.origin in walks or device_id in devices or about_id in devices
    ]


def stale_devices(
    observations: Sequence[Observation],
    observation_devices: Sequence[tuple[str | None, str | None]],
    fresh_count: int,
) -> set[str]:
    """Return the stale devices of a resolution that includes carried observations.

    ``observation_devices`` is the resolution's (device_id, about_id) per
    observation. The first ``fresh_count`` observations are this build's
    own and the rest were carried forward. Stale are the devices whose
    carried walk no fresh walk refreshes, and the devices that only
    carried observations touch.
    """
    touched_fresh: set[str] = set()
    touched_carried: set[str] = set()
    walked_fresh: set[str] = set()
    walked_carried: set[str] = set()
    for index, (observation, pair) in enumerate(zip(observations, observation_devices)):
        carried = index >= fresh_count
        (touched_carried if carried else touched_fresh).update(device_id for device_id in pair if device_id)
        if observation.kind == Kind.DEVICE and _is_live(observation) and pair[0]:
            (walked_carried if carried else walked_fresh).add(pair[0])
    return (walked_carried - walked_fresh) | (touched_carried - touched_fresh)


def mark_stale(twin: Twin, stale: set[str]) -> None:
    """Set the devices table's ``stale`` column: True for ``stale`` device ids, False otherwise."""
    devices = twin.devices
    devices["stale"] = pd.Series([device_id in stale for device_id in devices["device_id"]], index=devices.index, dtype=object)
