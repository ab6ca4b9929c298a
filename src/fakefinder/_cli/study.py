"""`fakefinder study --train A --test B`: the cross-dataset study in one command."""

from __future__ import annotations

from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    from ..config import TrainSettings

    p.add_argument("--train", dest="train_data", type=Path, required=True, help="collection A (raw or prepared)")
    p.add_argument("--test", dest="test_data", type=Path, required=True, help="collection B (raw or prepared)")
    p.add_argument("--grid", type=Path, help="tuning grid for step 3 (omit to skip tuning)")
    _options.add_presets(p, TrainSettings, "the training settings of every step (reference: the study's VGG16, "
                                         "which needs its ImageNet weights)")
    p.add_argument("--out", type=Path, default=Path("study"), help="folder for prepared data and the report")
    _options.add_storage(p, "OUT/optuna.db")
    _options.add_device(p)
    _options.add_tracking(p)
    _options.add_quiet(p)


def run(args) -> int:
    from ..config import TrainSettings
    from ..hardware import Compute
    from ..tracking.trackers import Recording
    from ..workflows.study import study

    with _options.renderer(args) as progress:
        result = study(args.train_data, args.test_data, grid=args.grid, out=args.out,
                       config=TrainSettings.preset(args.preset),
                       tracking=Recording(_options.tracking_uri(args), args.experiment), storage=args.storage,
                       compute=Compute(args.device), progress=progress)
    print(result.markdown())
    print(f"\nreport: {result.report}")
    return 0
