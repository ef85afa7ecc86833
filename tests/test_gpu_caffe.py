"""Caffe on the GPU without a GPU here: `--gpu` is refused in one line when the driver
shows no GPU, or when there is no CUDA build; the CUDA build (`make caffe-cuda`, when
it was built) starts and says "no CUDA device" cleanly; the set-up's CUDA checks
fail in one line and leave the CPU build as it was.  Where a GPU is visible, the CUDA
build times a small net on it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CAFFE_TOOL, ROOT, VENV_PY

from pynetbuilder import dataio, training
from pynetbuilder.errors import UsageError

sys.path.insert(0, str(ROOT / "tools"))
import caffe_cuda  # noqa: E402
import caffe_setup  # noqa: E402

NO_GPU_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, with or without one


def pnb(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pynetbuilder", *args], cwd=cwd,
                          capture_output=True, text=True, env=env)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("pynetbuilder: error: ") and proc.stderr.count("\n") == 1
    return proc.stderr


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("digits")
    images, labels = dataio.digits(16)
    dataio.write_lmdb(folder / "train_lmdb", images[:64], labels[:64])
    dataio.write_lmdb(folder / "test_lmdb", images[64:96], labels[64:96])
    return folder


TRAIN = ["train", "resnet", "--depth", "8", "--initial_channels", "8", "--num_classes", "10",
         "--train_source", "train_lmdb", "--test_source", "test_lmdb", "--crop_size", "16",
         "--mean", "8", "--batch_size", "16", "--epochs", "1"]
TIME = ["time", "resnet", "--depth", "8", "--initial_channels", "8", "--num_classes", "10",
        "--batch_size", "4", "--iterations", "1"]


def cuda_build() -> Path | None:
    """The CUDA build's caffe binary in the cache, if `make caffe-cuda` built one."""
    done = sorted(caffe_setup.cache_root().glob(f"caffe-{caffe_setup.CAFFE_VERSION}-cuda*"
                                                "/BUILD_OK"))
    if not done:
        return None
    tool = done[-1].parent / caffe_setup.SOURCE_DIR_NAME / "build" / "tools" / "caffe"
    return tool if tool.is_file() else None


# ---------------------------------------------------------------- --gpu in the commands


@pytest.mark.parametrize("gpu", ["0", "0,1", "all"])
def test_train_gpu_without_a_visible_gpu_is_one_line(digits, gpu):
    err = one_line_error(pnb(*TRAIN, "--gpu", gpu, "-o", "never", cwd=digits, env=NO_GPU_ENV))
    assert f"--gpu {gpu}: no CUDA GPU is visible here (" in err
    assert "leave out --gpu to run on the CPU" in err
    assert not (digits / "never").exists()


def test_time_gpu_without_a_visible_gpu_is_one_line(tmp_path):
    err = one_line_error(pnb(*TIME, "--gpu", "0", "--keep", "kept", cwd=tmp_path,
                             env=NO_GPU_ENV))
    assert "--gpu 0: no CUDA GPU is visible here (" in err
    assert not (tmp_path / "kept").exists()
    err = one_line_error(pnb(*TIME, "--gpu", "0,1", cwd=tmp_path))
    assert "one device number for time" in err


