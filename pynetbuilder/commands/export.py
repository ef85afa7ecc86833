"""``pynetbuilder export NET [KNOB FLAGS] --to onnx|torchscript -o OUT [--weights W]``.

Writes the net's PyTorch module (deploy phase by default) as an ONNX model (opset
17; inputs and outputs named as Caffe's blobs) or a TorchScript archive, with the
weights of ``--weights`` (a .caffemodel, .pth or .safetensors; default: the
module's random initial weights).  Pooling is spelt out with explicit padding so
Caffe's ceil rounding survives in ONNX.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pynetbuilder.cli import Parser
from pynetbuilder.commands.analyze import add_net_flags, split_net_and_knobs
from pynetbuilder.errors import UsageError
from pynetbuilder.io import write_files


def parser(prog: str = "pynetbuilder export") -> Parser:
    p = Parser(prog=prog, allow_abbrev=False,
               usage="%(prog)s NET [KNOB FLAGS] --to onnx|torchscript -o OUT [--weights W] "
               "[--opset N]",
               description="Export a net as ONNX or TorchScript.")
    add_net_flags(p)
    p.add_argument("--to", required=True, choices=("onnx", "torchscript"))
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--weights", metavar="W", help=".caffemodel, .pth or .safetensors")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default %(default)s)")
    return p


def main(argv: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    p = parser()
    args, rest = p.parse_known_args(list(argv))
    net_arg, knobs = split_net_and_knobs(rest, p.prog)
    try:
        from pynetbuilder.pytorch import to_module
        from pynetbuilder.pytorch.convert import load_weights
        from pynetbuilder.pytorch.export import export_bytes, exportable
    except ImportError as exc:
        raise UsageError(f"export needs PyTorch: pip install pynetbuilder[torch] ({exc})") \
            from None
    module = to_module(net_arg, knobs, phase=args.phase, input_shape=args.input_shape)
    if args.weights:
        load_weights(module, args.weights)
    if args.to == "onnx":
        try:
            import onnx  # noqa: F401 - torch.onnx needs it
        except ImportError:
            raise UsageError("--to onnx needs the onnx package: pip install "
                             "pynetbuilder[torch]") from None
    wrapped = exportable(module.eval())
    data = export_bytes(module, args.to, opset=args.opset, wrapped=wrapped)
    write_files({Path(args.output): data})
    left_out = "".join(f"; layer {name!r} ({kind}) not exported: it runs on the host, its "
                       "inputs are outputs" for name, kind in wrapped.left_out)
    print(f"wrote {args.output} ({args.to}; inputs {', '.join(wrapped.input_names)}; outputs "
          f"{', '.join(wrapped.output_names)}{left_out})", file=out)
