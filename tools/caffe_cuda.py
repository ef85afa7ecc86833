"""The CUDA variant of the Caffe build: toolkit, libraries, GPU architectures and the
source changes today's CUDA needs (used by ``caffe_setup.py build --cuda``).

What it takes from where:

- ``nvcc`` and the CUDA runtime (cudart) from the local CUDA toolkit (``nvcc`` on
  ``PATH``, else ``$CUDA_HOME``, else ``/usr/local/cuda``); CUDA 12 and 13 are covered.
- cuBLAS, cuRAND and cuDNN from the toolkit when it has them, else from PyPI's NVIDIA
  wheels for the toolkit's CUDA major version, installed (pip) into the Python
  environment that runs the set-up, i.e. the project's ``.venv``; a wheel already
  there (PyTorch's) is used as it is.  They are linked by path, and the ``caffe-cuda``
  wrapper puts their folders first on ``LD_LIBRARY_PATH``.
- No NCCL: this Caffe source's library has no ``caffe::NCCL`` class; its multi-GPU
  trainer is Caffe 1.0-rc3's ``P2PSync`` (a tree of solvers that sum gradients by CUDA
  peer copies).  The ``caffe`` tool it ships calls ``caffe::NCCL`` only under
  ``USE_NCCL`` and otherwise refuses more than one GPU, so :data:`PATCHES` makes it
  run ``P2PSync``: ``caffe train -gpu all`` then trains on every GPU present.

The CUDA build is for GPU mode.  Built with cuDNN, Caffe's layer factory picks the
cuDNN convolution, pooling, ReLU ... layers in CPU mode too, and they need a GPU to
set up; CPU runs use the CPU build (``<venv>/bin/caffe``), as pynetbuilder does
without ``--gpu``.

The source changes (:data:`PATCHES`, each must match the pinned source exactly once):

- CUDA 13 removed ``clockRate``, ``deviceOverlap`` and ``kernelExecTimeoutEnabled``
  from ``cudaDeviceProp``: ``Caffe::DeviceQuery`` asks ``cudaDeviceGetAttribute``.
- cuDNN 8 removed ``cudnnGetConvolution{Forward,BackwardFilter,BackwardData}Algorithm``:
  the convolution layer asks the ``_v7`` calls (every algorithm ranked by expected
  speed) and takes the fastest that fits the same 8 MB workspace limit as before.
- ``ProposalLayer::Backward_gpu`` is declared but never defined in this source (a
  CPU_ONLY build never instantiates it): defined as the no-op its CPU twin is.
- Six layers it added (ReLU6, HardSwish, HardSigmoid, Upsample, PixelShuffle, MaxUnPool)
  have CPU code only, and their GPU functions are declared but never defined: in GPU
  mode they run their CPU code, as Caffe's ``Layer`` does by default.
- ``caffe device_query`` reports "no CUDA device" with CUDA's reason and exit status
  1 instead of aborting in a failed check; without ``-gpu`` it queries every GPU.
- C++17 (CUDA 13's thrust/cub require it) and GPU code for the common data-centre
  and desktop architectures the local nvcc compiles, plus PTX of the newest.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_MAJORS = (12, 13)

# Architectures built by default, where the local nvcc still compiles them: Pascal
# (P100), Volta (V100), Turing (T4, RTX 20), Ampere (A100; A10, RTX 30), Ada (L4,
# L40, RTX 40), Hopper (H100, H200), Blackwell (B200; RTX 50).  CUDA 13 compiles
# sm_75 and newer only.  Later minor revisions of a major run its binaries (sm_100
# code runs on sm_103), and the PTX of the newest is compiled by the driver for GPUs
# newer than all of them.
COMMON_ARCHS = (60, 70, 75, 80, 86, 89, 90, 100, 120)
DEFAULT_NVCC = "/usr/local/cuda/bin/nvcc"  # where NVIDIA's installers put it


class CudaError(RuntimeError):
    """A failure the user can act on; its message is the one line printed."""


@dataclass(frozen=True)
class Toolkit:
    root: Path  # has bin/nvcc, include/cuda_runtime.h
    version: tuple[int, int]
    codes: tuple[int, ...]  # the sm_XX this nvcc compiles

    @property
    def label(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


def find_nvcc() -> Path:
    for candidate in (shutil.which("nvcc"),
                      *(os.environ.get(v) and f"{os.environ[v]}/bin/nvcc"
                        for v in ("CUDA_HOME", "CUDA_PATH")),
                      DEFAULT_NVCC):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise CudaError(
        f"no nvcc (the CUDA compiler) on PATH, in $CUDA_HOME or at {DEFAULT_NVCC}: install "
        f"CUDA toolkit {' or '.join(map(str, SUPPORTED_MAJORS))} (NVIDIA's cuda-toolkit "
        "package, or set CUDA_HOME to one); the CPU build, `make caffe`, needs none")


def _run(cmd: list[str], **kw: object) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    except OSError as exc:
        raise CudaError(f"cannot run {cmd[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CudaError(f"`{' '.join(cmd)}` failed ({last})")
    return proc.stdout


def check_version(version: tuple[int, int], nvcc: Path | str = "nvcc") -> tuple[int, int]:
    """``version`` if the build's changes cover that CUDA, else CudaError saying what to do."""
    if version[0] not in SUPPORTED_MAJORS:
        raise CudaError(
            f"{nvcc} is CUDA {version[0]}.{version[1]}; the CUDA build of Caffe covers CUDA "
            f"{' and '.join(map(str, SUPPORTED_MAJORS))} only: install one of those and put "
            "its nvcc first on PATH (or set CUDA_HOME)")
    return version


