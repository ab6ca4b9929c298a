"""`fakefinder report RUN | --study NAME`: one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    p.add_argument("run_id", nargs="?", metavar="RUN", help="run id (or a unique prefix)")
    p.add_argument("--study", help="report a tuning study instead of one run")
    from ..config import TuneSettings

    # --metric, as tune's
    _options.add_settings(p, TuneSettings, skip=("search", "trials", "concurrent_trials", "seed"))
    p.add_argument("--out", type=Path, default=Path("report.html"))
    _options.add_tracking(p)


def run(args) -> int:
    from ..config import TuneSettings
    from ..errors import UsageError
    from ..tracking.report import run_report, study_report

    if bool(args.run_id) == bool(args.study):
        raise UsageError("give either a RUN id or --study NAME")
    uri = _options.tracking_uri(args)
    if args.study:
        path = study_report(args.study, args.out, tracking_uri=uri, experiment=args.experiment,
                            metric=_options.settings_from(args, TuneSettings).metric)
    else:
        path = run_report(args.run_id, args.out, tracking_uri=uri)
    print(f"wrote {path}")
    return 0
