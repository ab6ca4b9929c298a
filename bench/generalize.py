"""Do detectors generalise to manipulations and collections they never saw? Trained on DFDC face crops, tested on
DFDC's own test part and on FaceForensics++ c23 (other sources, other methods), side by side on one split.

    python bench/generalize.py [--epochs 3] [--seeds 0,1]
        [--rows frozen,finetuned,finetuned-longer,finetuned-compressed,finetuned-pairs,finetuned-pairs-alike,
        self-blended,self-blended-hull,self-blended-hull-averaged,self-blended-swad,self-blended-sam,
        self-blended-sam-gentle,self-blended-map,self-blended-map-strong,self-blended-texture,self-blended-no-lower,
        self-blended-epochs12,self-blended-more-reals,self-blended-plain,self-blended-varied,self-blended-alike,
        self-blended-progressive,self-blended-quick,self-blended-longer,self-blended-lite1,self-blended-lite2,
        self-blended-upper,self-blended-reframe,self-blended-frozen,both,combined]

Rows (each is one `fakefinder train` command on ../shared/data/dfdc-faces-dev, prepared with --detector none): frozen
supervised (`train DATA`), fine-tuned supervised (`--trainable-blocks all`; `finetuned-longer`: twice the epochs;
`finetuned-compressed`: those with H.264 among the augmentations; `finetuned-pairs`: those with each fake batched
beside its original, `--pair-batches`, and `finetuned-pairs-alike` those augmented alike, `--pair-augment alike`),
self-blended (`--fakes self-blended`, the recipe: the dev set's reals only, each with a new pseudo-fake every epoch,
the base fine-tuned, H.264 among the augmentations, every mask shape and the lower face), the recipe with twice the
epochs (`--epochs 12`, `self-blended-epochs12`), the recipe without the lower face (`--blend-mask varied`,
`self-blended-no-lower`, the recipe on 2026-12-05 and 06) and, from that one, the weights averaged over the last half
of the steps at a constant learning rate as SWAD does (`self-blended-swad`), sharpness-aware steps (`--sam 0.05`,
`self-blended-sam`; `--sam 0.01`, `self-blended-sam-gentle`), the blend's mask learnt too (`--blend-map 1`,
`self-blended-map`; `--blend-map 10`, `self-blended-map-strong`) and a frequency change to every pasted face
(`--blend-frequency 1`, `self-blended-texture`); the mesh's hull alone (`self-blended-hull`, the recipe until
2026-12-05), that with the weights averaged over the last half of the steps (`self-blended-hull-averaged`), the
hull recipe on more reals (`--test 0`: every real but the validation part's, so xdev alone measures it), that with the
default augmentations (`self-blended-plain`, the recipe until 2026-12-04), and, each from that one, varied mask shapes
(`--blend-mask varied`), each real and its pseudo-fake augmented alike (`--pair-augment alike`), resized progressively
(`--progressive 160`: 160 px first, 224 px last), a shorter run (`--progressive 128 --epochs 4`), a longer one in
about the recipe's time (`--progressive 128 --epochs 10`), the larger EfficientNet-Lite1 and Lite2 at their own input
sizes (240 and 260 px), only the upper blocks trained (`--trainable-blocks 12`: the stem and the five blocks up to the
28 x 28 map frozen), each crop cut again tighter or wider (`--augment default,reframe`) and a frozen base; both
(`--both mixed`: the recipe on the real fakes and the pseudo-fakes as one class) and combined (`--fakes both`: a
self-blended and a supervised member, combined). All share the split of the first row run (by source: a fake stays
with its original); rows run in separate calls add to one results.json. Columns: in-domain test AUC on DFDC's real
fakes; on ../shared/data/xdev, video AUC, log loss and ECE on the 82 clips (prepared at 1 fps with BlazeFace, cut with
the margin that frames the faces as DFDC's crops are framed, and at the default margin 0.3), frame AUC on the 590 face
crops (and by method: NeuralTextures, which the clips lack, is printed), and each method's clip AUC; train wall time.
Each row trains once per seed (`--seed`: the split stays the first row's, the initialisation, the order and every
blend change) and its model is kept (`<row>-seed<k>.safetensors`): a rerun scores it again without training it again.
AUCs carry a bootstrap 95% interval over videos, and the last table gives each row's mean over its seeds: a change is
better only where its intervals say so, or where `bench/paired.py`'s paired interval of the difference to another row
does (both rows' models scoring the same videos). """

from __future__ import annotations

from fakefinder.hardware import passive_openmp

