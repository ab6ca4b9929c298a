"""`report`: one self-contained HTML file (images embedded, nothing fetched) for a run or a tuning study."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from .. import _files
from .._text import shown
from ..errors import UsageError
from ..metrics import direction, selection_key, video_scores
from .trackers import DEFAULT_EXPERIMENT, Role, Tag

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;font-size:12px;overflow:auto}
.leak{color:#b00;font-weight:bold}.gallery img{margin:2px;border:1px solid #999}h2{border-bottom:1px solid #ddd}"""
# Marks the page once every image has decoded, so a headless browser (and a test) can check the plots show.
CHECK = """<script>window.addEventListener('load',()=>{const im=[...document.images];
const bad=im.filter(i=>!(i.complete&&i.naturalWidth>0)).length;
document.body.dataset.images=bad?('broken '+bad):('ok '+im.length);});</script>"""


def _img(png: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _plot(fn, *args, **kwargs) -> bytes:
    buf = io.BytesIO()
    fn(*args, buf, **kwargs)
    return buf.getvalue()


def _table(head: list[str], rows: list[list]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(shown(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}{CHECK}</body></html>")


def table_page(title: str, head: list[str], rows: list[list], note: str = "") -> str:
    """A self-contained HTML page of one table (and a note under it)."""
    return _page(title, _table(head, rows) + (f"<p>{html.escape(note)}</p>" if note else ""))


def _confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> str:
    pred = p >= threshold
    rows = [["true REAL", int(np.sum((y == 0) & ~pred)), int(np.sum((y == 0) & pred))],
            ["true FAKE", int(np.sum((y == 1) & ~pred)), int(np.sum((y == 1) & pred))]]
    return _table(["", "called REAL", "called FAKE"], rows)


def run_section(run_id: str, *, tracking_uri: str | None = None, hardest: int = 6) -> str:
    """A run's flags, summary, learning curves, ROC curves, confusion matrices and hardest videos, as HTML;
    videos are scored with the run's own video rule and judged at the run's own threshold throughout."""
    import cv2
    import pyarrow.parquet as pq

    from .plots import learning_curves, roc_curves
    from .runs import get_run, history, run_artifact

    run = get_run(run_id, tracking_uri=tracking_uri)
    rule = run.params.get("video_rule", "mean")
    threshold = float(run.metrics.get("threshold", 0.5))
    out = [f"<h2>Run {run.run_id} <small>({html.escape(run.name)})</small></h2>"]
    if run.tags.get(Tag.LEAKY_SPLIT) == "True":
        out.append("<p class='leak'>LEAKY frame-level split: faces of one video sit on both sides; numbers are "
                   "inflated.</p>")
    out.append(_table(["flag", "value"], sorted(run.params.items())))
    summary = run_artifact(run.run_id, "model_summary.txt", tracking_uri=tracking_uri)
    preds = run_artifact(run.run_id, "predictions.parquet", tracking_uri=tracking_uri)
    if summary:
        out.append(f"<h3>Model</h3><pre>{html.escape(summary.read_text())}</pre>")
    out.append("<h3>Learning curves</h3>" + _img(_plot(learning_curves, {run.run_id[:8]: history(
        run.run_id, tracking_uri=tracking_uri)}), "learning curves"))
    if preds is None:
        return "".join(out)
    table = pq.read_table(preds).to_pydict()
    part, vid = np.array(table["part"]), np.array(table["video_id"])
    y, p, crops = np.array(table["label"]), np.array(table["p_fake"]), np.array(table["crop_path"])
    tracks = np.array(table.get("track") or np.zeros(len(y), dtype=np.int64))  # older runs: one track a video
    curves, confusions, metric_rows = {}, [], []
    for name in ("val", "test"):
        m = part == name
        if not m.any():
            continue
        ids, vy, vp = video_scores(vid[m], y[m], p[m], rule=rule, tracks=tracks[m])
        curves[f"{name} frame"], curves[f"{name} video"] = (y[m], p[m]), (vy, vp)
        confusions.append(f"<h4>{name}: frames</h4>{_confusion(y[m], p[m], threshold)}"
                          f"<h4>{name}: videos</h4>{_confusion(vy, vp, threshold)}")
        for level in ("frame", "video"):
            metric_rows.append([name, level] + [run.metrics.get(f"{name}_{level}_{k}", float("nan"))
                                                for k in ("accuracy", "auc", "ap", "log_loss", "eer", "n")])
    out.append("<h3>Metrics</h3>" + _table(["part", "level", "accuracy", "auc", "ap", "log loss", "eer", "n"],
                                           metric_rows))
    out.append("<h3>ROC curves</h3>" + _img(_plot(roc_curves, curves), "ROC curves"))
    out.append(f"<h3>Confusion matrices (threshold {threshold:.3f}, video rule {html.escape(rule)})</h3>"
               + "".join(confusions))
    # Hardest videos: the most confident mistakes, with their faces.
    data = Path(run.tags.get(Tag.DATA, ""))
    worst = []
    for name in ("test", "val"):
        m = part == name
        if m.any():
            ids, vy, vp = video_scores(vid[m], y[m], p[m], rule=rule, tracks=tracks[m])
            worst += [(abs(s - t), name, i, t, s) for i, t, s in zip(ids, vy, vp) if (s >= threshold) != (t == 1)]
    worst.sort(reverse=True)
    gallery = []
    for _, name, video, label, score in worst[:hardest]:
        faces = [c for c, v in zip(crops, vid) if v == video][:4]
        thumbs = []
        for c in faces:
            image = _files.read_image(data / c)
            if image is not None:
                ok, png = cv2.imencode(".png", cv2.resize(image, (96, 96), interpolation=cv2.INTER_AREA))
                thumbs.append(_img(png.tobytes(), c, 96))
        gallery.append(f"<p>{name}: <b>{html.escape(video)}</b> is {'FAKE' if label else 'REAL'}, "
                       f"scored P(fake) = {score:.3f}</p><div class='gallery'>{''.join(thumbs)}</div>")
    out.append("<h3>Hardest videos (most confident mistakes)</h3>" + ("".join(gallery) or "<p>No mistakes.</p>"))
    return "".join(out)


def run_report(run_id: str, out: str | Path, *, tracking_uri: str | None = None) -> Path:
    """Write the report of one run. Raises UsageError for an unknown run."""
    _files.write_text(out, _page(f"fakefinder run {run_id}", run_section(run_id, tracking_uri=tracking_uri)))
    return Path(out)


def study_report(study: str, out: str | Path, *, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 metric: str | None = None, top: int = 10) -> Path:
    """Write a tuning study's report: top-N table, metric against each flag, parallel coordinates, best run;
    `metric` is the study's selection metric (tune's default when None)."""
    from ..config import TuneSettings
    from .plots import metric_by_flag, parallel_coordinates
    from .runs import list_runs

    metric = metric or TuneSettings().metric
    key = selection_key(metric)
    way = direction(key)
    runs = list_runs(tracking_uri=tracking_uri, experiment=experiment, study=study)
    trials = [r for r in runs if r.tags.get(Tag.ROLE) != Role.BEST_ON_TEST and key in r.metrics]
    if not trials:
        raise UsageError(f"study {study!r}: no finished trials in this tracking store")
    trials.sort(key=lambda r: r.metrics[key] * (1 if way == "minimize" else -1))
    flags = [k for k in sorted(trials[0].params) if len({r.params.get(k) for r in trials}) > 1
             and k not in ("data", "split_file")]
    rows = [{**{f: r.params.get(f) for f in flags}, key: r.metrics[key]} for r in trials]
    body = [f"<p>{len(trials)} trials, selected on validation {html.escape(metric)} "
            f"({'lower' if way == 'minimize' else 'higher'} is better).</p>",
            _table(["rank", "run", *flags, key, "val_video_auc", "epochs"],
                   [[i, r.run_id[:12], *(r.params.get(f) for f in flags), r.metrics[key],
                     r.metrics.get("val_video_auc", float("nan")), int(r.metrics.get("epochs_completed", 0))]
                    for i, r in enumerate(trials[:top], 1)])]
    if flags:
        body.append("<h2>Selection metric against each flag</h2>" + _img(_plot(metric_by_flag, rows, flags, key),
                                                                         "metric by flag"))
        body.append("<h2>Parallel coordinates</h2>" + _img(_plot(parallel_coordinates, rows, flags, key),
                                                           "parallel coordinates"))
    best_test = [r for r in runs if r.tags.get(Tag.ROLE) == Role.BEST_ON_TEST]
    best = best_test[0] if best_test else trials[0]
    body.append("<h2>Best configuration</h2>" + run_section(best.run_id, tracking_uri=tracking_uri))
    _files.write_text(out, _page(f"fakefinder study {study}", "".join(body)))
    return Path(out)
