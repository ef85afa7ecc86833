"""``pynetbuilder time``: forward and backward time per layer, measured by ``caffe time``.

Two forms::

    pynetbuilder time MODEL [--KNOB VALUE ...] [--phase deploy|train] [--batch_size N] ...
    pynetbuilder time NET.prototxt [--phase train|test]

A model is timed as its deploy net by default (an ``Input`` of ``--batch_size``
images, no data needed; ``force_backward`` so that the backward pass computes every
gradient, as in training), or ``--phase train`` as its train net reading the
databases of the data flags.  A prototxt is timed as it is, in Caffe's TRAIN phase
unless ``--phase test``, from the current folder (its data sources must exist).
The table lists each layer Caffe ran (with the Split layers it inserts), its type,
average forward and backward milliseconds per iteration and its share of the
total; ``caffe time`` runs one untimed forward-backward pass first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pynetbuilder import training
from pynetbuilder.caffelog import Timing, parse_time
from pynetbuilder.cli import Parser, positive_int
from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Phase
from pynetbuilder.io import write_files
from pynetbuilder.models import FAMILIES
from pynetbuilder.models.spec import model_name
from pynetbuilder.schema import caffe_pb2, parse_net, to_text

USAGE = """usage: pynetbuilder time MODEL [--KNOB VALUE ...] [--phase deploy|train] [--iterations N]
       pynetbuilder time NET.prototxt [--phase train|test] [--iterations N]
       pynetbuilder time MODEL --help"""


def add_time_flags(parser: argparse.ArgumentParser, phases: Sequence[str]) -> None:
    g = parser.add_argument_group("timing")
    g.add_argument("--phase", choices=phases, default=phases[0],
                   help="which net to time (default: %(default)s)")
    g.add_argument("--iterations", type=positive_int, default=10,
                   help="timed forward-backward passes (default: %(default)s)")
    g.add_argument("--gpu", help="GPU id for caffe, e.g. 0 (default: CPU)")
    g.add_argument("--keep", metavar="DIR", help="keep the timed prototxt and time.log here")
    g.add_argument("--json", metavar="FILE", help="write the timings as JSON")


def _model_net(name: str, argv: Sequence[str]) -> tuple[Any, str, argparse.Namespace]:
    """(NetParameter to time, Caffe phase, args) of a registry model."""
    from pynetbuilder.commands.build import model_parser, parse_model

    family = FAMILIES[model_name(name)]
    parser = model_parser(family, f"pynetbuilder time {family.name}",
                          "time the model's deploy (or train) net with caffe time")
    add_time_flags(parser, ("deploy", "train"))
    spec, args = parse_model([name, *argv], parser)
    data = spec.data_lego()
    if args.phase == "train":
        data = dataclasses.replace(data, train_source=str(Path(data.train_source).resolve()),
                                   test_source=str(Path(data.test_source).resolve()))
    # the deploy net's Input: one training batch
    net = spec.build(dataclasses.replace(data, deploy_batch=data.batch_size))
    if args.phase == "train":
        proto = net.train_val_proto()
        source = training.data_sources(proto).get("train")
        if source is not None:
            training.count_images(source, Path.cwd())  # UsageError when missing
        return proto, "TRAIN", args
    proto = caffe_pb2.NetParameter()
    proto.CopyFrom(net.to_proto(Phase.DEPLOY))
    proto.force_backward = True
    return proto, "TEST", args


def _file_net(path: Path, argv: Sequence[str]) -> tuple[Any, str, argparse.Namespace]:
    parser = Parser(prog="pynetbuilder time NET.prototxt",
                    description="time a prototxt with caffe time")
    add_time_flags(parser, ("train", "test"))
    args = parser.parse_args(argv)
    try:
        proto = parse_net(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except Exception as exc:  # protobuf's ParseError
        raise UsageError(f"{path} is not a Caffe net: {exc}") from None
    return proto, args.phase.upper(), args


def time_net(proto: Any, phase: str, *, iterations: int, gpu: str | None,
             keep: Path | None) -> tuple[Timing, str]:
    """Run ``caffe time`` on ``proto`` (in the current folder, so relative data paths
    hold); returns the timings and Caffe's output.  CaffeError when Caffe fails."""
    with tempfile.TemporaryDirectory(prefix="pynetbuilder-time-") as tmp:
        folder = keep or Path(tmp)
        model = folder / "net.prototxt"
        log = folder / "time.log"
        write_files({model: to_text(proto)})
        cmd = [str(training.caffe_tool(gpu)), "time", "-model", str(model.resolve()),
               "-phase", phase, "-iterations", str(iterations), *training.gpu_flag(gpu)]
        done = training.run_logged(cmd, cwd=Path.cwd(), log=log)
        if done.interrupt is not None:
            raise done.interrupt
        text = log.read_text(encoding="utf-8", errors="replace")
    if done.failed or done.log_error:
        kept = f"; the full log is {log}" if keep else ""
        why = (f"cannot write {log} ({done.log_error.strerror})" if done.log_error
               else training.failure_reason(done.tail))
        raise training.CaffeError(f"caffe time failed: {why}{kept}")
    return parse_time(text), text


