"""`fakefinder prepare SRC OUT`: a labelled collection -> face crops, manifest.parquet and videos.parquet."""

from __future__ import annotations

from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    from ..config import InputLimits, PrepareSettings

    p.description = ("Turn a labelled video collection (DFDC metadata.json, a labels CSV, real/ and fake/ folders, "
                     "or FaceForensics++) into face crops with provenance. Reruns resume.")
    p.add_argument("src", type=Path, help="the collection's folder")
    p.add_argument("out", type=Path, help="output folder (faces/, manifest.parquet, videos.parquet)")
    p.add_argument("--labels", type=Path, help="CSV with columns filename,label[,original][,method]")
    from typing import get_args

    from ..config import CollectionLayout

    p.add_argument("--layout", choices=get_args(CollectionLayout), default="auto")
    p.add_argument("--dataset", help="name recorded on every row (default: SRC's folder name)")
    _options.add_presets(p, PrepareSettings, "reference: the study's preparation (1 fps, long side 1000, haar, "
                                              "margin 0, all faces); flags given with it override it")
    p.add_argument("--like", metavar="MODEL", help="prepare as a verdict of MODEL (a model file or the run that logged "
                   "one) reads a video: its frames, detector, size and alignment, the margin that makes faces fill "
                   "their crops as they filled its own, every face; flags given with it override it")
    _options.add_settings(p, PrepareSettings)
    p.add_argument("--tracking-uri", help="MLflow store holding the run, when --like names a run id")
    _options.add_settings(p, InputLimits)
    p.add_argument("--processes", type=int, help="local processes preparing videos (default: all cores)")
    _options.add_ray(p, "prepare the videos as Ray tasks (every node must see SRC and OUT at the same paths)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any input failed")
    _options.add_quiet(p)


def run(args) -> int:
    from ..config import InputLimits, PrepareSettings
    from ..data.collection import CollectionOptions
    from ..data.preparation import prepare
    from ..hardware import Compute
    from ..inference.framing import settings_like

    like = settings_like(args.like, tracking_uri=_options.tracking_uri(args)) if args.like else None
    settings = _options.settings_from(args, PrepareSettings, args.preset, like)
    executor = None
    if args.ray:
        from ..scale.ray_executor import RayExecutor

        executor = RayExecutor(_options.ray_address(args))
    with _options.renderer(args) as progress:
        try:
            result = prepare(args.src, args.out, settings=settings,
                             collection=CollectionOptions(args.layout, args.labels, args.dataset),
                             compute=Compute(processes=args.processes, executor=executor),
                             limits=_options.settings_from(args, InputLimits), progress=progress)
        finally:
            if executor is not None:
                executor.close()
    print(result.summary())
    return 1 if args.strict and result.errors else 0
