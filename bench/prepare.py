"""Benchmark `prepare` against the reference study's naive pipeline, in one run on the same videos.

Naive baseline (what the reference did): OpenCV decodes every frame, keeps one per second, runs Haar `alt`
(scale 1.1, minNeighbors 2, min 30 px) on the full-resolution frame, and writes every face as a PNG.
fakefinder: `prepare` with --workers (default: all cores), for each detector, and with BlazeFace once more
with `--tolerance 0` (each sample's exact frame decoded, as before the tolerance existed).

The videos are encoded as real uploads are: x264 with 3 B-frames as a pyramid (`synth`'s encoder), a keyframe
every 250 frames (DFDC's interval), half at 1280x720 and half at 1920x1080.

    python bench/prepare.py [--videos 8] [--seconds 10] [--out bench/out]

Prints videos/s, seconds per stage (decode, detect, crop+write; one process, summed over videos), face
recall (sampled frames with at least one face; every frame of these videos shows one) and extra boxes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import cv2

from fakefinder import Compute, PrepareSettings, SynthSettings, create_face_detector, prepare, sample_frames, synth
from fakefinder.data.crops import square_crop


def naive(videos: list[Path], out: Path) -> dict:
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_alt.xml"))
    stats = dict(decode=0.0, detect=0.0, write=0.0, frames=0, hits=0, extra=0)
    t0 = time.perf_counter()
    for path in videos:
        cap = cv2.VideoCapture(str(path))
        step = max(1, round(cap.get(cv2.CAP_PROP_FPS)))
        i = 0
        while True:
            t = time.perf_counter()
            ok, frame = cap.read()
            stats["decode"] += time.perf_counter() - t
            if not ok:
                break
            if i % step == 0:
                t = time.perf_counter()
                gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=2, minSize=(30, 30))
                stats["detect"] += time.perf_counter() - t
                t = time.perf_counter()
                for k, (x, y, w, h) in enumerate(faces):
                    crop = cv2.resize(frame[y:y + h, x:x + w], (224, 224))
                    cv2.imwrite(str(out / f"{path.stem}_{i}_{k}.png"), crop)
                stats["write"] += time.perf_counter() - t
                stats["frames"] += 1
                stats["hits"] += len(faces) > 0
                stats["extra"] += max(0, len(faces) - 1)
            i += 1
        cap.release()
    stats["wall"] = time.perf_counter() - t0
    return stats


def staged(videos: list[Path], out: Path, settings: PrepareSettings) -> dict:
    """fakefinder's own stages in one process, timed separately (the library calls `prepare` makes)."""
    detector = create_face_detector(settings.detector)
    stats = dict(decode=0.0, detect=0.0, write=0.0, frames=0, hits=0, extra=0)
    for path in videos:
        frames = sample_frames(path, fps=settings.fps, max_side=settings.max_side, tolerance=settings.tolerance)
        while True:
            t = time.perf_counter()
            frame = next(frames, None)
            stats["decode"] += time.perf_counter() - t
            if frame is None:
                break
            t = time.perf_counter()
            boxes = detector.detect(frame.image)
            stats["detect"] += time.perf_counter() - t
            t = time.perf_counter()
            if boxes:
                box = max(boxes, key=lambda b: b.area)
                cv2.imwrite(str(out / f"{path.stem}_{frame.index}.png"), square_crop(frame.image, box, margin=0.3,
                                                                                     size=224))
            stats["write"] += time.perf_counter() - t
            stats["frames"] += 1
            stats["hits"] += bool(boxes)
            stats["extra"] += max(0, len(boxes) - 1)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/prepare"))
    ap.add_argument("--fresh", action="store_true", help="regenerate the videos")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    if args.fresh:
        shutil.rmtree(args.out / "videos", ignore_errors=True)
    src = args.out / "videos"
    made = [synth(src / f"{h}p", SynthSettings(videos=args.videos // 2, seconds=args.seconds, seed=11,
                                               sizes=((w, h),), keyint=250)) for w, h in ((1280, 720), (1920, 1080))]
    videos = sorted(src.glob("*/*.mp4"))
    kinds = {f"{v.size[1]}p/{v.fps} fps/keyint {v.keyint}" for m in made for v in m.videos}
    print(f"{len(videos)} videos of {args.seconds:g} s ({', '.join(sorted(kinds))}), {os.cpu_count()} cores, "
          f"{args.workers} workers")

    rows = {}
    scratch = args.out / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    rows["naive (OpenCV all frames, Haar full-res)"] = naive(videos, scratch)
    runs = {"prepare --tolerance 0 --detector blazeface": PrepareSettings(tolerance=0),
            "prepare --detector blazeface (default)": PrepareSettings(),
            "prepare --detector haar": PrepareSettings(detector="haar")}
    for name, settings in runs.items():
        shutil.rmtree(scratch)
        scratch.mkdir()
        stats = staged(videos, scratch, settings)
        out = args.out / "prepared"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        prepare(src, out, settings=settings, compute=Compute(processes=args.workers))
        stats["wall"] = time.perf_counter() - t
        rows[name] = stats

    base = rows["naive (OpenCV all frames, Haar full-res)"]["wall"]
    exact = rows["prepare --tolerance 0 --detector blazeface"]["wall"]
    print(f"\n{'pipeline':44} {'videos/s':>8} {'vs naive':>8} {'vs exact':>8} {'decode s':>9} {'detect s':>9} "
          f"{'write s':>8} {'recall':>7} {'extra':>6}")
    for name, s in rows.items():
        print(f"{name:44} {len(videos) / s['wall']:8.2f} {base / s['wall']:7.1f}x {exact / s['wall']:7.2f}x "
              f"{s['decode']:9.2f} {s['detect']:9.2f} {s['write']:8.2f} {s['hits'] / s['frames']:7.1%} "
              f"{s['extra']:6d}")
    print("\nstage seconds: one process, summed over videos; videos/s and speedup: whole run "
          f"(fakefinder with {args.workers} workers, naive single process as the reference ran it)")


if __name__ == "__main__":
    main()
