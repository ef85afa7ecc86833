"""``pynetbuilder export NET [KNOB FLAGS] --to onnx|torchscript -o OUT [--weights W]``
and ``pynetbuilder export NET [KNOB FLAGS] --target NAME -o OUT.prototxt [--weights W]``.

``--to onnx|torchscript`` writes the net's PyTorch module (deploy phase by default)
as an ONNX model (opset 17; inputs and outputs named as Caffe's blobs) or a
TorchScript archive, with the weights of ``--weights`` (a .caffemodel, .pth or
.safetensors; default: the module's random initial weights).  Pooling is spelt out
with explicit padding so Caffe's ceil rounding survives in ONNX.

``--target NAME`` (``--to caffe`` may be said too) writes the deploy net in that
deploy target's dialect (:mod:`pynetbuilder.targets.writer`) to OUT.prototxt and,
with ``--weights``, the weights of that net to OUT.caffemodel beside it (one set:
both or neither), layers the writer inserts included.  Without ``--weights`` only
the prototxt is written, and PyTorch is not needed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pynetbuilder.cli import Parser, torch_needed, torch_net, write_for_target
from pynetbuilder.commands.analyze import add_net_flags, split_net_and_knobs
from pynetbuilder.errors import UsageError
from pynetbuilder.io import write_files
from pynetbuilder.targets import known_targets


def parser(prog: str = "pynetbuilder export") -> Parser:
    p = Parser(prog=prog, allow_abbrev=False,
               usage="%(prog)s NET [KNOB FLAGS] --to onnx|torchscript -o OUT [--weights W] "
               "[--opset N] [--outputs BLOB,...]\n       %(prog)s NET [KNOB FLAGS] --target NAME "
               "-o OUT.prototxt [--weights W]",
               description="Export a net as ONNX or TorchScript, or as a deploy target's "
               "Caffe net (prototxt, and its .caffemodel when weights are given).")
    add_net_flags(p)
    p.add_argument("--to", choices=("onnx", "torchscript", "caffe"),
                   help="format (caffe: needs --target, which implies it)")
    p.add_argument("--target", metavar="NAME",
                   help="write OUT.prototxt in this deployment toolchain's dialect and, with "
                   "--weights, OUT.caffemodel: " + ", ".join(known_targets())
                   + " (or a profile .toml file)")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--weights", metavar="W", help=".caffemodel, .pth or .safetensors")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default %(default)s)")
    p.add_argument("--outputs", metavar="BLOB[,BLOB...]",
                   help="export only what these blobs need, and give them (default: the "
                   "net's outputs); e.g. the inputs of SSD's DetectionOutput, which runs "
                   "eagerly and cannot be exported")
    return p


def main(argv: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    p = parser()
    args, rest = p.parse_known_args(list(argv))
    net_arg, knobs = split_net_and_knobs(rest, p.prog)
    if args.target is not None:
        _check_target_flags(args)
        _export_for_target(args, net_arg, knobs, out)
        return
    if args.to in (None, "caffe"):
        raise UsageError("export needs --to onnx|torchscript, or --target NAME for a "
                         "deploy target's Caffe net (bvlc: stock Caffe)")
    outputs = [b for b in args.outputs.split(",") if b] if args.outputs else None
    module, _ = torch_net("export", net_arg, knobs, args, args.weights, outputs)
    with torch_needed("export"):
        from pynetbuilder.pytorch.export import export_bytes, exportable
    if args.to == "onnx":
        try:
            import onnx  # noqa: F401 - torch.onnx needs it
        except ImportError:
            raise UsageError("--to onnx needs the onnx package: pip install "
                             "pynetbuilder[torch]") from None
    wrapped = exportable(module.eval(), outputs)  # EmitError before anything is traced
    data = export_bytes(wrapped, args.to, opset=args.opset)
    write_files({Path(args.output): data})
    left_out = "".join(f"; layer {name!r} ({kind}) not exported: it runs on the host, its "
                       "inputs are outputs" for name, kind in wrapped.left_out)
    print(f"wrote {args.output} ({args.to}; inputs {', '.join(wrapped.input_names)}; "
          f"outputs {', '.join(wrapped.output_names)}{left_out})", file=out)


def _check_target_flags(args: argparse.Namespace) -> None:
    """Refuse what --target cannot mean, before any work (an unknown target too)."""
    from pynetbuilder.targets import load_profile

    if args.to not in (None, "caffe"):
        raise UsageError(f"--target writes a Caffe deploy net (prototxt and caffemodel), not "
                         f"{args.to}: leave out --to {args.to}, or --target")
    if args.outputs:
        raise UsageError("--outputs chooses what --to onnx|torchscript export; a target's "
                         "deploy net is written whole")
    if Path(args.output).suffix.lower() != ".prototxt":
        raise UsageError(f"with --target, -o names the deploy net: OUT.prototxt (its weights "
                         f"go to OUT.caffemodel beside it), got {args.output!r}")
    load_profile(args.target)


def _export_for_target(args: argparse.Namespace, net_arg: str, knobs: Sequence[str],
                       out: TextIO) -> None:
    prototxt = Path(args.output)
    if args.weights:
        module, _ = torch_net("export", net_arg, knobs, args, args.weights)
        write_for_target(args.target, prototxt, module.net_param, module.blob_shapes, module,
                         out)
        return
    from pynetbuilder.inspect import load

    inspected = load(net_arg, knobs, phase=args.phase, input_shape=args.input_shape)
    write_for_target(args.target, prototxt, inspected.net, inspected.report.blob_shapes,
                     out=out)
