"""`fakefinder evaluate MODEL DATA...`: metrics of a model on any prepared dataset, before and after calibration;
on several, one table of collections and their manipulation methods."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import PARTS
from . import _options


def add_arguments(p) -> None:
    _options.add_model_argument(p)
    p.add_argument("data", type=Path, nargs="+", help="a folder made by `fakefinder prepare`; several give one "
                   "table: a row per collection and per manipulation method, with how each is framed")
    p.add_argument("--split", choices=PARTS, help="only this part of the model's run split (one DATA)")
    p.add_argument("--by", help="break results down by a manifest column (e.g. method; with several DATA, "
                   "default method)")
    _options.add_json(p, "the metrics")
    p.add_argument("--html", type=Path, metavar="FILE", help="with several DATA, also write the table as an HTML page")
    _options.add_model(p)
    _options.add_quiet(p)


def run(args) -> int:
    from .._text import printable
    from ..errors import UsageError
    from ..inference.evaluation import evaluate, evaluate_collections

    if len(args.data) > 1:
        if args.split:
            raise UsageError("--split takes one DATA: the part belongs to the model's own run")
        with _options.renderer(args) as progress:
            table = evaluate_collections(args.model, args.data, by=args.by or "method",
                                         load=_options.load_options(args), progress=progress)
        _options.write_json(table.to_dict(), args.json)
        if args.html:
            from .. import _files

            _files.write_text(args.html, table.html(str(args.model)))
        print(table.table(), file=sys.stderr if args.json == "-" else sys.stdout)
        return 0
    if args.html:
        raise UsageError("--html writes the table of several DATA")
    with _options.renderer(args) as progress:
        result = evaluate(args.model, args.data[0], split=args.split, by=args.by,
                          load=_options.load_options(args), progress=progress)
    _options.write_json(result.to_dict(), args.json)
    print(printable(result.summary()), file=sys.stderr if args.json == "-" else sys.stdout)
    return 0