def find_toolkit() -> Toolkit:
    """The local CUDA toolkit; CudaError when there is none or its version is not covered."""
    nvcc = find_nvcc()
    m = re.search(r"release (\d+)\.(\d+)", _run([str(nvcc), "--version"]))
    if not m:
        raise CudaError(f"`{nvcc} --version` names no CUDA release")
    version = check_version((int(m[1]), int(m[2])), nvcc)
    # nvcc may be a wrapper script: ask it where its toolkit is.
    with tempfile.TemporaryDirectory(prefix="pnb-nvcc-") as tmp:
        empty = Path(tmp) / "empty.cu"
        empty.write_text("")
        dry = subprocess.run([str(nvcc), "--dryrun", "-c", str(empty), "-o", f"{tmp}/e.o"],
                             capture_output=True, text=True)
    m = re.search(r"^#\$ TOP=(.+)$", dry.stdout + dry.stderr, flags=re.M)
    root = Path(m[1].strip()).resolve() if m else nvcc.resolve().parent.parent
    if not (root / "include" / "cuda_runtime.h").is_file():
        raise CudaError(f"the CUDA toolkit of {nvcc} ({root}) has no include/cuda_runtime.h; "
                        "set CUDA_HOME to a complete toolkit")
    codes = tuple(sorted({int(c) for c in re.findall(
        r"sm_(\d+)\b", _run([str(nvcc), "--list-gpu-code"]))}))
    return Toolkit(root, version, codes)


def parse_archs(text: str) -> tuple[int, ...]:
    """``"75 80,90"`` or ``"sm_75 sm_90"`` -> (75, 80, 90); CudaError on anything else."""
    words = [w for w in re.split(r"[\s,;]+", text.strip()) if w]
    archs = []
    for w in words:
        m = re.fullmatch(r"(?:sm_|compute_)?(\d{2,3})", w)
        if not m:
            raise CudaError(f"--arch takes GPU architectures like 75 or sm_90, got {w!r}")
        archs.append(int(m[1]))
    if not archs:
        raise CudaError("--arch names no GPU architecture")
    return tuple(sorted(set(archs)))


def choose_archs(toolkit: Toolkit, wanted: tuple[int, ...] | None) -> tuple[int, ...]:
    """``wanted`` (all must be compilable), else :data:`COMMON_ARCHS` that nvcc compiles."""
    if wanted is None:
        archs = tuple(a for a in COMMON_ARCHS if a in toolkit.codes)
        if not archs:
            raise CudaError(f"CUDA {toolkit.label}'s nvcc compiles none of the common GPU "
                            f"architectures (it lists {toolkit.codes}); give --arch")
        return archs
    missing = [a for a in wanted if a not in toolkit.codes]
    if missing:
        raise CudaError(f"CUDA {toolkit.label}'s nvcc cannot compile sm_"
                        f"{', sm_'.join(map(str, missing))} (it compiles sm_"
                        f"{', sm_'.join(map(str, toolkit.codes))})")
    return wanted


