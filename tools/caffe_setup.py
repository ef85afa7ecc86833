#!/usr/bin/env python3
"""Fetch, verify and build the real Caffe that pynetbuilder is tested against.

Sub-commands (run with the project's ``.venv/bin/python``; ``make`` does this):

``schema``
    Download the pinned Caffe source (PyPI sdist ``brocolli-caffe==9.0.2``), check
    its sha256, take ``src/caffe/proto/caffe.proto`` from it and compile it with
    protoc (``grpc_tools.protoc``) into ``pynetbuilder/proto/caffe_pb2.py``.
    Seconds, no C++ build.

``build``
    Check the Debian packages Caffe needs (installing them with apt-get when run as
    root), then build Caffe with its own Makefile (CPU_ONLY, OpenBLAS, LMDB,
    LevelDB, no OpenCV, WITH_PYTHON_LAYER) plus pycaffe for this interpreter.  The
    result is cached under ``$PYNETBUILDER_CACHE`` (default
    ``~/.cache/pynetbuilder``), keyed by the source version, the build options and
    the Python/numpy ABI, so a second run costs seconds.  The build happens in a
    temporary folder that is moved into place only when everything succeeded.
    Finally the current virtual environment is linked to the cached build: a
    ``.pth`` file makes ``import caffe`` work and ``<venv>/bin/caffe`` runs the
    command-line tool with the venv's packages visible to Python layers.

``build --cuda [--arch "75 90"]``
    The CUDA variant (``make caffe-cuda``): the same source and options without
    CPU_ONLY, with cuDNN, compiled by the local ``nvcc`` for the common GPU
    architectures (or ``--arch``) plus PTX; cuBLAS/cuRAND/cuDNN from the toolkit or
    PyPI's NVIDIA wheels (see ``tools/caffe_cuda.py``).  Cached beside the CPU build
    under its own key; it gives the venv ``<venv>/bin/caffe-cuda`` only (``import
    caffe`` and ``<venv>/bin/caffe`` stay the CPU build).

Every failure ends with one line ``caffe_setup: error: ...`` saying what failed
and what to do, and exit status 1.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import caffe_cuda  # noqa: E402  tools/caffe_cuda.py, beside this script
import debian  # noqa: E402  tools/debian.py, beside this script
from setup_script import SetupError  # noqa: E402  beside this script

CAFFE_DIST = "brocolli-caffe"
CAFFE_VERSION = "9.0.2"
CAFFE_SHA256 = "c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a"
SDIST_NAME = f"{CAFFE_DIST}-{CAFFE_VERSION}.tar.gz"
SOURCE_DIR_NAME = f"{CAFFE_DIST}-{CAFFE_VERSION}"

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_OUT = REPO_ROOT / "pynetbuilder" / "proto" / "caffe_pb2.py"
# protoc's own module, beside the loader SCHEMA_OUT (see schema_loader)
SCHEMA_PROTOC_NAME = "caffe_protoc_pb2.py"
SCHEMA_LOADER_VERSION = "loader 2"  # bump when schema_loader's text changes

DEBIAN_PACKAGES = (
    "build-essential",
    "libprotobuf-dev",
    "protobuf-compiler",
    "libgoogle-glog-dev",
    "libgflags-dev",
    "libhdf5-dev",
    "libboost-dev",
    "libboost-system-dev",
    "libboost-filesystem-dev",
    "libboost-thread-dev",
    "libboost-regex-dev",
    "libboost-python-dev",
    "libboost-date-time-dev",
    "libopenblas-dev",
    "liblmdb-dev",
    "libleveldb-dev",
    "libsnappy-dev",
    "graphviz",
)

# Options that change the binaries; they are part of the cache key.
BUILD_OPTIONS = {
    "CPU_ONLY": "1",
    "USE_OPENCV": "0",
    "USE_LEVELDB": "1",
    "USE_LMDB": "1",
    "WITH_PYTHON_LAYER": "1",
    "BLAS": "open",
}


# The CUDA variant: the same options without CPU_ONLY, with cuDNN.  Raise
# CUDA_PATCH_REVISION when tools/caffe_cuda.py changes what it builds.
CUDA_BUILD_OPTIONS = {**{k: v for k, v in BUILD_OPTIONS.items() if k != "CPU_ONLY"},
                      "USE_CUDNN": "1"}
CUDA_PATCH_REVISION = 1
CUDA_DEPS = "cuda-deps"  # in the staging folder: header and library links for the build
CUDA_PREPARED = "PREPARED"  # in the staging folder: a failed build there can be continued
# Measured on 2 cores: the C++ part and one architecture (+ its PTX) about 20 minutes,
# each further architecture about 4 (nvcc's device code generation per architecture).
CUDA_MINUTES = (20, 4)
CUDA_TOOL = "caffe-cuda"


def cache_root() -> Path:
    env = os.environ.get("PYNETBUILDER_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pynetbuilder"


def log(msg: str) -> None:
    print(f"caffe_setup: {msg}", file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_sdist() -> Path:
    """Return the verified source archive, downloading it once into the cache."""
    downloads = cache_root() / "downloads"
    target = downloads / SDIST_NAME
    if target.exists():
        if sha256_of(target) == CAFFE_SHA256:
            return target
        log(f"cached {target} has the wrong sha256; downloading it again")
        target.unlink()
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".download-") as tmp:
        log(f"downloading {CAFFE_DIST}=={CAFFE_VERSION} (Caffe source, 5.8 MB) from PyPI")
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--disable-pip-version-check", "-q", "-d", tmp, f"{CAFFE_DIST}=={CAFFE_VERSION}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / SDIST_NAME
        if proc.returncode != 0 or not got.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SetupError(
                f"download of {CAFFE_DIST}=={CAFFE_VERSION} from PyPI failed ({last}); "
                "check network access to PyPI and run the command again"
            )
        actual = sha256_of(got)
        if actual != CAFFE_SHA256:
            raise SetupError(
                f"{SDIST_NAME} has sha256 {actual}, expected {CAFFE_SHA256}; "
                "the download is corrupt or was tampered with, nothing was cached"
            )
        os.replace(got, target)
    return target


def extract_member(archive: Path, member: str, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        try:
            info = tar.getmember(f"{SOURCE_DIR_NAME}/{member}")
        except KeyError as exc:
            raise SetupError(f"{archive} has no {member}; is it the right source?") from exc
        data = tar.extractfile(info)
        assert data is not None
        dest.write_bytes(data.read())


# ---------------------------------------------------------------- schema


# pycaffe registers caffe.proto (package ``caffe``) in protobuf's default pool;
# a second module with the same file name or package cannot live in the same
# process.  The schema-only module therefore gets its own file name and package:
# field names and numbers, and so text format and wire format, are unchanged.
SCHEMA_PACKAGE = "pynetbuilder.caffe"
SCHEMA_PROTO = "pynetbuilder/proto/caffe.proto"


def generate_schema(out: Path = SCHEMA_OUT) -> Path:
    """Compile caffe.proto from the pinned source into ``out`` (atomically)."""
    archive = fetch_sdist()
    try:
        from grpc_tools import protoc  # type: ignore[import-not-found]
    except ImportError as exc:
        raise SetupError(
            "grpcio-tools is not installed in this Python; run `make .venv` "
            "(or pip install grpcio-tools) and try again"
        ) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pnb-schema-") as tmp:
        proto = Path(tmp) / SCHEMA_PROTO
        proto.parent.mkdir(parents=True)
        extract_member(archive, "src/caffe/proto/caffe.proto", proto)
        text, n = re.subn(r"^package caffe;$", f"package {SCHEMA_PACKAGE};",
                          proto.read_text(), flags=re.M)
        if n != 1:
            raise SetupError("caffe.proto has no `package caffe;` line; is it the right source?")
        proto.write_text(text)
        include = Path(protoc.__file__).parent / "_proto"
        rc = protoc.main(["protoc", f"-I{tmp}", f"-I{include}", f"--python_out={tmp}",
                          str(proto)])
        generated = proto.with_name("caffe_pb2.py")
        if rc != 0 or not generated.exists():
            raise SetupError(f"protoc failed to compile caffe.proto (exit {rc})")
        header = (
            f"# Generated by tools/caffe_setup.py from {CAFFE_DIST}=={CAFFE_VERSION} "
            f"src/caffe/proto/caffe.proto (package renamed to {SCHEMA_PACKAGE}). Do not edit.\n"
        )
        protoc_text = generated.read_text()
        found = re.search(r"AddSerializedFile\((b'.*?')\)\n", protoc_text, re.S)
        if found is None:
            raise SetupError("protoc's caffe_pb2.py has no AddSerializedFile(b'...') line; "
                             "this protoc writes another layout")
        # protoc's module first (the loader falls back on it), then the loader
        for name, text in ((SCHEMA_PROTOC_NAME, header + protoc_text),
                           (out.name, header + schema_loader(found.group(1)))):
            staged = out.with_name(f".{name}.tmp")
            staged.write_text(text)
            os.replace(staged, out.with_name(name))
    init = out.parent / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated protobuf modules (see tools/caffe_setup.py)."""\n')
    log(f"wrote {out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out}")
    return out


