"""`fakefinder calibrate MODEL DATA OUT`: refit a model's threshold, calibration and strength of evidence on the
user's own labelled collection of real fakes, and write a new model file whose card names it."""

from __future__ import annotations

from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    from ..inference.recalibration import TEST

    p.description = ("Refit a model's probability calibration, threshold and strength of evidence (likelihood "
                     "ratios) on your own prepared collection of real and fake videos, the fakes real deepfakes "
                     f"(not self-blended pseudo-fakes). The collection is split by source: {1 - TEST:.0%} of its "
                     f"sources fit, {TEST:.0%} are kept apart to measure. Base and head are not changed; OUT's "
                     "card names the collection.")
    _options.add_model_argument(p, file="a .safetensors model file")
    p.add_argument("data", type=Path, help="a prepared collection (`fakefinder prepare`) of labelled real fakes")
    p.add_argument("out", type=Path, help="the model file to write (OUT.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split by source and the bootstrap (default 0)")
    _options.add_json(p, "what the test part measured")
    _options.add_device(p)
    _options.add_model_file(p)
    _options.add_quiet(p)


def run(args) -> int:
    from .._text import printable
    from ..inference.detector import LoadOptions
    from ..inference.recalibration import calibrate

    load = LoadOptions(device=args.device, tracking_uri=_options.tracking_uri(args), base_weights=args.base_weights,
                       runtime="torch")
    with _options.renderer(args) as progress:
        result = calibrate(args.model, args.data, args.out, seed=args.seed, load=load, progress=progress)
    if args.json:
        _options.write_json(result.to_dict(), args.json)
    if args.json != "-":
        print(printable(result.summary()))
    return 0
