"""Evaluate the site's segmentation policy against devices and communications.

The policy is an ordered list of rules (:class:`twin.model.site.PolicyRule`).
For one communication the first rule whose ``from`` selector matches the
source, whose ``to`` selector matches the destination and whose services
match the protocol and destination port decides. When no rule matches, a
communication inside one segment gets ``policy.intra_segment`` and every
other communication (between segments, or to or from the internet) gets
``policy.default_action``.

Selector semantics
------------------
- ``any`` matches every device, never an External endpoint.
- ``internet`` matches External endpoints only. When the selector also lists
  ``cidr`` prefixes, the External address must fall in one of them; its other
  keys are ignored for External endpoints.
- ``segment`` compares ``segment_id``; ``zone`` and (for devices without a
  building of their own) ``building`` come from the site's segment table.
- ``device`` matches the device_id, the host name or any of the IP addresses.
- ``cidr`` matches when any IP address of the device lies in a prefix.

A device without a segment is its own unknown segment: its traffic is never
intra-segment. Communications naming a device that is missing from the
devices table are evaluated as a device with no properties, so only ``any``
selectors match it.

Performance
-----------
Rules are evaluated per rule over all devices with vectorised masks, never
per communication. Devices with the same rule-match bits share a signature.
Communications are grouped by (source signature, destination signature,
same segment, External involved, protocol, port), each unique group is
decided once, and the result is broadcast back. The cost is
O(R * (N + G)) numpy work for R rules, N devices and G groups, plus one
hash grouping of the communications.
"""

from __future__ import annotations

import ipaddress
import logging
import weakref
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from twin.model.site import Policy, PolicyRule, Selector, ServiceSpec, SiteConfig

__all__ = [
    "PolicyEngine",
    "RuleMatrix",
    "DEFAULT_INTER_SEGMENT",
    "DEFAULT_INTRA_SEGMENT",
    "DEFAULT_INTERNET",
    "row_codes",
    "equals_text",
]

log = logging.getLogger(__name__)

DEFAULT_INTER_SEGMENT = "default:inter-segment"
DEFAULT_INTRA_SEGMENT = "default:intra-segment"
DEFAULT_INTERNET = "default:internet"


@dataclass(frozen=True)
class RuleMatrix:
    """Rule-match bits of a set of endpoints.

    Attributes
    ----------
    from_bits, to_bits : ndarray of bool, shape (n, R)
        ``from_bits[i, r]`` is True when rule r's ``from`` selector matches
        endpoint i. ``to_bits`` does the same for the ``to`` selector.
    """

    from_bits: np.ndarray
    to_bits: np.ndarray


