"""Run Caffe nets through RKNN-Toolkit2's converter and simulator (the judge of
``tests/test_targets_rknn.py``).  Runs in the judge environment ``.venv-rknn`` (see
tools/rknn_setup.py), never in the project's: it imports nothing from pynetbuilder.

    .venv-rknn/bin/python tests/rknn_driver.py JOBS.json RESULTS.json

JOBS.json is a list of jobs, each ``{"prototxt", "caffemodel", "inputs", "outputs",
"log"}`` (paths): ``inputs`` an .npz of the net's inputs in order (arr_0, arr_1, ...,
NCHW float32), ``outputs`` the .npz this writes (arr_0, ... in the order RKNN gives
them).  Each job: ``config(target_platform="rk3588")`` with mean 0 and std 1 for every
channel (no preprocessing), ``load_caffe``, ``build(do_quantization=False)`` (float16),
``init_runtime()`` without a target (the simulator), ``inference`` with NCHW inputs.
RESULTS.json gets per job: ``error`` (None, or the failing step and the toolkit's last
line), ``ops`` (type, target NPU/CPU, output shape of every operator in the compiled
model's layer table), ``compiler_errors`` (the lines the compiler logs as errors) and
``seconds``.  Everything the toolkit prints goes to the job's ``log``; run it in a
scratch folder: after a failed build the toolkit leaves ``check*.onnx`` files in the
current one.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import time

import numpy as np
from rknn.api import RKNN

_LIBC = ctypes.CDLL(None)
_HEADER = re.compile(r"\bID\s+OpType\s+DataType\s+Target\s+InputShape\s+OutputShape\b")
_ROW = re.compile(r"D RKNN: \[[^\]]*\]\s+(\d+)\s+(\w+)\s+\w+\s+(NPU|CPU|GPU)\s+\S+\s+(\S+)")


def layer_table(text: str) -> list[list[str]]:
    """(type, target, output shape) of each operator of the last layer table printed."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if _HEADER.search(line):
            rows = []
        elif (m := _ROW.search(line)) and m.group(2) not in ("InputOperator", "OutputOperator"):
            rows.append([m.group(2), m.group(3), m.group(4)])
    return rows


def run_job(job: dict) -> dict:
    inputs = np.load(job["inputs"])
    arrays = [inputs[f"arr_{i}"] for i in range(len(inputs.files))]
    rknn = RKNN(verbose=True)
    error = None
    start = time.monotonic()
    try:
        steps = [
            ("config", lambda: rknn.config(
                target_platform="rk3588", mean_values=[[0] * a.shape[1] for a in arrays],
                std_values=[[1] * a.shape[1] for a in arrays])),
            ("load_caffe", lambda: rknn.load_caffe(model=job["prototxt"],
                                                   blobs=job["caffemodel"])),
            ("build", lambda: rknn.build(do_quantization=False)),
            ("init_runtime", lambda: rknn.init_runtime()),
        ]
        for step, call in steps:
            try:
                status = call()
            except Exception as exc:  # the toolkit raises what its parts raise
                lines = str(exc).strip().splitlines() or [type(exc).__name__]
                error = f"{step}: {lines[-1]}"
                break
            if status != 0:
                error = f"{step}: returned {status}"
                break
        if error is None:
            outputs = rknn.inference(inputs=arrays, data_format=["nchw"] * len(arrays))
            if outputs is None:
                error = "inference: no outputs"
            else:
                np.savez(job["outputs"], *[np.asarray(o, np.float32) for o in outputs])
    finally:
        rknn.release()
    return {"error": error, "seconds": round(time.monotonic() - start, 3)}


def main(jobs_file: str, results_file: str) -> None:
    results = []
    for job in json.loads(open(jobs_file).read()):
        # the compiler writes its layer table to the process's stdout and its errors to
        # stderr: both into the job's log, read back below
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        try:
            result = run_job(job)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            _LIBC.fflush(None)  # the compiler's own buffered output, before fd 1 moves back
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (log, *saved):
                os.close(fd)
        text = open(job["log"], errors="replace").read()
        result["ops"] = layer_table(text)
        result["compiler_errors"] = [line.strip() for line in text.splitlines()
                                     if line.startswith("E RKNN:")]
        results.append(result)
    with open(results_file, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
