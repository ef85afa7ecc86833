"""Command-line plumbing shared by the app scripts and the ``pynetbuilder`` command.

Bad input ends with one line ``<prog>: error: <what was wrong and what is allowed>``
and exit status 2; nothing is written unless everything succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from pynetbuilder.errors import NetError, UsageError
from pynetbuilder.interrupts import Terminated, exit_status, signal_of, signals_as_exceptions

if TYPE_CHECKING:  # the builder and data settings load only for the commands that build
    from pynetbuilder.graph import Net
    from pynetbuilder.legos import ClassificationData

EXIT_USAGE = 2


def error_line(prog: str, message: str) -> str:
    """The one form of every error: ``pynetbuilder: error: [where: ]what``, where
    ``where`` is the subcommand or script (``analyze``, ``build_resnet.py``)."""
    where = prog.removeprefix("pynetbuilder").strip()
    return f"pynetbuilder: error: {where + ': ' if where else ''}{message}"


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2, and
    takes no abbreviations (``--dept`` is not ``--depth``: an unknown knob is refused)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse's own asks shutil for the terminal width (importing shutil, a few ms
        # of every command's start-up) each time an argument is added; os answers too
        try:
            width = os.get_terminal_size(sys.stderr.fileno()).columns
        except (OSError, ValueError):
            width = int(os.environ.get("COLUMNS", "0") or 0) or 80
        return self.formatter_class(prog=self.prog, width=max(width - 2, 11))

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, error_line(self.prog, message) + "\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def finite_float(text: str, of: str = "") -> float:
    """A flag's number: any finite float (``nan``, ``inf`` are refused); ``of`` says of
    what in the messages (`` of epochs``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number{of}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number{of}, got {text!r}")
    return value


def add_data_flags(parser: argparse.ArgumentParser, dataset: str = "imagenet") -> None:
    """Flags of the train/test data layers (:data:`pynetbuilder.models.spec.DATA_FLAGS`),
    unset ones ``dataset``'s defaults (cifar, imagenet); :func:`data_from_args` reads them."""
    from pynetbuilder.models.datasets import default_data
    from pynetbuilder.models.spec import DATA_FLAGS

    d = default_data(dataset)
    g = parser.add_argument_group("data (train/test nets read a Caffe database)")
    for flag in DATA_FLAGS:
        if flag.name == "mirror":
            g.add_argument("--no-mirror", dest="mirror", action="store_const", const="false",
                           default=None, help="do not mirror training images at random "
                           "(default: mirror)")
            continue
        default = getattr(d, flag.name) if flag.name != "mean" else ",".join(
            f"{v:g}" for v in d.mean_values or ())
        g.add_argument(f"--{flag.name}", metavar=flag.metavar, default=None,
                       help=f"{flag.help} (default: {default})")


def data_from_args(args: argparse.Namespace, dataset: str = "imagenet") -> ClassificationData:
    """The data lego of :func:`add_data_flags`' flags (checked by the library)."""
    from pynetbuilder.models.spec import (
        DATA_FLAGS,
        DataSettings,
        classification_data,
        data_setting,
    )

    given: dict[str, object] = {}
    for flag in DATA_FLAGS:
        value = getattr(args, flag.name, None)
        if value is not None:
            given.update(data_setting(flag.name, value))
    return classification_data(DataSettings(**given), dataset)


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output_folder",
                        help="write train.prototxt (train+test phases, for a solver), "
                        "test.prototxt and deploy.prototxt here")
    parser.add_argument("--json", metavar="FILE", help="write the per-layer report as JSON")
    parser.add_argument("--table", action="store_true", help="print the per-layer table")
    parser.add_argument("--target", metavar="NAME",
                        help="write deploy.prototxt for a deployment toolchain (pynetbuilder "
                        "check --help lists them)")


