#!/usr/bin/env python3
"""Caffe on a GPU against Caffe on the CPU of the same machine, side by side in one run.

Two steps, because the GPU machine has no package registry and none of the project's
set-up (``.venv``, Debian's packages):

``bundle`` (here, after ``make caffe`` and ``make caffe-cuda``)
    Packs into one file (``out/gpu_bundle.tar.xz``, at most 60 MiB so that it can be
    carried): both builds' ``caffe`` tool and ``libcaffe``, the non-system runtime
    libraries they load (Debian's boost, glog, protobuf, HDF5, OpenBLAS ...; libpython
    for the Python-layer support), the nets (ResNet-50 deploy at batch 32 with
    ``force_backward``; a ResNet-8 for scikit-learn's digits with its solver) and the
    digits as LMDBs.  CUDA's own libraries are not packed: the run takes PyTorch's.

``run`` (on the GPU machine, the standard library only)
    Unpacks the bundle, finds the CUDA libraries of the PyTorch installation there
    (``torch/lib`` and ``nvidia/*/lib`` beside it), and runs, logging everything:

    1. ``caffe device_query`` (the CUDA build);
    2. ``caffe time`` of ResNet-50 at batch 32, forward + backward, on GPU 0 and on the
       CPU build (each three times; the medians of Caffe's per-iteration averages);
    3. training the digits net, with the same solver and seed, on the CPU build and
       on GPU 0: the GPU run must reach the CPU run's test accuracy (within 2 points);
    4. the same training with ``-gpu all`` on every GPU present.

    Writes ``results.json`` and ``results.md`` (a table for the README, with the date
    and the GPU) into ``--results`` (the device tool's ``$OUT``), and every log.

    python3 benchmarks/gpu_caffe.py bundle
    python3 benchmarks/gpu_caffe.py run --bundle out/gpu_bundle.tar.xz --results "$OUT"
    .venv/bin/python benchmarks/gpu_caffe.py run --cpu-only    (checks the bundle here)
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "out" / "gpu_bundle.tar.xz"
MAX_BUNDLE = 60 * 2**20
# Loaded from the machine itself (glibc), or from PyTorch's CUDA installation there.
SYSTEM_LIBS = ("linux-vdso", "libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so",
               "ld-linux", "libutil.so", "libresolv.so")
CUDA_LIBS = ("libcuda.so", "libcudart.so", "libcublas.so", "libcublasLt.so", "libcurand.so",
             "libcudnn")
DIGITS_EPOCHS = 20


# ---------------------------------------------------------------- bundle (here)


def _ldd(binary: Path, env: dict[str, str]) -> dict[str, Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env,
                         check=True).stdout
    found: dict[str, Path] = {}
    for name, path in re.findall(r"^\s*(\S+) => (\S+)", out, flags=re.M):
        if path == "not":
            raise SystemExit(f"gpu_caffe: {binary} needs {name}, which is not found here")
        found[name] = Path(path)
    return found


def _digits_run(folder: Path) -> None:
    """The digits as LMDBs and a ResNet-8's train/test/solver prototxt in ``folder``
    (data paths relative to it, where Caffe runs)."""
    sys.path.insert(0, str(ROOT))
    from pynetbuilder import dataio
    from pynetbuilder.commands import train as train_command

    images, labels = dataio.digits(16)
    xtr, ytr, xte, yte = dataio.split(images, labels, 0.2, seed=0)
    dataio.write_lmdb(folder / "train_lmdb", xtr, ytr)
    dataio.write_lmdb(folder / "test_lmdb", xte, yte)
    here = Path.cwd()
    os.chdir(folder)
    try:
        plan = train_command._model_plan("resnet", [
            "--depth", "8", "--initial_channels", "8", "--num_classes", "10",
            "--train_source", "train_lmdb", "--test_source", "test_lmdb", "--crop_size", "16",
            "--mean", f"{dataio.mean_values(xtr)[0]:.3f}", "--batch_size", "32",
            "--test_batch_size", str(len(yte)), "--epochs", str(DIGITS_EPOCHS),
            "--test_every", "5", "--seed", "1", "-o", "."])
    finally:
        os.chdir(here)
    for path, text in plan.files.items():
        text = text.replace(f'"{(folder / "train_lmdb").resolve()}"', '"train_lmdb"')
        text = text.replace(f'"{(folder / "test_lmdb").resolve()}"', '"test_lmdb"')
        (folder / path.name).write_text(text)


def _resnet50(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from pynetbuilder.commands import time as time_command
    from pynetbuilder.schema import to_text

    proto, phase, _ = time_command._model_net(
        "resnet_imagenet", ["--num_output_stage1", "256", "--batch_size", "32"])
    assert phase == "TEST"
    path.write_text(to_text(proto))


def bundle(out: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    import caffe_setup

    cpu = caffe_setup.cache_root() / caffe_setup.build_key(caffe_setup.python_abi())
    cudas = sorted(caffe_setup.cache_root().glob(f"caffe-{caffe_setup.CAFFE_VERSION}-cuda*"))
    cudas = [c for c in cudas if (c / "BUILD_OK").exists()]
    if not (cpu / "BUILD_OK").exists() or not cudas:
        raise SystemExit("gpu_caffe: needs both Caffe builds: run `make caffe` and "
                         "`make caffe-cuda CUDA_ARCHS=90` (or the GPU's architecture) first")
    cuda = max(cudas, key=lambda c: (c / "BUILD_OK").stat().st_mtime)
    wrapper = Path(sys.prefix) / "bin" / "caffe-cuda"
    m = re.search(r'LD_LIBRARY_PATH="([^$"]+)', wrapper.read_text()) if wrapper.is_file() \
        else None
    env = dict(os.environ, LD_LIBRARY_PATH=m[1] if m else "")
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-") as tmp:
        top = Path(tmp) / "gpu_bundle"
        libs: dict[str, Path] = {}
        for name, build in (("cpu", cpu), ("cuda", cuda)):
            b = build / caffe_setup.SOURCE_DIR_NAME / "build"
            (top / name / "bin").mkdir(parents=True)
            (top / name / "lib").mkdir()
            shutil.copy(b / "tools" / "caffe", top / name / "bin" / "caffe")
            shutil.copy(b / "lib" / "libcaffe.so.1.0.0-rc3", top / name / "lib")
            libs.update(_ldd(b / "tools" / "caffe", env))
        (top / "lib").mkdir()
        for name, path in sorted(libs.items()):
            if name.startswith(SYSTEM_LIBS + CUDA_LIBS) or name.startswith("libcaffe.so"):
                continue
            shutil.copy(path.resolve(), top / "lib" / name)
        (top / "nets").mkdir()
        _resnet50(top / "nets" / "resnet50_b32.prototxt")
        (top / "digits").mkdir()
        _digits_run(top / "digits")
        wanted = sorted({n for n in libs if n.startswith(CUDA_LIBS[1:])})
        manifest = {"cpu_build": cpu.name, "cuda_build": cuda.name,
                    "cuda_wrapper": wrapper.read_text().splitlines()[1:5]
                    if wrapper.is_file() else [],
                    "cuda_libraries_needed": wanted, "made": time.strftime("%Y-%m-%d %H:%M")}
        (top / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = out.with_name(out.name + ".tmp")
        with tarfile.open(staged, "w:xz") as tar:
            tar.add(top, arcname="gpu_bundle")
        size = staged.stat().st_size
        if size > MAX_BUNDLE:
            staged.unlink()
            raise SystemExit(f"gpu_caffe: the bundle is {size / 2**20:.0f} MiB, over "
                             f"{MAX_BUNDLE / 2**20:.0f}: build the CUDA variant for fewer "
                             "architectures (make caffe-cuda CUDA_ARCHS=90)")
        os.replace(staged, out)
    print(f"wrote {out} ({size / 2**20:.1f} MiB): CPU {cpu.name}, CUDA {cuda.name}; "
          f"needs from PyTorch there: {', '.join(wanted)}")


# ---------------------------------------------------------------- run (GPU machine)


def _torch_cuda_dirs(python: str) -> list[str]:
    """Folders holding the CUDA libraries of the PyTorch installation of ``python``."""
    code = ("import importlib.util, os; s = importlib.util.find_spec('torch'); "
            "print(os.path.dirname(s.origin) if s else '')")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    torch_dir = proc.stdout.strip()
    if not torch_dir:
        return []
    site = os.path.dirname(torch_dir)
    dirs = [os.path.join(torch_dir, "lib")]
    dirs += sorted(d for d in glob.glob(os.path.join(site, "nvidia", "**", "lib"),
                                        recursive=True) if os.path.isdir(d))
    return dirs


def _run(cmd: list[str], log: Path, env: dict[str, str], cwd: Path,
         timeout: float) -> tuple[int, str, float]:
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(cwd),
                              timeout=timeout)
        status, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        status = 124
        text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
            else (exc.stdout or "")
        text += f"\n(timed out after {timeout:.0f} s)"
    seconds = time.monotonic() - start
    log.write_text(f"$ {' '.join(cmd)}\n# exit {status}, {seconds:.1f} s\n{text}")
    return status, text, seconds


def _averages(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(
        r"Average (Forward pass|Backward pass|Forward-Backward): ([\d.]+) ms", text)}


def _last_accuracy(text: str) -> float | None:
    found = re.findall(r"Test net output #\d+: accuracy_top1 = ([\d.]+)", text)
    return float(found[-1]) if found else None


def run(bundle_file: Path, results: Path, python: str, cpu_only: bool = False) -> int:
    results.mkdir(parents=True, exist_ok=True)
    logs = results / "logs"
    logs.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-caffe-"))
    with tarfile.open(bundle_file) as tar:
        tar.extractall(work)
    top = work / "gpu_bundle"
    manifest = json.loads((top / "MANIFEST.json").read_text())
    cuda_dirs = _torch_cuda_dirs(python)
    present = {os.path.basename(p) for d in cuda_dirs for p in glob.glob(os.path.join(d, "*"))}
    missing = [n for n in manifest["cuda_libraries_needed"] if n not in present]
    report: dict[str, object] = {
        "date": datetime.date.today().isoformat(), "bundle": manifest,
        "torch_cuda_dirs": cuda_dirs, "missing_cuda_libraries": missing}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True).stdout
    except OSError:
        smi = ""
    report["gpus"] = [g.strip() for g in smi.splitlines() if g.strip()]
    report["cpu_cores"] = os.cpu_count()
    print(f"GPUs: {report['gpus']}; PyTorch CUDA folders: {len(cuda_dirs)}", flush=True)
    if missing:
        report["error"] = (f"PyTorch here lacks {', '.join(missing)} (the CUDA build needs "
                           "the same CUDA major version): rebuild with that CUDA")
        return _finish(report, results, 1)
    base = dict(os.environ, GLOG_logtostderr="1")
    env = {n: dict(base, LD_LIBRARY_PATH=":".join([str(top / "lib"), *cuda_dirs]))
           for n in ("cpu", "cuda")}
    caffe = {n: str(top / n / "bin" / "caffe") for n in ("cpu", "cuda")}

    status, text, _ = _run([caffe["cuda"], "device_query"], logs / "device_query.log",
                           env["cuda"], top, 120)
    names = re.findall(r"Name:\s+(.+)", text)
    report["device_query"] = {"exit": status, "gpus": names}
    print(f"device_query: exit {status}, {len(names)} GPU(s): {names}", flush=True)
    if (status != 0 or not names) and not cpu_only:
        report["error"] = "caffe device_query found no GPU; see logs/device_query.log"
        return _finish(report, results, 1)

    net = str(top / "nets" / "resnet50_b32.prototxt")
    timing: dict[str, dict[str, float]] = {}
    for label, build, extra, iterations in (("gpu", "cuda", ["-gpu", "0"], 20),
                                            ("cpu", "cpu", [], 2)):
        if cpu_only and build == "cuda":
            continue
        runs = []
        for k in range(1 if cpu_only else 3):
            status, text, _ = _run([caffe[build], "time", "-model", net, "-phase", "TEST",
                                    "-iterations", str(1 if cpu_only else iterations), *extra],
                                   logs / f"time_resnet50_{label}_{k}.log", env[build], top,
                                   600)
            if status != 0 or not _averages(text):
                report["error"] = f"caffe time on the {label} failed (exit {status})"
                return _finish(report, results, 1)
            runs.append(_averages(text))
        timing[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"ResNet-50 b32 {label}: {timing[label]}", flush=True)
    report["resnet50_b32_ms"] = timing

    digits = top / "digits"
    training: dict[str, dict[str, object]] = {}
    for label, build, extra in (("cpu", "cpu", []), ("gpu0", "cuda", ["-gpu", "0"]),
                                ("gpu_all", "cuda", ["-gpu", "all"])):
        if cpu_only and build == "cuda":
            continue
        folder = work / f"digits_{label}"
        shutil.copytree(digits, folder)
        (folder / "snapshots").mkdir()
        status, text, seconds = _run([caffe[build], "train", "-solver", "solver.prototxt",
                                      *extra], logs / f"train_digits_{label}.log",
                                     env[build], folder, 900)
        training[label] = {"exit": status, "seconds": round(seconds, 1),
                           "accuracy": _last_accuracy(text),
                           "gpus_used": re.findall(r"Using GPUs (.+)", text)}
        print(f"digits {label}: {training[label]}", flush=True)
    report["digits_training"] = training
    cpu_acc = training["cpu"]["accuracy"]
    ok = all(t["exit"] == 0 and isinstance(t["accuracy"], float)
             and isinstance(cpu_acc, float) and t["accuracy"] >= cpu_acc - 0.02
             for t in training.values())
    report["gpu_reaches_cpu_accuracy"] = ok
    return _finish(report, results, 0 if ok else 1)


def _finish(report: dict[str, object], results: Path, status: int) -> int:
    (results / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"Measured {report['date']} on {', '.join(report.get('gpus', [])) or 'no GPU'} "
             f"({report.get('cpu_cores')} CPU cores), by benchmarks/gpu_caffe.py."]
    t = report.get("resnet50_b32_ms")
    if isinstance(t, dict) and "gpu" in t:
        lines += ["", "| ResNet-50, batch 32, `caffe time` | forward ms | backward ms | "
                  "forward-backward ms |", "| --- | ---: | ---: | ---: |"]
        for label, name in (("cpu", "CPU build (OpenBLAS)"), ("gpu", "CUDA build, GPU 0")):
            v = t[label]
            lines.append(f"| {name} | {v['Forward pass']:.1f} | {v['Backward pass']:.1f} | "
                         f"{v['Forward-Backward']:.1f} |")
        speedup = t["cpu"]["Forward-Backward"] / t["gpu"]["Forward-Backward"]
        lines.append(f"| GPU speed-up | | | {speedup:.1f}x |")
    d = report.get("digits_training")
    if isinstance(d, dict):
        lines += ["", f"| digits ResNet-8, {DIGITS_EPOCHS} epochs | test accuracy | seconds |",
                  "| --- | ---: | ---: |"]
        for label, v in d.items():
            lines.append(f"| {label} | {v['accuracy']} | {v['seconds']} |")
    if "error" in report:
        lines += ["", f"error: {report['error']}"]
    (results / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    b = sub.add_parser("bundle", help="pack the builds, libraries, nets and data (here)")
    b.add_argument("--out", type=Path, default=BUNDLE)
    r = sub.add_parser("run", help="run the comparison (on the GPU machine)")
    r.add_argument("--bundle", type=Path, default=BUNDLE)
    r.add_argument("--results", type=Path, default=Path(os.environ.get("OUT", "out/gpu_results")))
    r.add_argument("--python", default=sys.executable,
                   help="the Python whose PyTorch holds the CUDA libraries")
    r.add_argument("--cpu-only", action="store_true",
                   help="check the bundle on a machine without a GPU: the CPU steps only")
    args = parser.parse_args(argv)
    if args.step == "bundle":
        bundle(args.out)
        return 0
    return run(args.bundle, args.results, args.python, args.cpu_only)


if __name__ == "__main__":
    sys.exit(main())