def row_codes(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return an integer code per row of a 2-D bool matrix and the unique rows.

    Rows with equal bits get equal codes. Codes index the unique rows.
    """
    n, width = matrix.shape
    if width == 0:
        return np.zeros(n, dtype=np.int64), np.zeros((1 if n else 0, 0), dtype=bool)
    packed = np.packbits(matrix, axis=1)
    keys = pd.Series([row.tobytes() for row in packed]) if packed.shape[1] > 8 else _pack_int(packed)
    codes, uniques = pd.factorize(keys, sort=False)
    first = np.zeros(len(uniques), dtype=np.int64)
    first[codes[::-1]] = np.arange(n - 1, -1, -1)
    return codes.astype(np.int64), matrix[first]


def _pack_int(packed: np.ndarray) -> np.ndarray:
    # Up to 8 bytes of packed bits fit one unsigned 64-bit key.
    key = np.zeros(packed.shape[0], dtype=np.uint64)
    for col in range(packed.shape[1]):
        key = (key << np.uint64(8)) | packed[:, col].astype(np.uint64)
    return key


def _lower(values) -> set[str]:
    return {str(v).strip().lower() for v in values}


def _ip_text(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


class PolicyEngine:
    """Decide communications and selector matches for one site.

    Parameters
    ----------
    site : SiteConfig
        Site configuration; its segments give zones and buildings.
    policy : Policy, optional
        Policy to evaluate in place of ``site.policy``, for example a
        proposed policy in a simulation.

    Examples
    --------
    >>> from twin.model.site import SiteConfig
    >>> site = SiteConfig.model_validate({"site": {"name": "x"}, "segments": [{"id": "a", "cidrs": ["10.0.0.0/24"]}]})
    >>> PolicyEngine(site).policy.default_action
    'deny'
    """

    def __init__(self, site: SiteConfig, policy: Policy | None = None) -> None:
        self.site = site
        self.policy = policy if policy is not None else site.policy
        self.rules: list[PolicyRule] = list(self.policy.rules)
        self._specs: list[list[ServiceSpec]] = [rule.service_specs() for rule in self.rules]
        self._zone = {seg.id: seg.zone for seg in site.segments}
        self._building = {seg.id: seg.building for seg in site.segments}
        self._last_view: tuple[weakref.ref, _DeviceView] | None = None

    def _view(self, devices_df: pd.DataFrame) -> "_DeviceView":
        """Return the normalised view of ``devices_df``, reused while the same frame object is passed again.

        A simulation matches dozens of selectors against one devices table,
        so the coded columns are built once per table, not once per selector.
        """
        # NOTE: the view is keyed on the frame's identity, so a devices frame
        # changed in place between two calls is matched against stale codes.
        if self._last_view is not None and self._last_view[0]() is devices_df:
            return self._last_view[1]
        view = _DeviceView(devices_df, self)
        self._last_view = (weakref.ref(devices_df), view)
        return view

    # ------------------------------------------------------------------ selectors

    def match_selector(self, selector: Selector | str | dict, devices_df: pd.DataFrame) -> pd.Series:
        """Return a boolean Series, aligned with ``devices_df``, of devices the selector matches.

        Parameters
        ----------
        selector : Selector, str or dict
            A selector or its shorthand (``zone:clinical``, ``any``).
        devices_df : DataFrame
            Devices table (``device_id``, ``ips``, ``hostname``,
            ``device_class``, ``criticality``, ``segment_id``, ``building``).

        Returns
        -------
        Series of bool
            An ``internet`` selector matches no device.
        """
        selector = Selector.parse(selector)
        return pd.Series(self._device_mask(selector, self._view(devices_df)), index=devices_df.index)

    def match_external(self, selector: Selector | str | dict, addresses) -> np.ndarray:
        """Return a bool array: which External addresses the selector matches."""
        selector = Selector.parse(selector)
        addresses = [str(a) for a in addresses]
        if not selector.internet:
            return np.zeros(len(addresses), dtype=bool)
        if not selector.cidr:
            return np.ones(len(addresses), dtype=bool)
        return _AddressView(addresses).in_cidrs(selector.cidr)

    def _device_mask(self, selector: Selector, view: "_DeviceView") -> np.ndarray:
        n = view.n
        if selector.any:
            return np.ones(n, dtype=bool)
        if selector.internet:
            return np.zeros(n, dtype=bool)
        mask = np.ones(n, dtype=bool)
        if selector.segment:
            mask &= view.segment.isin(selector.segment)
        if selector.zone:
            mask &= view.zone.isin(selector.zone)
        if selector.device_class:
            mask &= view.device_class.isin(selector.device_class)
        if selector.criticality:
            mask &= view.criticality.isin(selector.criticality)
        if selector.building:
            # A device is in a building when its own record says so (inventory,
            # sysLocation) or when its segment serves that building, so a rule
            # on the segments' building name also covers devices whose
            # inventory spells the building another way.
            mask &= view.building.isin(selector.building) | view.segment_building.isin(selector.building)
        if selector.device:
            wanted = _lower(selector.device) | {_ip_text(v) for v in selector.device}
            hit = view.device_id.isin(list(wanted) + list(selector.device))
            hit |= view.hostname.isin(list(wanted))
            ip_hit = view.ip.isin(list(wanted))
            hit |= np.bincount(view.ip_table["pos"].to_numpy()[ip_hit], minlength=n).astype(bool)
            mask &= hit
        if selector.cidr:
            mask &= view.in_cidrs(selector.cidr)
        return mask

    def rule_matrix(self, devices_df: pd.DataFrame) -> RuleMatrix:
        """Return the ``from`` and ``to`` rule-match bits of every device.

        Evaluated once per distinct selector, vectorised over the devices.
        """
        view = self._view(devices_df)
        n, r = view.n, len(self.rules)
        # Filled rule by rule as rows of (R, n), so that each write is contiguous.
        from_bits = np.zeros((r, n), dtype=bool)
        to_bits = np.zeros((r, n), dtype=bool)
        cache: dict[str, np.ndarray] = {}
        for index, rule in enumerate(self.rules):
            for selector, target in ((rule.from_, from_bits), (rule.to, to_bits)):
                key = selector.model_dump_json()
                if key not in cache:
                    cache[key] = self._device_mask(selector, view)
                target[index] = cache[key]
        return RuleMatrix(np.ascontiguousarray(from_bits.T), np.ascontiguousarray(to_bits.T))

    def external_matrix(self, addresses) -> RuleMatrix:
        """Return the rule-match bits of External addresses.

        The addresses are parsed once, and each distinct ``internet``
        selector is evaluated once over all of them.
        """
        view = _AddressView([str(a) for a in addresses])
        r = len(self.rules)
        from_bits = np.zeros((view.n, r), dtype=bool)
        to_bits = np.zeros((view.n, r), dtype=bool)
        cache: dict[tuple[str, ...] | None, np.ndarray] = {}
        for index, rule in enumerate(self.rules):
            for selector, target in ((rule.from_, from_bits), (rule.to, to_bits)):
                if not selector.internet:
                    continue
                key = tuple(selector.cidr) if selector.cidr else None
                if key not in cache:
                    cache[key] = view.in_cidrs(selector.cidr) if selector.cidr else np.ones(view.n, dtype=bool)
                target[:, index] = cache[key]
        return RuleMatrix(from_bits, to_bits)

    def unknown_device_bits(self) -> RuleMatrix:
        """Return the bits of a device missing from the devices table: only ``any`` matches."""
        from_bits = np.array([[rule.from_.any for rule in self.rules]], dtype=bool).reshape(1, len(self.rules))
        to_bits = np.array([[rule.to.any for rule in self.rules]], dtype=bool).reshape(1, len(self.rules))
        return RuleMatrix(from_bits, to_bits)

    # ------------------------------------------------------------------ decisions

    def decide_groups(
        self,
        src_from: np.ndarray,
        dst_to: np.ndarray,
        same_segment: np.ndarray,
        external: np.ndarray,
        proto: np.ndarray,
        port: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decide unique communication groups, vectorised over the groups.

        Parameters
        ----------
        src_from : ndarray of bool, shape (G, R)
            ``from`` bits of each group's source.
        dst_to : ndarray of bool, shape (G, R)
            ``to`` bits of each group's destination.
        same_segment : ndarray of bool, shape (G,)
            Source and destination are devices in the same known segment.
        external : ndarray of bool, shape (G,)
            Source or destination is an External endpoint.
        proto : ndarray of str, shape (G,)
        port : ndarray of int, shape (G,)

        Returns
        -------
        allow : ndarray of bool
        rule_index : ndarray of int
            Index of the deciding rule, or -1 (intra-segment default),
            -2 (inter-segment default), -3 (internet default).
        """
        g = len(same_segment)
        undecided = np.ones(g, dtype=bool)
        allow = np.zeros(g, dtype=bool)
        rule_index = np.full(g, -1, dtype=np.int64)
        proto = np.asarray(proto, dtype=object)
        port = np.asarray(port, dtype=np.int64)
        for index, rule in enumerate(self.rules):
            if not undecided.any():
                break
            hit = undecided & src_from[:, index] & dst_to[:, index]
            if not hit.any():
                continue
            service = np.zeros(g, dtype=bool)
            for spec in self._specs[index]:
                in_range = (port >= spec.port_min) & (port <= spec.port_max)
                service |= in_range if spec.proto == "any" else in_range & (proto == spec.proto)
            hit &= service
            allow[hit] = rule.action == "allow"
            rule_index[hit] = index
            undecided &= ~hit
        intra = undecided & same_segment
        inter = undecided & ~same_segment
        allow[intra] = self.policy.intra_segment == "allow"
        allow[inter] = self.policy.default_action == "allow"
        rule_index[inter & ~external] = -2
        rule_index[inter & external] = -3
        return allow, rule_index

    def rule_names(self, rule_index: np.ndarray) -> np.ndarray:
        """Map rule indexes from :meth:`decide_groups` to rule names or default labels."""
        names = np.array(
            [DEFAULT_INTERNET, DEFAULT_INTER_SEGMENT, DEFAULT_INTRA_SEGMENT] + [rule.name for rule in self.rules],
            dtype=object,
        )
        return names[np.asarray(rule_index) + 3]

    def decide(self, communications_df: pd.DataFrame, twin) -> pd.DataFrame:
        """Decide every communication row.

        Parameters
        ----------
        communications_df : DataFrame
            Rows with ``src_id``, ``src_kind``, ``dst_id``, ``dst_kind``,
            ``proto`` and ``dst_port``.
        twin : Twin
            Supplies the devices table.

        Returns
        -------
        DataFrame
            The input rows with ``action`` ("allow" or "deny"), ``rule``
            (deciding rule name or a ``default:`` label) and ``rule_index``
            (int, -1 for defaults) added.

        Notes
        -----
        Time is linear in the rows plus O(R * (N + G)) for R rules,
        N devices and G unique groups. No Python loop runs per row.
        """
        comm = communications_df
        if comm.empty:
            return comm.assign(
                action=pd.Series(dtype=object), rule=pd.Series(dtype=object), rule_index=pd.Series(dtype="int64")
            )
        table = EndpointTable.build(self, twin.devices, comm)
        src = table.locate(comm["src_id"], comm.get("src_kind"))
        dst = table.locate(comm["dst_id"], comm.get("dst_kind"))
        proto = comm["proto"].astype(object).where(comm["proto"].notna(), "").astype(str).str.lower()
        port = pd.to_numeric(comm["dst_port"], errors="coerce").fillna(0).astype(np.int64).to_numpy()
        same = (table.segment[src] == table.segment[dst]) & (table.segment[src] >= 0)
        external = table.is_external[src] | table.is_external[dst]
        keys = pd.DataFrame(
            {
                "s": table.from_sig[src],
                "d": table.to_sig[dst],
                "same": same,
                "ext": external,
                "proto": proto.to_numpy(),
                "port": port,
            }
        )
        group = keys.groupby(["s", "d", "same", "ext", "proto", "port"], sort=False).ngroup().to_numpy()
        first = np.zeros(group.max() + 1, dtype=np.int64)
        first[group[::-1]] = np.arange(len(group) - 1, -1, -1)
        uniq = keys.iloc[first]
        allow, rule_index = self.decide_groups(
            table.from_rows[uniq["s"].to_numpy()],
            table.to_rows[uniq["d"].to_numpy()],
            uniq["same"].to_numpy(),
            uniq["ext"].to_numpy(),
            uniq["proto"].to_numpy(dtype=object),
            uniq["port"].to_numpy(),
        )
        names = self.rule_names(rule_index)
        log.debug("decided %d communications in %d groups", len(comm), len(first))
        return comm.assign(
            action=np.where(allow[group], "allow", "deny"),
            rule=names[group],
            rule_index=np.maximum(rule_index[group], -1),
        )

    def allowed_services(self, src_device: str, dst_device: str, twin) -> pd.DataFrame:
        """Return the services of ``dst_device`` that the policy lets ``src_device`` reach.

        Parameters
        ----------
        src_device, dst_device : str
            Device ids; a source that is not a device id is treated as an
            External address.
        twin : Twin
            Supplies the devices and services tables.

        Returns
        -------
        DataFrame
            ``proto``, ``port``, ``rule`` of the allowed services.
        """
        services = twin.services
        own = services[services["device_id"] == dst_device]
        if own.empty:
            return pd.DataFrame({"proto": [], "port": [], "rule": []})
        src_kind = "device" if (twin.devices["device_id"] == src_device).any() else "external"
        comm = pd.DataFrame(
            {
                "src_id": src_device,
                "src_kind": src_kind,
                "dst_id": dst_device,
                "dst_kind": "device",
                "proto": own["proto"].to_numpy(),
                "dst_port": own["port"].to_numpy(),
            }
        )
        decided = self.decide(comm, twin)
        allowed = decided[decided["action"] == "allow"]
        return allowed.rename(columns={"dst_port": "port"})[["proto", "port", "rule"]].reset_index(drop=True)

    def required_workflows(self) -> list[PolicyRule]:
        """Return the rules marked ``required: true``, in policy order."""
        return [rule for rule in self.rules if rule.required]


class _Codes:
    """One text column as factorised codes, so that a membership test costs one lookup per row.

    ``codes`` has -1 for a missing value; ``uniques`` are the distinct values.
    """

    def __init__(self, values: pd.Series) -> None:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        self.codes = np.asarray(codes, dtype=np.int64)
        self.uniques = np.asarray(uniques, dtype=object)
        self._code_of = {value: code for code, value in enumerate(self.uniques)}

    def isin(self, values) -> np.ndarray:
        """Return a bool array: which rows contain one of ``values``. A missing value never matches."""
        # The value-to-code dict is built once per column, so each test costs
        # O(len(values)) lookups plus one gather over the rows. The last slot
        # of the lookup table stays False for code -1 (missing).
        lookup = np.zeros(len(self.uniques) + 1, dtype=bool)
        found = [self._code_of[value] for value in values if value in self._code_of]
        lookup[found] = True
        return lookup[self.codes]


class _DeviceView:
    """Normalised columns of a devices table as codes, each computed on first use."""

    def __init__(self, devices: pd.DataFrame, engine: PolicyEngine) -> None:
        self.n = len(devices)
        self.devices = devices
        self._engine = engine
        self._ip_table: pd.DataFrame | None = None
        self._ip: _Codes | None = None
        self._v4: tuple[np.ndarray, np.ndarray] | None = None

    @cached_property
    def _segment_text(self) -> pd.Series:
        return _text(self.devices, "segment_id")

    @cached_property
    def device_id(self) -> _Codes:
        return _Codes(_text(self.devices, "device_id"))

    @cached_property
    def segment(self) -> _Codes:
        return _Codes(self._segment_text)

    @cached_property
    def zone(self) -> _Codes:
        return _Codes(self._segment_text.map(self._engine._zone))

    @cached_property
    def device_class(self) -> _Codes:
        return _Codes(_text(self.devices, "device_class"))

    @cached_property
    def criticality(self) -> _Codes:
        return _Codes(_text(self.devices, "criticality"))

    @cached_property
    def hostname(self) -> _Codes:
        return _Codes(_text(self.devices, "hostname").str.lower())

    @cached_property
    def building(self) -> _Codes:
        own = _text(self.devices, "building")
        return _Codes(own.where(own.notna(), self._segment_text.map(self._engine._building)))

    @cached_property
    def segment_building(self) -> _Codes:
        return _Codes(self._segment_text.map(self._engine._building))

    @property
    def ip_table(self) -> pd.DataFrame:
        """Return one row per (device position, IP address text)."""
        if self._ip_table is None:
            ips = self.devices["ips"] if "ips" in self.devices else pd.Series([[]] * self.n)
            ips = pd.Series(ips.to_numpy(dtype=object), index=np.arange(self.n))
            ips = ips.map(_as_address_list)
            exploded = ips.explode().dropna()
            self._ip_table = pd.DataFrame({"pos": exploded.index.to_numpy(dtype=np.int64), "ip": exploded.astype(str).to_numpy()})
        return self._ip_table

    @property
    def ip(self) -> _Codes:
        """Return the ``ip`` column of :attr:`ip_table` as codes."""
        if self._ip is None:
            self._ip = _Codes(self.ip_table["ip"].astype(object))
        return self._ip

    def in_cidrs(self, cidrs: list[str]) -> np.ndarray:
        """Return a bool mask of devices with any IP address inside any prefix."""
        table = self.ip_table
        hit = np.zeros(len(table), dtype=bool)
        text = table["ip"]
        if self._v4 is None:
            # Parsed once per view: a policy with many cidr selectors reuses them.
            v4 = ~text.str.contains(":", regex=False).to_numpy()
            self._v4 = (np.flatnonzero(v4), _ipv4_ints(text[v4]))
        v4_pos, v4_int = self._v4
        v6_pos = np.setdiff1d(np.arange(len(table)), v4_pos, assume_unique=True)
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr, strict=False)
            if net.version == 4:
                low, high = int(net.network_address), int(net.broadcast_address)
                hit[v4_pos] |= (v4_int >= low) & (v4_int <= high)
            else:
                for pos in v6_pos:
                    try:
                        hit[pos] |= ipaddress.ip_address(text.iloc[pos]) in net
                    except ValueError:
                        continue
        return np.bincount(table["pos"].to_numpy()[hit], minlength=self.n).astype(bool)


