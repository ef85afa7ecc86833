"""``pynetbuilder train``: write train/test/solver for a model and train it with real Caffe.

Two forms::

    pynetbuilder train MODEL [--KNOB VALUE ...] [data flags] [solver flags] -o DIR
    pynetbuilder train DIR [solver flags]          # DIR holds train.prototxt (+ solver.prototxt)

The first builds the model (knobs and data flags as ``pynetbuilder build``) and writes
``train.prototxt``, ``test.prototxt``, ``deploy.prototxt`` and ``solver.prototxt`` into
DIR.  The second trains the ``train.prototxt`` in DIR: with the ``solver.prototxt``
there as it is, or with one generated from ``--recipe`` and the solver flags when DIR
has none.  Solver settings start from a recipe (a model family's reference recipe,
``cifar/resnet`` by default) and the flags change single values; iteration counts come
from epochs, the batch sizes in the net and the dataset sizes (counted in the
databases, or ``--train_size`` / ``--test_size``).  Caffe runs inside DIR; its whole
output is kept in ``DIR/train.log`` (``train_resumed_<N>.log`` after ``--resume``),
snapshots go to ``DIR/snapshots/``, and after training ``log.csv``, ``loss.png`` and
``accuracy.png`` are written beside them.  Everything is checked before anything is
written: a bad flag, recipe, policy, solver, data source, label or snapshot is one line
and exit 2.

A run folder holds one run.  A folder with a previous run's files (its logs,
snapshots, ``log.csv``, plots; with the model form also its prototxt files) is
reused only with ``--overwrite`` or ``--resume``.  With ``--overwrite`` the new
run's files are written as one set when the run starts, and at that moment the
previous run's files are moved aside together (into one hidden folder in DIR,
deleted when the run ends however it ends), so the folder never mixes two runs; a
refused run changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pynetbuilder import datasource, run_folder, training
from pynetbuilder import solver as solvers
from pynetbuilder.caffelog import plot_files, read_logs
from pynetbuilder.cli import Parser, add_output_flags, finite_float, positive_int
from pynetbuilder.dataio import read_mean_binaryproto
from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Phase, prototxt_files
from pynetbuilder.interrupts import Terminated
from pynetbuilder.io import remove, write_files
from pynetbuilder.legos import ClassificationData
from pynetbuilder.models import FAMILIES
from pynetbuilder.models.spec import model_name
from pynetbuilder.schema import parse_net

USAGE = """usage: pynetbuilder train MODEL [--KNOB VALUE ...] [data flags] [solver flags] -o DIR
       pynetbuilder train DIR [solver flags]     (DIR holds train.prototxt)
       pynetbuilder train MODEL --help           (the model's knobs and every flag)"""

# Recipe fields the solver flags change (flag name = field name).
_RECIPE_FLAGS = ("optimizer", "base_lr", "momentum", "momentum2", "weight_decay", "epochs",
                 "policy", "gamma", "power", "milestones", "step_epochs", "warmup_epochs")
_SOLVER_FLAGS = ("recipe", *_RECIPE_FLAGS, "train_size", "test_size", "test_every",
                 "snapshot_every", "display", "seed")


def _epochs(text: str) -> float:
    value = finite_float(text, " of epochs")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text}")
    return value


