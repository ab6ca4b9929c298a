"""`fakefinder demo`: the whole study on built-in synthetic data, offline."""

from __future__ import annotations

from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default ./demo)")
    p.add_argument("--videos", type=int, default=30, help="videos per collection (default 30)")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-tune", action="store_true", help="skip step 3 (tuning on B)")
    _options.add_quiet(p)


def run(args) -> int:
    from ..workflows.demo import DEMO_GRID, demo

    with _options.renderer(args) as progress:
        result = demo(args.out, videos=args.videos, seconds=args.seconds, seed=args.seed,
                      grid=None if args.no_tune else DEMO_GRID, progress=progress)
    print(result.summary())
    return 0
