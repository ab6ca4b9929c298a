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


def _size(text: str) -> tuple[int, int]:
    import argparse

    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit()) or not (16 <= int(width) <= 7680 and 16 <= int(height) <= 4320):
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT between 16x16 and 7680x4320, got {text!r}")
    if int(width) % 2 or int(height) % 2:
        raise argparse.ArgumentTypeError(f"must be even on both sides (H.264 4:2:0), got {text!r}")
    return int(width), int(height)


def add_arguments(p) -> None:
    p.add_argument("out", type=Path, help="folder to write the videos and metadata.json into")
    p.add_argument("--videos", type=_positive, default=10, help="how many videos (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=4.0, help="length of each video (default 4)")
    p.add_argument("--methods", default=None, help="comma-separated manipulations to draw fakes from (default: all "
                   "of swap,resample,warp,colour,mouth)")
    p.add_argument("--people", type=_positive, default=1, help="people per video (default 1; 2 for face tracks)")
    p.add_argument("--size", type=_size, action="append", metavar="WxH",
                   help="frame size; repeat for a mix (default: a mix from 640x360 to 1280x720)")
    p.add_argument("--keyint", type=_positive, metavar="N", help="a keyframe every N frames (default: every second "
                   "for half of the videos, every 250 frames for the other half)")
    _options.add_quiet(p)


def run(args) -> int:
    from ..data.synthetic import METHODS, SynthSettings, synth

    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else METHODS
    with _options.renderer(args) as progress:
        settings = SynthSettings(videos=args.videos, seed=args.seed, seconds=args.seconds, methods=methods,
                                 people=args.people, keyint=args.keyint,
                                 **({"sizes": tuple(args.size)} if args.size else {}))
        result = synth(args.out, settings, progress=progress)
    fakes = sum(v.label == "FAKE" for v in result.videos)
    print(f"wrote {len(result.videos)} videos ({len(result.videos) - fakes} real, {fakes} fake) and "
          f"{result.metadata_path}")
    return 0
