"""Time from upload to verdict in `fakefinder serve`, where that time goes, and four uploads at once.

    python bench/serve.py                       # a 10 s 1080p clip (250-frame GOP, as DFDC's), a quick Lite0 model
    python bench/serve.py --model M.safetensors --clip clip.mp4

1. Upload to verdict through the HTTP API of a running server (model loaded once, warm): median of --runs.
   Baseline in the same run: decoding only the frames the verdict needs (PyAV, as fakefinder samples them).
2. Where the time goes, stage by stage, in this process: decode, detect, crop, base, head, tracks, heatmaps.
3. Four concurrent uploads: total time and p95 latency against the same four one at a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from services import free_port  # noqa: E402


def post(url: str, clip: Path) -> tuple[float, dict]:
    boundary = "----bench"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{clip.name}"\r\n\r\n'.encode()
            + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode())
    request = urllib.request.Request(f"{url}/api/predict?wait=300", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    t = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as r:
        answer = json.loads(r.read())
    return time.perf_counter() - t, answer


def stages(model: Path, clip: Path) -> dict[str, float]:
    """Seconds per stage for one verdict, the model loaded beforehand."""
    from fakefinder import load_detector
    from fakefinder.data.crops import square_crop
    from fakefinder.data.frames import sample_frames
    from fakefinder.data.preparation import _detector
    from fakefinder.inference.explain import gradcam
    from fakefinder.inference.tracks import link_tracks

    det = load_detector(model, device="cpu")
    s = det.settings
    face_detector = _detector(s.detector)
    out = dict.fromkeys(("decode", "detect", "crop", "base", "head", "tracks", "heatmaps"), 0.0)
    t = time.perf_counter()
    frames = list(sample_frames(clip, fps=s.fps, frames=s.frames, max_side=s.max_side))
    out["decode"] = time.perf_counter() - t
    crops, boxes = [], []
    for frame in frames:
        t = time.perf_counter()
        found = face_detector.detect(frame.image)
        out["detect"] += time.perf_counter() - t
        t = time.perf_counter()
        crops += [square_crop(frame.image, b, margin=s.margin, size=s.size) for b in found]
        boxes.append([(b.x, b.y, b.w, b.h) for b in found])
        out["crop"] += time.perf_counter() - t
    import torch

    from fakefinder.models.head import pooled

    model_ = det.model
    with torch.inference_mode():
        t = time.perf_counter()
        maps = model_.backbone.features(model_.backbone.preprocess(crops), precision=model_.card.precision)
        out["base"] = time.perf_counter() - t
        t = time.perf_counter()
        model_.head(pooled(maps, model_.card.head.pool))
        out["head"] = time.perf_counter() - t
    t = time.perf_counter()
    link_tracks(boxes)
    out["tracks"] = time.perf_counter() - t
    t = time.perf_counter()
    gradcam(model_, crops[:4])
    out["heatmaps"] = time.perf_counter() - t
    return out


def quick_model(work: Path) -> Path:
    from fakefinder import PrepareSettings, TrainSettings, prepare, synth, train

    made = synth(work / "train-clips", videos=12, seed=3, seconds=4, sizes=((640, 360),), methods=("swap",))
    data = prepare(made.out, work / "train-prepared", settings=PrepareSettings()).out  # 1 fps, as by default
    return train(data, TrainSettings(epochs=5), out=work / "model").model_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--clip", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "serve")
    args = ap.parse_args()
    from fakefinder import synth
    from fakefinder.data.frames import sample_frames

    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or quick_model(args.work)
    if args.clip:
        clip = args.clip
    else:  # synth alternates 1 s and 250-frame keyframe intervals: take a 250-frame one, as DFDC's are
        made = synth(args.work / "clip", videos=4, seed=2, seconds=10, sizes=((1920, 1080),), methods=("swap",))
        clip = next(made.out / f"{v.name}.mp4" for v in made.videos if v.keyint == 250)
    from fakefinder import load_detector

    settings = load_detector(model, device="cpu").settings
    decode = []
    for _ in range(args.runs):
        t = time.perf_counter()
        n = sum(1 for _ in sample_frames(clip, fps=settings.fps, frames=settings.frames, max_side=settings.max_side))
        decode.append(time.perf_counter() - t)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "fakefinder", "serve", "--model", str(model), "--port",
                               str(port), "--device", "cpu", "--concurrent-verdicts", "2"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/api/models", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        post(url, clip)  # warm-up: the first verdict pays one-time costs
        alone = [post(url, clip)[0] for _ in range(args.runs)]
        with ThreadPoolExecutor(4) as pool:
            t = time.perf_counter()
            together = list(pool.map(lambda _: post(url, clip)[0], range(4)))
            total_together = time.perf_counter() - t
    finally:
        server.terminate()
        server.wait()
    verdict, dec = statistics.median(alone), statistics.median(decode)
    print(f"clip {clip.name}: 10 s, 1920x1080, {n} frames sampled; model {model.name}")
    print(f"\nupload to verdict (HTTP, heatmaps included), median of {args.runs}: {verdict:.2f} s (goal < 1.5 s); "
          f"decoding only the needed frames: {dec:.2f} s -> {verdict / dec:.2f}x of decode (moonshot <= 1.2x)")
    parts = stages(model, clip)
    print("\n| stage | seconds |\n| --- | ---: |")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds:.3f} |")
    print(f"| total | {sum(parts.values()):.3f} |")
    sequential = sum(alone[:4]) if len(alone) >= 4 else verdict * 4
    p95 = sorted(together)[max(0, round(0.95 * len(together)) - 1)]
    print(f"\nfour uploads at once: all done in {total_together:.2f} s (one at a time: {sequential:.2f} s), "
          f"p95 latency {p95:.2f} s against {verdict:.2f} s alone")


if __name__ == "__main__":
    main()
