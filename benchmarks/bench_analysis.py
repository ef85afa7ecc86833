#!/usr/bin/env python3
"""How fast is sizing a net?  pynetbuilder's own analysis vs the original way.

The original pynetbuilder counted parameters and flops by instantiating the net
in compiled Caffe (``caffe.Net``) and summing its blobs.  pynetbuilder builds the
net from legos and infers every shape itself.  Both are timed here, side by side
in one run, on ResNet-50; then our build + analysis alone on deeper nets, to show
its cost grows linearly with depth (time per layer stays flat).

The methods are timed in interleaved rounds (each round runs every method), so a
spell of load on the machine falls on all of them alike; every single run starts
after ``gc.collect()``.  Per method the median and the minimum over all runs are
printed, and the speed-ups from both: the minimum is the usual figure for
CPU-bound code (Python's ``timeit`` documentation: higher values are "typically
not caused by variability in Python's speed, but by other processes
interfering"), the median shows what a run on a busy machine may see.

Caffe's ways run in a child process (this script with ``--caffe-worker``) that
times each run itself and answers per request: our methods are timed in a process
that never loads Caffe, as a pynetbuilder user's never does (a process holding
Caffe, numpy and pycaffe's objects makes our build about a tenth slower).

    .venv/bin/python benchmarks/bench_analysis.py [--rounds N]      (make bench)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pynetbuilder.caffe_count import legacy_counts_from_caffe  # noqa: E402
from pynetbuilder.models import resnet_imagenet  # noqa: E402
from pynetbuilder.report import analyze  # noqa: E402
from pynetbuilder.schema import parse_net, to_text  # noqa: E402

DEPTHS = {  # name: blocks per stage (bottleneck, width 256)
    "ResNet-50": (3, 4, 6, 3),
    "ResNet-101": (3, 4, 23, 3),
    "ResNet-152": (3, 8, 36, 3),
    "ResNet-1001": (3, 4, 323, 3),
}


def ours(blocks: tuple[int, ...]) -> tuple[int, int, int]:
    net = resnet_imagenet("bottleneck", 256, blocks)
    t = net.report().totals
    return t.legacy_params, t.legacy_flops, t.layers


def ours_from_prototxt(path: Path) -> tuple[int, int]:
    t = analyze(parse_net(path.read_text())).totals
    return t.legacy_params, t.legacy_flops


def the_original_way(caffe, prototxt: str) -> tuple[int, int]:
    """What the original's ``get_complexity(prototxt_file=...)`` did: instantiate the
    net in Caffe (TEST phase), read the prototxt text again with Caffe's own
    ``caffe_pb2`` (it took each layer's type from there), sum the blobs."""
    from caffe.proto import caffe_pb2 as pycaffe_pb2
    from google.protobuf import text_format

    net = caffe.Net(prototxt, caffe.TEST)
    text_format.Merge(Path(prototxt).read_text(), pycaffe_pb2.NetParameter())
    return legacy_counts_from_caffe(net)


def caffe_net_alone(caffe, prototxt: str) -> tuple[int, int]:
    return legacy_counts_from_caffe(caffe.Net(prototxt, caffe.TEST))


class Timings:
    """Every run's time and the last result, per method."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.results: dict[str, object] = {}

    def add(self, method: str, seconds: float, result: object) -> None:
        self.times.setdefault(method, []).append(seconds)
        self.results[method] = result

    def run(self, method: str, fn: Callable[[], object], repeat: int) -> None:
        for _ in range(repeat):
            gc.collect()
            start = time.perf_counter()
            result = fn()
            self.add(method, time.perf_counter() - start, result)

    def median(self, method: str) -> float:
        return statistics.median(self.times[method])

    def best(self, method: str) -> float:
        return min(self.times[method])


CAFFE_WAYS = {
    "original": ("original: get_complexity (caffe.Net + re-read)", the_original_way),
    "alone": ("caffe.Net(deploy.prototxt) + sum, alone", caffe_net_alone),
}


def caffe_worker(prototxt: str) -> None:
    """The child process: per line on stdin (a key of CAFFE_WAYS), one timed run;
    answers ``seconds params flops``."""
    import caffe

    caffe.set_mode_cpu()
    for line in sys.stdin:
        _, way = CAFFE_WAYS[line.strip()]
        gc.collect()
        start = time.perf_counter()
        params, flops = way(caffe, prototxt)
        print(time.perf_counter() - start, params, flops, flush=True)


class CaffeWorker:
    def __init__(self, prototxt: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--caffe-worker", str(prototxt)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def run(self, timings: Timings, key: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(key + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().split()
        if len(answer) != 3:
            raise SystemExit(f"the Caffe worker failed (exit status {self.process.wait()})")
        timings.add(CAFFE_WAYS[key][0], float(answer[0]), (int(answer[1]), int(answer[2])))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9,
                        help="interleaved rounds (each: 10 runs of ours, 1 of each Caffe way)")
    parser.add_argument("--caffe-worker", metavar="PROTOTXT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.caffe_worker:
        caffe_worker(args.caffe_worker)
        return
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    assert "caffe" not in sys.modules, "our methods are timed without Caffe loaded"
    blocks = DEPTHS["ResNet-50"]
    built = resnet_imagenet("bottleneck", 256, blocks).to_proto("deploy")
    ours_name = "pynetbuilder: build from legos + analyse"
    methods: list[tuple[str, Callable[[], object], int]] = [
        (ours_name, lambda: ours(blocks)[:2], 10),
        ("pynetbuilder: analyse the built NetParameter",
         lambda: (lambda x: (x.legacy_params, x.legacy_flops))(analyze(built).totals), 10),
    ]
    t = Timings()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deploy.prototxt"
        path.write_text(to_text(built))
        methods.append(("pynetbuilder: read deploy.prototxt + analyse",
                        lambda: ours_from_prototxt(path), 1))
        worker = CaffeWorker(path)
        try:
            for _ in range(args.rounds):
                for name, fn, repeat in methods:
                    t.run(name, fn, repeat)
                for key in CAFFE_WAYS:
                    worker.run(t, key)
        finally:
            worker.close()
    names = [name for name, _, _ in methods] + [name for name, _ in CAFFE_WAYS.values()]
    results = {name: t.results[name] for name in names}
    assert len(set(results.values())) == 1, f"the methods disagree: {results}"
    params, flops = results[ours_name]  # type: ignore[misc]
    print(f"ResNet-50, {args.rounds} interleaved rounds; every method gives params {params:,} "
          f"flops {flops:,} (legacy figures)\n")
    print(f"{'method':<48} {'runs':>5} {'median':>9} {'min':>9}")
    for name in names:
        print(f"{name:<48} {len(t.times[name]):>5} {t.median(name) * 1e3:>7.1f}ms "
              f"{t.best(name) * 1e3:>7.1f}ms")
    for key, label in (("original", "the original way"), ("alone", "caffe.Net alone")):
        baseline = CAFFE_WAYS[key][0]
        print(f"build from legos + analyse vs {label}: "
              f"{t.median(baseline) / t.median(ours_name):.0f}x faster by medians, "
              f"{t.best(baseline) / t.best(ours_name):.0f}x by minimums")
    print()
    print(f"{'net':<12} {'Caffe layers':>12} {'median':>9} {'min':>9} {'per layer':>10}")
    for name, depth_blocks in DEPTHS.items():
        d = Timings()
        d.run(name, lambda b=depth_blocks: ours(b), 9 if args.rounds > 1 else 1)
        layers = d.results[name][2]  # type: ignore[index]
        print(f"{name:<12} {layers:>12} {d.median(name) * 1e3:>7.1f}ms "
              f"{d.best(name) * 1e3:>7.1f}ms {d.best(name) / layers * 1e6:>8.1f}us")


if __name__ == "__main__":
    main()
