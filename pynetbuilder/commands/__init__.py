"""``pynetbuilder COMMAND ...``: one module per command in this package.

Every command follows :mod:`pynetbuilder.cli`'s rules: bad input is one line
``pynetbuilder: error: ...`` with exit status 2, and nothing is written unless all
of it can be.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from pynetbuilder.cli import EXIT_USAGE, run

VERSION = "0.2.0"

# name -> (one-line help, "module:function" in this package; imported when used, so a
# command's dependencies load only for that command)
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("write train/test/deploy prototxt and the report of a model", "build:main"),
    "list": ("list the model families, their knobs and reference configurations",
             "build:list_main"),
    "data": ("write an image folder or NumPy arrays as Caffe LMDB / HDF5 data", "data:main"),
    "train": ("write train/test/solver for a model and train it with real Caffe",
              "train:main"),
    "time": ("time a net's forward and backward passes per layer (caffe time)", "time:main"),
    "plot": ("parse a Caffe training log into CSV and plot loss and accuracy", "plot:main"),
    "analyze": ("per-layer shapes, params and MACs of any prototxt or model", "analyze:main"),
    "compare": ("compare the totals of several nets, and where they differ", "compare:main"),
    "draw": ("draw a net with Graphviz (SVG, PNG ...)", "draw:main"),
    "report": ("write a self-contained HTML report of a net", "report:main"),
    "check": ("check a net against deploy-target profiles (RKNN, Ascend, OpenCV ...)",
              "check:main"),
    "verify": ("run a net in real Caffe and as a PyTorch module; compare every blob",
               "verify:main"),
    "convert": ("convert weights: .caffemodel <-> .pth / .safetensors (torchvision, timm)",
                "convert:main"),
    "export": ("export a net (with weights) as ONNX or TorchScript", "export:main"),
}


def _load(target: str) -> Callable[[Sequence[str]], None]:
    module, function = target.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def usage() -> str:
    lines = ["usage: pynetbuilder COMMAND [ARGS ...]   (pynetbuilder COMMAND --help)", "",
             "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}}  {text}" for name, (text, _) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else EXIT_USAGE
    if args[0] == "--version":
        print(f"pynetbuilder {VERSION}")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"pynetbuilder: error: unknown command {args[0]!r}; commands: "
              f"{', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    # the command's module is imported inside run(): an interrupt while it loads is one line
    return run(lambda rest: _load(command[1])(rest), args[1:], prog="pynetbuilder")
