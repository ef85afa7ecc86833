#!/usr/bin/env python3
"""How long does a pynetbuilder command take, as a whole process?

Times, side by side in one run (interleaved rounds, medians and minimums):

- ``python -c pass`` with the same interpreter (the floor every command pays),
- ``pynetbuilder build resnet_imagenet --num_output_stage1 256`` (builds ResNet-50,
  prints its report; writes nothing),
- ``pynetbuilder analyze ResNet-50-deploy.prototxt`` (the published deploy file),
- importing Caffe's schema alone: the loader ``caffe_pb2`` that ``tools/caffe_setup.py``
  generates (classes made by protobuf's upb extension) and protoc's own module,

each as the ratio to ``python -c pass``.  Bytecode caches are in use, as in a user's
installation: these machines set ``PYTHONDONTWRITEBYTECODE=1``, so the runs get a
cache prefix of their own (``PYTHONPYCACHEPREFIX``) and one warm-up run each.

Two installations, side by side:

- ``venv``: the project's ``.venv`` as ``make`` leaves it.  Its editable install
  puts an import hook in ``site`` (setuptools' ``__editable__`` finder), which
  imports pathlib, re, urllib.parse... at every start of that interpreter, so
  ``python -c pass`` there already pays for modules the commands need;
- ``regular``: a fresh virtual environment of the same interpreter whose only
  addition is a ``.pth`` file naming the source tree and ``.venv``'s
  site-packages, as a regular (non-editable) ``pip install`` gives: no import hook,
  ``python -c pass`` is a bare start.  The honest floor.

``--before TREE`` also times the same two commands with another source tree first
on ``PYTHONPATH`` (an older pynetbuilder, e.g. ``git archive`` of a commit), and the
in-process ResNet-50 build + analyse of both trees (median of 30 per round, in a
child process each): how the README's "speed machinery that pays" figures were
made.

    .venv/bin/python benchmarks/bench_commands.py [--rounds N] [--before TREE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "prototxt" / "ResNet-50-deploy.prototxt"
PYTHON = ROOT / ".venv" / "bin" / "python"
PNB = ROOT / ".venv" / "bin" / "pynetbuilder"

# one schema module by itself (not through the pynetbuilder package, which imports more)
SCHEMA_IMPORT = f"import sys; sys.path.insert(0, {str(ROOT / 'pynetbuilder' / 'proto')!r}); " \
    "import %s"

# The least a Python reader of prototxt does: tokenise with one regex into nested dicts
# of strings.  Not pynetbuilder's reader (it checks every name, type and range against
# Caffe's schema); a floor under any reader, for the README's start-up figures.
LEAST_READER = r"""
import re, sys
token = re.compile(r'\s*(?:#[^\n]*\s*)*(?:([A-Za-z_]\w*)\s*(?::\s*("(?:[^"\\]|\\.)*"'
                   r"|'(?:[^'\\]|\\.)*'|[^\s{}#]+)|:?\s*\{)|(\}))")
stack = [{}]
for m in token.finditer(open(sys.argv[1]).read()):
    name, value, close = m.groups()
    if close:
        stack.pop()
    elif value is not None:
        stack[-1].setdefault(name, []).append(value)
    else:
        stack[-1].setdefault(name, []).append({})
        stack.append(stack[-1][name][-1])
print(len(stack[0]["layer"]))
"""

# analyze's work without its start-up: the same command run again in a warm process
WARM_ANALYZE = """
import contextlib, gc, io, statistics, sys, time
from pynetbuilder.commands import main
times = []
for _ in range(30):
    gc.collect()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        main(["analyze", sys.argv[1]])
    times.append(time.perf_counter() - t0)
print(statistics.median(times))
"""

IN_PROCESS = """
import gc, statistics, time
from pynetbuilder.models import resnet_imagenet
times = []
for _ in range(30):
    gc.collect()
    t0 = time.perf_counter()
    resnet_imagenet("bottleneck", 256, (3, 4, 6, 3)).report().totals
    times.append(time.perf_counter() - t0)
