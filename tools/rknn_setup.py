#!/usr/bin/env python3
"""Build the virtual environment in which Rockchip's RKNN-Toolkit2 judges nets written
with ``--target rknn2`` (``tests/test_targets_rknn.py``).

``python tools/rknn_setup.py`` (run with the project's ``.venv/bin/python``; ``make
rknn`` and ``make test`` do this) creates ``.venv-rknn/`` beside ``.venv/``:

- RKNN-Toolkit2 2.5.0 from PyPI (the cp311 wheel, its sha256 checked) and the
  packages it imports, at the versions its metadata allows (protobuf <= 4.25.4, numpy
  <= 1.26.4, onnx <= 1.18.0: they conflict with the project's own environment, hence a
  second one), every one pinned and installed without dependency resolution;
  ``opencv-python-headless`` in place of the ``opencv-python`` it names (the same
  ``cv2`` without the GUI libraries);
- no torch download: the toolkit imports torch at start-up (``rknn.api.rknn_utils``,
  ``gdq_quant``) but its Caffe front end never runs it, so the judge borrows the
  project environment's torch (and the packages torch needs) through a ``.pth`` file
  naming a folder of links.  PyPI's torch for Linux is the CUDA build (about 800 MB
  plus 3 GB of NVIDIA wheels), too big to download a second time for an import.

Idempotent: a stamp records the pins, the interpreter and the borrowed torch; when
they match, the script only compares them (well under a second) and prints nothing.
Anything else rebuilds the environment from scratch (about 180 MB of wheels, 38 MB of
them the toolkit's; 30 to 50 s where this was written, 630 MB on disk) and checks that
``from rknn.api import RKNN`` works.

Every failure ends with one line ``rknn_setup: error: ...`` saying what failed and
what to do, and exit status 1.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from pynetbuilder.interrupts import die_with_parent  # noqa: E402  (the children die with it)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from setup_script import SetupError, no_argument_main  # noqa: E402  beside this script

JUDGE = REPO_ROOT / ".venv-rknn"
STAMP = JUDGE / ".installed"
TORCH_LINKS = JUDGE / "project-torch"  # links to the project venv's torch and its needs

PYTHON = (3, 11)  # the toolkit's wheel below is cp311, and torch is borrowed from .venv
TOOLKIT = "rknn-toolkit2==2.5.0"
TOOLKIT_SHA256 = "21922dd3037503a2934fea24cbbf6eccda586158178636ae28a2ac658e710055"
# everything the toolkit imports on the Caffe path, and what those need, resolved once
# within the toolkit's metadata (torch excepted, see above)
PINS = (
    "numpy==1.26.4",
    "protobuf==4.25.4",
    "onnx==1.18.0",
    "onnxruntime==1.26.0",  # the newest that accepts protobuf 4
    "opencv-python-headless==4.10.0.84",  # the newest that accepts numpy 1.x
    "scipy==1.17.1",
    "psutil==7.2.2",
    "ruamel.yaml==0.19.1",
    "tqdm==4.70.1",
    "fast-histogram==0.14",
    "flatbuffers==25.12.19",
    "packaging==26.4",
    "typing_extensions==4.16.0",
)


def log(msg: str) -> None:
    print(f"rknn_setup: {msg}", file=sys.stderr, flush=True)


def judge_python() -> Path:
    return JUDGE / "bin" / "python"


def torch_distribution() -> metadata.Distribution:
    try:
        return metadata.distribution("torch")
    except metadata.PackageNotFoundError:
        raise SetupError(f"torch is not installed in {sys.prefix} (the toolkit imports it; "
                         "run `make` to set up the project environment first)") from None


def stamp_key() -> dict:
    torch = torch_distribution()
    return {"toolkit": TOOLKIT, "sha256": TOOLKIT_SHA256, "pins": list(PINS),
            "python": list(sys.version_info[:2]), "torch": torch.version,
            "torch_at": str(Path(str(torch.locate_file(""))).resolve())}


def is_current() -> bool:
    try:
        return judge_python().exists() and json.loads(STAMP.read_text()) == stamp_key()
    except (OSError, ValueError):
        return False


def base_interpreter() -> str:
    if sys.version_info[:2] != PYTHON:
        raise SetupError(f"this is Python {sys.version_info[0]}.{sys.version_info[1]}; the "
                         f"judge needs Python {PYTHON[0]}.{PYTHON[1]} (RKNN-Toolkit2's cp311 "
                         "wheel, and the project's torch is borrowed); run it with the "
                         "project's .venv/bin/python")
    return getattr(sys, "_base_executable", None) or sys.executable


def run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=die_with_parent)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        raise SetupError(f"{what} failed: {tail[0]}")


def install() -> None:
    python = str(judge_python())
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
           "--no-deps", "--only-binary", ":all:"]
    with tempfile.TemporaryDirectory() as tmp:
        pinned = Path(tmp) / "toolkit.txt"
        pinned.write_text(f"{TOOLKIT} --hash=sha256:{TOOLKIT_SHA256}\n")
        run(pip + ["--require-hashes", "-r", str(pinned)],
            f"installing {TOOLKIT} (cp311 wheel, sha256 {TOOLKIT_SHA256[:12]}...)")
    run(pip + list(PINS), "installing the toolkit's pinned dependencies")


def closure(dist: metadata.Distribution) -> list[metadata.Distribution]:
    """``dist`` and every distribution it requires that is installed here, transitively:
    requirements tied to an extra only where the extra was asked for (other markers are
    not evaluated: what is not installed is skipped, a link too many costs nothing)."""
    seen: dict[str, metadata.Distribution] = {}
    todo: list[tuple[metadata.Distribution, set[str]]] = [(dist, set())]
    while todo:
        d, extras = todo.pop()
        key = re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower()
        if key in seen:
            continue
        seen[key] = d
        for req in d.requires or []:
            m = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?[^;]*(?:;(.*))?", req)
            if not m:
                continue
            wanted = re.findall(r"extra\s*==\s*[\"']([^\"']+)", m.group(3) or "")
            if wanted and not set(wanted) & extras:
                continue
            try:
                todo.append((metadata.distribution(m.group(1)),
                             {e.strip() for e in (m.group(2) or "").split(",") if e.strip()}))
            except metadata.PackageNotFoundError:
                continue
    return list(seen.values())


def link_torch() -> None:
    """A folder of links to the top-level modules of torch and what it needs, named by
    a ``.pth`` file: appended to sys.path after the judge's own site-packages, so the
    judge's numpy and protobuf win."""
    site = next(JUDGE.glob("lib/python*/site-packages"))
    TORCH_LINKS.mkdir()
    for dist in closure(torch_distribution()):
        for file in dist.files or []:
            top = file.parts[0]
            if (top.endswith((".dist-info", ".data", ".pth")) or top in ("..", "__pycache__")
                    or (site / top).exists() or (TORCH_LINKS / top).exists()):
                continue
            source = Path(str(dist.locate_file(top)))
            if source.exists():
                (TORCH_LINKS / top).symlink_to(source)
    (site / "project-torch.pth").write_text(f"{TORCH_LINKS}\n")


