"""The benchmark script runs and its methods agree (no timing is asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_runs_and_every_method_gives_the_same_figures():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_analysis.py"), "--rounds", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # the script asserts that ours and Caffe's ways agree; these are ResNet-50's figures
    assert "params 25,556,032 flops 3,858,026,368" in done.stdout
    for row in ("original: get_complexity", "caffe.Net(deploy.prototxt) + sum, alone",
                "ResNet-1001"):
        assert row in done.stdout


def test_benchmark_refuses_zero_rounds():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_analysis.py"), "--rounds", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "--rounds must be at least 1" in done.stderr
