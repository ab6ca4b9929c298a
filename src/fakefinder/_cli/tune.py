"""`fakefinder tune DATA --grid FILE`: a grid or a random/TPE search of training flags, shareable and resumable."""

from __future__ import annotations

from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    from ..config import TrainSettings, TuneSettings

    p.description = ("Every trial is a tracked MLflow run nested under the study's run; selection uses validation "
                     "data only; the best configuration is then evaluated once on the test part. Run the same "
                     "command again, or on other machines against the same --storage, to resume or to add workers.")
    p.add_argument("data", type=Path, help="a folder made by `fakefinder prepare`")
    p.add_argument("--grid", type=Path, required=True,
                   help="YAML: flags (option: [values]), optional fixed (option: value) and sample (fraction)")
    _options.add_settings(p, TuneSettings)
    _options.add_presets(p, TrainSettings, "the training settings that the grid's flags and fixed settings change "
                                           "(default: the defaults)")
    p.add_argument("--study", help="study name (default: DATA's folder name and the grid file's name)")
    _options.add_storage(p, "./optuna.db")
    _options.add_ray(p, "run the --concurrent-trials worker loops as Ray tasks")
    _options.add_cache(p)
    _options.add_device(p)
    _options.add_tracking(p)
    _options.add_quiet(p)


def run(args) -> int:
    from ..config import TrainSettings, TuneSettings
    from ..hardware import Compute
    from ..tracking.trackers import Recording
    from ..tuning.search import tune

    settings = _options.settings_from(args, TuneSettings)
    launcher = None
    if args.ray:
        from ..scale.ray_executor import ray_launcher

        launcher = ray_launcher(_options.ray_address(args))
    with _options.renderer(args) as progress:
        result = tune(args.data, args.grid, settings, base=TrainSettings.preset(args.preset), study=args.study,
                      storage=args.storage, tracking=Recording(_options.tracking_uri(args), args.experiment),
                      compute=Compute(args.device, launcher=launcher, cache_dir=args.cache), progress=progress)
    print(f"\ntop {min(10, len(result.rows))} of {len(result.rows)} completed trials, best first "
          f"(study {result.study}):")
    print(result.table())
    for flags, reason in result.failed:
        print(f"failed: {flags}: {reason}")
    print("\n" + result.test_line())
    return 0