class _AddressView:
    """External addresses parsed once, for many ``internet`` selectors with ``cidr`` prefixes.

    Matching follows :func:`twin.resolve.addresses.in_networks`: text that
    :func:`ipaddress.ip_address` rejects matches no prefix.
    """

    def __init__(self, addresses: list[str]) -> None:
        self.n = len(addresses)
        parsed = []
        for text in addresses:
            try:
                parsed.append(ipaddress.ip_address(text))
            except ValueError:
                parsed.append(None)
        self.v4_pos = np.array([i for i, a in enumerate(parsed) if a is not None and a.version == 4], dtype=np.int64)
        self.v4_int = np.array([int(parsed[i]) for i in self.v4_pos], dtype=np.int64)
        self.v6 = [(i, a) for i, a in enumerate(parsed) if a is not None and a.version == 6]

    def in_cidrs(self, cidrs: list[str]) -> np.ndarray:
        """Return a bool mask of addresses inside any prefix."""
        hit = np.zeros(self.n, dtype=bool)
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr, strict=False)
            if net.version == 4:
                low, high = int(net.network_address), int(net.broadcast_address)
                hit[self.v4_pos] |= (self.v4_int >= low) & (self.v4_int <= high)
                continue
            for pos, addr in self.v6:
                hit[pos] |= addr in net
        return hit


