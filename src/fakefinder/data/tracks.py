"""Face tracks: the faces of sampled frames linked into one track per person.

At one frame a second a face can move far between samples, so faces are matched to tracks by how far their
centres are apart relative to the face's size (and how much the size changed), not by overlap; each frame's
faces are assigned to tracks optimally (Hungarian), and a face that fits no track starts a new one. A track
that misses frames (a turned head, a missed detection) can be picked up again later.
"""

from __future__ import annotations

import itertools
import math

XYWH = tuple[float, float, float, float]  # x, y, w, h
MAX_COST = 1.0  # centre distance in face sides plus |log size ratio|; above it, a face starts a new track


def _cost(a: XYWH, b: XYWH) -> float:
    ax, ay, bx, by = a[0] + a[2] / 2, a[1] + a[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    side_a, side_b = max(a[2], a[3], 1e-6), max(b[2], b[3], 1e-6)
    return math.hypot(ax - bx, ay - by) / max(side_a, side_b) + abs(math.log(side_a / side_b))


def link_tracks(frames: list[list[XYWH]]) -> list[list[int]]:
    """For each frame's boxes, the track each belongs to; tracks are numbered by first appearance from 0."""
    last: list[XYWH] = []  # each track's latest box
    out = []
    for boxes in frames:
        ids = [-1] * len(boxes)
        if boxes and last:
            cost = [[_cost(box, prev) for prev in last] for box in boxes]
            for r, c in _assignment(cost):
                if cost[r][c] <= MAX_COST:
                    ids[r] = c
        for i, box in enumerate(boxes):
            if ids[i] < 0:
                ids[i] = len(last)
                last.append(box)
            else:
                last[ids[i]] = box
        out.append(ids)
    return out


SMALL = 5040  # one-to-one pairings (7!) below which they are all tried: faster than importing a solver


def _assignment(cost: list[list[float]]) -> list[tuple[int, int]]:
    """The cheapest one-to-one (row, column) pairs, by row. A few faces and tracks, the common case, are solved
    exactly by trying every pairing, so a verdict does not import SciPy's solver (0.3-0.7 s at start-up);
    larger problems use it."""
    rows, cols = len(cost), len(cost[0])
    if math.perm(max(rows, cols), min(rows, cols)) <= SMALL:
        if rows <= cols:
            pairings = ([(r, c) for r, c in enumerate(p)] for p in itertools.permutations(range(cols), rows))
        else:
            pairings = (sorted((r, c) for c, r in enumerate(p)) for p in itertools.permutations(range(rows), cols))
        return min(pairings, key=lambda pairs: sum(cost[r][c] for r, c in pairs))
    from scipy.optimize import linear_sum_assignment

    found_rows, found_cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(found_rows, found_cols)]
