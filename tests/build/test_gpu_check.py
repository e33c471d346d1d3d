"""The GPU check's tiny mode: the same command on this CPU, without Jupyter, so it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import HIDE_MODULES

ROOT = Path(__file__).resolve().parents[2]
# What the GPU machine does not have: Jupyter and the book's build tools.
JUPYTER = {"IPython", "papermill", "nbformat", "myst_nb", "jupyter_client", "ipykernel"}


def test_the_tiny_check_runs_every_chapter_and_the_engine_without_jupyter(tmp_path, smoke_book):
    """It trains what the chapters' smoke runs train, so it shares their results store (``SmokeBook``)."""
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text(HIDE_MODULES.format(hidden=JUPYTER))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "hide"), os.environ.get("PYTHONPATH")])),
        "LHLIB_CACHE": str(smoke_book.store),
    }
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "run", "--tiny", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "tiny" and report["device"] == "cpu"
    assert len(report["engine"]) == 6 and all(row["cpu"]["seconds"] > 0 for row in report["engine"])
    assert [row["chapter"][:2] for row in report["chapters"]] == ["04", "07", "06", "03", "08"]
    assert all(row["status"] == "ok" for row in report["chapters"]), report["chapters"]
    assert (out / "04_direct_classification" / "summary.json").is_file()


def test_a_chapter_not_started_within_the_budget_is_reported_as_skipped(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    rows = gpu_check.chapters(True, tmp_path, budget=1.0, start=time.perf_counter() - 2.0)
    assert [row["status"] for row in rows] == ["skipped: over the budget"] * len(gpu_check.CHAPTERS)


def test_a_bad_budget_is_refused_in_one_line(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "run", "--budget", "-1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2 and "--budget must be a positive number of seconds" in completed.stderr
