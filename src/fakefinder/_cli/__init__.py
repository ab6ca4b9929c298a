"""The `fakefinder` command: parses arguments, calls the public API, prints. No logic lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic DFDC-style collection of real and fake videos",
                       description="Real face photos moving over real backgrounds; fakes re-render the face "
                                   "or the mouth. Deterministic from --seed.")
    p.add_argument("out", type=Path, help="folder to write the videos and metadata.json into")
    p.add_argument("--videos", type=_positive_int, default=10, help="how many videos (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=4.0, help="length of each video (default 4)")
    p.add_argument("--methods", default=None,
                   help="comma-separated manipulations to draw fakes from (default: all of "
                        "swap,resample,warp,colour,mouth)")
    p.set_defaults(run=_run_synth)


def _run_synth(args) -> int:
    from ..synthetic import METHODS, synth

    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else METHODS
    result = synth(args.out, videos=args.videos, seed=args.seed, seconds=args.seconds, methods=methods)
    fakes = sum(v.label == "FAKE" for v in result.videos)
    print(f"wrote {len(result.videos)} videos ({len(result.videos) - fakes} real, {fakes} fake) and "
          f"{result.metadata_path}")
    return 0


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="sample frames, detect and crop faces, write manifest.parquet",
                       description="Turn a labelled video collection (DFDC metadata.json, a labels CSV, or "
                                   "real/ and fake/ folders) into face crops with provenance. Reruns resume.")
    p.add_argument("src", type=Path, help="the collection's folder")
    p.add_argument("out", type=Path, help="output folder (faces/, manifest.parquet, videos.parquet)")
    p.add_argument("--labels", type=Path, help="CSV with columns filename,label[,original][,method]")
    p.add_argument("--layout", choices=("auto", "dfdc", "csv", "folders"), default="auto")
    p.add_argument("--dataset", help="name recorded on every row (default: SRC's folder name)")
    p.add_argument("--preset", choices=("default", "reference"), default="default",
                   help="reference: the study's preparation (1 fps, long side 1000, haar, margin 0, all faces)")
    g = p.add_argument_group("frames")
    g.add_argument("--fps", type=float, help="frames sampled per second (default 1)")
    g.add_argument("--frames", type=_positive_int, help="instead of --fps: N evenly spaced frames per video")
    g.add_argument("--max-side", type=int, help="shrink frames to this long side (default 1000)")
    g = p.add_argument_group("faces")
    g.add_argument("--detector", choices=("blazeface", "haar", "none"), help="default blazeface")
    g.add_argument("--margin", type=float, help="added around the box, as a fraction of its side (default 0.3)")
    g.add_argument("--faces", choices=("largest", "all"), help="default largest")
    g.add_argument("--min-face", type=int, help="smallest face side kept, in video pixels (default 0)")
    g.add_argument("--size", type=int, help="side of the saved square crops (default 224)")
    p.add_argument("--workers", type=_positive_int, help="processes (default: all cores)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any input failed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_prepare)


def _run_prepare(args) -> int:
    import dataclasses

    from ..preparation import PrepareSettings, prepare

    base = PrepareSettings.reference() if args.preset == "reference" else PrepareSettings()
    given = {name: getattr(args, name) for name in ("fps", "frames", "max_side", "detector", "margin", "faces",
                                                    "min_face", "size") if getattr(args, name) is not None}
    settings = dataclasses.replace(base, **given)
    result = prepare(args.src, args.out, settings=settings, layout=args.layout, labels=args.labels,
                     dataset=args.dataset, workers=args.workers, progress=not args.quiet)
    print(result.summary())
    return 1 if args.strict and result.errors else 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on built-in synthetic data (offline)")
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default ./demo)")
    p.add_argument("--videos", type=_positive_int, default=12)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_positive_int)
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from ..quickstart import demo

    print(demo(args.out, videos=args.videos, seconds=args.seconds, seed=args.seed, workers=args.workers).summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="fakefinder", description="Tell real videos from deepfakes.")
    parser.add_argument("--version", action="version", version=f"fakefinder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_synth, _add_prepare):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import UsageError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"fakefinder {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
