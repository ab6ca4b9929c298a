from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from fakefinder import TrainSettings, train
from fakefinder.tracking.report import run_report, study_report
from fakefinder.tuning.search import tune

pytestmark = pytest.mark.slow  # reports of trained runs and of a tuned study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs Chromium: there, a missing one is a failure, not a reason to skip.
needs_chromium = pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                                    reason="Chromium is not installed (.ci/run installs Debian's chromium)")


def open_in_chromium(path, tmp_path) -> str:
    """The DOM after load, as headless Chromium sees it (no network, fresh profile)."""
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                           path.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    return proc.stdout


@pytest.fixture(scope="module")
def weak_run(learnable, tracking):
    """A barely trained model, so that the report has mistakes to show."""
    return train(learnable.out, TrainSettings(epochs=1, lr=1e-6, patience=0, calibration="none", threshold=0.5),
                 tracking=tracking)


def test_run_report_is_self_contained_with_curves_and_hardest_videos(weak_run, tracking, tmp_path):
    html = run_report(weak_run.run_id, tmp_path / "run.html", tracking_uri=tracking).read_text()
    for section in ("Learning curves", "ROC curves", "Confusion matrices", "Hardest videos", "Model", "Metrics"):
        assert section in html
    images = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(images) >= 3 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "is FAKE, scored" in html or "is REAL, scored" in html  # at least one mistaken video with its faces
    assert "http://" not in html and "https://" not in html
    assert "LEAKY" not in html  # split by source


def test_run_report_of_a_frame_split_run_carries_the_leaky_banner(learnable, tracking, tmp_path):
    leaky = train(learnable.out, TrainSettings(epochs=1, split="frame"), tracking=tracking)
    html = run_report(leaky.run_id, tmp_path / "run.html", tracking_uri=tracking).read_text()
    assert "LEAKY frame-level split" in html


@pytest.mark.services
@needs_chromium
def test_study_report_opens_in_headless_chromium_with_every_plot(learnable, tracking, tmp_path):
    (tmp_path / "grid.yml").write_text("flags:\n  n_neurons: [16, 64]\n  lr: [1e-3, 1e-2]\nfixed:\n  epochs: 3\n")
    tune(learnable.out, tmp_path / "grid.yml", study="report", storage=f"sqlite:///{tmp_path / 'o.db'}",
         tracking=tracking)
    path = study_report("report", tmp_path / "study.html", tracking_uri=tracking)
    html = path.read_text()
    assert all(s in html for s in ("Parallel coordinates", "Selection metric against each flag", "Best configuration"))
    dom = open_in_chromium(path, tmp_path)
    status = re.search(r'data-images="([^"]+)"', dom)
    # Every image decoded: the four plots, and thumbnails of the hardest videos where the best model made mistakes
    # (none where it made none, which depends on the CPU's precision).
    images = html.count("<img")
    assert images >= 4 and "<p>No mistakes.</p>" in html or images >= 5
    assert status and status.group(1) == f"ok {images}", dom[-500:]