def describe_archs(archs: tuple[int, ...]) -> str:
    return " ".join(f"sm_{a}" for a in archs) + f" + PTX {archs[-1]}"


def gencode_flags(archs: tuple[int, ...]) -> str:
    """Machine code for each architecture, and PTX of the newest for later GPUs."""
    flags = [f"-gencode arch=compute_{a},code=sm_{a}" for a in archs]
    flags.append(f"-gencode arch=compute_{archs[-1]},code=compute_{archs[-1]}")
    return " ".join(flags)


# ---------------------------------------------------------------- libraries


@dataclass(frozen=True)
class Library:
    """A CUDA library Caffe links: its header, its ``lib<link>.so.*`` and its wheels."""

    name: str  # cuBLAS
    link: str  # cublas
    header: str  # cublas_v2.h
    wheels: dict[int, tuple[str, str]]  # CUDA major -> (distribution, version range)


LIBRARIES = (
    Library("cuBLAS", "cublas", "cublas_v2.h",
            {12: ("nvidia-cublas-cu12", ">=12,<13"), 13: ("nvidia-cublas", ">=13,<14")}),
    Library("cuRAND", "curand", "curand.h",
            {12: ("nvidia-curand-cu12", ">=10.3,<10.4"), 13: ("nvidia-curand", ">=10.4,<11")}),
    Library("cuDNN", "cudnn", "cudnn.h",
            {12: ("nvidia-cudnn-cu12", ">=9,<10"), 13: ("nvidia-cudnn-cu13", ">=9,<10")}),
)
CUDNN_MAJORS = (8, 9)  # the _v7 algorithm calls exist in both


@dataclass(frozen=True)
class Found:
    """Where one library was found: folders of its headers and of its shared library."""

    library: Library
    include: Path
    lib: Path
    soname: str  # libcublas.so.13: part of the build's cache key
    origin: str  # "CUDA toolkit /usr/local/cuda" or "nvidia-cublas 13.1.1.3 (pip)"


def _in_toolkit(lib: Library, toolkit: Toolkit) -> Found | None:
    for libdir in ("lib64", "lib", "targets/x86_64-linux/lib"):
        folder = toolkit.root / libdir
        sonames = sorted(folder.glob(f"lib{lib.link}.so.[0-9]*"), key=lambda p: len(p.name))
        if (toolkit.root / "include" / lib.header).is_file() and sonames:
            return Found(lib, toolkit.root / "include", folder, _soname(sonames[0]),
                         f"CUDA toolkit {toolkit.root}")
    return None


def _soname(path: Path) -> str:
    m = re.match(r"(lib\w+\.so\.\d+)", path.name)
    return m[1] if m else path.name


def _version_in(version: str, spec: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v)[:4])

    have = key(version)
    for part in spec.split(","):
        op, bound = re.fullmatch(r"(>=|<)([\d.]+)", part.strip()).groups()  # type: ignore[union-attr]
        b = key(bound)
        if (op == ">=" and have[:len(b)] < b) or (op == "<" and have[:len(b)] >= b):
            return False
    return True


def _in_wheel(lib: Library, major: int) -> Found | None:
    dist_name, spec = lib.wheels[major]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if not _version_in(dist.version, spec):
        return None
    header = so = None
    for f in dist.files or ():
        if f.name == lib.header and f.parent.name == "include":
            header = Path(dist.locate_file(f)).parent
        elif re.fullmatch(rf"lib{lib.link}\.so\.\d+", f.name):
            so = Path(dist.locate_file(f))
    if header is None or so is None or not so.exists():
        return None
    return Found(lib, header, so.parent, so.name, f"pip: {dist_name} {dist.version}")


def _pip_install(requirement: str, log: Callable[[str], None]) -> tuple[int, str]:
    """``pip install requirement`` into this Python's environment, its progress echoed
    (the wheels are hundreds of MB); (exit status, last line)."""
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
           "--progress-bar", "off", requirement]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = "no output"
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip():
            last = line.strip()
            log(f"  pip: {last}")
    return proc.wait(), last