def layer_types(proto: Any) -> dict[str, str]:
    return {layer.name: layer.type for layer in proto.layer}


def table(timing: Timing, types: dict[str, str]) -> str:
    """Per-layer times and shares of the forward + backward total."""
    total = sum(t.forward_ms + t.backward_ms for t in timing.layers) or 1.0
    width = max([len(t.name) for t in timing.layers] + [5])
    head = f"{'type':<18} {'forward ms':>11} {'backward ms':>12} {'share':>6}"
    lines = [f"{'layer':<{width}}  {head}"]
    for t in timing.layers:
        kind = types.get(t.name, "Split" if "_split" in t.name else "?")
        share = 100 * (t.forward_ms + t.backward_ms) / total
        lines.append(f"{t.name:<{width}}  {kind:<18} {t.forward_ms:>11.3f} "
                     f"{t.backward_ms:>12.3f} {share:>5.1f}%")
    lines.append(f"{'total':<{width}}  {'':<18} {timing.forward_ms:>11.3f} "
                 f"{timing.backward_ms:>12.3f}")
    return "\n".join(lines)


def timing_json(timing: Timing, types: dict[str, str], phase: str) -> str:
    return json.dumps({
        "phase": phase.lower(), "iterations": timing.iterations,
        "forward_ms": timing.forward_ms, "backward_ms": timing.backward_ms,
        "forward_backward_ms": timing.forward_backward_ms,
        "layers": [{"name": t.name, "type": types.get(t.name, "Split"),
                    "forward_ms": t.forward_ms, "backward_ms": t.backward_ms}
                   for t in timing.layers],
    }, indent=2) + "\n"


def main(argv: Sequence[str]) -> None:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        if not argv:
            raise UsageError("time needs a model name or a prototxt; models: "
                             + ", ".join(FAMILIES.names()))
        print(USAGE + "\n\nmodels: " + ", ".join(FAMILIES.names()))
        return
    target, rest = argv[0], argv[1:]
    path = Path(target)
    if path.suffix == ".prototxt" or path.is_file():
        if not path.is_file():
            raise UsageError(f"{target} does not exist")
        proto, phase, args = _file_net(path, rest)
    else:
        proto, phase, args = _model_net(target, rest)
    if args.gpu is not None and not args.gpu.isdigit():
        raise UsageError(f"--gpu takes one device number for time (caffe time runs on one "
                         f"GPU), got {args.gpu!r}")
    training.caffe_tool(args.gpu)
    if args.gpu is None:  # the CPU build has no cuDNN: its own engine computes the same
        from pynetbuilder.caffe_process import cpu_engine

        for layer in proto.layer:
            if cpu_engine(layer):
                print(f"note: layer {layer.name!r} ({layer.type}) asks for engine CUDNN; "
                      "timed with Caffe's own engine (CPU)")
    keep = Path(args.keep) if args.keep else None
    timing, _ = time_net(proto, phase, iterations=args.iterations, gpu=args.gpu, keep=keep)
    types = layer_types(proto)
    print(table(timing, types))
    print(f"average per iteration ({timing.iterations} iterations, {phase} phase): forward "
          f"{timing.forward_ms:.3f} ms, backward {timing.backward_ms:.3f} ms, "
          f"forward-backward {timing.forward_backward_ms:.3f} ms")
    if args.json:
        for written in write_files({Path(args.json): timing_json(timing, types, phase)}):
            print(f"wrote {written}")
    if keep:
        print(f"kept {keep / 'net.prototxt'} and {keep / 'time.log'}")