def add_solver_flags(parser: argparse.ArgumentParser) -> None:
    """The solver flags: each unset one keeps the recipe's value."""
    g = parser.add_argument_group("solver (unset: the recipe's value)")
    g.add_argument("--recipe", help="named recipe: " + ", ".join(solvers.RECIPES)
                   + " (add-ons: " + ", ".join("+" + a for a in solvers.AUGMENTATIONS)
                   + "; default: the model family's, else cifar/resnet or imagenet/resnet_18)")
    g.add_argument("--optimizer", help="one of " + ", ".join(solvers.OPTIMIZERS))
    g.add_argument("--base_lr", type=finite_float, help="base learning rate")
    g.add_argument("--momentum", type=finite_float, help="momentum (Adam: beta1)")
    g.add_argument("--momentum2", type=finite_float, help="Adam's beta2")
    g.add_argument("--weight_decay", type=finite_float, help="L2 weight decay")
    g.add_argument("--epochs", type=_epochs, help="training length in epochs (milestones "
                   "not given scale with it)")
    g.add_argument("--policy", help="learning-rate policy: " + ", ".join(solvers.CAFFE_POLICIES))
    g.add_argument("--gamma", type=finite_float, help="lr factor (step, multistep) or "
                   "per-iteration constant (exp, inv, sigmoid)")
    g.add_argument("--power", type=finite_float, help="exponent of poly and inv")
    g.add_argument("--milestones", type=_epochs, nargs="+", metavar="EPOCH",
                   help="multistep: epochs at which the rate is multiplied by gamma")
    g.add_argument("--step_epochs", type=_epochs, help="step: epochs per step; sigmoid: centre")
    g.add_argument("--warmup_epochs", type=_epochs, help="refused when > 0: Caffe has no warm-up")
    g.add_argument("--train_size", type=positive_int, help="training images (default: counted)")
    g.add_argument("--test_size", type=int, help="test images (default: counted; 0: no test)")
    g.add_argument("--test_every", type=_epochs, default=1.0,
                   help="epochs between tests (default: %(default)s)")
    g.add_argument("--snapshot_every", type=_epochs, default=0.0,
                   help="epochs between snapshots (default: 0 = only at the end)")
    g.add_argument("--display", type=positive_int, help="iterations between progress lines")
    g.add_argument("--seed", type=int, help="Caffe's random seed (default: random)")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--gpu", help="GPU ids for caffe (0, 0,1 or all); default: CPU")
    g.add_argument("--resume", metavar="FILE.solverstate",
                   help="continue from a snapshot of this run folder")
    g.add_argument("--weights", metavar="FILE.caffemodel",
                   help="start from these weights (fine-tuning)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the previous run in the run folder (its logs, snapshots, "
                   "plots) when this one starts")
    g.add_argument("--engine", choices=("caffe", "torch"), default="caffe",
                   help="caffe (default: the caffe tool) or torch (the PyTorch backend with "
                   "Caffe's solver, data and snapshot files; torchrun for many processes)")
    t = parser.add_argument_group("torch engine (--engine torch)")
    t.add_argument("--nproc-per-node", type=positive_int, default=1, metavar="N",
                   help="processes on this node (DDP: gloo on CPU, NCCL with --gpu); the "
                   "effective batch is the net's batch_size times all processes")
    t.add_argument("--nnodes", type=positive_int, default=1, metavar="M", help="nodes")
    t.add_argument("--node-rank", type=int, default=0, metavar="R", help="this node's rank")
    t.add_argument("--master-addr", default="127.0.0.1", metavar="A",
                   help="node 0's address (default: %(default)s)")
    t.add_argument("--master-port", type=int, metavar="P", help="node 0's port")
    t.add_argument("--amp", choices=("bf16", "fp16"),
                   help="mixed precision on CUDA (channels-last is on with --gpu)")


@dataclass
class Plan:
    """Everything a run needs, checked; nothing written yet."""

    folder: Path
    solver: Any  # caffe_pb2.SolverParameter
    sizes: tuple[int, int]  # train, test images
    files: dict[Path, str] = field(default_factory=dict)
    recipe: solvers.Recipe | None = None  # None: the folder's own solver.prototxt
    resume: training.Snapshot | None = None
    weights: Path | None = None
    gpu: str | None = None
    report_table: str = ""
    engine: str = "caffe"
    launch: Any = None  # the torch engine's Launch
    previous: list[Path] = field(default_factory=list)  # the previous run's files, replaced


def _recipe(args: argparse.Namespace, default: solvers.Recipe) -> solvers.Recipe:
    r = solvers.recipe(args.recipe) if args.recipe else default
    changes = {k: getattr(args, k) for k in _RECIPE_FLAGS if getattr(args, k) is not None}
    if "milestones" in changes:
        changes["milestones"] = tuple(changes["milestones"])
    r = r.with_changes(**changes)
    solvers.check_caffe_can(r)
    return r