def find_libraries(toolkit: Toolkit, install: bool = True,
                   log: Callable[[str], None] = print) -> list[Found]:
    """cuBLAS, cuRAND, cuDNN: the toolkit's, else the wheels in this Python environment,
    else (``install``) pip installs the wheels first.  CudaError naming what is missing."""
    major = toolkit.version[0]
    found: list[Found] = []
    for lib in LIBRARIES:
        hit = _in_toolkit(lib, toolkit) or _in_wheel(lib, major)
        if hit is None and install:
            dist_name, spec = lib.wheels[major]
            log(f"{lib.name} is not in the CUDA toolkit: installing {dist_name}{spec} from "
                f"PyPI into {sys.prefix}")
            status, last = _pip_install(f"{dist_name}{spec}", log)
            if status != 0:
                raise CudaError(f"{lib.name} for CUDA {major} is missing (not in {toolkit.root}) "
                                f"and `pip install {dist_name}{spec}` failed ({last}); install "
                                "it and run again")
            importlib.invalidate_caches()
            hit = _in_wheel(lib, major)
        if hit is None:
            dist_name, spec = lib.wheels[major]
            raise CudaError(f"{lib.name} for CUDA {major} is missing: not in {toolkit.root} and "
                            f"no {dist_name}{spec} in {sys.prefix}; run `make caffe-cuda` "
                            f"(it installs it) or `pip install '{dist_name}{spec}'`")
        found.append(hit)
    cudnn = next(f for f in found if f.library.link == "cudnn")
    m = re.search(r"#define CUDNN_MAJOR (\d+)", _read(cudnn.include / "cudnn_version.h")
                  or _read(cudnn.include / "cudnn.h"))
    if not m or int(m[1]) not in CUDNN_MAJORS:
        raise CudaError(f"cuDNN {m[1] if m else '?'} ({cudnn.origin}) is not covered: the "
                        f"build takes cuDNN {' or '.join(map(str, CUDNN_MAJORS))}")
    return found


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def stage_libraries(found: list[Found], toolkit: Toolkit, dest: Path) -> tuple[Path, Path]:
    """Folders ``dest/include`` and ``dest/lib`` for compiling and linking: a link to each
    header the toolkit lacks (so a wheel's own copy of CUDA's runtime headers never
    shadows the toolkit's) and ``lib<name>.so`` links to the libraries (wheels ship
    only versioned names)."""
    include, lib = dest / "include", dest / "lib"
    include.mkdir(parents=True, exist_ok=True)
    lib.mkdir(parents=True, exist_ok=True)
    for f in found:
        if f.include != toolkit.root / "include":
            for entry in f.include.iterdir():
                if not (toolkit.root / "include" / entry.name).exists() and \
                        not (include / entry.name).exists():
                    (include / entry.name).symlink_to(entry)
        (lib / f"lib{f.library.link}.so").symlink_to(f.lib / f.soname)
    return include, lib


def runtime_dirs(found: list[Found], toolkit: Toolkit) -> list[Path]:
    """Folders the CUDA build loads its libraries from: cudart's (the toolkit's), then
    each library's, without repeats."""
    cudart = next((toolkit.root / d for d in ("lib64", "lib", "targets/x86_64-linux/lib")
                   if any((toolkit.root / d).glob("libcudart.so.*"))), toolkit.root / "lib64")
    dirs: list[Path] = [cudart.resolve()]
    for f in found:
        if f.lib.resolve() not in dirs:
            dirs.append(f.lib.resolve())
    return dirs


# ---------------------------------------------------------------- source changes


_DEVICE_ATTRIBUTE = """\
// pynetbuilder: CUDA 13 removed clockRate, deviceOverlap and
// kernelExecTimeoutEnabled from cudaDeviceProp; every CUDA answers the attribute
// query with the same values.
static int DeviceAttribute(cudaDeviceAttr attribute, int device) {
  int value = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}

void Caffe::DeviceQuery() {
  cudaDeviceProp prop;"""

