"""`fakefinder blend CROP... OUT`: what a detector trained with `--fakes self-blended` sees, as image grids."""

from __future__ import annotations

import sys
from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    from ..config import InputLimits, TrainSettings
    from ..options import declared
    from ..training.pseudofakes import MAX_GRID_SEEDS

    p.description = ("Per face crop, rows of real / blending mask (with the face mesh's points) / pseudo-fake, one "
                     "row per seed: the self-blended images `train --fakes self-blended` learns from.")
    p.add_argument("crops", nargs="+", type=Path, help="face crops (as `prepare` writes them)")
    p.add_argument("out", type=Path, help="folder to write CROP-blends.png files into")
    p.add_argument("--seeds", type=int, default=3, help=f"rows per crop, 1-{MAX_GRID_SEEDS} (default 3)")
    p.add_argument("--margin", type=float, default=0.3, help="the crops' margin around the face, as prepared "
                   "(default 0.3): where the face sits when no face mesh is found")
    _options.add_settings(p, TrainSettings, skip=tuple(n for n in declared(TrainSettings)
                                                       if not n.startswith("blend_") and n != "seed"))
    _options.add_settings(p, InputLimits)


def run(args) -> int:
    from ..config import InputLimits, TrainSettings
    from ..training.pseudofakes import write_blend_grids

    results = write_blend_grids(args.crops, args.out, _options.settings_from(args, TrainSettings, "self-blended"),
                                seeds=args.seeds, margin=args.margin, limits=_options.settings_from(args, InputLimits))
    for crop, written, problem in results:
        if written is None:
            print(f"{crop}: {problem}", file=sys.stderr)
        else:
            print(f"wrote {written}" + (f" ({problem})" if problem else ""))
    return 1 if all(w is None for _, w, _ in results) else 0
