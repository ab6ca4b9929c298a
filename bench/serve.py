"""Time from upload to verdict in `fakefinder serve`, where that time goes, and four uploads at once.

    python bench/serve.py                       # a 10 s 1080p clip (x264 B-frames, 250-frame GOP), a quick Lite0 model
    python bench/serve.py --model M.safetensors --clip clip.mp4
    python bench/serve.py --model M.safetensors --runs 3 --verdicts CLIP...   # default path, torch, decode all

1. Decoding, side by side: every frame; each sample's exact frame (`--tolerance 0`, before this round); the
   nearest reference frame within the model's tolerance (B-frames skipped).
2. One verdict in this process, side by side: the stages one after the other with exact frames and heatmaps
   (before this round), and `Detector.predict_video` as serve runs it now (decoding in a thread, heatmaps after).
3. Upload to verdict through the HTTP API of a running server (model loaded once, warm): median of --runs.
4. Four concurrent uploads: total time and p95 latency against the same four one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from services import free_port  # noqa: E402


def _faces_timed(clip, s, tolerance: float, out: dict, stages: tuple[str, str, str]):
    """The clip's sampled frames, faces and crops as settings `s` make them, each stage's seconds added to `out`
    under the names `stages` gives (decoding, face detection, cropping)."""
    from fakefinder.data.crops import square_crop
    from fakefinder.data.faces import create_face_detector
    from fakefinder.data.frames import sample_frames

    decode, detect, crop = stages
    face_detector = create_face_detector(s.detector)
    t = time.perf_counter()
    frames = list(sample_frames(clip, fps=s.fps, frames=s.frames, max_side=s.max_side, tolerance=tolerance))
    out[decode] += time.perf_counter() - t
    crops, boxes = [], []
    for frame in frames:
        t = time.perf_counter()
        found = face_detector.detect(frame.image)
        out[detect] += time.perf_counter() - t
        t = time.perf_counter()
        crops += [square_crop(frame.image, b, margin=s.margin, size=s.size) for b in found]
        boxes.append([(b.x, b.y, b.w, b.h) for b in found])
        out[crop] += time.perf_counter() - t
    return crops, boxes

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


def stages(model: Path, clip: Path, tolerance: float) -> dict[str, float]:
    """Seconds per stage for one verdict run one stage after another, the model loaded beforehand."""
    from fakefinder import load_detector
    from fakefinder.data.tracks import link_tracks
    from fakefinder.inference.explain import gradcam

    det = load_detector(model, device="cpu", runtime="torch")  # its base and head timed apart, and Grad-CAM
    s = det.settings
    out = dict.fromkeys(("decode", "detect", "crop", "base", "head", "tracks", "heatmaps"), 0.0)
    crops, boxes = _faces_timed(clip, s, tolerance, out, ("decode", "detect", "crop"))
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


def default_stages(detector, clip: Path) -> dict[str, float]:
    """Seconds per stage of one verdict on the default path (the detector's own runtime), one stage after another:
    decoding and conversion (the sampled frames), face detection, crops, the network (preprocessing included),
    combining (calibration, tracks and the video rule)."""
    from fakefinder.data.tracks import link_tracks

    s = detector.settings
    out = dict.fromkeys(("decode+convert", "face detection", "crops", "network", "combining"), 0.0)
    crops, boxes = _faces_timed(clip, s, s.tolerance, out, ("decode+convert", "face detection", "crops"))
    t = time.perf_counter()
    logits = detector.model.face_logits(crops, batch_size=detector.batch_size)
    out["network"] = time.perf_counter() - t
    t = time.perf_counter()
    detector.card.calibration.apply(logits)
    link_tracks(boxes)
    out["combining"] = time.perf_counter() - t
    return out


def verdicts(model: Path, clips: list[Path], runs: int) -> None:
    """Per clip, in one run: decoding every frame, the verdict of the detector loaded with default settings
    (ONNX Runtime through the cached export), the same with --runtime torch, the default path's stages, and a
    cold `fakefinder predict` (the export cached) against decoding every frame."""
    from fakefinder import load_detector

    load_detector(model)  # the export cached before anything is timed
    default, torch_ = load_detector(model), load_detector(model, runtime="torch")
    print(f"model {model.name}; default runtime: {type(default.model).__name__}; {os.cpu_count()} cores; "
          f"medians of {runs}\n")
    print("| clip | frames | decode all s | default verdict s | ratio | torch verdict s | ratio | cold predict s "
          "| cold - decode all s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratios, profiles = [], []
    for clip in clips:
        times: dict[str, list[float]] = {"all": [], "default": [], "torch": [], "cold": []}
        for _ in range(runs):  # interleaved, so that a busy moment of the machine falls on all of them alike
            for name, fn in (("all", lambda c=clip: every_frame(c)),
                             ("default", lambda c=clip: default.predict_video(c)),
                             ("torch", lambda c=clip: torch_.predict_video(c)),
                             ("cold", lambda c=clip: subprocess.run([sys.executable, "-m", "fakefinder", "predict",
                                                                     str(model), str(c), "--quiet"], check=True,
                                                                    capture_output=True))):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        m = {k: statistics.median(v) for k, v in times.items()}
        ratios.append(m["default"] / m["all"])
        profiles.append(default_stages(default, clip))
        print(f"| {clip.name} | {every_frame(clip)} | {m['all']:.3f} | {m['default']:.3f} | "
              f"{m['default'] / m['all']:.2f}x | {m['torch']:.3f} | {m['torch'] / m['all']:.2f}x | {m['cold']:.3f} | "
              f"{m['cold'] - m['all']:+.3f} |")
    print(f"\nmedian of per-clip ratios, default verdict / decoding every frame: {statistics.median(ratios):.2f}x")
    blazeface_runtimes(default, clips, runs)
    print("\ndefault path, stages one after another (seconds):\n| stage | " + " | ".join(c.name for c in clips)
          + " |\n| --- |" + " ---: |" * len(clips))
    for stage in profiles[0]:
        print(f"| {stage} | " + " | ".join(f"{p[stage]:.3f}" for p in profiles) + " |")


def blazeface_runtimes(detector, clips: list[Path], runs: int) -> None:
    """BlazeFace on each runtime over the sampled frames of each clip (decoded once), interleaved: median ms a frame,
    and the largest distance between their boxes."""
    from fakefinder import create_face_detector
    from fakefinder.data.frames import sample_frames

    s = detector.settings
    nets = {r: create_face_detector("blazeface", runtime=r) for r in ("opencv", "onnx")}
    print("\nBlazeFace on the sampled frames, one thread each (median ms a frame):\n| clip | frames | OpenCV DNN | "
          "ONNX Runtime | OpenCV / ONNX Runtime | largest box difference px |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for clip in clips:
        frames = [f.image for f in sample_frames(clip, fps=s.fps, frames=s.frames, max_side=s.max_side,
                                                 tolerance=s.tolerance)]
        times = {r: [] for r in nets}
        for _ in range(runs):
            for r, net in nets.items():
                for image in frames:
                    t = time.perf_counter()
                    net.detect(image)
                    times[r].append(1000 * (time.perf_counter() - t))
        boxes = {r: [b for image in frames for b in net.detect(image)] for r, net in nets.items()}
        far = max((abs(a - b) for x, y in zip(*boxes.values())
                   for a, b in zip((x.x, x.y, x.w, x.h), (y.x, y.y, y.w, y.h))), default=0.0)
        m = {r: statistics.median(v) for r, v in times.items()}
        print(f"| {clip.name} | {len(frames)} | {m['opencv']:.2f} | {m['onnx']:.2f} | "
              f"{m['opencv'] / m['onnx']:.2f}x | {far:.4f} |")


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def every_frame(clip: Path) -> int:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def quick_model(work: Path) -> Path:
    from fakefinder import PrepareSettings, SynthSettings, TrainSettings, prepare, synth, train

    made = synth(work / "train-clips", SynthSettings(videos=12, seed=3, seconds=4, sizes=((640, 360),),
                                                     methods=("swap",)))
    data = prepare(made.out, work / "train-prepared", settings=PrepareSettings()).out  # 1 fps, as by default
    return train(data, TrainSettings(epochs=5), out=work / "model").model_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--clip", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "serve")
    ap.add_argument("--verdicts", type=Path, nargs="+", metavar="CLIP",
                    help="only this: per clip, the default verdict against --runtime torch and decoding every "
                         "frame, a cold predict, and the default path's stages")
    args = ap.parse_args()
    if args.verdicts:
        return verdicts(args.model or quick_model(args.work), args.verdicts, args.runs)
    from fakefinder import SynthSettings, synth
    from fakefinder.data.frames import sample_frames

    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or quick_model(args.work)
    if args.clip:
        clip = args.clip
    else:  # x264 with B-frames and a keyframe every 250 frames, as DFDC's clips and most uploads are encoded
        made = synth(args.work / "clip", SynthSettings(videos=2, seed=2, seconds=10, sizes=((1920, 1080),),
                                                       methods=("swap",), keyint=250))
        clip = made.out / f"{made.videos[-1].name}.mp4"
    from fakefinder import load_detector

    detector = load_detector(model, device="cpu")
    settings = detector.settings
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        size, count, kinds = (stream.width, stream.height), 0, set()
        for frame in container.decode(stream):
            count += 1
            kinds.add(av.video.frame.PictureType(frame.pict_type).name)
    decoding = {"every frame": lambda: every_frame(clip),
                "each sample's exact frame (--tolerance 0)": lambda: sum(1 for _ in sample_frames(
                    clip, fps=settings.fps, frames=settings.frames, max_side=settings.max_side)),
                f"nearest reference frame (--tolerance {settings.tolerance:g})": lambda: sum(1 for _ in sample_frames(
                    clip, fps=settings.fps, frames=settings.frames, max_side=settings.max_side,
                    tolerance=settings.tolerance))}
    decode = {name: median_time(fn, args.runs) for name, fn in decoding.items()}
    before = [sum(stages(model, clip, 0.0).values()) for _ in range(args.runs)]
    after = [median_time(lambda: detector.predict_video(clip, keep_faces=4), 1) for _ in range(args.runs)]
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
    verdict = statistics.median(alone)
    print(f"clip {clip.name}: {size[0]}x{size[1]}, {count} frames ({', '.join(sorted(kinds))}); model {model.name}, "
          f"sampling {settings.fps:g} fps; {os.cpu_count()} cores; medians of {args.runs}")
    exact = decode["each sample's exact frame (--tolerance 0)"]
    print("\n| decoding | seconds | vs exact |\n| --- | ---: | ---: |")
    for name, seconds in decode.items():
        print(f"| {name} | {seconds:.3f} | {exact / seconds:.2f}x |")
    old, new = statistics.median(before), statistics.median(after)
    print("\n| one verdict in-process | seconds | vs before |\n| --- | ---: | ---: |")
    print(f"| before: exact frames, stages one after another, heatmaps before the answer | {old:.3f} | 1.00x |")
    print(f"| now: nearest reference frames, decoding in a thread, heatmaps after | {new:.3f} | {old / new:.2f}x |")
    print(f"\nupload to verdict (HTTP, warm server), median of {args.runs}: {verdict:.2f} s (floor <= 1.0 s)")
    parts = stages(model, clip, settings.tolerance)
    print("\nstages one after another, with the model's tolerance:\n| stage | seconds |\n| --- | ---: |")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds:.3f} |")
    print(f"| total | {sum(parts.values()):.3f} |")
    sequential = sum(alone[:4]) if len(alone) >= 4 else verdict * 4
    p95 = sorted(together)[max(0, round(0.95 * len(together)) - 1)]
    print(f"\nfour uploads at once: all done in {total_together:.2f} s (one at a time: {sequential:.2f} s), "
          f"p95 latency {p95:.2f} s against {verdict:.2f} s alone")


if __name__ == "__main__":
    main()