_PICK_ALGORITHMS = """\
// pynetbuilder: cuDNN 8 removed cudnnGetConvolution*Algorithm with its
// "specify workspace limit" preference.  The _v7 calls rank every algorithm by
// expected speed; take the fastest that succeeds within the same workspace limit,
// else the one that needs no workspace (what the removed call fell back to).
template <typename Perf, typename Algo>
static Algo FastestWithin(const Perf* perf, int count, size_t limit,
                          Algo no_workspace) {
  for (int k = 0; k < count; ++k) {
    if (perf[k].status == CUDNN_STATUS_SUCCESS && perf[k].memory <= limit) {
      return perf[k].algo;
    }
  }
  return no_workspace;
}

static cudnnConvolutionFwdAlgo_t PickForwardAlgorithm(cudnnHandle_t handle,
    cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
    cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t y, size_t limit) {
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int count = 0;
  CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle, x, w, conv, y,
      CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf));
  return FastestWithin(perf, count, limit,
                       CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM);
}

static cudnnConvolutionBwdFilterAlgo_t PickBackwardFilterAlgorithm(
    cudnnHandle_t handle, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnFilterDescriptor_t dw, size_t limit) {
  cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  int count = 0;
  CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle, x, dy, conv,
      dw, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf));
  return FastestWithin(perf, count, limit, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0);
}

static cudnnConvolutionBwdDataAlgo_t PickBackwardDataAlgorithm(
    cudnnHandle_t handle, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t dx, size_t limit) {
  cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  int count = 0;
  CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, w, dy, conv,
      dx, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, perf));
  return FastestWithin(perf, count, limit, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0);
}

"""

_DEVICE_QUERY = """\
int device_query() {
  // pynetbuilder: say plainly when there is no GPU instead of aborting in a
  // failed check; with no -gpu flag, query every GPU.
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess || count == 0) {
    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    LOG(ERROR) << "no CUDA device: "
        << (error != cudaSuccess ? cudaGetErrorString(error)
                                 : "the driver lists none")
        << " (this Caffe uses CUDA runtime " << runtime / 1000 << "."
        << runtime % 1000 / 10 << "; the driver supports CUDA "
        << driver / 1000 << "." << driver % 1000 / 10 << ")";
    return 1;
  }
  if (FLAGS_gpu.empty()) {
    FLAGS_gpu = "all";
  }
  LOG(INFO) << "Querying GPUs " << FLAGS_gpu << " of " << count;"""

_MULTI_GPU = """\
    // pynetbuilder: this library's multi-GPU trainer is P2PSync (a tree of
    // solvers that sum gradients by CUDA peer copies); it has no caffe::NCCL.
    caffe::P2PSync<float> sync(solver, NULL, solver->param());
    sync.Run(gpus);"""


_PROPOSAL_BACKWARD = """\
// pynetbuilder: proposal_layer.hpp declares Backward_gpu, this source never
// defined it (a CPU_ONLY build never instantiates it); like Backward_cpu,
// proposals pass no gradient.
template <typename Dtype>
void ProposalLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {}

INSTANTIATE_LAYER_GPU_FUNCS(ProposalLayer);"""


# Layers this source added with CPU code only: their .cpp stubs the GPU functions
# under CPU_ONLY, and no .cu defines them, so a CUDA build does not link.
CPU_ONLY_LAYERS = {
    "ReLU6Layer": "relu6_layer", "HardSwishLayer": "hardswish_layer",
    "HardSigmoidLayer": "hardsigmoid_layer", "UpsampleLayer": "upsample_layer",
    "PixelShuffleLayer": "pixelshuffle_layer", "MaxUnPoolLayer": "maxunpool_layer",
}

_GPU_RUNS_CPU = """\
#ifdef CPU_ONLY
STUB_GPU({name});
#else
// pynetbuilder: no CUDA kernels for {name} in this source: in GPU mode it runs
// its CPU code (the blobs sync between device and host), as Layer's defaults do.
template <typename Dtype>
void {name}<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {{
  Forward_cpu(bottom, top);
}}

template <typename Dtype>
void {name}<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {{
  Backward_cpu(top, propagate_down, bottom);
}}
#endif"""


@dataclass(frozen=True)
class Patch:
    path: str
    why: str
    pattern: str  # a regular expression that must match exactly once
    replacement: str | Callable[[re.Match[str]], str]


def _algorithm_call(m: re.Match[str]) -> str:
    return (f"{m['out']}[i] = Pick{m['kind']}Algorithm({m['args']},\n"
            "        workspace_limit_bytes);")