def smoke_test() -> str:
    code = ("import numpy, torch; from rknn.api import RKNN; from importlib import metadata; "
            "print(numpy.__version__, torch.__version__, metadata.version('rknn-toolkit2'))")
    proc = subprocess.run([str(judge_python()), "-c", code], capture_output=True, text=True,
                          preexec_fn=die_with_parent,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise SetupError(f"the judge environment does not import the toolkit: {tail[0]}")
    return proc.stdout.strip()


def ensure() -> None:
    if is_current():
        return
    python = base_interpreter()
    log(f"building {JUDGE.name}/ ({TOOLKIT} and its pinned dependencies, ~180 MB)")
    shutil.rmtree(JUDGE, ignore_errors=True)
    run([python, "-m", "venv", str(JUDGE)], f"creating {JUDGE}")
    install()
    link_torch()
    numpy_v, torch_v, toolkit_v = smoke_test().split()
    STAMP.write_text(json.dumps(stamp_key(), indent=1) + "\n")
    log(f"ready: RKNN-Toolkit2 {toolkit_v}, numpy {numpy_v}, torch {torch_v} (borrowed)")


def main(argv: list[str] | None = None) -> int:
    return no_argument_main("rknn_setup.py", __doc__, ensure, argv,
                            after_interrupt="run it again (it starts over)")


if __name__ == "__main__":
    sys.exit(main())