def test_the_reason_is_the_drivers(monkeypatch):
    """No libcuda at all names the missing driver; a driver hiding every GPU says so."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    count, why = training.visible_gpus()
    assert count == 0
    try:
        import ctypes

        ctypes.CDLL("libcuda.so.1")
    except OSError:
        assert why == "no NVIDIA driver: libcuda.so.1 is not installed"
    else:
        assert "CUDA_ERROR_NO_DEVICE" in why or why == "the NVIDIA driver lists no GPU"


def test_missing_cuda_build_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv(training.CUDA_TOOL_ENV, raising=False)
    monkeypatch.delenv(training.TOOL_ENV, raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))  # a Python with no caffe-cuda beside it
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError) as err:
        training.cuda_caffe_tool()
    assert str(err.value) == (
        "--gpu needs Caffe built with CUDA, which is not here: run `make caffe-cuda` (needs "
        "nvcc, the CUDA compiler), or set $PYNETBUILDER_CAFFE_CUDA to a CUDA caffe binary")
    monkeypatch.setenv(training.CUDA_TOOL_ENV, str(tmp_path / "nothing"))
    with pytest.raises(UsageError, match="PYNETBUILDER_CAFFE_CUDA names .*not an executable"):
        training.cuda_caffe_tool()


def test_without_gpu_the_cpu_build_runs_unchanged(monkeypatch):
    """No --gpu: the venv's `caffe`, i.e. the CPU build under its unchanged cache key,
    whose binary links no CUDA library."""
    monkeypatch.delenv(training.TOOL_ENV, raising=False)
    tool = training.caffe_tool()
    assert tool == CAFFE_TOOL
    key = caffe_setup.build_key(caffe_setup.python_abi())
    binary = re.search(r'exec "([^"]+)"', tool.read_text())[1]
    assert f"/{key}/" in binary and "cuda" not in key
    needed = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True,
                            check=True).stdout
    assert "libcaffe.so" in needed and "libcudart" not in needed and "libcublas" not in needed
    config = (Path(binary).parents[2] / "Makefile.config").read_text()
    assert "CPU_ONLY := 1" in config and "CUDA_ARCH" not in config


# ---------------------------------------------------------------- the CUDA build


@pytest.mark.skipif(cuda_build() is None,
                    reason="no CUDA build in the cache: `make caffe-cuda` builds it (long)")
def test_cuda_build_starts_and_reports_no_cuda_device_cleanly():
    tool = cuda_build()
    needed = subprocess.run(["readelf", "-d", str(tool.parent.parent / "lib"
                                                   / "libcaffe.so.1.0.0-rc3")],
                            capture_output=True, text=True, check=True).stdout
    for lib in ("libcudart.so.", "libcublas.so.", "libcurand.so.", "libcudnn.so."):
        assert lib in needed
    proc = subprocess.run([str(tool), "device_query"], capture_output=True, text=True,
                          env={**NO_GPU_ENV, "GLOG_logtostderr": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    line = re.search(r"\] (no CUDA device: .*)", out)
    assert line, out
    assert "this Caffe uses CUDA runtime 1" in line[1]
    assert "Check failed" not in out and "stack trace" not in out
    # the tool itself runs: its version and the CPU mode still work
    version = subprocess.run([str(tool), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "caffe version 1.0.0" in version.stdout + version.stderr


@pytest.mark.skipif(cuda_build() is None or training.visible_gpus()[0] == 0,
                    reason="needs a visible GPU and the CUDA build")
def test_time_on_the_gpu(tmp_path):
    proc = pnb(*TIME, "--gpu", "0", "--keep", "kept", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (tmp_path / "kept" / "time.log").read_text()
    assert "Use GPU with device ID 0" in log and "Average Forward pass" in log


# ---------------------------------------------------------------- the set-up's CUDA checks


def test_versions_the_patches_do_not_cover_are_one_line():
    assert caffe_cuda.check_version((13, 0)) == (13, 0)
    assert caffe_cuda.check_version((12, 4)) == (12, 4)
    for old_or_new in ((11, 8), (14, 0)):
        with pytest.raises(caffe_cuda.CudaError, match="covers CUDA 12 and 13 only"):
            caffe_cuda.check_version(old_or_new)


def test_architectures_follow_what_nvcc_compiles():
    cuda13 = caffe_cuda.Toolkit(Path("/x"), (13, 0), (75, 80, 86, 87, 89, 90, 100, 103, 120))
    assert caffe_cuda.choose_archs(cuda13, None) == (75, 80, 86, 89, 90, 100, 120)
    cuda12 = caffe_cuda.Toolkit(Path("/x"), (12, 4), (50, 52, 60, 61, 70, 75, 80, 86, 89, 90))
    assert caffe_cuda.choose_archs(cuda12, None) == (60, 70, 75, 80, 86, 89, 90)
    assert caffe_cuda.choose_archs(cuda13, caffe_cuda.parse_archs("sm_90, 75")) == (75, 90)
    with pytest.raises(caffe_cuda.CudaError, match="cannot compile sm_60"):
        caffe_cuda.choose_archs(cuda13, (60, 90))
    with pytest.raises(caffe_cuda.CudaError, match="takes GPU architectures"):
        caffe_cuda.parse_archs("hopper")
    assert caffe_cuda.gencode_flags((75, 90)) == (
        "-gencode arch=compute_75,code=sm_75 -gencode arch=compute_90,code=sm_90 "
        "-gencode arch=compute_90,code=compute_90")


def test_missing_libraries_are_named_with_how_to_get_them(tmp_path):
    """A CUDA 12 toolkit without cuBLAS, in an environment without the CUDA 12 wheel."""
    bare = caffe_cuda.Toolkit(tmp_path, (12, 4), (75, 90))
    with pytest.raises(caffe_cuda.CudaError) as err:
        caffe_cuda.find_libraries(bare, install=False)
    assert str(err.value).startswith("cuBLAS for CUDA 12 is missing: not in ")
    assert "pip install 'nvidia-cublas-cu12>=12,<13'" in str(err.value)


def test_patches_apply_once_to_the_pinned_source(tmp_path):
    import tarfile

    with tarfile.open(caffe_setup.fetch_sdist()) as tar:
        for member in {p.path for p in caffe_cuda.PATCHES}:
            dest = tmp_path / caffe_setup.SOURCE_DIR_NAME / member
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tar.extractfile(f"{caffe_setup.SOURCE_DIR_NAME}/{member}").read())
    src = tmp_path / caffe_setup.SOURCE_DIR_NAME
    caffe_cuda.apply_patches(src)
    conv = (src / "src/caffe/layers/cudnn_conv_layer.cpp").read_text()
    assert "cudnnGetConvolutionForwardAlgorithm(" not in conv
    assert conv.count("Algorithm_v7(") == 3
    assert "prop.clockRate" not in (src / "src/caffe/common.cpp").read_text()
    tool = (src / "tools/caffe.cpp").read_text()
    assert "caffe::NCCL<float>" not in tool and "caffe::P2PSync<float> sync" in tool
    with pytest.raises(caffe_cuda.CudaError, match="matches 0 places"):
        caffe_cuda.apply_patches(src)  # a source that is not the pinned one


def test_no_nvcc_is_one_line_and_the_cpu_build_stays(tmp_path):
    wrapper = CAFFE_TOOL.read_text()
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin", "CUDA_HOME": str(tmp_path)}
    env.pop("CUDA_PATH", None)
    code = ("import sys; sys.path.insert(0, 'tools'); import caffe_cuda, caffe_setup; "
            f"caffe_cuda.DEFAULT_NVCC = {str(tmp_path / 'nvcc')!r}; "
            "sys.exit(caffe_setup.main(['build', '--cuda']))")
    proc = subprocess.run([str(VENV_PY), "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("caffe_setup: error: no nvcc (the CUDA compiler) on PATH")
    assert proc.stderr.count("\n") == 1 and "the CPU build, `make caffe`, needs none" in proc.stderr
    assert CAFFE_TOOL.read_text() == wrapper
    proc = subprocess.run([str(CAFFE_TOOL), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0
