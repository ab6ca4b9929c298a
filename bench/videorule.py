"""The per-video decision: how many frames a clip needs, how its faces' scores are combined, and whether test-time
flips help, measured on FaceForensics++ c23 clips (../shared/data/xdev, 82 clips of three methods) for detectors that
bench/generalize.py trained and kept.

    python bench/videorule.py bench/out/generalize/self-blended-seed0.safetensors [...seed1...] [--frames 32]

The clips are prepared once as the models' verdicts read videos (`verdict_settings`: BlazeFace, the margin that
frames them as the DFDC crops, every face), at `--frames` evenly spaced frames; fewer frames are every k-th of them.
Rules (each a face track's score, the most suspicious track deciding, unless said): `mean` (the default: mean P),
`logit` (mean calibrated logit), `confident` (the DFDC winner's), `median`, `frame-max` (SBI's: the most suspicious
face of each frame, then the mean over frames, no tracks), `all-mean` (every face of the clip, no tracks). Each is
given with and without a horizontal flip averaged into every face's logit. Video AUC with its bootstrap 95%
interval over clips, and log loss, per model (seed); the last table gives each cell's mean over the models.
DFDC's dev crops are one face per video: no video rule changes them, so they are not part of this bench.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sources import independent_units

from fakefinder import CollectionOptions, load_detector, prepare
from fakefinder._text import format_table
from fakefinder.data.crops import load_crops
from fakefinder.data.dataset import load_dataset
from fakefinder.inference.framing import verdict_settings
from fakefinder.metrics import _rule, binary_log_loss, bootstrap_auc, sigmoid

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "xdev" / "ffpp_c23_videos"
RULES = ("mean", "logit", "confident", "median", "frame-max", "all-mean")


def _track_rule(z: np.ndarray, rule: str) -> float:
    """One track's score: fakefinder's own rules (mean, confident) as `metrics` states them, the others here."""
    if rule == "logit":
        return float(sigmoid(z.mean()))
    if rule == "median":
        return float(np.median(sigmoid(z)))
    return _rule(sigmoid(z), rule)


def video_score(z: np.ndarray, frames: np.ndarray, tracks: np.ndarray, rule: str) -> float:
    if rule == "all-mean":
        return float(sigmoid(z).mean())
    if rule == "frame-max":
        return float(np.mean([sigmoid(z[frames == f]).max() for f in np.unique(frames)]))
    return max(_track_rule(z[tracks == t], rule) for t in np.unique(tracks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "videorule")
    args = ap.parse_args()
    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score

    first = load_detector(args.models[0], device="cpu")
    settings = verdict_settings(first.card).replace(frames=args.frames, landmarks=False)
    data = prepare(CLIPS, args.out / f"clips-f{args.frames}-m{settings.margin}", settings=settings,
                   collection=CollectionOptions(labels=CLIPS / "labels.csv", dataset="ffpp-clips")).out
    d = load_dataset(data)
    table = pq.read_table(d.root / "manifest.parquet", columns=["crop_path", "frame_index"]).to_pydict()
    frame_of = dict(zip(table["crop_path"], table["frame_index"]))
    frames = np.asarray([frame_of[c] for c in d.crop_paths])
    tracks = d.tracks()
    print(f"{len(set(d.video_ids))} clips, {len(d)} faces at {args.frames} frames a clip, margin {settings.margin}",
          flush=True)
    images = load_crops(list(d.crop_files))
    cells: dict[tuple, list[float]] = {}
    rows = []
    for k, path in enumerate(args.models):
        detector = first if k == 0 else load_detector(path, device="cpu")
        cal = detector.card.calibration
        plain = detector.model.face_logits(images)
        flipped = detector.model.face_logits([np.ascontiguousarray(im[:, ::-1]) for im in images])
        # a calibrated logit: the card's map applied to the raw one (temperature or Platt: affine)
        z_of = {"": cal.scale * plain + cal.shift, "flip": cal.scale * (plain + flipped) / 2 + cal.shift}
        for n in sorted({args.frames, args.frames // 2, args.frames // 4, max(1, args.frames // 8)}):
            keep = np.zeros(len(d), dtype=bool)
            for v in np.unique(d.video_ids):
                rows_v = np.flatnonzero(d.video_ids == v)
                kept = np.unique(frames[rows_v])[np.unique(np.linspace(0, len(np.unique(frames[rows_v])) - 1,
                                                                       n).round().astype(int))]
                keep[rows_v[np.isin(frames[rows_v], kept)]] = True
            ids = np.unique(d.video_ids[keep])
            y = np.array([d.labels[d.video_ids == v][0] for v in ids])
            units = independent_units(d, ids)
            for flip, z in z_of.items():
                for rule in RULES:
                    p = np.array([video_score(z[keep & (d.video_ids == v)], frames[keep & (d.video_ids == v)],
                                              tracks[keep & (d.video_ids == v)], rule) for v in ids])
                    auc, (low, high) = roc_auc_score(y, p), bootstrap_auc(y, p, groups=units, seed=k)
                    loss = binary_log_loss(y, p)
                    cells.setdefault((n, rule, flip), []).append(auc)
                    cells.setdefault((n, rule, flip, "loss"), []).append(loss)
                    rows.append([path.stem, str(n), rule, flip or "-", f"{auc:.3f} [{low:.2f}, {high:.2f}]",
                                 f"{loss:.3f}"])
        print(format_table(["model", "frames", "rule", "flip", "video AUC [95%]", "log loss"], rows), flush=True)
    print("\nmean over the models:")
    print(format_table(["frames", "rule", "flip", "video AUC", "log loss"],
                       [[str(n), rule, flip or "-", f"{np.mean(v):.3f}",
                         f"{np.mean(cells[(n, rule, flip, 'loss')]):.3f}"]
                        for (n, rule, flip, *rest), v in cells.items() if not rest]), flush=True)


if __name__ == "__main__":
    main()
