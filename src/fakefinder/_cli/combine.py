"""`fakefinder combine MODEL MODEL... --data DATA --out OUT`: one model file of several detectors, a face as
suspicious as the most suspicious of them finds it, calibrated together on labelled real fakes."""

from __future__ import annotations

from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    from ..inference.recalibration import TEST
    from ..models.modelcard import COMBINE_RULES

    p.description = ("Write one model file carrying several detectors (say one trained `--fakes self-blended` and one "
                     "on real fakes): a face's score is the largest of the members' calibrated logits (--rule mean: "
                     "their mean, for detectors of one recipe trained with other seeds), then the file's "
                     "own calibration, threshold and strength of evidence are fitted on DATA, a prepared collection "
                     "of real and fake videos. With --split (the split.json of the run that trained the members on "
                     "DATA) its validation part fits and its test part measures; without, DATA is split by source as "
                     f"`calibrate` splits it ({TEST:.0%} kept apart to measure).")
    p.add_argument("models", nargs="+", type=Path, help="the members: .safetensors files of single detectors")
    p.add_argument("--data", type=Path, required=True, help="a prepared collection of labelled real fakes")
    p.add_argument("--out", type=Path, required=True, help="the model file to write (OUT.safetensors)")
    p.add_argument("--split", type=Path, help="a run's split.json over DATA: fit on its val part, measure on test")
    p.add_argument("--rule", choices=tuple(COMBINE_RULES), default="max",
                   help="how the members' calibrated logits make a face's: " + "; ".join(
                       f"{name}, {text}" for name, text in COMBINE_RULES.items()) + " (default max)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split by source and the bootstrap (default 0)")
    _options.add_json(p, "what the test part measured")
    _options.add_device(p)
    _options.add_quiet(p)


def run(args) -> int:
    from .._text import printable
    from ..inference.detector import LoadOptions
    from ..inference.recalibration import combine

    with _options.renderer(args) as progress:
        result = combine(args.models, args.data, args.out, split=args.split, seed=args.seed, rule=args.rule,
                         load=LoadOptions(device=args.device), progress=progress)
    if args.json:
        _options.write_json(result.to_dict(), args.json)
    if args.json != "-":
        print(printable(result.summary()))
    return 0