def schema_loader(serialized: str) -> str:
    """The text of ``caffe_pb2.py``: Caffe's message classes made straight from the
    upb extension when protobuf runs on upb (its default), else protoc's module.

    protoc's generated module goes through protobuf's pure-Python machinery
    (``descriptor_pool``, ``python_message``, ``text_format``, ``builder``...) even
    on upb; importing that is most of the time protobuf adds to a pynetbuilder
    command's start-up.  The loader builds the same classes as protoc's
    ``builder.BuildTopDescriptorsAndMessages`` does on upb (``MessageMeta``, nested
    classes, ``__module__``/``__qualname__``, top-level enums and their values, the
    ``_UPPERCASE`` descriptor names) from the same serialized file in the same
    default pool; tests/test_foundation.py compares the two modules.
    ``serialized``: the ``b'...'`` literal of protoc's ``AddSerializedFile`` call.
    """
    return f'''# {SCHEMA_LOADER_VERSION}
"""Caffe's schema (see tools/caffe_setup.py schema_loader): message classes made
straight from protobuf's upb extension, or protoc's module on other backends."""
from google.protobuf.internal import api_implementation as _api

if _api.Type() == "upb":
    from google._upb._message import MessageMeta as _MessageMeta
    from google._upb._message import default_pool as _pool
    from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper as _EnumTypeWrapper
    from google.protobuf.message import Message as _Message

    DESCRIPTOR = _pool.AddSerializedFile({serialized})

    def _build(d, prefix, names, upper):
        names["_" + upper] = d
        for e in d.enum_types:
            names["_" + upper + "_" + e.name.upper()] = e
        ns = {{n: _build(c, prefix + d.name + ".", names, upper + "_" + n.upper())
              for n, c in d.nested_types_by_name.items()}}
        ns.update(DESCRIPTOR=d, __module__=__name__, __qualname__=prefix + d.name)
        return _MessageMeta(d.name, (_Message,), ns)

    def _module(names):
        for name, enum in DESCRIPTOR.enum_types_by_name.items():
            names["_" + name.upper()] = enum
            names[name] = _EnumTypeWrapper(enum)
            for value in enum.values:
                names[value.name] = value.number
        for name, message in DESCRIPTOR.message_types_by_name.items():
            names[name] = _build(message, "", names, name.upper())

    _module(globals())
    del _build, _module, _MessageMeta, _pool, _EnumTypeWrapper, _Message
else:
    from pynetbuilder.proto import caffe_protoc_pb2 as _protoc

    globals().update({{k: v for k, v in vars(_protoc).items() if not k.startswith("__")}})
    del _protoc
del _api
'''