def _solver(net_param: Any, r: solvers.Recipe, args: argparse.Namespace, base: Path,
            name: str) -> tuple[Any, tuple[int, int], solvers.Recipe]:
    """The solver for ``net_param``'s data layers: batch sizes from the net, dataset sizes
    from the flags or counted in the sources (relative ones from ``base``)."""
    sources = training.data_sources(net_param)
    if "train" not in sources:
        raise UsageError("the train net has no Data, HDF5Data or ImageData layer in the TRAIN "
                         "phase, so its batch size and dataset size are unknown")
    train_src, test_src = sources["train"], sources.get("test")
    r = r.with_changes(batch_size=train_src.batch_size,
                       test_batch_size=test_src.batch_size if test_src else r.test_batch_size)
    train_size = args.train_size or _count(train_src, base)
    if args.test_size is not None:
        if args.test_size < 0:
            raise UsageError(f"--test_size must not be negative, got {args.test_size}")
        test_size = args.test_size
    else:
        test_size = _count(test_src, base) if test_src else 0
    s = solvers.solver_parameter(
        r, net="train.prototxt", train_size=train_size, test_size=test_size,
        snapshot_prefix=f"{training.SNAPSHOT_DIR}/{name or 'net'}",
        test_every=args.test_every, snapshot_every=args.snapshot_every,
        display=args.display, gpu=args.gpu, random_seed=args.seed)
    return s, (train_size, test_size), r


def _count(src: training.DataSource, base: Path) -> int:
    n = training.count_images(src, base)
    if n == 0:
        raise UsageError(f"the {src.phase} data source {src.source} holds no images")
    return n


def _run_checks(plan: Plan, args: argparse.Namespace, *, nets_are_ours: bool) -> None:
    training.gpu_flag(args.gpu)
    if args.engine == "torch":
        _torch_checks(plan, args)
    else:
        torch_only = [f for f, given in (("--nproc-per-node", args.nproc_per_node != 1),
                                         ("--nnodes", args.nnodes != 1),
                                         ("--amp", args.amp is not None)) if given]
        if torch_only:
            raise UsageError(f"{', '.join(torch_only)} need --engine torch")
        training.caffe_tool(args.gpu)
    previous = run_folder.previous_run(plan.folder, nets_are_ours)
    if previous and not (args.overwrite or args.resume):
        shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in previous[:4])
        more = f" and {len(previous) - 4} more" if len(previous) > 4 else ""
        raise UsageError(f"{plan.folder} holds a previous run ({shown}{more}); give "
                         "--overwrite to replace it, --resume SNAPSHOT to continue it, or "
                         "another -o folder")
    if args.overwrite and not args.resume:
        plan.previous = previous
    if args.resume and args.weights:
        raise UsageError("give --resume (continue a run) or --weights (start from weights), "
                         "not both")
    if args.weights:
        weights = Path(args.weights)
        if not weights.is_file():
            raise UsageError(f"--weights {weights} does not exist")
        plan.weights = weights.resolve()
    if args.resume:
        snap = training.read_snapshot(args.resume, plan.folder)
        if snap.iteration >= plan.solver.max_iter:
            raise UsageError(f"the snapshot is at iteration {snap.iteration} and the solver "
                             f"stops at max_iter {plan.solver.max_iter}: nothing to train "
                             "(raise --epochs, or max_iter in solver.prototxt)")
        plan.resume = snap
    plan.gpu = args.gpu


def _torch_checks(plan: Plan, args: argparse.Namespace) -> None:
    from pynetbuilder.pytorch.train import engine, launch

    plan.engine = "torch"
    plan.launch = launch.Launch(args.nproc_per_node, args.nnodes, args.node_rank,
                                args.master_addr, args.master_port, args.gpu, args.amp)
    launch.check(plan.launch)
    s = plan.solver
    net_file = plan.folder / (s.net or s.train_net)
    text = plan.files.get(net_file)
    engine.check(s, engine.read_net(plan.folder, s, text), plan.folder, plan.launch.world)


# ---------------------------------------------------------------- the two forms


