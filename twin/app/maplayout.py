"""Deterministic radial layout of the map's node tree, computed server-side.

Every node sits at the centre of a disc that holds its whole subtree. The
children of a node are discs placed around it, so no two nodes overlap at
any level. Children that are leaves and more than :data:`RING_FILL_MIN` in
number fill concentric rings, so an expanded device class stays compact.
Other children share one ring sized so that neighbouring discs never touch.

The same tree (nodes, parents, radii and order) always gives the same
coordinates: there is no randomness and no physics simulation.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LAYOUT_GAP", "RING_FILL_MIN", "START_ANGLE", "radial_layout"]

# Free space between the discs of two neighbouring subtrees (canvas units, default 16).
LAYOUT_GAP = 16.0
# Leaf children of one parent from which they fill concentric rings instead of
# one ring (count, default 24).
RING_FILL_MIN = 24
# Angle of a node's first child, radians (default -pi/2, straight up on a canvas whose y grows downwards).
START_ANGLE = -math.pi / 2
# Bisection steps when solving for the radius of a single ring (count, default 40).
_BISECTION_STEPS = 40


def radial_layout(parents: np.ndarray, radii: np.ndarray, gap: float = LAYOUT_GAP) -> np.ndarray:
    """Place a tree of discs around their parents and return one (x, y) row per node.

    Parameters
    ----------
    parents : ndarray of int
        Parent position of each node, -1 for the root. Exactly one root;
        a parent must come before its children. Children are laid out in
        the order they appear.
    radii : ndarray of float
        Radius each node needs for itself (its drawn size plus its label).
    gap : float
        Free space kept between neighbouring discs, canvas units.

    Returns
    -------
    ndarray, shape (n, 2)
        Coordinates, the root at (0, 0).

    Notes
    -----
    Two passes over the tree, O(n) apart from the single-ring radius, which
    is found by bisection per parent (:data:`_BISECTION_STEPS` steps over
    its children). The disc of a subtree contains every node below it, so
    discs that do not intersect guarantee nodes that do not overlap.
    """
    n = len(parents)
    if n == 0:
        return np.zeros((0, 2))
    children: list[list[int]] = [[] for _ in range(n)]
    for node in range(n):
        parent = int(parents[node])
        if parent >= 0:
            children[parent].append(node)

    # Pass 1, children before parents: the disc each subtree needs and the
    # offset of each child from its parent.
    extent = np.asarray(radii, dtype=float).copy()
    offset = np.zeros((n, 2))
    for node in range(n - 1, -1, -1):
        kids = children[node]
        if not kids:
            continue
        kid_extent = extent[kids]
        all_leaves = all(not children[k] for k in kids)
        if all_leaves and len(kids) >= RING_FILL_MIN:
            offsets, reach = _fill_rings(float(radii[node]), kid_extent, gap)
        else:
            offsets, reach = _single_ring(float(radii[node]), kid_extent, gap)
        offset[kids] = offsets
        extent[node] = max(float(radii[node]), reach)

    # Pass 2, parents before children: absolute positions.
    position = np.zeros((n, 2))
    for node in range(n):
        parent = int(parents[node])
        if parent >= 0:
            position[node] = position[parent] + offset[node]
    return position


def _single_ring(own: float, kid_extent: np.ndarray, gap: float) -> tuple[np.ndarray, float]:
    """Place child discs on one ring around a parent of radius ``own``; return offsets and the reach."""
    padded = kid_extent + gap / 2.0
    largest = float(padded.max())
    # The ring must clear the parent node, and each child disc spans the
    # angle 2 * asin(padded / ring); the angles must fit in a full turn.
    low = own + largest + gap / 2.0
    if len(padded) > 1:
        # asin(x) <= x * pi / 2, so this ring always satisfies the angle sum.
        high = max(low, float(padded.sum()) / 2.0)
        if _half_angles(padded, low).sum() > math.pi:
            for _ in range(_BISECTION_STEPS):
                middle = (low + high) / 2.0
                if _half_angles(padded, middle).sum() > math.pi:
                    low = middle
                else:
                    high = middle
            low = high
    ring = low
    half = _half_angles(padded, ring)
    slack = (2.0 * math.pi - 2.0 * half.sum()) / len(padded)
    # Child i's centre sits in the middle of its own angular span.
    spans = 2.0 * half + slack
    angles = START_ANGLE + np.cumsum(spans) - spans / 2.0 - spans[0] / 2.0
    offsets = np.column_stack((ring * np.cos(angles), ring * np.sin(angles)))
    return offsets, ring + float(kid_extent.max())


def _half_angles(padded: np.ndarray, ring: float) -> np.ndarray:
    return np.arcsin(np.minimum(1.0, padded / ring))


def _fill_rings(own: float, kid_extent: np.ndarray, gap: float) -> tuple[np.ndarray, float]:
    """Place leaf discs on concentric rings, innermost first; return offsets and the reach.

    Rings are ``pitch`` apart and neighbours on one ring are at least
    ``pitch`` apart (the chord of the angle step), where ``pitch`` is the
    largest leaf diameter plus the gap.
    """
    largest = float(kid_extent.max())
    pitch = 2.0 * largest + gap
    count = len(kid_extent)
    offsets = np.zeros((count, 2))
    ring = own + largest + gap
    placed = 0
    while placed < count:
        # Slots on this ring so that the chord between neighbours is at least pitch.
        slots = max(1, int(math.pi / math.asin(min(1.0, pitch / (2.0 * ring)))))
        take = min(slots, count - placed)
        angles = START_ANGLE + 2.0 * math.pi * np.arange(take) / take
        offsets[placed : placed + take] = np.column_stack((ring * np.cos(angles), ring * np.sin(angles)))
        placed += take
        if placed < count:
            ring += pitch
    return offsets, ring + largest
