"""`fakefinder synth OUT`: a synthetic DFDC-style collection (real photos moving; fakes re-render the face)."""

from __future__ import annotations

from pathlib import Path

from . import _options


def _positive(text: str) -> int:
    import argparse

    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(p) -> None:
    p.add_argument("out", type=Path, help="folder to write the videos and metadata.json into")
    p.add_argument("--videos", type=_positive, default=10, help="how many videos (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=4.0, help="length of each video (default 4)")
    p.add_argument("--methods", default=None, help="comma-separated manipulations to draw fakes from (default: all "
                   "of swap,resample,warp,colour,mouth)")
    p.add_argument("--people", type=_positive, default=1, help="people per video (default 1; 2 for face tracks)")
    _options.add_quiet(p)


def run(args) -> int:
    from ..data.synthetic import METHODS, synth

    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else METHODS
    with _options.renderer(args) as progress:
        result = synth(args.out, videos=args.videos, seed=args.seed, seconds=args.seconds, methods=methods,
                       people=args.people, progress=progress)
    fakes = sum(v.label == "FAKE" for v in result.videos)
    print(f"wrote {len(result.videos)} videos ({len(result.videos) - fakes} real, {fakes} fake) and "
          f"{result.metadata_path}")
    return 0
