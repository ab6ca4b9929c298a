"""The `fakefinder` command: one module per command, loaded only when it runs (as pip does). Commands parse
arguments, call the public API and print; no logic lives here."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from importlib import import_module

# name -> one-line help; the module `_cli.<name>` (dashes as underscores) adds the arguments and runs it.
COMMANDS = {
    "demo": "run the whole study on built-in synthetic data (offline, minutes)",
    "synth": "write a synthetic DFDC-style collection of real and fake videos",
    "prepare": "sample frames, detect and crop faces, write manifest.parquet",
    "train": "train a detector on a prepared dataset (tracked in MLflow)",
    "tune": "search training flags (a grid, like tfruns) at feature-cache speed",
    "runs": "list runs best-first or newest-first; `runs show RUN`; `runs compare A B`",
    "report": "a self-contained HTML report of a run or a tuning study",
    "evaluate": "metrics of a trained model on any prepared dataset (no retraining)",
    "blend": "what a detector trained on self-blended pseudo-fakes sees: real, mask and pseudo-fake per crop",
    "calibrate": "refit a model's threshold, calibration and strength of evidence on your own real fakes",
    "combine": "one model file of several detectors (self-blended and supervised, say), calibrated together",
    "export": "the whole detector as one ONNX file, for ONNX Runtime (no PyTorch needed to score)",
    "predict": "how likely each video or image is fake, frame by frame, face track by face track",
    "study": "the cross-dataset study: train on A, test on B, retrain and tune on B",
    "serve": "a local web app: a verdict with a timeline, face tracks and heatmaps, and a JSON API",
}


def _module(command: str):
    return import_module(f".{command.replace('-', '_')}", __name__)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command`, only that command's arguments are built (and its module imported)."""
    from .._version import __version__

    parser = argparse.ArgumentParser(prog="fakefinder", description="Tell real videos from deepfakes.")
    parser.add_argument("--version", action="version", version=f"fakefinder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == command:
            _module(name).add_arguments(p)
    return parser


def _flag_names(error, flags: set[str] | None = None) -> str:
    """An OptionError as the user typed it: flags, not setting names; a setting the command has no flag for (`flags`:
    those it has) keeps its name in words (a model's base weights, say, met by a command without --base-weights)."""
    def name(option: str) -> str:
        flag = "--" + option.replace("_", "-")
        return flag if flags is None or flag in flags else option.replace("_", " ")

    return error.render(name)


def _flags(parser: argparse.ArgumentParser, command: str) -> set[str]:
    """The option strings `command`'s parser knows."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {flag for action in sub._actions for flag in action.option_strings}


TUNING = {"tune", "study", "demo"}
RESUMABLE = {"prepare", "train", "tune", "study", "demo"}  # a rerun continues where they stopped


def _quiet_libraries(command: str) -> None:
    """The CLI owns this process: keep MLflow, Alembic and Optuna to warnings, OpenCV to errors (a damaged file is
    our one line, not also its decoder's), and no artifact progress bars. Environment variables reach workers too."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow sets its own level when it is imported
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # read when OpenCV first logs
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if command in TUNING:  # Optuna sets its own level when it is imported: import it now (these commands do)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sigterm(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends a command as Ctrl-C does: workers stopped, runs marked KILLED


def main(argv: list[str] | None = None) -> int:
    from .._text import printable
    from ..errors import OptionError, UsageError
    from ..hardware import passive_openmp

    passive_openmp()  # before any command loads PyTorch
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    _quiet_libraries(args.command)
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        code = _module(args.command).run(args)
        sys.stdout.flush()  # here, where a closed pipe is handled, not at exit
        return code
    except OptionError as exc:
        print(f"fakefinder {args.command}: error: {printable(_flag_names(exc, _flags(parser, args.command)))}",
              file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"fakefinder {args.command}: error: {printable(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted" + ("; rerun the same command to resume" if args.command in RESUMABLE else ""),
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`fakefinder runs | head`): stop quietly, as other Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
