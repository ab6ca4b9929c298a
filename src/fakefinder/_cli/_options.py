"""CLI flags derived from the settings' declarations (`fakefinder.options`), and the options several commands
share (tracking, device, quiet, model loading), each defined here once."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import OptionError
from ..options import Declared, declared


class _Lazy:
    """Text computed when help is shown (a registry's names), so building the parser stays light."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def __str__(self) -> str:
        return ", ".join(self.fn())


def _parse(d: Declared):
    def parse(text: str):
        try:
            return d.coerce(text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(exc.problems[0][1]) from None
    parse.__name__ = d.kind.__name__ if d.kind else "choice"
    return parse


def typed(cls: type, name: str):
    """The argparse type of one declared setting, bounds checked, for a flag outside `cls`'s own commands."""
    d = declared(cls)[name]
    parse = _parse(d)

    def checked(text: str):
        value = parse(text)
        problem = d.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    checked.__name__ = parse.__name__
    return checked


def add_settings(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (),
                 preset: str = "default") -> None:
    """One flag per declared setting of `cls`, grouped as declared; absent unless given (`preset` fills the rest,
    and its values are the defaults the help shows)."""
    groups: dict[str, argparse._ActionsContainer] = {}
    for d in declared(cls).values():
        if d.name in skip:
            continue
        target = groups.get(d.option.group)
        if target is None:
            target = groups[d.option.group] = (parser.add_argument_group(d.option.group) if d.option.group
                                               else parser)
        text = d.help_text(cls.PRESETS[preset].get(d.name, d.default)).replace("%", "%%")
        if d.kind is bool and not d.literals:
            target.add_argument(d.flag, dest=d.name, default=argparse.SUPPRESS, help=text,
                                action=argparse.BooleanOptionalAction)
            continue
        if d.option.choices is not None:
            text += "; one of %(lazy_choices)s"
        metavar = d.option.metavar or (f"{{{','.join(d.literals)}}}" if d.kind is None
                                       else f"{d.name.upper()}|{'|'.join(d.literals)}" if d.literals
                                       else d.name.upper())
        action = target.add_argument(d.flag, dest=d.name, default=argparse.SUPPRESS, type=_parse(d),
                                     metavar=metavar, help=text)
        action.lazy_choices = _Lazy(d.choices)


def settings_from(args: argparse.Namespace, cls: type, preset: str = "default", under: dict | None = None):
    """The settings the command line asks for: a preset, then `under` (settings taken from elsewhere, a model's
    card), then the given flags over both."""
    given = {name: getattr(args, name) for name in declared(cls) if hasattr(args, name)}
    return cls.preset(preset, **{**(under or {}), **given})


def add_presets(parser: argparse.ArgumentParser, cls: type, help: str) -> None:
    parser.add_argument("--preset", choices=tuple(cls.PRESETS), default="default", help=help)


def add_ray(parser, what: str) -> None:
    """--ray [ADDRESS]: `what` runs on a Ray cluster; read it with `ray_address`."""
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help=f"{what} on a Ray cluster: a local one, or the cluster at ADDRESS (or RAY_ADDRESS)")


def ray_address(args: argparse.Namespace) -> str | None:
    """The cluster --ray names (None: RAY_ADDRESS, else a local one)."""
    return None if args.ray == "local" else args.ray


def add_cache(parser) -> None:
    parser.add_argument("--cache", type=Path, help="feature cache folder (default DATA/.fakefinder/features)")


def add_storage(parser, default: str) -> None:
    parser.add_argument("--storage", help=f"the tuning study's database: an SQLAlchemy URL (default {default}; "
                        "postgresql://user:password@host/db to share it between machines)")


def add_json(parser, what: str) -> None:
    """--json FILE, written by `write_json`."""
    parser.add_argument("--json", metavar="FILE", help=f"write {what} as JSON to FILE ('-' for stdout)")


def _add_tracking_uri(parser, help: str) -> None:
    parser.add_argument("--tracking-uri", help=help)


def add_tracking(parser: argparse.ArgumentParser) -> None:
    _add_tracking_uri(parser, "MLflow store or server (default MLFLOW_TRACKING_URI, else ./mlflow.db; 'none' "
                      "records nothing)")
    from ..tracking.trackers import DEFAULT_EXPERIMENT

    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (default %(default)s)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (the GPU if there is one), cpu, cuda, cuda:1, ...")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress (messages about failures still show)")


def add_runtime(parser, what: str) -> None:
    """--runtime, what runs the base (see `config.Runtime`)."""
    import typing

    from ..config import Runtime

    parser.add_argument("--runtime", choices=typing.get_args(Runtime), help=what)


def add_model_argument(parser: argparse.ArgumentParser, *, file: str = "a model file", several: bool = False) -> None:
    """MODEL, the model a command runs: `file` (what kind of model file it takes), or the run or the published
    checkpoint that gives one; with `several`, `--model [NAME=]MODEL` given once or more (`args.model`, a list)."""
    what = f"{file}, the MLflow run id that logged one, or a published checkpoint"
    if several:
        parser.add_argument("--model", action="append", required=True, metavar="[NAME=]MODEL",
                            help=f"{what} (repeat to offer several)")
    else:
        parser.add_argument("model", help=what)


def add_model(parser: argparse.ArgumentParser) -> None:
    """How `evaluate`, `predict` and `serve` find and run a model."""
    add_device(parser)
    add_runtime(parser, "onnx (ONNX Runtime on the CPU at fp32, a .safetensors model through an export cached by "
                "its digest) or torch (PyTorch: GPUs, a card's bf16); default: onnx where ONNX Runtime is installed, "
                "the device is the CPU and the card allows fp32, else torch (a .onnx file: always onnx). Grad-CAM "
                "heatmaps load the model on PyTorch after the verdict")
    add_model_file(parser)


def add_model_file(parser: argparse.ArgumentParser) -> None:
    """How a command finds a model file: a run's, and a frozen base's weights that moved."""
    _add_tracking_uri(parser, "MLflow store holding the run, when MODEL is a run id")
    parser.add_argument("--base-weights", type=Path,
                        help="where the frozen base's weights file is now, if it moved since training")


def tracking_uri(args: argparse.Namespace) -> str:
    from ..tracking.trackers import resolve_tracking_uri

    return resolve_tracking_uri(args.tracking_uri)


def load_options(args: argparse.Namespace, **more):
    """How the command's MODEL is loaded: its --device, --tracking-uri, --base-weights and --runtime."""
    from ..inference.detector import LoadOptions

    return LoadOptions(device=args.device, tracking_uri=tracking_uri(args), base_weights=args.base_weights,
                       runtime=args.runtime, **more)


def renderer(args: argparse.Namespace):
    from ._progress import Renderer

    return Renderer(quiet=getattr(args, "quiet", False))


def write_json(obj, target: str | None) -> None:
    import json
    import sys

    from .. import _files

    text = json.dumps(obj, indent=2)
    if target == "-":
        sys.stdout.write(text + "\n")
    elif target:
        _files.write_text(target, text + "\n")
