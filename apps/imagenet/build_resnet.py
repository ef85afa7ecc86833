#!/usr/bin/env python3
"""Build an ImageNet residual network: train/test/deploy prototxt and its size.

    python apps/imagenet/build_resnet.py -m bottleneck -b 3 4 6 3 -n 256 --no-fc_layers -o out/
    ...
    Number of params: 25.556032 Million
    Number of flops: 3858.026368 Million

The two "Number of" lines follow the original pynetbuilder's conventions (see
README, "Conventions"); the line after them gives learnable parameters and MACs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from pynetbuilder.cli import (  # noqa: E402
    Parser,
    add_data_flags,
    add_output_flags,
    data_from_args,
    emit,
    positive_int,
    run,
)
from pynetbuilder.legos import MAIN_BRANCHES  # noqa: E402
from pynetbuilder.models import resnet_imagenet  # noqa: E402


def parser() -> Parser:
    p = Parser(prog="build_resnet.py", description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--main_branch", required=True, choices=MAIN_BRANCHES,
                   help="residual block main branch")
    p.add_argument("-n", "--num_output_stage1", type=positive_int, default=128,
                   help="output width of stage 1; doubles each stage (default: %(default)s)")
    p.add_argument("-b", "--blocks", type=positive_int, nargs="+", default=[3, 4, 6, 3],
                   help="blocks in each of the 4 stages (default: 3 4 6 3)")
    p.add_argument("--fc_layers", dest="fc_layers", action="store_true",
                   help="the original's 4k head: 1x1-2048, avg pool, 1x1-4096, dropout, classifier")
    p.add_argument("--no-fc_layers", dest="fc_layers", action="store_false",
                   help="global average pool + fully connected classifier (default)")
    p.add_argument("--num_classes", type=positive_int, default=1000)
    add_data_flags(p)
    add_output_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    if len(args.blocks) != 4:
        p.error(f"argument -b/--blocks: expected 4 numbers (one per stage), got {len(args.blocks)}")
    if "bottleneck" in args.main_branch and args.num_output_stage1 % 4:
        p.error(
            f"argument -n/--num_output_stage1: must be divisible by 4 for {args.main_branch} "
            f"(its inner width is a quarter), got {args.num_output_stage1}"
        )
    net = resnet_imagenet(
        args.main_branch, args.num_output_stage1, args.blocks, args.fc_layers,
        num_classes=args.num_classes, data=data_from_args(args),
    )
    emit(net, args)


if __name__ == "__main__":
    sys.exit(run(main))