# ---------------------------------------------------------------- debian


def ensure_debian_packages() -> None:
    try:
        debian.ensure(DEBIAN_PACKAGES, log)
    except debian.AptError as exc:
        raise SetupError(str(exc)) from None


# ---------------------------------------------------------------- build


def python_abi() -> dict[str, str]:
    import numpy

    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "python_include": sysconfig.get_paths()["include"],
        "python_libdir": sysconfig.get_config_var("LIBDIR") or "",
        "numpy_include": numpy.get_include(),
        "numpy_major": numpy.__version__.split(".")[0],
    }


def build_key(abi: dict[str, str]) -> str:
    text = repr((CAFFE_VERSION, CAFFE_SHA256, sorted(BUILD_OPTIONS.items()), abi["python"],
                 abi["numpy_major"], abi["python_libdir"]))
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"caffe-{CAFFE_VERSION}-py{abi['python'].replace('.', '')}-{digest}"


@dataclass(frozen=True)
class CudaPlan:
    """What a CUDA build uses: the toolkit, the architectures, the libraries."""

    toolkit: caffe_cuda.Toolkit
    archs: tuple[int, ...]
    libraries: list[caffe_cuda.Found]


def cuda_build_key(abi: dict[str, str], plan: CudaPlan) -> str:
    text = repr((CAFFE_VERSION, CAFFE_SHA256, sorted(CUDA_BUILD_OPTIONS.items()), abi["python"],
                 abi["numpy_major"], abi["python_libdir"], plan.toolkit.version, plan.archs,
                 [f.soname for f in plan.libraries], CUDA_PATCH_REVISION))
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    cuda = "".join(map(str, plan.toolkit.version))
    return f"caffe-{CAFFE_VERSION}-cuda{cuda}-py{abi['python'].replace('.', '')}-{digest}"


