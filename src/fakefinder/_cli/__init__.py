"""The `fakefinder` command: parses arguments, calls the public API, prints. No logic lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic DFDC-style collection of real and fake videos",
                       description="Real face photos moving over real backgrounds; fakes re-render the face "
                                   "or the mouth. Deterministic from --seed.")
    p.add_argument("out", type=Path, help="folder to write the videos and metadata.json into")
    p.add_argument("--videos", type=_positive_int, default=10, help="how many videos (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=4.0, help="length of each video (default 4)")
    p.add_argument("--methods", default=None,
                   help="comma-separated manipulations to draw fakes from (default: all of "
                        "swap,resample,warp,colour,mouth)")
    p.set_defaults(run=_run_synth)


def _run_synth(args) -> int:
    from ..synthetic import METHODS, synth

    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else METHODS
    result = synth(args.out, videos=args.videos, seed=args.seed, seconds=args.seconds, methods=methods)
    fakes = sum(v.label == "FAKE" for v in result.videos)
    print(f"wrote {len(result.videos)} videos ({len(result.videos) - fakes} real, {fakes} fake) and "
          f"{result.metadata_path}")
    return 0


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="sample frames, detect and crop faces, write manifest.parquet",
                       description="Turn a labelled video collection (DFDC metadata.json, a labels CSV, or "
                                   "real/ and fake/ folders) into face crops with provenance. Reruns resume.")
    p.add_argument("src", type=Path, help="the collection's folder")
    p.add_argument("out", type=Path, help="output folder (faces/, manifest.parquet, videos.parquet)")
    p.add_argument("--labels", type=Path, help="CSV with columns filename,label[,original][,method]")
    p.add_argument("--layout", choices=("auto", "dfdc", "csv", "folders", "ffpp"), default="auto")
    p.add_argument("--dataset", help="name recorded on every row (default: SRC's folder name)")
    p.add_argument("--preset", choices=("default", "reference"), default="default",
                   help="reference: the study's preparation (1 fps, long side 1000, haar, margin 0, all faces)")
    g = p.add_argument_group("frames")
    g.add_argument("--fps", type=float, help="frames sampled per second (default 1)")
    g.add_argument("--frames", type=_positive_int, help="instead of --fps: N evenly spaced frames per video")
    g.add_argument("--max-side", type=int, help="shrink frames to this long side (default 1000)")
    g = p.add_argument_group("faces")
    g.add_argument("--detector", choices=("blazeface", "haar", "none"), help="default blazeface")
    g.add_argument("--margin", type=float, help="added around the box, as a fraction of its side (default 0.3)")
    g.add_argument("--faces", choices=("largest", "all"), help="default largest")
    g.add_argument("--min-face", type=int, help="smallest face side kept, in video pixels (default 0)")
    g.add_argument("--size", type=int, help="side of the saved square crops (default 224)")
    p.add_argument("--workers", type=_positive_int, help="processes (default: all cores)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any input failed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_prepare)


def _run_prepare(args) -> int:
    import dataclasses

    from ..preparation import PrepareSettings, prepare

    base = PrepareSettings.reference() if args.preset == "reference" else PrepareSettings()
    given = {name: getattr(args, name) for name in ("fps", "frames", "max_side", "detector", "margin", "faces",
                                                    "min_face", "size") if getattr(args, name) is not None}
    settings = dataclasses.replace(base, **given)
    result = prepare(args.src, args.out, settings=settings, layout=args.layout, labels=args.labels,
                     dataset=args.dataset, workers=args.workers, progress=not args.quiet)
    print(result.summary())
    return 1 if args.strict and result.errors else 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a detector on a prepared dataset (tracked in MLflow)",
                       description="Transfer learning on an ImageNet base: features cached once, a head trained on "
                                   "them, splits by source video, metrics at frame and video level.")
    p.add_argument("data", type=Path, help="a folder made by `fakefinder prepare`")
    p.add_argument("--preset", choices=("default", "reference", "reference-tuned"), default="default",
                   help="reference: VGG16 at 150 px on 0-1 pixels, Flatten, Dense(256), RMSprop 2e-5, 10 epochs, "
                        "batch 10; reference-tuned: 128 neurons, lr 1e-5, 100 epochs, patience 3")
    g = p.add_argument_group("base")
    g.add_argument("--backbone", choices=("efficientnet_lite0", "vgg16"))
    g.add_argument("--weights", help="imagenet (default), none (random init) or a .pth/.safetensors file "
                   "(or Keras' VGG16 .h5)")
    g.add_argument("--input-size", type=int)
    g.add_argument("--normalization", choices=("imagenet", "lite", "rescale"))
    g.add_argument("--trainable-blocks", type=int, help="fine-tune the last K blocks (with augmentation, no cache)")
    g = p.add_argument_group("head and training")
    g.add_argument("--pool", choices=("flatten", "avg"))
    g.add_argument("--n-layers", type=int)
    g.add_argument("--n-neurons", type=int)
    g.add_argument("--dropout", type=float)
    g.add_argument("--optimizer", choices=("rmsprop", "adam"))
    g.add_argument("--lr", type=float)
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--patience", type=int, help="early stopping on val loss; 0 turns it off")
    g.add_argument("--balance", choices=("undersample", "weight", "none"))
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    g.add_argument("--precision", choices=("fp32", "bf16"), help="bf16: autocast in the base (default fp32)")
    g = p.add_argument_group("split and metrics")
    g.add_argument("--split", choices=("source", "video", "frame"),
                   help="source (default): a fake stays with its original; frame: the reference's leaky split")
    g.add_argument("--val", type=float)
    g.add_argument("--test", type=float)
    g.add_argument("--split-file", type=Path, help="a split.json saved by an earlier run")
    g.add_argument("--video-rule", choices=("mean", "confident"))
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, help="folder for the model file (default DATA/models)")
    g.add_argument("--cache", type=Path, help="feature cache folder (default DATA/.fakefinder/features)")
    g.add_argument("--tracking-uri", help="MLflow tracking URI (default MLFLOW_TRACKING_URI or ./mlflow.db)")
    g.add_argument("--experiment", default="fakefinder")
    g.add_argument("--run-name")
    g.add_argument("--json", help="write final metrics as JSON to FILE ('-' for stdout)")
    g.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run_train)


TRAIN_OPTIONS = ("backbone", "weights", "input_size", "normalization", "trainable_blocks", "pool", "n_layers",
                 "n_neurons", "dropout", "optimizer", "lr", "epochs", "batch_size", "patience", "balance", "seed",
                 "device", "precision", "split", "val", "test", "video_rule")


def _run_train(args) -> int:
    import json

    from ..experiment import train
    from ..training import TrainConfig

    given = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None}
    if given.get("patience") == 0:
        given["patience"] = None
    preset = {"default": TrainConfig, "reference": TrainConfig.reference,
              "reference-tuned": TrainConfig.reference_tuned}[args.preset]
    config = preset(**given)
    result = train(args.data, config=config, out=args.out, split_file=args.split_file,
                   tracking_uri=args.tracking_uri, experiment=args.experiment, run_name=args.run_name,
                   cache_dir=args.cache, progress=not args.quiet)
    text = json.dumps(result.to_json(), indent=2)
    if args.json == "-":
        print(text)
    elif args.json:
        Path(args.json).write_text(text + "\n")
    print(result.summary(), file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="search training flags (a grid, like tfruns) at feature-cache speed",
                       description="Every trial is a tracked MLflow run nested under the study's run; selection "
                                   "uses validation data only; the best configuration is then evaluated once on "
                                   "the test part. Rerun the same command to resume.")
    p.add_argument("data", type=Path, help="a folder made by `fakefinder prepare`")
    p.add_argument("--grid", type=Path, required=True,
                   help="YAML: flags (option: [values]), optional fixed (option: value) and sample (fraction)")
    p.add_argument("--search", choices=("grid", "random", "tpe"), default="grid")
    p.add_argument("--trials", type=_positive_int, help="number of trials for random and tpe searches")
    p.add_argument("--study", help="study name (default: DATA's folder name and the grid file's name)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///./optuna.db; PostgreSQL etc. to share)")
    p.add_argument("--workers", type=_positive_int, default=1, help="local worker processes")
    p.add_argument("--metric", default="video_log_loss", help="validation metric to select on (default "
                   "video_log_loss; also video_auc, frame_log_loss, frame_auc, video_accuracy, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, help="feature cache folder (default DATA/.fakefinder/features)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--experiment", default="fakefinder")
    p.set_defaults(run=_run_tune)


def _run_tune(args) -> int:
    from ..tuning import tune

    result = tune(args.data, args.grid, search=args.search, trials=args.trials, study=args.study,
                  storage=args.storage, workers=args.workers, metric=args.metric, tracking_uri=args.tracking_uri,
                  experiment=args.experiment, seed=args.seed, cache_dir=args.cache)
    print(f"\ntop {min(10, len(result.rows))} of {len(result.rows)} completed trials, best first "
          f"(study {result.study}):")
    print(result.table())
    print("\n" + result.test_line())
    return 0


def _add_runs(sub) -> None:
    p = sub.add_parser("runs", help="list runs best-first or newest-first; `runs show RUN`; `runs compare A B`",
                       description="fakefinder runs [options]  |  fakefinder runs show RUN  |  "
                                   "fakefinder runs compare RUN_A RUN_B [--png FILE]")
    p.add_argument("action", nargs="*", metavar="show RUN | compare A B", help="omit to list runs")
    p.add_argument("--order", help="best first by this metric (e.g. val_auc, val_log_loss, val_video_auc)")
    p.add_argument("--where", help='filter, e.g. "val_auc > 0.9 and epochs_completed < 20"')
    p.add_argument("--latest", type=_positive_int, help="only the N newest (or best) runs")
    p.add_argument("--study", help="only the trials of this tuning study")
    p.add_argument("--csv", type=Path, help="also write every param and metric of the listed runs to a CSV")
    p.add_argument("--png", type=Path, help="compare: where to draw the overlaid learning curves")
    p.add_argument("--tracking-uri")
    p.add_argument("--experiment", default="fakefinder")
    p.set_defaults(run=_run_runs)


def _run_runs(args) -> int:
    from .. import runs
    from ..errors import UsageError

    action = args.action
    if not action:
        found = runs.list_runs(tracking_uri=args.tracking_uri, experiment=args.experiment, study=args.study,
                               order=args.order, where=args.where, latest=args.latest)
        print(runs.runs_table(found) if found else "no runs")
        if args.csv:
            print(f"wrote {runs.write_csv(found, args.csv)}")
    elif action[0] == "show" and len(action) == 2:
        print(runs.show_run(action[1], tracking_uri=args.tracking_uri))
    elif action[0] == "compare" and len(action) == 3:
        png = args.png or Path(f"compare-{action[1][:8]}-{action[2][:8]}.png")
        print(runs.compare_runs(action[1], action[2], tracking_uri=args.tracking_uri, png=png))
    else:
        raise UsageError("expected no action, `show RUN` or `compare RUN_A RUN_B`")
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="a self-contained HTML report of a run or a tuning study")
    p.add_argument("run_id", nargs="?", metavar="RUN", help="run id (or a unique prefix)")
    p.add_argument("--study", help="report a tuning study instead of one run")
    p.add_argument("--metric", default="video_log_loss", help="the study's selection metric")
    p.add_argument("--out", type=Path, default=Path("report.html"))
    p.add_argument("--tracking-uri")
    p.add_argument("--experiment", default="fakefinder")
    p.set_defaults(run=_run_report)


def _run_report(args) -> int:
    from ..errors import UsageError
    from ..report import run_report, study_report

    if bool(args.run_id) == bool(args.study):
        raise UsageError("give either a RUN id or --study NAME")
    if args.study:
        path = study_report(args.study, args.out, tracking_uri=args.tracking_uri, experiment=args.experiment,
                            metric=args.metric)
    else:
        path = run_report(args.run_id, args.out, tracking_uri=args.tracking_uri)
    print(f"wrote {path}")
    return 0


def _write_json(obj, target: str | None) -> None:
    import json

    text = json.dumps(obj, indent=2)
    if target == "-":
        print(text)
    elif target:
        Path(target).write_text(text + "\n")


def _add_model_options(p) -> None:
    """How `evaluate` and `predict` find and run a trained model."""
    p.add_argument("--device", default="cpu")
    p.add_argument("--tracking-uri")
    p.add_argument("--base-weights", type=Path,
                   help="where the frozen base's weights file is now, if it moved since training")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a trained model on any prepared dataset (no retraining)")
    p.add_argument("model", help="a model file or the MLflow run id that logged it")
    p.add_argument("data", type=Path, help="a folder made by `fakefinder prepare`")
    p.add_argument("--split", choices=("train", "val", "test"), help="only this part of the model's run split")
    p.add_argument("--by", help="break results down by a manifest column (e.g. method)")
    p.add_argument("--json", help="write the metrics as JSON to FILE ('-' for stdout)")
    _add_model_options(p)
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    from ..inference import evaluate

    result = evaluate(args.model, args.data, split=args.split, by=args.by, tracking_uri=args.tracking_uri,
                      device=args.device, base_weights=args.base_weights)
    _write_json(result.to_dict(), args.json)
    print(result.summary(), file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="how likely each video or image is fake, frame by frame and overall")
    p.add_argument("model", help="a model file or the MLflow run id that logged it")
    p.add_argument("inputs", nargs="+", help="video files, images, or folders of them")
    p.add_argument("--threshold", type=float, help="verdict FAKE at P(fake) >= T (default: the model's)")
    p.add_argument("--json", help="write one object per input to FILE ('-' for stdout)")
    p.add_argument("--csv", type=Path, help="write one row per input to FILE")
    _add_model_options(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run_predict)


def _run_predict(args) -> int:
    from ..inference import predict, predictions_table, write_predictions_csv

    results = predict(args.model, args.inputs, threshold=args.threshold, tracking_uri=args.tracking_uri,
                      device=args.device, progress=not args.quiet, base_weights=args.base_weights)
    _write_json([r.to_dict() for r in results], args.json)
    if args.csv:
        write_predictions_csv(results, args.csv)
    print(predictions_table(results), file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


def _add_study(sub) -> None:
    p = sub.add_parser("study", help="the cross-dataset study: train on A, test on B, retrain and tune on B")
    p.add_argument("--train", dest="train_data", type=Path, required=True, help="collection A (raw or prepared)")
    p.add_argument("--test", dest="test_data", type=Path, required=True, help="collection B (raw or prepared)")
    p.add_argument("--grid", type=Path, help="tuning grid for step 3 (omit to skip tuning)")
    p.add_argument("--preset", choices=("default", "reference"), default="default",
                   help="reference: the study's VGG16 model (needs its ImageNet weights)")
    p.add_argument("--out", type=Path, default=Path("study"), help="folder for prepared data and the report")
    p.add_argument("--tracking-uri")
    p.add_argument("--storage", help="Optuna storage for step 3 (default OUT/optuna.db)")
    p.set_defaults(run=_run_study)


def _run_study(args) -> int:
    from ..study import study
    from ..training import TrainConfig

    config = TrainConfig.reference() if args.preset == "reference" else TrainConfig()
    result = study(args.train_data, args.test_data, grid=args.grid, out=args.out, config=config,
                   tracking_uri=args.tracking_uri, storage=args.storage)
    print(result.markdown())
    print(f"\nreport: {result.report}")
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the whole study on built-in synthetic data (offline, minutes)")
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default ./demo)")
    p.add_argument("--videos", type=_positive_int, default=30, help="videos per collection (default 30)")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-tune", action="store_true", help="skip step 3 (tuning on B)")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from ..quickstart import DEMO_GRID, demo

    result = demo(args.out, videos=args.videos, seconds=args.seconds, seed=args.seed,
                  grid=None if args.no_tune else DEMO_GRID)
    print(result.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="fakefinder", description="Tell real videos from deepfakes.")
    parser.add_argument("--version", action="version", version=f"fakefinder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_synth, _add_prepare, _add_train, _add_tune, _add_runs, _add_report, _add_evaluate,
                _add_predict, _add_study):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import UsageError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"fakefinder {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