def emit(net: Net, args: argparse.Namespace, out: TextIO | None = None) -> None:
    """Analyse the deploy net, then write every output as one set
    (:func:`pynetbuilder.io.write_files`) and print the report (to ``out``, default
    the current ``sys.stdout``).

    Layers the analysis could not size (a type without a shape rule ...) do not stop
    the writing: the report names them and its totals exclude them."""
    from pynetbuilder.graph import Phase, prototxt_files

    out = out or sys.stdout
    report = net.report(Phase.DEPLOY)  # raises (a net Caffe would refuse) before writing
    files: dict[Path, str] = {}
    if args.output_folder:
        folder = Path(args.output_folder)
        files.update({folder / name: text for name, text in prototxt_files(net).items()})
    remaining = []
    target = getattr(args, "target", None)  # (apps' namespaces have no --target)
    if target:
        from pynetbuilder.targets.writer import deploy_for_target

        for_target = deploy_for_target(net.to_proto(Phase.DEPLOY), target,
                                       report.blob_shapes)
        remaining = for_target.remaining
        if args.output_folder:
            files[Path(args.output_folder) / "deploy.prototxt"] = for_target.text
    if args.json:
        files[Path(args.json)] = report.json_text()
    written = []
    if files:
        from pynetbuilder.io import write_files

        written = write_files(files)
    for path in written:
        print(f"wrote {path}", file=out)
    if args.table:
        print(report.table(), file=out)
    print(report.legacy_lines(), file=out)
    t = report.totals
    print(
        f"Learnable params: {t.params:,}  MACs: {t.macs:,}  activations: {t.activations:,}  "
        f"layers: {t.layers}  (deploy net, input {report.blob_shapes.get('data', '?')})",
        file=out,
    )
    for line in report.skipped_lines():
        print(line, file=out)
    print_remaining(target, remaining, out)


def print_remaining(target: str, remaining: Sequence[Any], out: TextIO | None = None) -> None:
    """Print the rules a net written for ``target`` still violates (``remaining``:
    :class:`~pynetbuilder.targets.Violation` objects), which no rewrite can satisfy."""
    for violation in remaining:
        print(f"{target} still rejects: " + violation.line().replace("\n", "\n  "),
              file=out or sys.stdout)


def write_for_target(target: str, prototxt: Path, net: Any, shapes: Mapping[str, Any],
                     module: Any = None, out: TextIO | None = None) -> None:
    """Write ``net`` (one phase's ``NetParameter``; ``shapes``: its blobs') as
    ``target``'s deploy net to ``prototxt`` and, with ``module`` (the net's PyTorch
    module, holding its weights), that net's weights to the ``.caffemodel`` of the same
    name: one set, both or neither.  Prints what was written and what the target still
    rejects."""
    from pynetbuilder.io import write_files
    from pynetbuilder.targets.writer import deploy_for_target

    out = out or sys.stdout
    written = deploy_for_target(net, target, shapes)
    files: dict[Path, str | bytes] = {prototxt: written.text}
    if module is not None:
        from pynetbuilder.pytorch.weights import caffemodel_bytes

        files[prototxt.with_suffix(".caffemodel")] = caffemodel_bytes(module, written.net)
    for path in write_files(files):
        print(f"wrote {path}", file=out)
    print_remaining(target, written.remaining, out)


@contextlib.contextmanager
def torch_needed(command: str) -> Iterator[None]:
    """An import in the block that fails (PyTorch, or what the backend needs, is not
    installed) is one line naming ``command`` and what to install."""
    try:
        yield
    except ImportError as exc:
        raise UsageError(f"{command} needs PyTorch: pip install pynetbuilder[torch] ({exc})"
                         ) from None


def torch_net(command: str, net: str, knobs: Sequence[str], args: argparse.Namespace,
              weights: str | None = None, outputs: Sequence[str] | None = None
              ) -> tuple[Any, str | None]:
    """NET's PyTorch module (in the ``--phase`` and ``--input-shape`` of
    :func:`~pynetbuilder.commands.analyze.add_net_flags`; with ``outputs``, only the
    layers those blobs need) with ``weights`` loaded (a .caffemodel, .pth or
    .safetensors), and the layout read (None without weights)."""
    with torch_needed(command):
        from pynetbuilder.pytorch import to_module
        from pynetbuilder.pytorch.convert import load_weights
    module = to_module(net, knobs, phase=args.phase, input_shape=args.input_shape,
                       outputs=outputs)
    return module, (load_weights(module, weights) if weights else None)


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None,
        prog: str | None = None) -> int:
    """Run ``main`` turning user errors into one line and exit status 2.

    A reader that went away (``pynetbuilder analyze big.prototxt | head``) ends the
    printing quietly, with status 0.  SIGINT and SIGTERM end it with one line and
    status 130 / 143 (:mod:`pynetbuilder.interrupts`): outputs are written whole or
    not at all, and child processes are ended.
    """
    try:
        with signals_as_exceptions():
            main(argv)
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error
        return 0
    except (KeyboardInterrupt, Terminated) as exc:
        kept = getattr(exc, "kept", "") or "outputs not complete were not written"
        print(f"pynetbuilder: interrupted by {signal.Signals(signal_of(exc)).name}; {kept}",
              file=sys.stderr)
        return exit_status(exc)
    except (UsageError, NetError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename:
            exc = f"cannot write {exc.filename}: {exc.strerror} (nothing was written)"
        print(error_line(prog or "", str(exc)), file=sys.stderr)
        return EXIT_USAGE
    return 0
