"""What is independent in the bench's collections, for bootstrap intervals that resample it (`groups` of
`fakefinder.metrics.bootstrap_auc` and `bootstrap_difference`) rather than videos that share a person or a frame.

- DFDC's crops: their source groups as prepared (a fake with the real it was made from).
- FaceForensics++ clips (`youtube_T`, `Method_T_S`): a pair's two videos and every fake made between them. A fake
  of target T shows the person of source S, and S's own fakes show T's, so xdev's 82 clips are 16 units, not 82.
- xdev's face crops (`*_roi_NNN`, no video id): crops linked where their 32 x 32 grey thumbnails differ by a mean
  square under 400. Each real video gave two consecutive frames, and the NeuralTextures and Face2Face crops are its
  first frame with the expression changed: their thumbnails lie a median 150-200 apart, most unrelated pairs above
  1,000. At 400 no unit holds more than one target's six crops (two real frames, four methods); at 500 two
  targets merge. Of 590 crops this gives 229 units, 114 of them alone (mostly face swaps, whose face differs more).
"""

from __future__ import annotations

import re

import numpy as np

FFPP_FAKE = re.compile(r"^\w+?_(\d{3})_(\d{3})$")
FFPP_REAL = re.compile(r"^youtube_(\d{3})$")
LINKED = 400.0  # mean square difference of two crops' thumbnails (grey levels) under which they are one unit


def independent_units(data, ids) -> list[str]:
    """The unit each of these videos of `data` belongs to (see the module's docstring)."""
    ids = list(ids)
    if ids and all(FFPP_FAKE.match(v) or FFPP_REAL.match(v) for v in ids):
        return _ffpp_pairs(ids)
    if ids and all("_roi_" in v for v in ids):
        return _linked_crops(data, ids)
    return list(data.sources(ids))


def scored(data, rows: np.ndarray, p: np.ndarray, rule: str, seed: int) -> tuple[float, tuple[float, float], float]:
    """(video AUC, its bootstrap interval over the independent units, video log loss) of these rows scored `p` per
    face."""
    from fakefinder.metrics import binary_metrics, bootstrap_auc

    ids, vy, vp = data.videos(np.flatnonzero(rows), p[rows], rule)
    m = binary_metrics(vy, vp)
    return m.auc, bootstrap_auc(vy, vp, groups=independent_units(data, ids), seed=seed), m.log_loss


def _ffpp_pairs(ids: list[str]) -> list[str]:
    from scipy.sparse.csgraph import connected_components

    ids_of = [(FFPP_FAKE.match(v) or FFPP_REAL.match(v)).groups() for v in ids]  # (target, source) or (target,)
    number = {n: i for i, n in enumerate(sorted({n for found in ids_of for n in found}))}
    linked = np.eye(len(number), dtype=bool)
    for found in ids_of:
        linked[number[found[0]], number[found[-1]]] = True  # a fake links its target and its source
    _, unit = connected_components(linked, directed=False)
    return [f"ffpp {unit[number[found[0]]]}" for found in ids_of]


def _linked_crops(data, ids: list[str]) -> list[str]:
    import cv2
    from scipy.sparse.csgraph import connected_components

    from fakefinder.data.crops import read_crop

    first = {}
    for row, v in enumerate(data.video_ids):
        first.setdefault(v, row)
    files = data.crop_files
    thumbs = np.array([cv2.resize(cv2.cvtColor(read_crop(files[first[v]]), cv2.COLOR_BGR2GRAY), (32, 32),
                                  interpolation=cv2.INTER_AREA).astype(np.float64).ravel() for v in ids])
    norms = (thumbs**2).sum(1)
    square = (norms[:, None] + norms[None] - 2 * thumbs @ thumbs.T) / thumbs.shape[1]  # no crops x crops x pixels
    _, unit = connected_components(square < LINKED, directed=False)
    return [f"crops {u}" for u in unit]