PATCHES = (
    Patch("src/caffe/common.cpp", "cudaDeviceProp fields CUDA 13 removed",
          r"void Caffe::DeviceQuery\(\) \{\n  cudaDeviceProp prop;", _DEVICE_ATTRIBUTE),
    Patch("src/caffe/common.cpp", "cudaDeviceProp::clockRate (removed in CUDA 13)",
          r"prop\.clockRate", "DeviceAttribute(cudaDevAttrClockRate, device)"),
    Patch("src/caffe/common.cpp", "cudaDeviceProp::deviceOverlap (removed in CUDA 13)",
          r"prop\.deviceOverlap", "DeviceAttribute(cudaDevAttrGpuOverlap, device)"),
    Patch("src/caffe/common.cpp", "cudaDeviceProp::kernelExecTimeoutEnabled (CUDA 13)",
          r"prop\.kernelExecTimeoutEnabled",
          "DeviceAttribute(cudaDevAttrKernelExecTimeout, device)"),
    Patch("src/caffe/layers/cudnn_conv_layer.cpp", "cuDNN 8/9 algorithm choice",
          r"(?=namespace caffe \{)", _PICK_ALGORITHMS),
    *(Patch("src/caffe/layers/cudnn_conv_layer.cpp",
            f"cudnnGetConvolution{kind}Algorithm (removed in cuDNN 8)",
            rf"CUDNN_CHECK\(cudnnGetConvolution(?P<kind>{kind})Algorithm\("
            r"(?P<args>[^;]*?),\s*CUDNN_CONVOLUTION_\w+_SPECIFY_WORKSPACE_LIMIT,"
            r"\s*workspace_limit_bytes,\s*&(?P<out>\w+)\[i\]\)\s*\);",
            _algorithm_call)
      for kind in ("Forward", "BackwardFilter", "BackwardData")),
    Patch("src/caffe/layers/proposal_layer.cu", "ProposalLayer::Backward_gpu (never defined)",
          r"INSTANTIATE_LAYER_GPU_FUNCS\(ProposalLayer\);", _PROPOSAL_BACKWARD),
    *(Patch(f"src/caffe/layers/{stem}.cpp", f"{name}'s GPU functions (never defined)",
            rf"#ifdef CPU_ONLY\s*\n\s*STUB_GPU\({name}\);\s*\n\s*#endif",
            _GPU_RUNS_CPU.format(name=name))
      for name, stem in CPU_ONLY_LAYERS.items()),
    Patch("tools/caffe.cpp", "device_query without a GPU",
          r"int device_query\(\) \{\n  LOG\(INFO\) << \"Querying GPUs \" << FLAGS_gpu;",
          _DEVICE_QUERY),
    Patch("tools/caffe.cpp", "multi-GPU training with P2PSync",
          r"#ifdef USE_NCCL\n    caffe::NCCL<float> nccl\(solver\);\n.*?\n#endif",
          _MULTI_GPU),
)


def apply_patches(src: Path) -> None:
    """Apply :data:`PATCHES` to the unpacked source in ``src``; CudaError if one does not
    match exactly once (the source is not the pinned one)."""
    for p in PATCHES:
        path = src / p.path
        text = path.read_text()
        regex = re.compile(p.pattern, flags=re.S)
        hits = len(regex.findall(text))
        if hits != 1:
            raise CudaError(f"the CUDA patch for {p.why} matches {hits} places in {p.path} "
                            "(expected 1): is this the pinned Caffe source?")
        path.write_text(regex.sub(p.replacement, text, count=1))  # type: ignore[arg-type]


def makefile_lines(toolkit: Toolkit, archs: tuple[int, ...], include: Path, lib: Path,
                   rpath: list[Path]) -> list[str]:
    """Makefile.config lines for the CUDA build, after the CPU build's common ones."""
    cccl = toolkit.root / "include" / "cccl"  # CUDA 13's thrust/cub; nvcc adds it itself
    return [
        f"CUDA_DIR := {toolkit.root}",
        *([f"INCLUDE_DIRS += {cccl}"] if cccl.is_dir() else []),
        f"CUDA_ARCH := {gencode_flags(archs)}",
        "CXXFLAGS += -std=c++17",
        "NVCCFLAGS += -std=c++17",
        f"INCLUDE_DIRS += {include}",
        f"LIBRARY_DIRS += {lib}",
        "LDFLAGS += " + " ".join(f"-Wl,-rpath,{d}" for d in rpath),
    ]
