"""The README's Quickstart is the newcomer's first contact: its two commands must be the real ones."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_quickstart_is_two_commands_and_ci_runs_the_second():
    demo, test = quickstart_commands()
    assert demo == "python3 bootstrap.py demo"
    assert test == "python3 bootstrap.py test"
    assert test in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_first_command_runs_the_whole_demo_on_a_tiny_setting(tmp_path):
    """The demo end to end in a reduced mode: two collections, the study with tuning, predictions, a report."""
    cmd = quickstart_commands()[0].split()
    proc = subprocess.run([sys.executable, *cmd[1:], "--out", str(tmp_path), "--videos", "6", "--seconds", "1.5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for step in ("1 baseline", "1 cross-dataset", "2 retrained", "3 tuned", "4 retrained, back", "4 tuned, back",
                 "leak: frame split", "leak: source split"):
        assert f"| {step} |" in proc.stdout
    assert proc.stdout.count(".mp4  ") == 4  # four verdicts
    report = tmp_path / "study" / "report.html"
    assert report.is_file() and f"report: {report}" in proc.stdout


def test_the_fast_tier_is_one_command_that_leaves_out_slow_and_services_tests(monkeypatch):
    """`bootstrap.py test --fast` runs pytest on the tests marked neither `slow` nor `services` (both declared),
    passing the other arguments on; `test` alone runs the whole suite."""
    import importlib.util
    import tomllib

    spec = importlib.util.spec_from_file_location("bootstrap", ROOT / "bootstrap.py")
    bootstrap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bootstrap)
    ran = []
    monkeypatch.setattr(bootstrap, "ensure_venv", lambda: None)
    monkeypatch.setattr(bootstrap.subprocess, "run",
                        lambda args, cwd: ran.append(args[1:]) or subprocess.CompletedProcess(args, 0))
    assert bootstrap.main(["test", "--fast", "-x", "tests/test_metrics.py"]) == 0
    assert bootstrap.main(["test", "-q"]) == 0
    assert ran == [["-m", "pytest", "-m", "not slow and not services", "-x", "tests/test_metrics.py"],
                   ["-m", "pytest", "-q"]]
    pytest_options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    declared = {m.split(":")[0] for m in pytest_options["markers"]}
    assert {"slow", "services"} <= declared and "--strict-markers" in pytest_options["addopts"]
    quickstart = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert "`python3 bootstrap.py test --fast`" in quickstart
