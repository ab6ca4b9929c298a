"""Sampling with a tolerance on real clips: how much decoding it saves, whether its frames are exact, and whether
verdicts move.

    python bench/sampling.py [--clips ../shared/data/xdev/ffpp_c23_videos] [--model M.safetensors] [--tolerance 0.1]

For every clip (real uploads: FaceForensics++ c23, x264 with B-frames): seconds to sample at 1 fps decoding each
sample's exact frame (`--tolerance 0`, the baseline) and the nearest reference frame; every sample's pixels
against a full decode of the same frame; how far each sample is from its time. With `--model`: each clip's
P(fake) both ways (ROC AUC against the clips' labels, mean and max |difference|), and per sample the most
suspicious face's P(fake) difference.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import av
import numpy as np

from fakefinder.data.frames import sample_frames

ROOT = Path(__file__).resolve().parents[1]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, default=ROOT.parent / "shared" / "data" / "xdev" / "ffpp_c23_videos")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--tolerance", type=float, default=0.1)
    args = ap.parse_args()
    clips = sorted(args.clips.glob("*.mp4"))
    exact_s, near_s, offsets, equal, samples = [], [], [], 0, 0
    for clip in clips:
        exact, te = timed(lambda: list(sample_frames(clip, fps=1.0, max_side=None)))
        near, tn = timed(lambda: list(sample_frames(clip, fps=1.0, max_side=None, tolerance=args.tolerance)))
        exact_s.append(te)
        near_s.append(tn)
        wanted = {f.index for f in near}
        with av.open(str(clip)) as container:
            full = {i: f.to_ndarray(format="bgr24") for i, f in enumerate(container.decode(video=0)) if i in wanted}
        equal += sum(np.array_equal(f.image, full[f.index]) for f in near)
        samples += len(near)
        offsets += [abs(a.timestamp - b.timestamp) for a, b in zip(exact, near, strict=True)]
    total_e, total_n = sum(exact_s), sum(near_s)
    print(f"{len(clips)} clips from {args.clips}, {samples} samples at 1 fps")
    print("\n| sampling | seconds, all clips | vs exact |\n| --- | ---: | ---: |")
    print(f"| each sample's exact frame (--tolerance 0) | {total_e:.2f} | 1.00x |")
    print(f"| nearest reference frame (--tolerance {args.tolerance:g}) | {total_n:.2f} | {total_e / total_n:.2f}x |")
    print(f"\nsamples whose pixels equal a full decode of their frame: {equal} of {samples}; distance from the exact "
          f"sample: median {statistics.median(offsets) * 1000:.0f} ms, max {max(offsets) * 1000:.0f} ms")
    if args.model:
        verdicts(args, clips)


def verdicts(args, clips: list[Path]) -> None:
    from sklearn.metrics import roc_auc_score

    from fakefinder import load_detector

    labels = {}
    table = args.clips / "labels.csv"
    if table.is_file():
        with open(table, newline="") as f:
            labels = {r["filename"]: int(r["label"].upper() in ("FAKE", "1")) for r in csv.DictReader(f)}
    detector = load_detector(args.model, device="cpu")
    by = {}
    for tolerance in (0.0, args.tolerance):
        detector.settings = detector.settings.replace(tolerance=tolerance)
        by[tolerance] = [detector.predict_video(c) for c in clips]
    pairs = [(a, b) for a, b in zip(by[0.0], by[args.tolerance]) if a.p_fake is not None and b.p_fake is not None]
    video_diff = [abs(a.p_fake - b.p_fake) for a, b in pairs]
    sample_diff = [abs(fa.p_fake - fb.p_fake) for a, b in pairs for fa, fb in zip(a.frames, b.frames)
                   if fa.p_fake is not None and fb.p_fake is not None]
    print(f"\nmodel {args.model.name}: {len(pairs)} clips with faces both ways")
    print(f"per clip |P(fake) difference|: mean {np.mean(video_diff):.4f}, max {np.max(video_diff):.4f}")
    print(f"per sample (most suspicious face) |P(fake) difference|: mean {np.mean(sample_diff):.4f}, "
          f"max {np.max(sample_diff):.4f} over {len(sample_diff)} samples")
    named = [(labels[Path(a.input).name], a.p_fake, b.p_fake) for a, b in pairs if Path(a.input).name in labels]
    if named and len({y for y, _, _ in named}) == 2:
        y = [n[0] for n in named]
        print(f"clip ROC AUC: exact {roc_auc_score(y, [n[1] for n in named]):.4f}, "
              f"tolerance {args.tolerance:g} {roc_auc_score(y, [n[2] for n in named]):.4f}")


if __name__ == "__main__":
    main()
