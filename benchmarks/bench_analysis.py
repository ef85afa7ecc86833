#!/usr/bin/env python3
"""How fast is sizing a net?  pynetbuilder's own analysis vs the original way.

The original pynetbuilder counted parameters and flops by instantiating the net
in compiled Caffe (``caffe.Net``) and summing its blobs.  pynetbuilder builds the
net from legos and infers every shape itself.  Both are timed here, side by side
in one run, on ResNet-50; then our analysis alone on deeper nets, to show its cost
grows linearly with depth (time per layer stays flat).

Every timing is the median of several runs, each started after ``gc.collect()``.
Our methods are timed before ``import caffe``: they never need it, and a process
that has loaded Caffe (and numpy, and its Python layers) pays more for Python's
garbage collector, which is not what a pynetbuilder user pays.

    .venv/bin/python benchmarks/bench_analysis.py      (make bench)
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
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


def ours_from_prototxt(text: str) -> tuple[int, int]:
    t = analyze(parse_net(text)).totals
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


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    assert "caffe" not in sys.modules, "our methods are timed without Caffe loaded"
    blocks = DEPTHS["ResNet-50"]
    t_ours, (p, f, layers) = timed(lambda: ours(blocks), 30)
    proto = resnet_imagenet("bottleneck", 256, blocks).to_proto("deploy")
    t_analyse, totals = timed(lambda: analyze(proto).totals, 30)
    depth_rows = []
    for name, depth_blocks in DEPTHS.items():
        t, (_, _, n_layers) = timed(lambda b=depth_blocks: ours(b), 5)
        depth_rows.append((name, n_layers, t))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deploy.prototxt"
        text = to_text(resnet_imagenet("bottleneck", 256, blocks).to_proto("deploy"))
        path.write_text(text)
        t_parse, parsed = timed(lambda: ours_from_prototxt(path.read_text()), 30)

        import caffe

        caffe.set_mode_cpu()
        t_caffe, (cp, cf) = timed(lambda: the_original_way(caffe, str(path)), 9)
        t_net, net_counts = timed(lambda: caffe_net_alone(caffe, str(path)), 9)
    print(f"{'net':<12} {'method':<44} {'median':>10}  result")
    print(f"{'ResNet-50':<12} {'pynetbuilder: analyse the built NetParameter':<44} "
          f"{t_analyse * 1e3:>8.1f}ms  params {totals.legacy_params:,} "
          f"flops {totals.legacy_flops:,}")
    print(f"{'ResNet-50':<12} {'pynetbuilder: build from legos + analyse':<44} "
          f"{t_ours * 1e3:>8.1f}ms  params {p:,} flops {f:,}")
    print(f"{'ResNet-50':<12} {'pynetbuilder: read deploy.prototxt + analyse':<44} "
          f"{t_parse * 1e3:>8.1f}ms  params {parsed[0]:,} flops {parsed[1]:,}")
    print(f"{'ResNet-50':<12} {'original: get_complexity (caffe.Net + re-read)':<44} "
          f"{t_caffe * 1e3:>8.1f}ms  params {cp:,} flops {cf:,}")
    print(f"{'ResNet-50':<12} {'caffe.Net(deploy.prototxt) + sum, alone':<44} "
          f"{t_net * 1e3:>8.1f}ms  params {net_counts[0]:,} flops {net_counts[1]:,}")
    assert (p, f) == (cp, cf) == parsed == net_counts, "the methods disagree"
    print(f"speed-up over the original way, same figures out: analysis alone "
          f"{t_caffe / t_analyse:.0f}x, build from legos + analysis {t_caffe / t_ours:.0f}x, "
          f"from prototxt text {t_caffe / t_parse:.0f}x")
    print(f"speed-up over caffe.Net alone: analysis alone {t_net / t_analyse:.0f}x, "
          f"build from legos + analysis {t_net / t_ours:.0f}x\n")
    print(f"{'net':<12} {'Caffe layers':>12} {'build+analyse':>14} {'per layer':>10}")
    for name, n_layers, t in depth_rows:
        print(f"{name:<12} {n_layers:>12} {t * 1e3:>12.1f}ms {t / n_layers * 1e6:>8.1f}us")


if __name__ == "__main__":
    main()
