"""Segmentation policy: the first-match engine and the what-if simulator.

The simulator's names load on first use, because :mod:`twin.policy.simulate`
imports the query catalogue, which imports :mod:`twin.policy.engine`.
"""

from __future__ import annotations

import importlib

__all__ = [
    "PolicyEngine",
    "SimulationResult",
    "edit_policy",
    "load_policy",
    "policy_to_yaml",
    "simulate",
    "simulate_workspace",
]

_HOMES = {"PolicyEngine": "twin.policy.engine", **{name: "twin.policy.simulate" for name in __all__[1:]}}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'twin.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