def _with_image_shape(data: ClassificationData) -> ClassificationData:
    """``data`` with the channel count of its training source's first image (the deploy
    net's input must match the trained weights); UsageError when the crop exceeds the
    images, or the mean file is not one Caffe's data layer can subtract from them."""
    mean = _mean_image(data.mean_file)
    source = Path(data.train_source)
    if not source.exists():
        return data  # the solver's count names the missing source
    first = datasource.first_record(source, data.backend)
    if first is None:
        raise UsageError(f"the train data source {source} holds no images")
    channels, height, width = first.shape
    if mean is not None and tuple(mean.shape) != (channels, height, width):
        # DataTransformer::Transform checks the mean's channels, height and width
        raise UsageError(f"--mean {data.mean_file} is a {'x'.join(map(str, mean.shape))} "
                         f"mean image, but the images of {source} are "
                         f"{channels}x{height}x{width} (C x H x W): Caffe subtracts it pixel "
                         "by pixel, so it must be their size")
    if data.crop_size > min(height, width):
        raise UsageError(f"--crop_size {data.crop_size} exceeds the {height}x{width} images "
                         f"of {source}")
    if channels == data.channels:
        return data
    if data.mean_values and len(data.mean_values) not in (1, channels):
        raise UsageError(f"--mean has {len(data.mean_values)} values, but the images of "
                         f"{source} have {channels} channel(s): give 1 or {channels}")
    return dataclasses.replace(data, channels=channels)


def _mean_image(path: str | None) -> Any:
    """The mean image a ``mean_file`` names (C x H x W), checked as Caffe reads it."""
    if not path:
        return None
    try:
        mean = read_mean_binaryproto(path)
    except UsageError as exc:
        raise UsageError(f"--mean {path}: {exc}") from None
    if mean.ndim != 3:
        raise UsageError(f"--mean {path} holds a {mean.ndim}-D blob; a mean image is "
                         "C x H x W (num 1)")
    if not np.isfinite(mean).all():
        raise UsageError(f"--mean {path} holds values that are not finite numbers")
    return mean


def _model_plan(name: str, argv: Sequence[str]) -> Plan:
    from pynetbuilder.commands.build import model_parser, parse_model

    try:
        family = FAMILIES[model_name(name)]
    except UsageError as exc:
        raise UsageError(f"{exc}; or give a folder holding train.prototxt") from None
    parser = model_parser(family, f"pynetbuilder train {family.name}",
                          "train the model with real Caffe (batch sizes unset: the recipe's)")
    add_output_flags(parser)
    add_solver_flags(parser)
    add_run_flags(parser)
    spec, args = parse_model([name, *argv], parser, " (solver and data flags: --help)")
    if not args.output_folder:
        raise UsageError("train needs -o DIR, the run folder for the nets, solver, log and "
                         "snapshots")
    folder = Path(args.output_folder)
    r = _recipe(args, solvers.default_recipe(family.name, family.dataset))
    data = spec.data_lego(batch_size=spec.data.batch_size or r.batch_size,
                          test_batch_size=spec.data.test_batch_size or r.test_batch_size)
    # Caffe runs inside the run folder: name the data by absolute paths
    data = dataclasses.replace(
        data, train_source=str(Path(data.train_source).resolve()),
        test_source=str(Path(data.test_source).resolve()),
        mean_file=str(Path(data.mean_file).resolve()) if data.mean_file else None)
    net = spec.build(_with_image_shape(data))
    s, sizes, r = _solver(net.train_val_proto(), r, args, Path.cwd(), net.name)
    training.check_labels(net.train_val_proto(), Path.cwd())
    files = {folder / n: text for n, text in prototxt_files(net).items()}
    files[folder / "solver.prototxt"] = solvers.solver_text(s)
    report = net.report(Phase.DEPLOY)
    if args.json:
        files[Path(args.json)] = report.json_text()
    plan = Plan(folder, s, sizes, files, r, report_table=report.table() if args.table else "")
    _run_checks(plan, args, nets_are_ours=True)
    return plan


