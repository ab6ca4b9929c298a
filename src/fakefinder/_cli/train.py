"""`fakefinder train DATA`: a detector on a prepared dataset, recorded as one MLflow run."""

from __future__ import annotations

import sys
from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    from ..config import TrainConfig

    p.description = ("Transfer learning on an ImageNet base: with a frozen base its features are cached once and a "
                     "head trained on them; with --trainable-blocks the base is fine-tuned too. Splits by source "
                     "video, calibrated probabilities, metrics at frame and video level. Under `torchrun "
                     "--nproc-per-node N` fine-tuning runs on N processes (DistributedDataParallel).")
    p.add_argument("data", type=Path, help="a folder made by `fakefinder prepare`")
    _options.add_presets(p, TrainConfig, "reference: the study's VGG16 (150 px, 0-1 pixels, Flatten, Dense(256), "
                                         "RMSprop 2e-5, base trained, Keras augmentation); reference-tuned: 128 "
                                         "neurons, lr 1e-5, 100 epochs, patience 3")
    _options.add_settings(p, TrainConfig)
    g = p.add_argument_group("run")
    g.add_argument("--split-file", type=Path, help="a split.json saved by an earlier run")
    g.add_argument("--out", type=Path, help="folder for the model file (default DATA/models)")
    g.add_argument("--cache", type=Path, help="feature cache folder (default DATA/.fakefinder/features)")
    g.add_argument("--workers", type=int, help="input-pipeline processes when fine-tuning (default min(4, cores))")
    g.add_argument("--resume", action="store_true", help="continue a killed fine-tuning run from its last epoch")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="extract features on a Ray cluster (a local one, or ADDRESS or RAY_ADDRESS): a pool of "
                        "actors, one per GPU or per 4 CPUs, writing into the shared feature cache")
    g.add_argument("--run-name")
    g.add_argument("--json", help="write final metrics as JSON to FILE ('-' for stdout)")
    _options.add_device(g)
    _options.add_tracking(g)
    _options.add_quiet(g)


def run(args) -> int:
    from ..config import TrainConfig
    from ..experiment import train

    config = _options.settings_from(args, TrainConfig, args.preset)
    executor = None
    if args.ray:
        from ..ray_executor import RayExecutor

        executor = RayExecutor.for_extraction(None if args.ray == "local" else args.ray)
    with _options.renderer(args) as progress:
        try:
            result = train(args.data, config, tracking=_options.tracking_uri(args), experiment=args.experiment,
                           out=args.out, split_file=args.split_file, run_name=args.run_name, device=args.device,
                           cache_dir=args.cache, progress=progress, resume=args.resume, workers=args.workers,
                           executor=executor)
        finally:
            if executor is not None:
                executor.close()
    if result.model_path is None:
        return 0  # another process of a distributed run: the first one reports
    _options.write_json(result.to_json(), args.json)
    print(result.summary(), file=sys.stderr if args.json == "-" else sys.stdout)
    return 0