print(statistics.median(times), min(times))
"""


def _env(tree: Path | None, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    env.pop("PYTHONPATH", None)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def _time(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock seconds and CPU seconds (user + system) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _regular_install(where: Path) -> tuple[Path, Path]:
    """A virtual environment of this interpreter seeing pynetbuilder and its
    dependencies through one ``.pth`` of plain paths (no import hook), and the
    console script pip writes for ``pynetbuilder``: (its python, the script)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True,
                          check=True).stdout.strip()
    deps = subprocess.run([str(PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (Path(site) / "pynetbuilder.pth").write_text(f"{ROOT}\n{deps}\n")
    script = where / "bin" / "pynetbuilder"
    script.write_text(PNB.read_text().split("\n", 1)[1])  # pip's script, minus its #! line
    return python, script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--before", type=Path, help="an older source tree to compare")
    args = parser.parse_args()
    build = [str(PNB), "build", "resnet_imagenet", "--num_output_stage1", "256"]
    analyze = [str(PNB), "analyze", str(FIXTURE)]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        here = _env(None, cache / "now")
        regular_python, script = _regular_install(cache / "regular")
        bare = _env(None, cache / "regular-cache")
        cases: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([str(PYTHON), "-c", "pass"], here),
            "build resnet_imagenet": (build, here),
            "analyze ResNet-50-deploy": (analyze, here),
            "regular: python -c pass": ([str(regular_python), "-c", "pass"], bare),
            "regular: build resnet_imagenet": ([str(regular_python), str(script), *build[1:]],
                                               bare),
            "regular: analyze ResNet-50-deploy": ([str(regular_python), str(script),
                                                   *analyze[1:]], bare),
            # Caffe's schema alone: the generated loader, and protoc's own module
            "regular: import schema (loader)": ([str(regular_python), "-c", SCHEMA_IMPORT
                                                 % "caffe_pb2"], bare),
            "regular: import schema (protoc's)": ([str(regular_python), "-c", SCHEMA_IMPORT
                                                   % "caffe_protoc_pb2"], bare),
            # lower bounds for any Python reader of prototxt (see LEAST_READER)
            "regular: import re": ([str(regular_python), "-c", "import re"], bare),
            "regular: least reader (re + dicts)": ([str(regular_python), "-c", LEAST_READER,
                                                    str(FIXTURE)], bare),
        }
        if args.before:
            old = _env(args.before.resolve(), cache / "before")
            cases["build resnet_imagenet (before)"] = (build, old)
            cases["analyze ResNet-50-deploy (before)"] = (analyze, old)
        for cmd, env in cases.values():  # warm-up: fills the bytecode caches
            _time(cmd, env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        in_process: dict[str, list[float]] = {"now": [], "before": []}
        for _ in range(args.rounds):
            for name, (cmd, env) in cases.items():
                wall, used = _time(cmd, env)
                times[name].append(wall)
                cpu[name].append(used)
            if args.before:
                for label, env in (("now", here), ("before", old)):
                    out = subprocess.run([str(PYTHON), "-c", IN_PROCESS], env=env,
                                         capture_output=True, text=True, check=True).stdout
                    in_process[label].append(float(out.split()[0]))
        warm = subprocess.run([str(regular_python), "-c", WARM_ANALYZE, str(FIXTURE)],
                              env=bare, capture_output=True, text=True, check=True).stdout
    print(f"whole process, {args.rounds} interleaved rounds: wall-clock median / min and the "
          "ratio of medians to python -c pass of the same installation; CPU time (user + "
          "system) median and its ratio")
    for name, values in times.items():
        base = "regular: python -c pass" if name.startswith("regular") else "python -c pass"
        floor, cpu_floor = statistics.median(times[base]), statistics.median(cpu[base])
        med, used = statistics.median(values), statistics.median(cpu[name])
        print(f"  {name:36s} {med * 1e3:7.1f} ms / {min(values) * 1e3:7.1f} ms "
              f"{med / floor:5.2f}x   cpu {used * 1e3:6.1f} ms {used / cpu_floor:5.2f}x")
    if args.before:
        for cmd in ("build resnet_imagenet", "analyze ResNet-50-deploy"):
            now = statistics.median(times[cmd])
            before = statistics.median(times[f"{cmd} (before)"])
            print(f"  {cmd}: before / now = {before / now:.3f} "
                  f"(before saves {(now - before) / now:+.1%} of now)")
        now, before = (statistics.median(in_process[k]) for k in ("now", "before"))
        print(f"in-process ResNet-50 build + analyse (median of round medians): now "
              f"{now * 1e3:.2f} ms, before {before * 1e3:.2f} ms")
    print(f"analyze ResNet-50-deploy again in a warm process (its work without start-up, "
          f"median of 30): {float(warm) * 1e3:.1f} ms")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