def _folder_plan(folder: Path, argv: Sequence[str]) -> Plan:
    parser = Parser(prog="pynetbuilder train DIR",
                    description="train the train.prototxt in DIR with real Caffe")
    add_solver_flags(parser)
    add_run_flags(parser)
    args = parser.parse_args(argv)
    net_file, solver_file = folder / "train.prototxt", folder / "solver.prototxt"
    try:
        net_param = parse_net(net_file.read_text(encoding="utf-8"))
    except Exception as exc:  # protobuf's ParseError
        raise UsageError(f"{net_file} is not a Caffe net: {exc}") from None
    given = [f"--{k}" for k in _SOLVER_FLAGS
             if getattr(args, k) != parser.get_default(k)]
    if solver_file.exists():
        if given:
            raise UsageError(f"{solver_file} exists, so {', '.join(given)} would be ignored: "
                             "edit it, or delete it to generate one from --recipe and flags")
        s = solvers.read_solver(solver_file)
        target = folder / (s.net or s.train_net)
        if not (s.net or s.train_net) or not target.is_file():
            raise UsageError(f"{solver_file} names net {s.net or s.train_net!r}, which is not "
                             f"a file in {folder}")
        plan = Plan(folder, s, (0, 0))
    else:
        r = _recipe(args, solvers.RECIPES["cifar/resnet"])
        s, sizes, r = _solver(net_param, r, args, folder, net_param.name)
        plan = Plan(folder, s, sizes, {solver_file: solvers.solver_text(s)}, r)
    training.check_labels(net_param, folder)
    _run_checks(plan, args, nets_are_ours=False)
    return plan


# ---------------------------------------------------------------- running


def _describe(plan: Plan, say: Callable[[str], None]) -> None:
    s, r = plan.solver, plan.recipe
    if r is not None:
        source = f" ({r.source})" if r.source else ""
        say(f"recipe {r.name}{source}: {solvers.describe(s)}")
        train, test = plan.sizes
        ipe = solvers.iterations_per_epoch(train, r.batch_size)
        line = (f"data: {train} training images, batch {r.batch_size} "
                f"({ipe} iterations per epoch, {s.max_iter / ipe:g} epochs)")
        if test:
            line += (f"; {test} test images, {s.test_iter[0]} batches of {r.test_batch_size} "
                     f"every {s.test_interval} iterations")
            if test % r.test_batch_size:
                line += " (the last batch wraps around)"
        say(line)
        if r.note:
            say(f"note: {r.note}")
    else:
        say(f"solver {plan.folder / 'solver.prototxt'}: {solvers.describe(s)}")


def _chain_logs(folder: Path, log: Path) -> list[Path]:
    """This run's logs in order: train.log, then resumed runs up to ``log``."""
    def start(p: Path) -> int:
        return int(p.stem.rsplit("_", 1)[1])

    logs = [folder / "train.log"] if (folder / "train.log").is_file() else []
    if log.name != "train.log":
        logs += sorted((p for p in folder.glob("train_resumed_*.log")
                        if p.stem.rsplit("_", 1)[1].isdigit() and start(p) <= start(log)),
                       key=start)
    return logs or [log]


def run(plan: Plan, say: Callable[[str], None]) -> training.TrainResult:
    """Write the plan's files (the previous run moved aside with them, when replaced),
    train, evaluate the final weights if the last test was earlier, write log.csv and
    the plots; print as it goes.  An interrupt says what the run folder kept."""
    written, aside = run_folder.start_run(plan.folder, plan.files, plan.previous)
    try:
        for path in written:
            say(f"wrote {path}")
        if aside is not None:
            say(f"replaced the previous run in {plan.folder}")
        return _train(plan, say)
    except (KeyboardInterrupt, Terminated) as exc:
        if not getattr(exc, "kept", ""):
            exc.kept = (f"{plan.folder} holds this run's files as far as it went; training "  # type: ignore[union-attr]
                        "had not started")
        raise
    finally:
        if aside is not None:
            remove(aside)


