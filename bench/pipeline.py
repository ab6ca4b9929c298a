"""What the self-blended recipe's input pipeline costs a CPU per image (reading a crop, a fresh pseudo-fake for each
real, the augmentations, preprocessing), in this checkout against another: the work the loader's processes take from
the network's threads on a machine with no idle core (2 cores: the loop's gap to the bare step, bench/trainspeed.py).

    python bench/pipeline.py [--against CHECKOUT] [--reals 200] [--rounds 3] [--profile 12]

One process, no workers, OpenCV on one thread as a loader worker runs it; every real of the first `--reals` of
dfdc-faces-dev (prepared as bench/trainspeed.py prepares it, whose recipe and pipeline it builds) beside its
pseudo-fake, over two epochs. With `--against` (another checkout, e.g. `git worktree add /tmp/old COMMIT`), each round
times both in fresh processes, alternating, so that a machine's swings fall on both alike; it prints each round and
the mean ratio. `--profile N` lists the N functions that took the most time of their own in this checkout
(cProfile).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "out" / "generalize" / "dfdc"


def timed(reals: int, profile: int) -> dict:
    """ms per image of the recipe's pipeline in this process's fakefinder."""
    import time

    from trainspeed import recipe_pipeline, recipe_rows

    import fakefinder
    from fakefinder.hardware import single_threaded_opencv
    from fakefinder.models.backbones import Recipe

    single_threaded_opencv(0)
    recipe, dataset, rows = recipe_rows(DATA, reals)
    pipeline = recipe_pipeline(recipe, dataset, Recipe.of(recipe).build().preprocess_one)
    for row in rows[:8]:  # imports and first calls
        pipeline[(int(row), 1)]
    keys = [(int(row), epoch) for epoch in (1, 2) for row in rows]
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    for key in keys:
        pipeline[key]
    seconds = time.perf_counter() - start
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(profile)
        print(text.getvalue(), file=sys.stderr)
    return {"checkout": str(Path(fakefinder.__file__).parents[2]), "images": len(keys),
            "ms": 1000 * seconds / len(keys)}


def child(checkout: Path, reals: int, profile: int = 0) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    out = subprocess.run([sys.executable, __file__, "--child", "--reals", str(reals), "--profile", str(profile)],
                         env=env, check=True, text=True, stdout=subprocess.PIPE)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", type=Path, help="another checkout to time beside this one")
    ap.add_argument("--reals", type=int, default=200, help="reals (each with its pseudo-fake) per epoch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", type=int, default=0, help="list the N costliest functions of this checkout")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(timed(args.reals, args.profile)), flush=True)
        return
    if args.profile:
        child(ROOT, args.reals, args.profile)
    ratios = []
    for r in range(1, args.rounds + 1):
        here = child(ROOT, args.reals)
        line = f"round {r}: this checkout {here['ms']:.2f} ms an image ({here['images']} images)"
        if args.against is not None:
            there = child(args.against.resolve(), args.reals)
            ratios.append(here["ms"] / there["ms"])
            line += f", {args.against} {there['ms']:.2f} ms: {ratios[-1]:.2f}x its time"
        print(line, flush=True)
    if ratios:
        print(f"mean: this checkout takes {sum(ratios) / len(ratios):.2f}x the time of {args.against}")


if __name__ == "__main__":
    main()