passive_openmp()  # before PyTorch loads, as the fakefinder command does: its train times are the command's

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from fakefinder import CollectionOptions, PrepareSettings, TrainSettings, fit_detector, load_detector, prepare, train
from fakefinder._files import write_text
from fakefinder._text import format_table, shown
from fakefinder.data.dataset import load_dataset
from fakefinder.data.landmarks import margin_for_fill
from fakefinder.data.splits import load_split
from fakefinder.inference.evaluation import dataset_logits, evaluate_collections
from fakefinder.metrics import evaluate_scores
from fakefinder.models.modelfile import save_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def rows_wanted(epochs: int) -> dict[str, tuple[str, TrainSettings]]:
    recipe = TrainSettings.preset(fakes="self-blended")  # what `train DATA --fakes self-blended` runs
    hull = recipe.replace(blend_mask="hull")  # the recipe until 2026-12-05 (row `self-blended` before that day)
    no_lower = recipe.replace(blend_mask="varied")  # the recipe 2026-12-05 and 06: what the variants then changed
    on_no_lower = "train DATA --fakes self-blended --blend-mask varied"
    plain = hull.replace(augment="default")  # the recipe before H.264 joined it: what the variants changed

    def from_plain(flags: str, augment: str = "default") -> str:
        return (f"train DATA --fakes self-blended --augment {augment} "
                + ("" if "--blend-mask" in flags else "--blend-mask hull ") + flags).strip()
    variants = {"frozen": ("--trainable-blocks 0", dict(trainable_blocks=0)),
                "upper": ("--trainable-blocks 12", dict(trainable_blocks=12)),
                "varied": ("--blend-mask varied", dict(blend_mask="varied")),
                "alike": ("--pair-augment alike", dict(pair_augment="alike")),
                "progressive": ("--progressive 160", dict(progressive=160)),
                "quick": ("--progressive 128 --epochs 4", dict(progressive=128, epochs=4)),
                "longer": ("--progressive 128 --epochs 10", dict(progressive=128, epochs=10)),
                "lite1": ("--backbone efficientnet_lite1", dict(backbone="efficientnet_lite1")),
                "lite2": ("--backbone efficientnet_lite2", dict(backbone="efficientnet_lite2"))}
    # every real but the validation part's (1,600 against 1,200): DFDC has no test part left, xdev alone measures it
    more_reals = ("train DATA --fakes self-blended --blend-mask hull --test 0", hull.replace(test=0.0))
    supervised = TrainSettings(trainable_blocks="all", epochs=epochs)  # `--fakes both`'s member is one of these
    supervised_variants = {"": (f"--epochs {epochs}", {}),
                           "-longer": (f"--epochs {2 * epochs}", dict(epochs=2 * epochs)),
                           "-compressed": (f"--epochs {2 * epochs} --augment compressed",
                                           dict(epochs=2 * epochs, augment="compressed")),
                           "-pairs": (f"--epochs {2 * epochs} --pair-batches",
                                      dict(epochs=2 * epochs, pair_batches=True)),
                           "-pairs-alike": (f"--epochs {2 * epochs} --pair-batches --pair-augment alike",
                                            dict(epochs=2 * epochs, pair_batches=True, pair_augment="alike"))}
    return {"frozen": ("train DATA", TrainSettings()),
            **{f"finetuned{name}": (f"train DATA --trainable-blocks all {flags}", supervised.replace(**changes))
               for name, (flags, changes) in supervised_variants.items()},
            "self-blended": ("train DATA --fakes self-blended", recipe),
            # the recipe trained again under its own name: a change to the code, not to the settings, paired against
            # the kept models of row `self-blended` (bench/paired.py --rows self-blended-again,self-blended)
            "self-blended-again": ("train DATA --fakes self-blended", recipe),
            "self-blended-hull": ("train DATA --fakes self-blended --blend-mask hull", hull),
            "self-blended-plain": (from_plain(""), plain),
            # each crop cut again, tighter or wider (as another detector or margin frames faces), from `plain` as
            # the other variants are
            "self-blended-reframe": (from_plain("", augment="default,reframe"),
                                     plain.replace(augment="default,reframe")),
            "self-blended-more-reals": more_reals,
            # the weights' mean over the last half of the steps (SWA, densely), under the cosine schedule
            "self-blended-hull-averaged": ("train DATA --fakes self-blended --blend-mask hull --average-weights 0.5",
                                           hull.replace(average_weights=0.5)),
            # SWAD's form: a constant learning rate, the weights averaged over the last half of the steps
            "self-blended-swad": (f"{on_no_lower} --schedule constant --average-weights 0.5",
                                  no_lower.replace(schedule="constant", average_weights=0.5)),
            # sharpness-aware steps, as the paper trains (SAM's own radius): two passes a step
            "self-blended-sam": (f"{on_no_lower} --sam 0.05", no_lower.replace(sam=0.05)),
            "self-blended-sam-gentle": (f"{on_no_lower} --sam 0.01", no_lower.replace(sam=0.01)),
            # the base's last map also asked where each pseudo-fake was blended (Face X-ray's supervision)
            "self-blended-map": (f"{on_no_lower} --blend-map 1", no_lower.replace(blend_map=1.0)),
            "self-blended-map-strong": (f"{on_no_lower} --blend-map 10", no_lower.replace(blend_map=10.0)),
            # twice the recipe's epochs (the cosine schedule stretched over them): more training, as the paper's
            "self-blended-epochs12": ("train DATA --fakes self-blended --epochs 12", recipe.replace(epochs=12)),
            # the recipe without the lower face (nose tip to chin) among the mask shapes (row `self-blended` on
            # 2026-12-05 and 06, when row `self-blended-lower` added it)
            "self-blended-no-lower": (on_no_lower, no_lower),
            # every pasted face blurred, sharpened or scaled down and up (half of them in the recipe): the texture
            # mismatch that reenactment (Face2Face, NeuralTextures) leaves rather than a colour one
            "self-blended-texture": (f"{on_no_lower} --blend-frequency 1", no_lower.replace(blend_frequency=1.0)),
            **{f"self-blended-{name}": (from_plain(flags), plain.replace(**changes))
               for name, (flags, changes) in variants.items()},
            "both": ("train DATA --fakes both --both mixed", TrainSettings.preset(fakes="both", both="mixed")),
            "combined": ("train DATA --fakes both", TrainSettings.preset(fakes="both"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="frozen,finetuned,self-blended,self-blended-frozen,both")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the fine-tuned row")
    ap.add_argument("--seeds", default="0,1", help="seeds each row trains with")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "generalize")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    crops = PrepareSettings(detector="none")
    dev = SHARED / "dfdc-faces-dev"
    dfdc = prepare(dev, args.out / "dfdc", settings=crops,
                   collection=CollectionOptions(labels=dev / "labels.csv", dataset="dfdc")).out
    clips_src, faces_src = SHARED / "xdev" / "ffpp_c23_videos", SHARED / "xdev" / "ffpp_faces299"
    clips = prepare(clips_src, args.out / "xdev-clips",
                    collection=CollectionOptions(labels=clips_src / "labels.csv", dataset="ffpp-clips")).out
    # DFDC's crops are tight: framed as they are (the face mesh fills as much of the crop), the clips are cut
    # again with the margin that `evaluate` names for them.
    trained_fill = load_dataset(dfdc).face_fill()
    default = PrepareSettings()
    margin = round(margin_for_fill(load_dataset(clips).face_fill(), default.margin, trained_fill), 2)
    framed = prepare(clips_src, args.out / f"xdev-clips-m{margin}", settings=default.replace(margin=margin),
                     collection=CollectionOptions(labels=clips_src / "labels.csv", dataset="ffpp-clips-framed")).out
    print(f"DFDC faces fill {trained_fill:.2f} of their crops: xdev clips cut again with margin {margin}",
          flush=True)
    faces = prepare(faces_src, args.out / "xdev-faces", settings=crops,
                    collection=CollectionOptions(labels=faces_src / "labels.csv", dataset="ffpp-faces")).out
    data = load_dataset(dfdc)
    split_file = args.out / "split.json"
    saved = args.out / "results.json"
    results = json.loads(saved.read_text()) if saved.is_file() else {}
    wanted = rows_wanted(args.epochs)
    framed_data = load_dataset(framed, need_both_classes=False)
    for name in args.rows.split(","):
        command, base_settings = wanted[name]
        for seed in map(int, args.seeds.split(",")):
            key, settings = f"{name}-seed{seed}", base_settings.replace(seed=seed)
            own = settings.test == 0  # its own split, with no test part: trained on DFDC's test reals too
            model = args.out / f"{key}.safetensors"
            phases: dict[str, float] = {}  # where one detector's training time went (TrainedDetector.phases)
            epochs: list[dict] = []  # its fine-tuning's history: each epoch's losses, val AUC and rates
            if model.is_file():  # trained before (its time unknown where a run stopped before scoring it)
                seconds = results.get(key, {}).get("train_s", float("nan"))
                phases = results.get(key, {}).get("train_phases", {})
                epochs = results.get(key, {}).get("train_epochs", [])
            else:
                t = time.perf_counter()
                shared = split_file if split_file.is_file() and not own else None
                first = not own and not split_file.is_file()  # its split becomes the one the rows share
                if settings.combined:  # two members and their combination, as `train` makes them
                    made = train(dfdc, settings, out=args.out / f"{key}-members", split_file=shared)
                    seconds = time.perf_counter() - t
                    if first:
                        shutil.copy(made.split_path, split_file)
                    shutil.copy(made.model_path, model)
                else:
                    trained = fit_detector(dfdc, settings, split_file=shared)
                    seconds, phases, epochs = time.perf_counter() - t, trained.phases, trained.history.epochs
                    if first:
                        trained.split.save(split_file)
                    save_model(model, trained.model)
            detector = load_detector(model, device="cpu")
            dfdc_auc, dfdc_ci = float("nan"), None  # unmeasured where it trained on DFDC's test part's reals
            if not own:
                test = load_split(split_file, data).parts[:len(data)] == "test"  # DFDC's real fakes, whatever it saw
                p = detector.card.calibration.apply(dataset_logits(detector, data))
                dfdc_auc = evaluate_scores(data.video_ids[test], data.labels[test], p[test],
                                           threshold=detector.threshold).video.auc
                dfdc_ci = interval(detector, data, test, seed, p)
            cross = evaluate_collections(detector, [framed, clips, faces], by="method")
            blocks: list[dict] = []  # per collection, in the order given: method ("" for all) -> evaluation
            for r in cross.rows:
                blocks += [{}] if not r.group else []
                blocks[-1][r.group] = r.figures.evaluation
            framed_by, loose_by, faces_by = blocks
            clip_all, loose, face_all = framed_by[""].video, loose_by[""].video, faces_by[""].frame
            methods = {g: ev.video.auc for g, ev in framed_by.items() if g}
            results[key] = {"row": name, "seed": seed, "command": command, "dfdc_test_auc": dfdc_auc,
                            "dfdc_test_ci": dfdc_ci, "clips_auc": clip_all.auc,
                            "clips_ci": interval(detector, framed_data, np.ones(len(framed_data), bool), seed),
                            "clips_log_loss": clip_all.log_loss, "clips_ece": clip_all.ece,
                            "faces_auc": face_all.auc,
                            # the crops hold NeuralTextures too, a method the clips lack (SBI's weakest on FF++)
                            "faces_methods": {g: ev.frame.auc for g, ev in faces_by.items() if g},
                            "clips_margin_0.3_auc": loose.auc, "methods": methods,
                            "train_s": seconds, "train_phases": phases, "train_epochs": epochs,
                            "framing": {r.collection: r.framing for r in cross.rows}}
            write_text(saved, json.dumps(results, indent=1, default=float))  # every row so far: never half-written
            print(format_table(HEAD, [cells(k, r) for k, r in results.items()]), flush=True)
    rows: dict[str, list[dict]] = {}
    for r in results.values():
        rows.setdefault(r.get("row", "?"), []).append(r)
    print("\nmean over seeds (range):")
    print(format_table(["row", "seeds", "DFDC test AUC", "xdev clips AUC", "log loss", "train s"],
                       [[name, str(len(rs)), spread(rs, "dfdc_test_auc"), spread(rs, "clips_auc"),
                         spread(rs, "clips_log_loss"), f"{np.mean([r['train_s'] for r in rs]):.0f}"]
                        for name, rs in rows.items()]), flush=True)


HEAD = ["row", "command", "DFDC test AUC [95%]", "xdev clips AUC [95%]", "log loss", "ECE", "clips at margin 0.3 AUC",
        "xdev faces AUC (NeuralTextures)", "clips AUC by method", "train s"]


def cells(key: str, r: dict) -> list[str]:
    def ci(name: str) -> str:
        low, high = r.get(name) or (float("nan"), float("nan"))
        return f"[{shown(low, 2)}, {shown(high, 2)}]"

    return [key, r["command"], f"{shown(r['dfdc_test_auc'], 3)} {ci('dfdc_test_ci')}",
            f"{shown(r['clips_auc'], 3)} {ci('clips_ci')}", shown(r["clips_log_loss"], 3), shown(r["clips_ece"], 3),
            shown(r["clips_margin_0.3_auc"], 3),
            f"{shown(r['faces_auc'], 3)} ({shown(r.get('faces_methods', {}).get('NeuralTextures', float('nan')), 2)})",
            " ".join(f"{g} {shown(a, 2)}" for g, a in sorted(r["methods"].items())), f"{r['train_s']:.0f}"]


def spread(rs: list[dict], name: str) -> str:
    values = [r[name] for r in rs]
    return f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def interval(detector, data, rows: np.ndarray, seed: int, p: np.ndarray | None = None) -> tuple[float, float]:
    """The bootstrap 95% interval of the video AUC over `rows`' videos, scored as `evaluate` scores them, resampling
    the collection's independent units (bench/sources.py)."""
    from sources import scored

    p = detector.card.calibration.apply(dataset_logits(detector, data)) if p is None else p
    return scored(data, rows, p, detector.video_rule, seed)[1]


if __name__ == "__main__":
    main()
