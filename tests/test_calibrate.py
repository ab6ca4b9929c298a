"""`calibrate`: a trained model's calibration, threshold and strength of evidence refitted on a user's own
collection of real fakes, split by source, its test part kept apart."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fakefinder import load_dataset, load_detector
from fakefinder._cli import main
from fakefinder.data.splits import split_dataset
from fakefinder.inference.evaluation import dataset_logits
from fakefinder.inference.recalibration import TEST
from fakefinder.metrics import video_scores
from fakefinder.models.calibration import fit_calibration

pytestmark = pytest.mark.slow  # calibrates a trained model


def test_calibrate_refits_on_the_collection_and_names_it(baseline, prepared, tmp_path, capsys):
    """On `prepared` (real fakes, unseen in training): the new file loads, its card names the collection, its
    strength map was fitted on the fitting part's videos against real fakes, and its calibration is the one fitted
    on that part alone (the test part is not used)."""
    out = tmp_path / "calibrated.safetensors"
    code = main(["calibrate", str(baseline.model_path), str(prepared.out), str(out), "--json", "-", "--quiet",
                 "--device", "cpu"])
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    data = load_dataset(prepared.out)
    detector = load_detector(out, runtime="torch", device="cpu")
    card = detector.card
    assert card.calibrated_on.dataset == data.name and card.calibrated_on.data_digest == data.manifest_digest
    assert card.evidence.val_fakes == "real" and data.name in card.evidence.name
    old = load_detector(baseline.model_path, runtime="torch", device="cpu").card
    assert card.head == old.head and card.base == old.base and card.train == old.train

    split = split_dataset(data, by="source", val=0.0, test=TEST, seed=0)
    fit = split.parts[:len(data)] == "train"  # the part that fits (no training part here)
    test = split.parts[:len(data)] == "test"
    assert fit.any() and test.any()
    fit_videos, test_videos = set(data.video_ids[fit]), set(data.video_ids[test])
    strength = card.strength
    assert strength.map.fakes == "real"
    sources = set(zip(data.labels[fit], data.groups[fit]))  # by source: a source's several fakes count once
    assert (strength.map.n_real, strength.map.n_fake) == (sum(y == 0 for y, _ in sources),
                                                          sum(y == 1 for y, _ in sources))
    assert card.calibrated_on.val_videos == len(fit_videos) == card.verdict.real_videos + card.verdict.fake_videos
    assert strength.test_videos == len(test_videos) == shown["test_videos"]

    z = dataset_logits(detector, data)
    assert card.calibration == fit_calibration(z[fit], data.labels[fit], card.calibration.method)
    _, ty, tp = video_scores(data.video_ids[test], data.labels[test], card.calibration.apply(z[test]),
                             rule=card.verdict.video_rule)
    from sklearn.metrics import roc_auc_score

    assert shown["test_auc"] == pytest.approx(roc_auc_score(ty, tp)) == card.evidence.test_auc
    assert shown["test_cllr"] == pytest.approx(strength.test_cllr)



def test_calibrate_refuses_reals_only_and_bad_out_in_one_line(baseline, prepared, tmp_path, capsys):
    data = tmp_path / "reals"
    data.mkdir()
    table = pq.read_table(prepared.manifest_path)
    pq.write_table(table.filter(pa.compute.equal(table["label"], 0)), data / "manifest.parquet")
    (tmp_path / "dir.safetensors").mkdir()
    for target, out, why in [(data, tmp_path / "x.safetensors", "no fakes"),
                             (prepared.out, tmp_path / "dir.safetensors", "is a folder")]:
        assert main(["calibrate", str(baseline.model_path), str(target), str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
    assert not (tmp_path / "x.safetensors").exists()
