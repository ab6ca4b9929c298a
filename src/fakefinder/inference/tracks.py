"""Face tracks: the faces of sampled frames linked into one track per person.

At one frame a second a face can move far between samples, so faces are matched to tracks by how far their
centres are apart relative to the face's size (and how much the size changed), not by overlap; each frame's
faces are assigned to tracks optimally (Hungarian), and a face that fits no track starts a new one. A track
that misses frames (a turned head, a missed detection) can be picked up again later.
"""

from __future__ import annotations

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


def _assignment(cost: list[list[float]]) -> list[tuple[int, int]]:
    """The cheapest one-to-one (row, column) pairs. One face and one track, the common case, needs no solver (and
    no import of SciPy's, a third of a second at start-up)."""
    if len(cost) == 1 and len(cost[0]) == 1:
        return [(0, 0)]
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols)]
