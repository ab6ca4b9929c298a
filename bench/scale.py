"""Preparing on Ray against local processes, and what that projects to for the full DFDC training set.

    python bench/scale.py                       # 12 synthetic 10 s clips, 2 workers each way; 20,000-input driver test
    python bench/scale.py --clips 24 --inputs 100000

1. The same clips prepared (1 fps, BlazeFace) by 2 local processes and by a local Ray cluster of 2 CPUs:
   seconds per video each way and Ray's overhead per video (goal: <= 10%). The cluster's start is timed apart.
2. Projection: the measured per-core cost of one 10 s video times DFDC's 119,154 training videos, spread over N
   nodes of C cores, plus the measured Ray overhead.
3. Memory on the driver: `prepare` over a metadata.json of `--inputs` entries (files that do not exist, so every
   input is a quick error row): the driver's peak resident memory must stay bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fakefinder import Compute

ROOT = Path(__file__).resolve().parents[1]
DFDC_VIDEOS = 119_154  # the DFDC training set (470 GB of 10 s clips)


def timed_prepare(src: Path, out: Path, executor) -> float:
    from fakefinder import prepare

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    result = prepare(src, out, compute=Compute(executor=executor))
    assert result.ok + result.no_face == result.videos, result.summary()
    return time.perf_counter() - t


def driver_memory(inputs: int, work: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of a prepare over `inputs` missing files, in a fresh process."""
    src = work / f"many-{inputs}"
    src.mkdir(parents=True, exist_ok=True)
    meta = {f"v{i:07d}.mp4": {"label": "REAL" if i % 2 else "FAKE"} for i in range(inputs)}
    (src / "metadata.json").write_text(json.dumps(meta))
    code = ("import resource, sys, time; from fakefinder import prepare; t = time.perf_counter(); "
            "r = prepare(sys.argv[1], sys.argv[2], processes=2); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, r.errors)")
    out = subprocess.run([sys.executable, "-c", code, str(src), str(work / f"many-out-{inputs}")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert int(out[2]) == inputs
    return float(out[0]), float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--inputs", type=int, default=20_000, help="inputs of the driver-memory test (0: skip)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "scale")
    args = ap.parse_args()
    from fakefinder import SynthSettings, synth
    from fakefinder.scale.executors import LocalExecutor

    args.work.mkdir(parents=True, exist_ok=True)
    clips = synth(args.work / "clips", SynthSettings(videos=args.clips, seed=7, seconds=args.seconds,
                                                     sizes=((1280, 720), (1920, 1080)))).out
    print(f"{args.clips} clips of {args.seconds:g} s (720p/1080p) in {clips}; {os.cpu_count()} cores here")

    from fakefinder.hardware import single_threaded_opencv

    local = timed_prepare(clips, args.work / "local", LocalExecutor(args.workers, init=single_threaded_opencv))
    import ray

    from fakefinder.scale.ray_executor import RayExecutor

    t = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter() - t
    executor = RayExecutor()
    timed_prepare(clips, args.work / "ray-warm", executor)  # Ray workers import fakefinder once
    on_ray = timed_prepare(clips, args.work / "ray", executor)
    ray.shutdown()
    per_local, per_ray = local / args.clips, on_ray / args.clips
    overhead = per_ray / per_local - 1
    print("\n| executor | wall s | s/video | videos/s |\n| --- | ---: | ---: | ---: |")
    print(f"| {args.workers} local processes | {local:.1f} | {per_local:.3f} | {args.clips / local:.2f} |")
    print(f"| Ray, {args.workers} CPUs (warm workers) | {on_ray:.1f} | {per_ray:.3f} | {args.clips / on_ray:.2f} |")
    print(f"\nRay overhead per video: {overhead:+.1%} (goal <= 10%); the local cluster started in {start:.1f} s")

    core_seconds = per_local * args.workers  # one video on one core
    print(f"\nprojection for DFDC's {DFDC_VIDEOS:,} training videos at {core_seconds:.2f} core-s per 10 s video "
          f"(measured here) and {max(overhead, 0):.1%} Ray overhead:")
    print("| nodes x cores | hours |\n| --- | ---: |")
    for nodes, cores in ((1, 2), (1, 16), (4, 16), (16, 16), (64, 16)):
        hours = DFDC_VIDEOS * core_seconds * (1 + max(overhead, 0)) / (nodes * cores) / 3600
        print(f"| {nodes} x {cores} | {hours:.1f} |")

    if args.inputs:
        seconds, peak = driver_memory(args.inputs, args.work)
        print(f"\ndriver: {args.inputs:,} inputs prepared (as error rows) in {seconds:.0f} s, peak RSS {peak:.0f} MB")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this benchmark's own driver: {peak:.0f} MB")


if __name__ == "__main__":
    main()