def makefile_config(abi: dict[str, str], options: dict[str, str] = BUILD_OPTIONS,
                    extra: Sequence[str] = ()) -> str:
    py = abi["python"]
    lines = [f"{k} := {v}" for k, v in options.items()]
    lines += [
        "BLAS_INCLUDE := /usr/include/x86_64-linux-gnu/openblas-pthread",
        f"PYTHON_INCLUDE := {abi['python_include']} {abi['numpy_include']}",
        f"PYTHON_LIB := {abi['python_libdir']}",
        f"PYTHON_LIBRARIES := boost_python{py.replace('.', '')} python{py}",
        "INCLUDE_DIRS := $(PYTHON_INCLUDE) /usr/local/include /usr/include/hdf5/serial",
        "LIBRARY_DIRS := $(PYTHON_LIB) /usr/local/lib /usr/lib "
        "/usr/lib/x86_64-linux-gnu/hdf5/serial /usr/lib/x86_64-linux-gnu",
        "BUILD_DIR := build",
        "DISTRIBUTE_DIR := distribute",
        "Q ?= @",
        *extra,
    ]
    return "\n".join(lines) + "\n"


def cuda_config(abi: dict[str, str], cuda: CudaPlan, src: Path, staging: Path) -> str:
    """Patch the unpacked source for today's CUDA and cuDNN, link the libraries into
    ``staging/cuda-deps`` and return the CUDA Makefile.config."""
    caffe_cuda.apply_patches(src)
    include, lib = caffe_cuda.stage_libraries(cuda.libraries, cuda.toolkit, staging / CUDA_DEPS)
    rpath = caffe_cuda.runtime_dirs(cuda.libraries, cuda.toolkit)
    extra = caffe_cuda.makefile_lines(cuda.toolkit, cuda.archs, include, lib, rpath)
    return makefile_config(abi, CUDA_BUILD_OPTIONS, extra)


