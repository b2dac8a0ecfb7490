"""First-match decisions of many flows at once, with the rule-match bits packed into 64-bit words.

:class:`FlowDecider` is the flow decision path of the policy simulator. It
gives the same decisions as :meth:`twin.policy.engine.PolicyEngine.decide`
but scales to tens of millions of flows and thousands of rules:

1. Every endpoint (device, External address, unknown device) has a ``from``
   and a ``to`` rule signature (:class:`twin.policy.engine.EndpointTable`).
   The signatures' rule-match bits are packed so that rule ``r`` is bit
   ``r % 64`` of word ``r // 64``.
2. Flows are grouped by (source ``from`` signature, destination ``to``
   signature, protocol, destination port), with dense lookup tables rather
   than hashing where the key range allows. Only the unique keys are decided.
3. For a unique key, the AND of the source, destination and service words
   contains the rules that match it; the lowest set bit is the first matching
   rule. Words are scanned in rule order and a key stops at its first
   non-zero word.
4. Flows that no rule matches get the defaults: ``intra_segment`` inside one
   known segment, ``default_action`` otherwise.

Notes
-----
Time is O(F) for F flows (gathers and lookups) plus O(G * W) in the worst
case for G unique keys and W = ceil(R / 64) words of R rules, plus the
selector matching of :meth:`PolicyEngine.rule_matrix`. Memory is a few
arrays of F int64 values and lookup tables of up to :data:`DENSE_KEYS`
int32 entries.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from twin.policy.engine import EndpointTable, PolicyEngine

__all__ = ["FlowDecider", "dense_codes", "pack_rule_bits", "first_set_bit", "DENSE_KEYS", "NO_RULE"]

log = logging.getLogger(__name__)

# Rule index of a key that no rule matches, before the defaults apply.
NO_RULE = -1

_PORTS = 65_536

# Largest key range factorised with a dense lookup table instead of a hash
# (count, default 2**25); the table costs 4 bytes per possible key.
DENSE_KEYS = 1 << 25


def dense_codes(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (codes, sorted unique keys) of non-negative integer keys below ``size``.

    Ranges up to :data:`DENSE_KEYS` use a lookup table, which is several
    times faster than hashing at 10 million keys; larger ranges use
    :func:`pandas.factorize`.

    >>> codes, uniques = dense_codes(np.array([5, 2, 5]), 8)
    >>> codes.tolist(), uniques.tolist()
    ([1, 0, 1], [2, 5])
    """
    keys = np.asarray(keys)
    if size <= DENSE_KEYS:
        seen = np.zeros(size, dtype=bool)
        seen[keys] = True
        uniques = np.flatnonzero(seen)
        del seen
        # Only the slots of seen keys are written, and only they are read back.
        lookup = np.empty(size, dtype=np.int32)
        lookup[uniques] = np.arange(len(uniques), dtype=np.int32)
        return lookup[keys], uniques
    codes, uniques = pd.factorize(keys.astype(np.int64, copy=False), sort=True)
    return np.asarray(codes), np.asarray(uniques, dtype=np.int64)