def _train(plan: Plan, say: Callable[[str], None]) -> training.TrainResult:
    if plan.report_table:
        say(plan.report_table)
    _describe(plan, say)
    s = plan.solver
    log = plan.folder / training.log_name(plan.resume)
    start = f" from iteration {plan.resume.iteration}" if plan.resume else ""
    say(f"{plan.engine} train{start} in {plan.folder} "
        f"({'GPU ' + plan.gpu if plan.gpu else 'CPU'}); full log: {log}")
    if plan.engine == "torch":
        result = _torch_train(plan, say)
        if result is None:  # a node other than 0: rank 0's node reports
            say(f"node {plan.launch.node_rank} done")
            return None  # type: ignore[return-value]
    else:
        result = training.train(plan.folder, max_iter=s.max_iter, resume=plan.resume,
                                weights=plan.weights, gpu=plan.gpu, emit=say)
    try:
        _finish(plan, result, say)
    except (KeyboardInterrupt, Terminated) as exc:
        exc.kept = (f"training had finished: the weights are {result.weights}, the log is "  # type: ignore[union-attr]
                    f"{result.log} (pynetbuilder plot {result.log} draws the plots)")
        raise
    return result


def _finish(plan: Plan, result: training.TrainResult, say: Callable[[str], None]) -> None:
    s = plan.solver
    if result.stopped_early:
        say(f"stopped early (interrupted) at iteration {result.iteration}")
    elif s.test_iter and result.weights and result.tested_at != result.iteration:
        say(f"testing the final weights ({s.test_iter[0]} batches)")
        result.scores = training.evaluate(plan.folder, net=s.net or s.train_net,
                                          weights=result.weights, iterations=s.test_iter[0],
                                          gpu=plan.gpu, log=plan.folder / "test.log")
        result.tested_at = result.iteration
    if result.scores:
        scores = ", ".join(f"{k} = {v:g}" for k, v in _scores_first(result.scores))
        label = "last test" if result.stopped_early else "final test"
        say(f"{label}: {scores} (iteration {result.tested_at} of {s.max_iter})")
    if result.weights:
        say(f"weights: {result.weights}")
    if result.state:
        say(f"solver state: {result.state} (continue with --resume)")
    outputs = plot_files(read_logs(_chain_logs(plan.folder, result.log)))
    try:
        written = write_files({plan.folder / n: content for n, content in outputs.items()})
    except OSError as exc:
        raise UsageError(f"training finished (the weights are {result.weights}), but "
                         f"{exc.filename} could not be written ({exc.strerror}), nor the "
                         "other plots; pynetbuilder plot draws them from the log") from None
    say("plots: " + ", ".join(str(p) for p in written))


def _torch_train(plan: Plan, say: Callable[[str], None]) -> training.TrainResult | None:
    from pynetbuilder.pytorch.train import launch

    if plan.launch.world > 1:
        say(f"{plan.launch.world} processes ({plan.launch.nproc_per_node} per node): the "
            f"effective batch is {plan.launch.world} x the net's batch_size")
    job = launch.Job(str(plan.folder), "solver.prototxt",
                     str(plan.resume.path) if plan.resume else None,
                     str(plan.weights) if plan.weights else None, None,
                     plan.gpu is not None, plan.launch.amp, training.log_name(plan.resume))
    return launch.train(plan.folder, job, plan.launch, emit=say)


def _scores_first(scores: dict[str, float]) -> list[tuple[str, float]]:
    """Accuracy-like outputs before losses."""
    return sorted(scores.items(), key=lambda kv: "loss" in kv[0])


def main(argv: Sequence[str]) -> None:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        if not argv:
            raise UsageError("train needs a model name or a folder holding train.prototxt; "
                             "models: " + ", ".join(FAMILIES.names()))
        print(USAGE + "\n\nmodels: " + ", ".join(FAMILIES.names())
              + "\nrecipes: " + ", ".join(solvers.RECIPES))
        return
    target, rest = argv[0], argv[1:]
    folder = Path(target)
    if (folder / "train.prototxt").is_file():
        plan = _folder_plan(folder, rest)
    else:
        plan = _model_plan(target, rest)
    run(plan, functools.partial(print, flush=True))