def run_make(src: Path, target: list[str], logfile: Path, total: int, label: str,
             after: str = "nothing was cached; fix the cause and run again") -> None:
    """Run make, echoing one progress line per compiled file."""
    env = dict(os.environ, LC_ALL="C")
    count = 0
    start = time.monotonic()
    with logfile.open("a") as logfh:
        logfh.write(f"\n### make {' '.join(target)}\n")
        proc = subprocess.Popen(
            ["make", *target], cwd=src, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            logfh.write(line)
            m = re.match(r"(CXX|NVCC|LD|AR|PROTOC|CXX/LD|PROTOC \(python\)|TOUCH)\b.*?(\S+)$",
                         line)
            if m:
                count += 1
                elapsed = int(time.monotonic() - start)
                shown = f"[{count:>3}/{total}]" if total else f"[{count:>3}]"
                print(f"  {label} {shown} {elapsed:>4}s {line.strip()}", file=sys.stderr,
                      flush=True)
        rc = proc.wait()
    if rc != 0:
        tail = [ln.rstrip() for ln in logfile.read_text(errors="replace").splitlines()
                if "error" in ln.lower()][-3:]
        for ln in tail:
            print(f"    {ln}", file=sys.stderr)
        raise SetupError(
            f"`make {' '.join(target)}` failed with exit {rc} while building Caffe; "
            f"full log: {logfile} ({after})"
        )


def extract_safely(tar: tarfile.TarFile, target: Path) -> None:
    """Extract plain files and folders inside ``target`` only (the archive's sha256 is
    checked already; this guards the extraction itself).  Python 3.11.4 and later
    do it with the "data" filter; older 3.11 releases (Debian 12 ships 3.11.2) lack
    it, so each member is checked here first."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(target, filter="data")
        return
    root = target.resolve()
    for member in tar.getmembers():
        where = (root / member.name).resolve()
        if not where.is_relative_to(root) or not (member.isfile() or member.isdir()):
            raise SystemExit(f"refusing to extract {member.name!r} from {tar.name}: "
                             "only plain files and folders inside the archive's folder")
    tar.extractall(target)


def build_caffe(abi: dict[str, str], final: Path, cuda: CudaPlan | None = None) -> None:
    archive = fetch_sdist()
    ensure_debian_packages()
    final.parent.mkdir(parents=True, exist_ok=True)
    logdir = cache_root() / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    logfile = logdir / f"{final.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    if cuda is None:
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-building-"))
        resume = False
        after = "nothing was cached; fix the cause and run again"
    else:
        # A CUDA build is long: a failed one keeps what it compiled in this hidden folder
        # (never a cache entry: no BUILD_OK, another name) and the next run continues it.
        staging = final.parent / f".{final.name}-partial"
        resume = (staging / CUDA_PREPARED).exists()
        if not resume:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
        after = (f"no usable build was cached; the compiled part is kept in {staging}, "
                 "and the next run continues it")
    try:
        if cuda is None:
            log(f"building Caffe {CAFFE_VERSION} (about 8 minutes on 2 cores); log: {logfile}")
        else:
            minutes = CUDA_MINUTES[0] + CUDA_MINUTES[1] * (len(cuda.archs) - 1)
            log(f"building Caffe {CAFFE_VERSION} with CUDA {cuda.toolkit.label} for "
                f"{caffe_cuda.describe_archs(cuda.archs)} (long: about {minutes} minutes on 2 "
                f"free cores; CUDA_ARCHS=... builds fewer); log: {logfile}")
            for f in cuda.libraries:
                log(f"  {f.library.name}: {f.lib / f.soname} ({f.origin})")
        src = staging / SOURCE_DIR_NAME
        if resume:
            log(f"continuing the interrupted build in {staging}")
        else:
            with tarfile.open(archive) as tar:
                extract_safely(tar, staging)
            makefile = src / "Makefile"
            text = makefile.read_text()
            # The sdist forces BUILD_DIR = temp after including Makefile.config.
            text = re.sub(r"^BUILD_DIR = temp\n", "", text, flags=re.M)
            makefile.write_text(text)
            # Old-style generated code that protobuf >= 4 rejects; make pycaffe regenerates it.
            (src / "python" / "caffe" / "proto" / "caffe_pb2.py").unlink(missing_ok=True)
            if cuda is None:
                (src / "Makefile.config").write_text(makefile_config(abi))
            else:
                (src / "Makefile.config").write_text(cuda_config(abi, cuda, src, staging))
                (staging / CUDA_PREPARED).write_text("source unpacked, patched, configured\n")
            shutil.rmtree(src / ".git", ignore_errors=True)
        jobs = str(max(1, os.cpu_count() or 1))
        n_sources = sum(1 for _ in (src / "src" / "caffe").rglob("*.cpp")
                        if "/test/" not in str(_)) + len(list((src / "tools").glob("*.cpp")))
        if cuda is not None:
            n_sources += sum(1 for _ in (src / "src" / "caffe").rglob("*.cu")
                             if "/test/" not in str(_))
        run_make(src, ["-j", jobs, "all"], logfile, n_sources + 4, "caffe", after)
        run_make(src, ["-j", jobs, "pycaffe"], logfile, 0, "pycaffe", after)
        # Drop object files: they are large and nothing uses them after linking.
        for obj in (src / "build").resolve().rglob("*.o"):
            obj.unlink()
        shutil.rmtree(staging / CUDA_DEPS, ignore_errors=True)  # build-time links only
        (staging / CUDA_PREPARED).unlink(missing_ok=True)
        (staging / "BUILD_OK").write_text(repr(abi) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        log(f"Caffe built and cached in {final}")
    except BaseException:
        if cuda is None or not (staging / CUDA_PREPARED).exists():
            shutil.rmtree(staging, ignore_errors=True)
        raise


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def link_into_venv(final: Path) -> None:
    """Link the venv we run in (cmd_build checked it is one) to the cached build."""
    src = final / SOURCE_DIR_NAME
    pth = site_packages() / "pynetbuilder_caffe.pth"
    pth.write_text(f"{src / 'python'}\n")
    tool = src / "build" / "tools" / "caffe"
    wrapper = Path(sys.prefix) / "bin" / "caffe"
    # The caffe tool embeds the base interpreter, which does not see the venv:
    # hand it the venv's packages so Python layers can import numpy and friends,
    # and this source tree (the editable install's .pth file is not read for a
    # PYTHONPATH entry) so pynetbuilder's own Python layers import.
    project = Path(__file__).resolve().parents[1]
    wrapper.write_text(
        "#!/bin/sh\n"
        "# Written by tools/caffe_setup.py: real Caffe's command-line tool.\n"
        f'PYTHONPATH="{site_packages()}:{src / "python"}:{project}'
        '${PYTHONPATH:+:$PYTHONPATH}" '
        f'exec "{tool}" "$@"\n'
    )
    wrapper.chmod(0o755)


def verify(final: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import caffe, sys; sys.stdout.write(caffe.__file__)"],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SetupError(
            f"`import caffe` fails after the build ({last}); delete {final} and run again"
        )
    wrapper = Path(sys.prefix) / "bin" / "caffe"
    proc = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"`caffe --version` fails ({proc.stderr.strip()[-200:]})")
    log(f"ready: import caffe -> {proc.stdout.strip() or 'ok'}; {wrapper}")


def link_cuda_into_venv(final: Path, plan: CudaPlan) -> Path:
    """Write ``<venv>/bin/caffe-cuda``: the CUDA build's tool with this environment's
    CUDA libraries first on LD_LIBRARY_PATH and its own pycaffe for Python layers
    (the CPU build's pycaffe must not load into a CUDA Caffe process)."""
    src = final / SOURCE_DIR_NAME
    tool = src / "build" / "tools" / "caffe"
    wrapper = Path(sys.prefix) / "bin" / CUDA_TOOL
    libs = ":".join(str(d) for d in caffe_cuda.runtime_dirs(plan.libraries, plan.toolkit))
    project = Path(__file__).resolve().parents[1]
    staged = wrapper.with_name(f".{wrapper.name}.tmp")
    staged.write_text(
        "#!/bin/sh\n"
        "# Written by tools/caffe_setup.py build --cuda: real Caffe's command-line tool "
        f"built with CUDA {plan.toolkit.label} for {caffe_cuda.describe_archs(plan.archs)}.\n"
        + "".join(f"# {f.library.name}: {f.lib / f.soname} ({f.origin})\n"
                  for f in plan.libraries)
        + f'LD_LIBRARY_PATH="{libs}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" '
        f'PYTHONPATH="{site_packages()}:{src / "python"}:{project}'
        '${PYTHONPATH:+:$PYTHONPATH}" '
        f'exec "{tool}" "$@"\n'
    )
    staged.chmod(0o755)
    os.replace(staged, wrapper)
    return wrapper


def verify_cuda(wrapper: Path) -> None:
    """The CUDA tool starts, and ``device_query`` lists the GPUs or says there is none."""
    env = dict(os.environ, GLOG_logtostderr="1")
    proc = subprocess.run([str(wrapper), "device_query"], capture_output=True, text=True,
                          env=env)
    out = proc.stdout + proc.stderr
    if proc.returncode == 0 and "Device id:" in out:
        names = re.findall(r"Name:\s+(.+)", out)
        log(f"ready: {wrapper} sees {len(names)} GPU(s): {', '.join(names)}")
    elif proc.returncode == 1 and "no CUDA device" in out:
        reason = re.search(r"no CUDA device.*", out)
        log(f"ready: {wrapper} starts; this machine has {reason[0] if reason else 'no GPU'}")
    else:
        last = (out.strip().splitlines() or ["no output"])[-1]
        raise SetupError(f"`{wrapper} device_query` fails (exit {proc.returncode}: {last})")


def cuda_plan(args: argparse.Namespace) -> CudaPlan:
    toolkit = caffe_cuda.find_toolkit()
    wanted = caffe_cuda.parse_archs(args.arch) if args.arch else None
    archs = caffe_cuda.choose_archs(toolkit, wanted)
    return CudaPlan(toolkit, archs, caffe_cuda.find_libraries(toolkit, log=log))


def cmd_build(args: argparse.Namespace) -> None:
    if sys.prefix == sys.base_prefix:
        raise SetupError(
            "run this with the project's virtual environment (.venv/bin/python), "
            "not the system interpreter; `make caffe` does"
        )
    if args.arch and not args.cuda:
        raise SetupError("--arch chooses GPU architectures of the CUDA build: add --cuda")
    abi = python_abi()
    if args.cuda:
        plan = cuda_plan(args)
        final = cache_root() / cuda_build_key(abi, plan)
        if (final / "BUILD_OK").exists() and not args.force:
            log(f"using cached CUDA Caffe build {final}")
        else:
            build_caffe(abi, final, plan)
        verify_cuda(link_cuda_into_venv(final, plan))
        return
    final = cache_root() / build_key(abi)
    if (final / "BUILD_OK").exists() and not args.force:
        log(f"using cached Caffe build {final}")
    else:
        build_caffe(abi, final)
    link_into_venv(final)
    verify(final)


def cmd_schema(args: argparse.Namespace) -> None:
    protoc = SCHEMA_OUT.with_name(SCHEMA_PROTOC_NAME)
    if SCHEMA_OUT.exists() and protoc.exists() and not args.force and \
            SCHEMA_OUT.read_text().split("\n", 2)[1] == f"# {SCHEMA_LOADER_VERSION}":
        return
    generate_schema()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("schema", cmd_schema), ("build", cmd_build)):
        p = sub.add_parser(name)
        p.add_argument("--force", action="store_true", help="redo even if cached")
        p.set_defaults(func=fn)
        if name == "build":
            p.add_argument("--cuda", action="store_true",
                           help="the CUDA variant (needs nvcc): <venv>/bin/caffe-cuda")
            p.add_argument("--arch", help="GPU architectures of the CUDA build, e.g. "
                           "\"75 90\" (default: the common ones nvcc compiles)")
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (SetupError, caffe_cuda.CudaError) as exc:
        print(f"caffe_setup: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("caffe_setup: error: interrupted; nothing half-built was kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
