"""`fakefinder predict MODEL INPUT...`: P(fake) and a verdict per video or image, with frames and face tracks."""

from __future__ import annotations

import sys
from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    _options.add_model_argument(p)
    p.add_argument("inputs", nargs="+", help="video files, images, or folders of them")
    from ..models.modelcard import Verdict

    p.add_argument("--threshold", type=_options.typed(Verdict, "threshold"), metavar="T",
                   help="verdict FAKE at P(fake) >= T (default: the model's)")
    _options.add_json(p, "one object per input")
    p.add_argument("--csv", type=Path, help="write one row per input to FILE")
    p.add_argument("--explain", type=Path, metavar="DIR",
                   help="write Grad-CAM heatmaps of each input's most suspicious faces into DIR")
    _options.add_model(p)
    from ..config import InputLimits

    _options.add_settings(p, InputLimits)
    _options.add_quiet(p)


def run(args) -> int:
    from .._packages import require
    from .._text import printable
    from ..config import InputLimits
    from ..errors import UsageError
    from ..inference.evaluation import predict, predictions_table, write_predictions_csv

    if args.explain:  # checked before the work, not after it
        require("serve", ("captum",), what="--explain")
        if args.explain.exists() and not args.explain.is_dir():
            raise UsageError(f"--explain {args.explain}: not a folder")

    detector = _options.load_options(args, threshold=args.threshold,
                                     limits=_options.settings_from(args, InputLimits)).load(args.model)
    if args.explain and not detector.explains:
        raise UsageError("--explain needs gradients, which ONNX Runtime does not give: Grad-CAM heatmaps need "
                         "--runtime torch and the .safetensors model")
    with _options.renderer(args) as progress:
        results = predict(detector, args.inputs, progress=progress, keep_faces=4 if args.explain else 0)
        if args.explain:
            from ..inference.explain import explain_results

            for written in explain_results(detector, results, args.explain):
                print(f"wrote {written}", file=sys.stderr)
    _options.write_json([r.to_dict() for r in results], args.json)
    if args.csv:
        write_predictions_csv(results, args.csv)
    shown_on = sys.stderr if args.json == "-" else sys.stdout
    print(predictions_table(results), file=shown_on)
    print(f"\n{printable(detector.describe())}", file=shown_on)
    return 1 if all(r.error for r in results) else 0
