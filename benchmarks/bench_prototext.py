#!/usr/bin/env python3
"""How fast is reading a prototxt?  protobuf's text parser vs pynetbuilder's, and
analysing the file in-process vs instantiating it in Caffe.

For two deploy files, the published ResNet-50 (shared/fixtures) and a ResNet-1001
(bottleneck, built by the library: ``pynetbuilder build resnet --depth 1001
--block_type bottleneck``), four ways are timed side by side:

* ``text_format.Parse``: protobuf's pure-Python text parser, what pynetbuilder used;
* ``prototext.parse``: pynetbuilder's reader (the same message, byte for byte: checked);
* ``inspect.load``: what ``pynetbuilder analyze FILE`` does in-process: read the file,
  parse it, filter the phase, check the topology, infer every shape and cost;
* ``caffe.Net(FILE, caffe.TEST)``: Caffe's C++ parser and net set-up, as the original
  pynetbuilder sized a net.  It runs in a child process (this script with
  ``--caffe-worker``) that times each run itself, so our ways are timed in a process
  that never loads Caffe; the child also reports the net's legacy counts (outside the
  timing), which must equal our analysis's.

The ways are timed in interleaved rounds (each round runs every way on every file
once, after one untimed warm-up round), each run after ``gc.collect()``; per way the
median and the minimum over the rounds are printed (see bench_analysis.py on why
both).

    .venv/bin/python benchmarks/bench_prototext.py [--rounds N]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf import text_format  # noqa: E402

from pynetbuilder import models, prototext  # noqa: E402
from pynetbuilder.caffe_count import legacy_counts_from_caffe  # noqa: E402
from pynetbuilder.graph import prototxt_files  # noqa: E402
from pynetbuilder.inspect import load  # noqa: E402
from pynetbuilder.schema import caffe_pb2  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESNET_50 = ROOT.parent / "shared" / "fixtures" / "prototxt" / "ResNet-50-deploy.prototxt"
PROTOBUF = "protobuf text_format.Parse"
OURS = "pynetbuilder prototext.parse"
ANALYSE = "pynetbuilder analyse in-process"
CAFFE = "caffe.Net(file, TEST) (child)"
WAYS = (PROTOBUF, OURS, ANALYSE, CAFFE)


def protobuf_parse(text: str) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    text_format.Parse(text, net)
    return net


def our_parse(text: str) -> caffe_pb2.NetParameter:
    return prototext.parse(text, caffe_pb2.NetParameter())


def analyse(path: Path) -> tuple[int, int, int]:
    totals = load(str(path)).report.totals
    return totals.legacy_params, totals.legacy_flops, totals.layers


def timed(fn: Callable[..., object], *args: object) -> tuple[float, object]:
    gc.collect()
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def caffe_worker() -> None:
    """The child: per prototxt path on stdin, one timed ``caffe.Net``; answers
    ``seconds legacy_params legacy_flops``."""
    import caffe

    caffe.set_mode_cpu()
    for line in sys.stdin:
        seconds, net = timed(caffe.Net, line.strip(), caffe.TEST)
        params, flops = legacy_counts_from_caffe(net)
        del net
        print(seconds, params, flops, flush=True)


class CaffeWorker:
    def __init__(self) -> None:
        env = {**os.environ, "GLOG_minloglevel": "2"}  # Caffe's set-up log off
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--caffe-worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )

    def net(self, path: Path) -> tuple[float, tuple[int, int]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().split()
        if len(answer) != 3:
            raise SystemExit(f"the Caffe worker failed (exit status {self.process.wait()})")
        return float(answer[0]), (int(answer[1]), int(answer[2]))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timed rounds")
    parser.add_argument("--caffe-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.caffe_worker:
        caffe_worker()
        return
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    assert "caffe" not in sys.modules, "our ways are timed without Caffe loaded"
    with tempfile.TemporaryDirectory() as tmp:
        resnet_1001 = Path(tmp) / "resnet1001-deploy.prototxt"
        net = models.build("resnet", depth=1001, block_type="bottleneck")
        resnet_1001.write_text(prototxt_files(net)["deploy.prototxt"])
        files = {"ResNet-50": RESNET_50, "ResNet-1001": resnet_1001}
        texts = {name: path.read_text() for name, path in files.items()}
        times: dict[tuple[str, str], list[float]] = {}
        results: dict[tuple[str, str], object] = {}
        worker = CaffeWorker()
        try:
            for round_ in range(args.rounds + 1):  # round 0 warms up, untimed
                for name, path in files.items():
                    for way in WAYS:
                        if way == CAFFE:
                            seconds, result = worker.net(path)
                        elif way == ANALYSE:
                            seconds, result = timed(analyse, path)
                        else:
                            parse = protobuf_parse if way == PROTOBUF else our_parse
                            seconds, message = timed(parse, texts[name])
                            result = message.SerializeToString(deterministic=True)
                        results[name, way] = result
                        if round_:
                            times.setdefault((name, way), []).append(seconds)
        finally:
            worker.close()
    for name in files:
        assert results[name, OURS] == results[name, PROTOBUF], f"{name}: the messages differ"
        params, flops, layers = results[name, ANALYSE]  # type: ignore[misc]
        assert (params, flops) == results[name, CAFFE], f"{name}: the analyses disagree"
        report(name, layers, params, flops, times, args.rounds)


def report(name: str, layers: int, params: int, flops: int,
           times: dict[tuple[str, str], list[float]], rounds: int) -> None:
    median = {way: statistics.median(t) for (n, way), t in times.items() if n == name}
    best = {way: min(t) for (n, way), t in times.items() if n == name}
    print(f"{name}: {layers:,} layers, {rounds} interleaved rounds; the parsers give the "
          f"same message, our analysis and Caffe the same params {params:,} and flops "
          f"{flops:,} (legacy figures)")
    print(f"  {'way':<34} {'median':>9} {'min':>9} {'min per layer':>14}")
    for way in WAYS:
        print(f"  {way:<34} {median[way] * 1e3:>7.1f}ms {best[way] * 1e3:>7.1f}ms "
              f"{best[way] / layers * 1e6:>12.1f}us")
    print(f"  parsing: ours {median[PROTOBUF] / median[OURS]:.1f}x faster than protobuf's "
          f"by medians, {best[PROTOBUF] / best[OURS]:.1f}x by minimums")
    print(f"  analysing in-process takes {median[ANALYSE] / median[CAFFE]:.2f}x the time of "
          f"caffe.Net by medians, {best[ANALYSE] / best[CAFFE]:.2f}x by minimums "
          f"(parsing is {median[OURS] / median[ANALYSE]:.0%} of it)")
    print()


if __name__ == "__main__":
    main()
