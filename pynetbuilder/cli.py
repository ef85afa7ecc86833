"""Command-line plumbing shared by the app scripts and the ``pynetbuilder`` command.

Bad input ends with one line ``<prog>: error: <what was wrong and what is allowed>``
and exit status 2; nothing is written unless everything succeeded.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from pynetbuilder.errors import NetError, UsageError
from pynetbuilder.graph import Net, Phase, prototxt_files
from pynetbuilder.interrupts import Terminated, exit_status, signal_of, signals_as_exceptions
from pynetbuilder.io import write_files
from pynetbuilder.legos import ClassificationData
from pynetbuilder.legos.data import BACKENDS

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_data_flags(parser: argparse.ArgumentParser, dataset: str = "imagenet") -> None:
    """Flags of the train/test data layers, with ``dataset``'s defaults (cifar, imagenet)."""
    from pynetbuilder.models.datasets import default_data

    d = default_data(dataset)
    g = parser.add_argument_group("data (train/test nets read a Caffe database)")
    g.add_argument("--train_source", default=d.train_source,
                   help="training database folder (default: %(default)s)")
    g.add_argument("--test_source", default=d.test_source,
                   help="validation database folder (default: %(default)s)")
    g.add_argument("--backend", default=d.backend, choices=BACKENDS, help="database kind")
    g.add_argument("--batch_size", type=positive_int, default=d.batch_size,
                   help="training batch size (default: %(default)s)")
    g.add_argument("--test_batch_size", type=positive_int, default=d.test_batch_size,
                   help="test batch size (default: %(default)s)")
    g.add_argument("--crop_size", type=positive_int, default=d.crop_size,
                   help="random crop (train) / centre crop (test) size (default: %(default)s)")
    g.add_argument("--no-mirror", dest="mirror", action="store_false",
                   help="do not mirror training images at random (default: mirror)")
    g.add_argument("--mean", default=",".join(f"{v:g}" for v in d.mean_values or ()),
                   help="per-channel mean values in BGR order, or a mean.binaryproto file "
                   "(default: %(default)s)")


def data_from_args(args: argparse.Namespace) -> ClassificationData:
    mean_values: tuple[float, ...] | None = None
    mean_file = None
    if args.mean.endswith(".binaryproto"):
        mean_file = args.mean
    else:
        try:
            mean_values = tuple(float(v) for v in args.mean.split(","))
        except ValueError:
            raise UsageError(
                f"--mean must be comma-separated numbers (e.g. 104,117,123) or a "
                f".binaryproto file, got {args.mean!r}"
            ) from None
    return ClassificationData(
        args.train_source, args.test_source, batch_size=args.batch_size,
        test_batch_size=args.test_batch_size, crop_size=args.crop_size,
        mean_values=mean_values, mean_file=mean_file, backend=args.backend,
        mirror=getattr(args, "mirror", True),
    )


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output_folder",
                        help="write train.prototxt (train+test phases, for a solver), "
                        "test.prototxt and deploy.prototxt here")
    parser.add_argument("--json", metavar="FILE", help="write the per-layer report as JSON")
    parser.add_argument("--table", action="store_true", help="print the per-layer table")
    parser.add_argument("--target", metavar="NAME",
                        help="write deploy.prototxt for a deployment toolchain (pynetbuilder "
                        "check --help lists them)")


def emit(net: Net, args: argparse.Namespace, out=None) -> None:
    """Analyse the deploy net, then write every output at once and print the report.

    Layers the analysis could not size (a type without a shape rule ...) do not stop
    the writing: the report names them and its totals exclude them."""
    out = out or sys.stdout
    report = net.report(Phase.DEPLOY)  # raises (a net Caffe would refuse) before writing
    files: dict[Path, str] = {}
    if args.output_folder:
        folder = Path(args.output_folder)
        files.update({folder / name: text for name, text in prototxt_files(net).items()})
    remaining = []
    if getattr(args, "target", None):
        from pynetbuilder.targets.writer import deploy_for_target

        text, remaining = deploy_for_target(net.to_proto(Phase.DEPLOY), args.target,
                                            report.blob_shapes)
        if args.output_folder:
            files[Path(args.output_folder) / "deploy.prototxt"] = text
    if args.json:
        files[Path(args.json)] = report.json_text()
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
    for violation in remaining:
        print(f"{args.target} still rejects: " + violation.line().replace("\n", "\n  "),
              file=out)


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None,
        prog: str | None = None) -> int:
    """Run ``main`` turning user errors into one line and exit status 2.

    A reader that went away (``pynetbuilder analyze big.prototxt | head``) ends the
    printing quietly, with status 0.  SIGINT and SIGTERM end it with one line and
    status 130 / 143 (:mod:`pynetbuilder.interrupts`): outputs are written whole or
    not at all, and child processes are ended.
    """
    name = prog or Path(sys.argv[0]).name
    try:
        with signals_as_exceptions():
            main(argv)
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error
        return 0
    except (KeyboardInterrupt, Terminated) as exc:
        kept = getattr(exc, "kept", "") or "outputs not complete were not written"
        print(f"{name}: interrupted by {signal.Signals(signal_of(exc)).name}; {kept}",
              file=sys.stderr)
        return exit_status(exc)
    except (UsageError, NetError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename:
            exc = f"cannot write {exc.filename}: {exc.strerror} (nothing was written)"
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
