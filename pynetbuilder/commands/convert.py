"""``pynetbuilder convert NET [KNOB FLAGS] --from WEIGHTS -o OUT [--layout L]``.

WEIGHTS and OUT are ``.caffemodel``, ``.pth`` or ``.safetensors``.  A state dict is
ours (the module's keys) or torchvision's / timm's for the families that share
their parameters (told apart by its keys).  OUT is written in ``--layout`` (default:
the layout read, ``ours`` for a .caffemodel).  Every layer and shape is checked
before anything is written; a mismatch is one line, exit 2.

``--target NAME`` (OUT a ``.caffemodel``) writes the weights of the net rewritten for
that deploy target (:mod:`pynetbuilder.targets.writer`: the layers it inserts
included) and the target's deploy net beside it, OUT's name with ``.prototxt``: one
set, both or neither.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pynetbuilder.cli import Parser, torch_needed, torch_net, write_for_target
from pynetbuilder.commands.analyze import add_net_flags, split_net_and_knobs
from pynetbuilder.errors import UsageError
from pynetbuilder.io import write_files
from pynetbuilder.targets import known_targets


def parser(prog: str = "pynetbuilder convert") -> Parser:
    p = Parser(prog=prog, allow_abbrev=False,
               usage="%(prog)s NET [KNOB FLAGS] --from WEIGHTS -o OUT [--layout L]\n"
               "       %(prog)s NET [KNOB FLAGS] --from WEIGHTS -o OUT.caffemodel --target NAME",
               description="Convert a net's weights between .caffemodel, .pth and "
               ".safetensors (ours, torchvision's or timm's names).")
    add_net_flags(p)
    p.add_argument("--from", dest="source", required=True, metavar="WEIGHTS")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--layout", help="names in OUT (.pth/.safetensors): ours, "
                   "torchvision_resnet, torchvision_vgg, torchvision_squeezenet, "
                   "timm_mobilenetv1, timm_tresnet (default: those read)")
    p.add_argument("--target", metavar="NAME",
                   help="OUT.caffemodel for the net written in this deployment toolchain's "
                   "dialect, and that net as OUT.prototxt: " + ", ".join(known_targets())
                   + " (or a profile .toml file)")
    return p


def main(argv: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    p = parser()
    args, rest = p.parse_known_args(list(argv))
    net_arg, knobs = split_net_and_knobs(rest, p.prog)
    if args.target is not None:
        from pynetbuilder.targets import load_profile

        if Path(args.output).suffix.lower() != ".caffemodel":
            raise UsageError(f"--target writes Caffe's files: -o must name a .caffemodel (the "
                             f"deploy net goes beside it as .prototxt), got {args.output!r}")
        load_profile(args.target)  # an unknown target lists the known ones, before any work
    with torch_needed("convert"):
        from pynetbuilder.pytorch.convert import read_state_dict, weights_bytes
        from pynetbuilder.pytorch.zoo_weights import LAYOUTS
    if args.layout is not None and args.layout not in ("ours", *LAYOUTS):
        raise UsageError(f"--layout {args.layout!r} is unknown; allowed: ours, "
                         + ", ".join(LAYOUTS))
    module, read = torch_net("convert", net_arg, knobs, args, args.source)
    if args.target is not None:
        write_for_target(args.target, Path(args.output).with_suffix(".prototxt"),
                         module.net_param, module.blob_shapes, module, out)
        print(f"({args.target} deploy net and Caffe weights of {module.net_name}, read as "
              f"{read})", file=out)
        return
    layout = args.layout or ("ours" if read == "caffe" else read)
    keys = read_state_dict(args.source).keys() if read not in ("caffe", "ours") and \
        layout == read else None
    data = weights_bytes(module, args.output, layout, keys)
    write_files({Path(args.output): data})
    print(f"wrote {args.output} ({layout if not args.output.endswith('.caffemodel') else 'Caffe'}"
          f" weights of {module.net_name}, read as {read})", file=out)
