"""The public API: every exported name resolves, and importing the package (or its CLI) stays light."""

from __future__ import annotations

import subprocess
import sys

import fakefinder


def test_every_exported_name_resolves():
    for name in fakefinder.__all__:
        assert getattr(fakefinder, name) is not None, name


def test_import_and_help_do_not_load_heavy_libraries():
    code = ("import sys, fakefinder, fakefinder._cli as cli; "
            "heavy = [m for m in ('torch', 'mlflow', 'optuna', 'cv2', 'av') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    helped = subprocess.run([sys.executable, "-m", "fakefinder", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0
    for command in ("demo", "synth", "prepare", "train", "tune", "runs", "report"):
        assert command in helped.stdout
