"""`fakefinder train DATA`: a detector on a prepared dataset, recorded as one MLflow run."""

from __future__ import annotations

import sys
from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    from ..config import TrainSettings

    p.description = ("Transfer learning on an ImageNet base: with a frozen base its features are cached once and a "
                     "head trained on them; with --trainable-blocks the base is fine-tuned too. Splits by source "
                     "video, calibrated probabilities, metrics at frame and video level. Under `torchrun "
                     "--nproc-per-node N` fine-tuning runs on N processes (DistributedDataParallel).")
    p.add_argument("data", type=Path, help="a folder made by `fakefinder prepare`")
    _options.add_presets(p, TrainSettings, "reference: the study's VGG16 (150 px, 0-1 pixels, Flatten, Dense(256), "
                                         "RMSprop 2e-5, base trained, Keras augmentation); reference-tuned: 128 "
                                         "neurons, lr 1e-5, 100 epochs, patience 3; self-blended: what --fakes "
                                         "self-blended starts from (the recipe bench/generalize.py measured best); "
                                         "both: what --fakes both starts from (that recipe for the self-blended "
                                         "member, 3 epochs for the supervised one); self-blended-gpu: the paper's "
                                         "scale, for a GPU")
    _options.add_settings(p, TrainSettings)
    g = p.add_argument_group("run")
    g.add_argument("--split-file", type=Path, help="a split.json saved by an earlier run")
    g.add_argument("--out", type=Path, help="folder for the model file (default DATA/models)")
    _options.add_cache(g)
    g.add_argument("--loader-processes", type=int,
                   help="input-pipeline processes when fine-tuning (default min(4, cores))")
    g.add_argument("--resume", action="store_true", help="continue a killed fine-tuning run from its last epoch")
    _options.add_ray(g, "extract features with a pool of actors (one per GPU or per 4 CPUs, writing into the shared "
                        "feature cache)")
    g.add_argument("--name", help="the model's name, on its card, its verdicts and its run (default: the dataset's "
                   "name and the backbone's)")
    _options.add_json(g, "the final metrics")
    _options.add_device(g)
    _options.add_runtime(g, "what extracts a frozen base's features: torch (default), or onnx (ONNX Runtime at "
                            "fp32, several times faster on a CPU; the model's card then says fp32)")
    _options.add_tracking(g)
    _options.add_quiet(g)


def run(args) -> int:
    from ..config import TrainSettings
    from ..hardware import Compute
    from ..tracking.trackers import Recording
    from ..workflows.training import train

    config = _options.settings_from(args, TrainSettings, args.preset)
    executor = None
    if args.ray:
        from ..scale.ray_executor import RayExecutor

        executor = RayExecutor.for_extraction(_options.ray_address(args))
    with _options.renderer(args) as progress:
        try:
            result = train(args.data, config,
                           tracking=Recording(_options.tracking_uri(args), args.experiment, args.name),
                           compute=Compute(args.device, args.runtime or "torch", args.loader_processes, executor,
                                           cache_dir=args.cache),
                           out=args.out, split_file=args.split_file, resume=args.resume, progress=progress)
        finally:
            if executor is not None:
                executor.close()
    if result.model_path is None:
        return 0  # another process of a distributed run: the first one reports
    _options.write_json(result.to_json(), args.json)
    print(result.summary(), file=sys.stderr if args.json == "-" else sys.stdout)
    return 0
