"""`fakefinder runs`: list runs; `runs show RUN`; `runs compare A B`."""

from __future__ import annotations

from pathlib import Path

from . import _options


def add_arguments(p) -> None:
    p.description = ("fakefinder runs [options]  |  fakefinder runs show RUN  |  "
                     "fakefinder runs compare RUN_A RUN_B [--png FILE]")
    p.add_argument("action", nargs="*", metavar="show RUN | compare A B", help="omit to list runs")
    p.add_argument("--order", help="best first by this metric (e.g. val_auc, val_log_loss, val_video_ece)")
    p.add_argument("--where", help='filter, e.g. "val_auc > 0.9 and epochs_completed < 20"')
    p.add_argument("--latest", type=int, help="only the N newest (or best) runs")
    p.add_argument("--study", help="only the trials of this tuning study")
    p.add_argument("--csv", type=Path, help="also write every param and metric of the listed runs to a CSV")
    p.add_argument("--png", type=Path, help="compare: where to draw the overlaid learning curves")
    _options.add_tracking(p)


def run(args) -> int:
    from ..errors import UsageError
    from ..tracking import runs

    uri = _options.tracking_uri(args)
    action = args.action
    if not action:
        found = runs.list_runs(tracking_uri=uri, experiment=args.experiment, study=args.study, order=args.order,
                               where=args.where, latest=args.latest)
        print(runs.runs_table(found) if found else "no runs")
        if args.csv:
            print(f"wrote {runs.write_csv(found, args.csv)}")
    elif action[0] == "show" and len(action) == 2:
        print(runs.show_run(action[1], tracking_uri=uri))
    elif action[0] == "compare" and len(action) == 3:
        png = args.png or Path(f"compare-{action[1][:8]}-{action[2][:8]}.png")
        print(runs.compare_runs(action[1], action[2], tracking_uri=uri, png=png))
    else:
        raise UsageError("expected no action, `show RUN` or `compare RUN_A RUN_B`")
    return 0