def equals_text(values: pd.Series, text: str) -> np.ndarray:
    """Return a bool array: which values equal ``text``; a missing value is False.

    The distinct values are compared once and broadcast back, which is several
    times faster than an element-wise comparison of a million object values.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    lookup = np.append(np.asarray(uniques, dtype=object) == text, False)
    return lookup[np.asarray(codes, dtype=np.int64)]


def _as_address_list(value) -> list:
    """Return a device's ``ips`` cell as a list: lists stay, one address becomes a list, missing is empty."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return value
    if value is None or value != value:  # None or NaN
        return []
    return [value]


def _text(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df:
        return pd.Series([None] * len(df), index=np.arange(len(df)), dtype=object)
    values = df[column].to_numpy(dtype=object)
    return pd.Series(values, index=np.arange(len(df)), dtype=object).where(pd.notna(values), None)


def _ipv4_ints(text: pd.Series) -> np.ndarray:
    """Return IPv4 addresses as int64, -1 for text that is not a dotted quad."""
    if text.empty:
        return np.zeros(0, dtype=np.int64)
    parts = text.str.split(".", expand=True)
    if parts.shape[1] != 4:
        return np.array([_ipv4_int(t) for t in text], dtype=np.int64)
    octets = parts.apply(pd.to_numeric, errors="coerce")
    bad = octets.isna().any(axis=1) | (octets < 0).any(axis=1) | (octets > 255).any(axis=1)
    values = octets.fillna(0).astype(np.int64).to_numpy()
    out = (values[:, 0] << 24) | (values[:, 1] << 16) | (values[:, 2] << 8) | values[:, 3]
    out[bad.to_numpy()] = -1
    return out


def _ipv4_int(text: str) -> int:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return -1
    return int(addr) if addr.version == 4 else -1


@dataclass
class EndpointTable:
    """Devices, External addresses and one unknown-device row, with their rule signatures.

    Positions: devices first (in table order), then External addresses, then
    the unknown-device row. ``segment`` is a segment code (>= 0), or -1
    for an External or unknown endpoint. A device without a segment gets a
    unique negative code below -1, so it is never in the same segment as
    another device.
    """

    names: pd.Index
    n_devices: int
    n_external: int
    from_sig: np.ndarray
    to_sig: np.ndarray
    from_rows: np.ndarray
    to_rows: np.ndarray
    segment: np.ndarray
    is_external: np.ndarray
    segment_names: np.ndarray

    @classmethod
    def build(cls, engine: PolicyEngine, devices: pd.DataFrame, comm: pd.DataFrame | None = None, externals=()) -> "EndpointTable":
        """Build the table for ``devices`` plus the External addresses in ``comm`` and ``externals``."""
        addresses: set[str] = {str(a) for a in externals}
        if comm is not None and not comm.empty:
            for side in ("src", "dst"):
                kind = comm.get(f"{side}_kind")
                if kind is None:
                    continue
                addresses.update(comm.loc[kind.astype(object) == "external", f"{side}_id"].astype(str).unique())
        ext = sorted(addresses)
        dev_bits = engine.rule_matrix(devices)
        ext_bits = engine.external_matrix(ext)
        unknown = engine.unknown_device_bits()
        from_all = np.vstack([dev_bits.from_bits, ext_bits.from_bits, unknown.from_bits])
        to_all = np.vstack([dev_bits.to_bits, ext_bits.to_bits, unknown.to_bits])
        from_sig, from_rows = row_codes(from_all)
        to_sig, to_rows = row_codes(to_all)
        n = len(devices)
        seg_text = _text(devices, "segment_id")
        seg_codes, seg_names = pd.factorize(seg_text, use_na_sentinel=True)
        seg_codes = seg_codes.astype(np.int64)
        missing = np.flatnonzero(seg_codes < 0)
        seg_codes[missing] = -2 - np.arange(len(missing))
        segment = np.concatenate([seg_codes, np.full(len(ext) + 1, -1, dtype=np.int64)])
        is_external = np.zeros(n + len(ext) + 1, dtype=bool)
        is_external[n : n + len(ext)] = True
        names = pd.Index(list(devices["device_id"].astype(str)) + ext)
        return cls(names, n, len(ext), from_sig, to_sig, from_rows, to_rows, segment, is_external, np.asarray(seg_names, dtype=object))

    def locate(self, ids: pd.Series, kinds: pd.Series | None) -> np.ndarray:
        """Return endpoint positions of ids; unmatched device ids map to the unknown-device row."""
        ids = ids.astype(str)
        is_ext = np.zeros(len(ids), dtype=bool) if kinds is None else equals_text(kinds, "external")
        # Each distinct id is looked up once, then broadcast back to the rows, because
        # a million communications name at most one id per endpoint plus the unknown ids.
        codes, uniques = pd.factorize(ids)
        codes = np.asarray(codes, dtype=np.int64)
        unique_ids = pd.Index(uniques, dtype=object)
        index = pd.Index(self.names[: self.n_devices])
        positions = np.arange(self.n_devices)
        if not index.is_unique:
            # A repeated device_id resolves to its first row.
            keep = ~index.duplicated()
            index, positions = index[keep], positions[keep]
        dev_pos = index.get_indexer(unique_ids)
        dev_pos = np.where(dev_pos >= 0, positions[np.maximum(dev_pos, 0)], len(self.names))
        ext_pos = pd.Index(self.names[self.n_devices :]).get_indexer(unique_ids)
        ext_pos = np.where(ext_pos >= 0, ext_pos + self.n_devices, len(self.names))
        return np.where(is_ext, ext_pos[codes], dev_pos[codes])
