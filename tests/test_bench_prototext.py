"""The prototxt-reading benchmark runs and its ways agree (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_prototext.py"


def test_benchmark_runs_and_every_way_gives_the_same_answer():
    done = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # the script asserts that both parsers give the same message and that our analysis
    # and caffe.Net give the same counts; these are Caffe's legacy figures of each net
    assert "ResNet-50: 228 layers" in done.stdout
    assert "params 25,556,032 and flops 3,858,026,368" in done.stdout
    assert "ResNet-1001: 4,343 layers" in done.stdout
    for way in ("protobuf text_format.Parse", "pynetbuilder prototext.parse",
                "pynetbuilder analyse in-process", "caffe.Net(file, TEST)"):
        assert done.stdout.count(way) == 2


def test_benchmark_refuses_zero_rounds():
    done = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--rounds must be at least 1" in done.stderr
