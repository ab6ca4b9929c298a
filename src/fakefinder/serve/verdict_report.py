"""One self-contained HTML file of a verdict (images embedded, nothing fetched): the strength of evidence in words
first, then the score and what it means, the timeline of P(fake), every sampled frame with its face boxes, the face
tracks and the Grad-CAM heatmaps."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .. import _files

COLOURS = ((229, 136, 30), (57, 57, 229), (71, 160, 67), (0, 140, 251), (170, 36, 142), (123, 137, 0))  # BGR


def _data_uri(data: bytes, kind: str) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def _timeline_svg(result: dict, width: int = 640, height: int = 180) -> str:
    frames = result["frames"]
    left, right, top, bottom = 36, 10, 10, 24
    tmax = max([f["t"] for f in frames] + [1e-6])
    x = lambda t: left + (t / tmax if len(frames) > 1 else 0.5) * (width - left - right)  # noqa: E731
    y = lambda p: top + (1 - p) * (height - top - bottom)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
             f'<rect width="{width}" height="{height}" fill="#fff" stroke="#ddd"/>']
    for p in (0, 0.5, 1):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(p):.1f}" y2="{y(p):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 5}" y="{y(p) + 4:.1f}" font-size="11" text-anchor="end" fill="#777">{p}</text>')
    t = result["threshold"]
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#c62828" '
                 f'stroke-dasharray="5 4"/><text x="{left + 4}" y="{y(t) - 4:.1f}" font-size="11" fill="#c62828">'
                 f'threshold {t:.2f}</text>')
    for s in (0, tmax / 2, tmax) if len(frames) > 1 else ():
        parts.append(f'<text x="{x(s):.1f}" y="{height - 4}" font-size="11" text-anchor="middle" fill="#777">'
                     f'{s:.0f} s</text>')
    for f in frames:  # one neutral colour: the verdict is the video's, not any frame's; faceless frames on the axis
        p = f["p_fake"]
        mark = (f'<circle cx="{x(f["t"]):.1f}" cy="{y(p):.1f}" r="5" fill="#546e7a">' if p is not None else
                f'<rect x="{x(f["t"]) - 2:.1f}" y="{height - bottom + 2}" width="4" height="8" fill="#bbb">')
        parts.append(f'{mark}<title>t={f["t"]:.1f} s, {"P(fake) " + f"{p:.3f}" if p is not None else "no face"}'
                     f'</title></{"circle" if p is not None else "rect"}>')
    parts.append("</svg>")
    return "".join(parts)


def _frame_with_boxes(path: Path, frame: dict, size: list[int] | None) -> str:
    import cv2

    image = _files.read_image(path)
    if image is None or size is None:
        return ""
    k = size[0] / size[2]
    for face in frame["faces"]:
        bx, by, bw, bh = (v * k for v in face["box"])
        c = COLOURS[face["track"] % len(COLOURS)]
        cv2.rectangle(image, (round(bx), round(by)), (round(bx + bw), round(by + bh)), c, 2)
        cv2.putText(image, f"#{face['track']} {face['p_fake']:.2f}", (round(bx), max(12, round(by) - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1, cv2.LINE_AA)
    ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return f'<img alt="frame {frame["index"]}" src="{_data_uri(jpg.tobytes(), "image/jpeg")}">' if ok else ""


def verdict_report(result: dict, view: dict, folder: str | Path) -> str:
    """The report of one verdict; `folder` holds the job's thumbnails and heatmaps."""
    folder = Path(folder)
    esc = html.escape
    p, verdict = result["p_fake"], result["verdict"] or "no face found"
    score = "-" if p is None else f"{p:.3f}"
    strength = result.get("strength")
    tone = strength["colour"] if strength else verdict
    lead = strength["sentence"] if strength else (result.get("strength_note") or "")
    decision = f" &nbsp; decision at the threshold: <b>{esc(result['decision'])}</b>" if result.get("decision") else ""
    tracks = "".join(f"<tr><td>#{t['track']}</td><td>{t['faces']}</td><td>{t['first_t']:.1f}-{t['last_t']:.1f} s</td>"
                     f"<td>{t['p_fake']:.3f}</td></tr>" for t in result["tracks"])
    thumbnails = view.get("thumbnails", {})
    frames = "".join(
        "<figure>" + _frame_with_boxes(folder / "frames" / "{}.jpg".format(f["index"]), f,
                                       thumbnails.get(str(f["index"])))
        + "<figcaption>{:.1f} s</figcaption></figure>".format(f["t"]) for f in result["frames"])
    heat = ""
    for h in view.get("heatmaps", []):
        png = folder / "heatmap-{}.png".format(h["rank"])
        if png.is_file():
            heat += ('<figure><img alt="heatmap" width="160" src="{}"><figcaption>track #{}, {:.1f} s, P(fake) {:.2f}'
                     "</figcaption></figure>").format(_data_uri(png.read_bytes(), "image/png"), h["track"], h["t"],
                                                      h["p_fake"])
    title = f"fakefinder verdict: {esc(result['input'])}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
.big{{font-size:2.4em;font-weight:bold}}.FAKE,.red{{color:#c62828}}.REAL,.green{{color:#2e7d32}}
.INCONCLUSIVE,.amber{{color:#b26a00}}.lead{{font-size:1.3em;font-weight:bold}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:3px 8px}}
figure{{display:inline-block;margin:4px;font-size:12px;color:#555}}figure img{{display:block;max-width:320px}}</style>
</head><body><h1>fakefinder verdict</h1><p>{esc(result['input'])}, model {esc(view.get('model', ''))}</p>
<p class="lead {esc(tone)}">{esc(lead)}</p>
<p><span class="big {esc(tone)}">{esc(verdict)}</span> &nbsp; P(fake) = <b>{score}</b>{decision}</p>
<p>{esc(view.get('meaning', ''))}; calibration: {esc(view.get('calibration', ''))}.</p>
<p>{esc(view.get('evidence', ''))}.</p><p>{esc(view.get('strength', ''))}</p><p>
{result['frames_sampled']} frames sampled, {result['faces']} faces.</p>
<h2>P(fake) over time</h2>{_timeline_svg(result)}
<h2>Face tracks</h2><table><tr><th>track</th><th>faces</th><th>seen</th><th>P(fake)</th></tr>{tracks}</table>
<h2>Most suspicious faces (Grad-CAM)</h2>{heat or '<p>none</p>'}
<h2>Sampled frames</h2>{frames}
</body></html>"""
