"""`fakefinder export MODEL OUT.onnx`: the whole detector as one ONNX file, its model card in the metadata."""

from __future__ import annotations

from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    p.description = ("Base and head as one ONNX graph at fp32 (preprocessed NCHW float32 face crops in, the "
                     "uncalibrated logit out, any batch size), with the model card in its metadata: "
                     "`predict`, `evaluate` and `serve` score with it by ONNX Runtime (no Grad-CAM heatmaps).")
    _options.add_model_argument(p, file="a .safetensors model file")
    p.add_argument("out", type=Path, help="the ONNX file to write (OUT.onnx)")
    _options.add_model_file(p)


def run(args) -> int:
    from .._text import printable
    from ..errors import UsageError
    from ..inference.locate import resolve_model_file
    from ..models.modelfile import load_model
    from ..models.onnxfile import export_onnx, load_onnx, require_onnx

    require_onnx("fakefinder export")
    if args.out.suffix.lower() != ".onnx":
        raise UsageError(f"{args.out}: name the ONNX file OUT.onnx (predict, evaluate and serve tell it by that)")
    model = load_model(resolve_model_file(args.model, tracking_uri=_options.tracking_uri(args)), device="cpu",
                       base_weights=args.base_weights)
    written = export_onnx(model, args.out)
    card = load_onnx(written).card  # read back as predict will: a file that does not load is not left unsaid
    print(printable(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB): {card.backbone}, "
                    f"{card.verdict.meaning()}"))
    return 0