def pack_rule_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a (n, R) bool matrix into (n, ceil(R / 64)) uint64 words, rule r at bit r % 64 of word r // 64.

    >>> pack_rule_bits(np.array([[False, True], [True, False]]))[:, 0].tolist()
    [2, 1]
    """
    n, width = bits.shape
    words = max(1, -(-width // 64))
    padded = np.zeros((n, words * 64), dtype=bool)
    padded[:, :width] = bits
    return np.ascontiguousarray(np.packbits(padded, axis=1, bitorder="little")).view("<u8").reshape(n, words)


def first_set_bit(words: np.ndarray) -> np.ndarray:
    """Return the index of the lowest set bit of each row of packed words, or :data:`NO_RULE`.

    >>> first_set_bit(np.array([[0, 4], [0, 0], [6, 1]], dtype=np.uint64)).tolist()
    [66, -1, 1]
    """
    nonzero = words != 0
    has = nonzero.any(axis=1)
    column = nonzero.argmax(axis=1)
    word = words[np.arange(len(words)), column]
    lowest = word & (~word + np.uint64(1))
    # A power of two converts to float64 exactly, so the exponent is the bit position.
    bit = np.frexp(lowest.astype(np.float64))[1].astype(np.int64) - 1
    return np.where(has, column.astype(np.int64) * 64 + bit, NO_RULE)


class FlowDecider:
    """Decide flows between the endpoints of one :class:`EndpointTable` under one policy.

    Parameters
    ----------
    engine : PolicyEngine
        Engine of the policy; its rules give the bit order.
    table : EndpointTable
        Endpoints built with the same engine.
    """

    def __init__(self, engine: PolicyEngine, table: EndpointTable) -> None:
        self.engine = engine
        self.table = table
        self.from_words = pack_rule_bits(table.from_rows)
        self.to_words = pack_rule_bits(table.to_rows)
        # Word-major copies: one rule word of every signature is contiguous.
        self._from_t = np.ascontiguousarray(self.from_words.T)
        self._to_t = np.ascontiguousarray(self.to_words.T)
        self.rule_allows = np.array([rule.action == "allow" for rule in engine.rules], dtype=bool)
        # One extra False at the end, so that rule index -1 (no rule yet) reads as deny.
        self._rule_allows = np.append(self.rule_allows, False)
        # Positions 0 .. len(names) cover devices, External addresses and, last, the
        # unknown-device row that EndpointTable.locate() maps unmatched ids to.
        self.segment = table.segment
        self.is_external = table.is_external
        self.from_sig = table.from_sig
        self.to_sig = table.to_sig
        self._from_sig = table.from_sig.astype(np.int32)
        self._to_sig = table.to_sig.astype(np.int32)

    def service_words(self, protos: np.ndarray, ports: np.ndarray) -> np.ndarray:
        """Return packed service-match bits, one row per (protocol, port) point.

        ``protos`` are lower-case protocol names, ``ports`` integers.
        """
        protos = np.asarray(protos, dtype=object)
        ports = np.asarray(ports, dtype=np.int64)
        bits = np.zeros((len(ports), len(self.engine.rules)), dtype=bool)
        for index, specs in enumerate(self.engine._specs):
            column = np.zeros(len(ports), dtype=bool)
            for spec in specs:
                in_range = (ports >= spec.port_min) & (ports <= spec.port_max)
                column |= in_range if spec.proto == "any" else in_range & (protos == spec.proto)
            bits[:, index] = column
        return pack_rule_bits(bits)

    def first_rules(self, from_sig: np.ndarray, to_sig: np.ndarray, service_words: np.ndarray, service_code: np.ndarray) -> np.ndarray:
        """Return the first matching rule index per key, or :data:`NO_RULE`.

        Key i has the source signature ``from_sig[i]``, the destination
        signature ``to_sig[i]`` and the service row ``service_words[service_code[i]]``.
        Words are scanned in rule order and a key leaves the scan at its first
        non-zero word, so most keys cost one or two word operations.
        """
        out = np.full(len(from_sig), NO_RULE, dtype=np.int64)
        pending = np.arange(len(from_sig))
        service_t = np.ascontiguousarray(service_words.T)
        for word in range(self._from_t.shape[0]):
            if not len(pending):
                break
            x = self._from_t[word][from_sig[pending]] & self._to_t[word][to_sig[pending]] & service_t[word][service_code[pending]]
            hit = x != 0
            if hit.any():
                out[pending[hit]] = word * 64 + first_set_bit(x[hit].reshape(-1, 1))
                pending = pending[~hit]
        return out

    def defaults(self, rule_index: np.ndarray, same_segment: np.ndarray, external: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply the policy defaults to keys without a rule; return (allow, rule index).

        Rule indexes of defaults follow :meth:`PolicyEngine.decide_groups`:
        -1 intra-segment, -2 inter-segment, -3 internet.
        """
        allow = self._rule_allows[rule_index]
        out = np.array(rule_index, dtype=np.int64)
        undecided = np.flatnonzero(out < 0)
        allow[undecided], out[undecided] = self._default(same_segment[undecided], external[undecided])
        return allow, out

    def _default(self, same_segment: np.ndarray, external: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        policy = self.engine.policy
        allow = np.where(same_segment, policy.intra_segment == "allow", policy.default_action == "allow")
        index = np.where(same_segment, -1, np.where(external, -3, -2))
        return allow, index

    def decide(self, src_pos: np.ndarray, dst_pos: np.ndarray, proto, port) -> tuple[np.ndarray, np.ndarray]:
        """Decide flows given as endpoint positions, protocol and destination port.

        Parameters
        ----------
        src_pos, dst_pos : ndarray of int
            Positions in the endpoint table (as :meth:`EndpointTable.locate` returns).
        proto : array-like of str, or pandas Categorical
            Protocol names; compared in lower case. A Categorical is not
            factorised again, which saves most of the time at 10 million flows.
        port : array-like of int
            Destination ports; values outside 0-65535 are clipped.

        Returns
        -------
        allow : ndarray of bool
        rule_index : ndarray of int
            Deciding rule index, or -1, -2, -3 for the intra-segment,
            inter-segment and internet defaults.
        """
        src_pos = np.asarray(src_pos)
        dst_pos = np.asarray(dst_pos)
        if isinstance(proto, pd.Series) and isinstance(proto.dtype, pd.CategoricalDtype):
            proto = proto.array
        if isinstance(proto, pd.Categorical):
            # A copy: the codes are changed in place below.
            proto_codes = np.array(proto.codes, dtype=np.int32)
            proto_names = np.asarray([str(c).lower() for c in proto.categories], dtype=object)
        else:
            codes, uniques = pd.factorize(pd.Series(np.asarray(proto, dtype=object)).fillna(""), sort=False)
            proto_codes = np.asarray(codes, dtype=np.int32)
            proto_names = np.asarray([str(u).lower() for u in uniques], dtype=object)
        # A missing protocol (code -1) is its own name "" in the last slot.
        proto_names = np.append(proto_names, "")
        proto_codes[proto_codes < 0] = len(proto_names) - 1
        port = np.asarray(port)
        if len(port) and (port.min() < 0 or port.max() >= _PORTS):
            port = np.clip(port, 0, _PORTS - 1)

        # Keys stay int32 while their range allows, and the arithmetic runs in place:
        # the passes over 10 million flows are memory-bound.
        n_from, n_to = int(self.from_words.shape[0]), int(self.to_words.shape[0])
        wide = np.int64 if n_from * n_to >= 2**31 else np.int32
        pair = self._from_sig[src_pos].astype(wide, copy=False)
        pair *= n_to
        pair += self._to_sig[dst_pos]
        pair_codes, pair_keys = dense_codes(pair, n_from * n_to)
        del pair
        proto_codes *= _PORTS
        proto_codes += port.astype(np.int32, copy=False)
        service_codes, service_keys = dense_codes(proto_codes, len(proto_names) * _PORTS)
        del proto_codes
        n_service = len(service_keys)
        wide = np.int64 if len(pair_keys) * n_service >= 2**31 else np.int32
        key = pair_codes.astype(wide, copy=False)
        key *= n_service
        key += service_codes
        del pair_codes, service_codes
        codes, uniques = dense_codes(key, len(pair_keys) * n_service)
        del key
        u_pair, u_service = uniques // n_service, uniques % n_service
        words = self.service_words(proto_names[service_keys // _PORTS], service_keys % _PORTS)
        unique_rule = self.first_rules(pair_keys[u_pair] // n_to, pair_keys[u_pair] % n_to, words, u_service)
        log.debug("decided %d flows in %d unique keys against %d rules", len(src_pos), len(uniques), len(self.engine.rules))

        rule_index = unique_rule[codes]
        allow = self._rule_allows[rule_index]
        undecided = np.flatnonzero(rule_index < 0)
        if len(undecided):
            s_seg, d_seg = self.segment[src_pos[undecided]], self.segment[dst_pos[undecided]]
            same = (s_seg == d_seg) & (s_seg >= 0)
            external = self.is_external[src_pos[undecided]] | self.is_external[dst_pos[undecided]]
            allow[undecided], rule_index[undecided] = self._default(same, external)
        return allow, rule_index
