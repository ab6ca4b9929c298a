"""Benchmark ONNX Runtime against PyTorch on real face crops: a frozen base's pooled features and whole-detector
face scores (crops/s), each as a ratio to PyTorch fp32 measured in the same run, and how far P(fake) moves.

    python bench/runtimes.py --model MODEL.safetensors [--crops 512] [--data /work/shared/data/dfdc-faces-dev]
                         [--int8] [--auc 4000]

Features time the base alone on crops preprocessed once (what `FeatureCache` spends its time on); scores time
`face_logits` whole (preprocessing included, as `predict` runs it). `--int8` adds ONNX Runtime's dynamic int8
quantisation of the whole detector, and `--auc N` compares the frame AUC of fp32 and int8 on N crops of `--data`
(labels from its labels.csv), which decides whether int8 is worth offering. Run by hand: it prints a table.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of `repeats` runs after one warm-up, and the last result."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    import onnx
    import torch

    from fakefinder.hardware import autocast, resolve_precision
    from fakefinder.metrics import sigmoid
    from fakefinder.models.features import load_crops
    from fakefinder.models.head import pooled
    from fakefinder.models.modelfile import load_model
    from fakefinder.models.onnxfile import OnnxModel, base_features, base_graph, detector_graph, session

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, type=Path, help="a .safetensors model (its base and head are timed)")
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/dfdc-faces-dev"))
    ap.add_argument("--crops", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--auc", type=int, default=0, help="crops on which to compare fp32 and int8 frame AUC")
    args = ap.parse_args()

    rows = list(csv.DictReader(open(args.data / "labels.csv")))
    crops = load_crops([args.data / r["filename"] for r in rows[:args.crops]])
    model = load_model(args.model)
    auto = resolve_precision("auto", "cpu")
    b = args.batch
    x = model.backbone.preprocess(crops)
    chunks = [x[s:s + b] for s in range(0, len(x), b)]
    pool = model.card.head.pool

    def torch_features(precision: str):
        def run():
            with torch.inference_mode(), autocast("cpu", precision):
                return torch.cat([pooled(model.backbone.module.forward_features(c).float(), pool) for c in chunks])
        return run

    t0 = time.perf_counter()
    base_sess = session(base_graph(model.backbone, pool).SerializeToString())
    export_s = time.perf_counter() - t0
    arrays = [c.contiguous().numpy() for c in chunks]

    def onnx_features():
        return np.concatenate([base_features(base_sess, a) for a in arrays])

    fp32_model = dataclasses.replace(model, card=dataclasses.replace(model.card, precision="fp32"))
    auto_model = dataclasses.replace(model, card=dataclasses.replace(model.card, precision=auto))
    onnx_model = OnnxModel.of(model)
    table: list[tuple[str, float, np.ndarray, float, np.ndarray]] = []
    feats: dict[str, np.ndarray] = {}
    for name, feature_fn, scorer in (("PyTorch fp32", torch_features("fp32"), fp32_model),
                                     (f"PyTorch {auto} (auto)", torch_features(auto), auto_model),
                                     ("ONNX Runtime fp32", onnx_features, onnx_model)):
        fs, f = timed(feature_fn, args.repeats)
        ss, logits = timed(lambda m=scorer: m.face_logits(crops, batch_size=b), args.repeats)
        feats[name] = np.asarray(f, dtype=np.float32)
        table.append((name, len(crops) / fs, feats[name], len(crops) / ss, logits))

    int8_model = None
    if args.int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(detector_graph(model), str(src))
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
            int8_model = OnnxModel(onnx.load(str(dst)), model.card, compute="int8")
        ss, logits = timed(lambda: int8_model.face_logits(crops, batch_size=b), args.repeats)
        table.append(("ONNX Runtime int8 dynamic, per channel (whole detector)", float("nan"), None,
                      len(crops) / ss, logits))

    ref_f, ref_p = table[0][2], sigmoid(table[0][4])
    base_f, base_s = table[0][1], table[0][3]
    print(f"{len(crops)} crops of {args.data.name}, {model.card.base.backbone} at {model.card.base.input_size} px, "
          f"batch {b}, {torch.get_num_threads()} threads; base export + session {export_s:.1f} s\n")
    print("| runtime | features crops/s | ratio | max rel. Δfeature | scores crops/s | ratio | max |ΔP(fake)| "
          "| mean |ΔP(fake)| |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, f_rate, f, s_rate, logits in table:
        rel = "-" if f is None else f"{np.abs(f - ref_f).max() / np.abs(ref_f).max():.1e}"
        dp = np.abs(sigmoid(logits) - ref_p)
        fr = "- | -" if f is None else f"{f_rate:.1f} | {f_rate / base_f:.2f}x"
        print(f"| {name} | {fr} | {rel} | {s_rate:.1f} | {s_rate / base_s:.2f}x | {dp.max():.1e} | {dp.mean():.1e} |")

    if args.auc and int8_model is not None:
        from sklearn.metrics import roc_auc_score

        picked = rows[:args.auc]
        labels = np.array([1 if r["label"].upper() == "FAKE" else 0 for r in picked])
        paths = [args.data / r["filename"] for r in picked]
        auc = {name: roc_auc_score(labels, m.file_logits(paths)) for name, m in
               (("fp32", onnx_model), ("int8", int8_model))}
        print(f"\nframe AUC on {len(picked)} crops: ONNX fp32 {auc['fp32']:.4f}, int8 {auc['int8']:.4f} "
              f"(difference {auc['int8'] - auc['fp32']:+.4f})")


if __name__ == "__main__":
    main()
