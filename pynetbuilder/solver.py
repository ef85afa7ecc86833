"""Caffe solvers from training recipes: ``SolverParameter`` built through Caffe's own schema.

A :class:`Recipe` holds the hyper-parameters the way papers and PyTorch configs
state them: optimizer, learning rate, momentum, weight decay, batch size, a
schedule in **epochs** (milestones at epochs 80 and 120 of 160).
:func:`solver_parameter` turns it into Caffe's iteration counts for a dataset:

- iterations per epoch ``ipe = max(1, train_size // batch_size)``: the updates of the
  reference's epoch (its loader drops the last partial batch; Caffe's Data layer just
  cycles through the database, so the next epoch starts where this one stopped);
- ``max_iter = round(epochs * ipe)``; a milestone at epoch ``m`` becomes
  ``stepvalue = round(m * ipe)``: Caffe uses the lowered rate from that iteration on,
  as PyTorch's MultiStepLR does from that step (the reference's own combined
  scheduler switches one step later);
- ``test_iter = ceil(test_size / test_batch_size)`` (the whole test set; when the
  batch does not divide it, the last batch wraps around to the first images),
  ``test_interval = round(test_every * ipe)``.

Named recipes (:data:`RECIPES`) are the CIFAR and ImageNet configurations of
hysts/pytorch_image_classification (``configs/cifar/*.yaml``,
``configs/imagenet/*.yaml``).  Their augmentation add-ons are named ``+mixup``,
``+label_smoothing`` ... (``cifar/resnet+mixup``).

Caffe cannot do everything a PyTorch recipe asks for, and nothing is
substituted silently: :func:`check_caffe_can` refuses a schedule that is not one
of Caffe's policies (cosine, SGDR, linear), a warm-up (Caffe has one policy per
run; none rises and then follows another), an optimizer Caffe lacks (LARS,
AdaBound) and losses or augmentations its layers lack (label smoothing, mixup,
cutout ...).  What Caffe does differently without changing the recipe: its SGD
and Nesterov keep the learning rate inside the momentum buffer (``v = m v + lr g``,
PyTorch: ``v = m v + g``, step ``lr v``), identical while the rate is constant and
for about ``1 / (1 - m)`` iterations after a milestone slightly different.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from google.protobuf import text_format

from pynetbuilder.errors import UsageError
from pynetbuilder.schema import caffe_pb2, to_text

# Caffe's learning-rate policies (SGDSolver::GetLearningRate), with their formulas.
CAFFE_POLICIES: Mapping[str, str] = MappingProxyType({
    "fixed": "base_lr",
    "step": "base_lr * gamma ^ floor(iter / stepsize)",
    "multistep": "base_lr * gamma ^ (milestones passed)",
    "poly": "base_lr * (1 - iter / max_iter) ^ power",
    "exp": "base_lr * gamma ^ iter",
    "inv": "base_lr * (1 + gamma * iter) ^ -power",
    "sigmoid": "base_lr / (1 + exp(-gamma * (iter - stepsize)))",
})

# Our optimizer names -> Caffe's solver type (the string field ``type``; the
# ``solver_type`` enum is deprecated).
OPTIMIZERS: Mapping[str, str] = MappingProxyType({
    "sgd": "SGD",
    "nesterov": "Nesterov",
    "adam": "Adam",
})

# Schedules and optimizers of PyTorch recipes that Caffe does not have.
FOREIGN_SCHEDULES = ("cosine", "sgdr", "linear")
FOREIGN_OPTIMIZERS = ("lars", "adabound", "adaboundw", "adamw")


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters in the reference's terms (epochs, not iterations).

    ``milestones`` and ``step_epochs`` are in epochs; ``gamma`` is the factor of
    ``step``/``multistep`` (the reference's ``lr_decay``) and the per-iteration
    constant of ``exp``/``inv``/``sigmoid``; ``power`` is for ``poly``/``inv``.
    ``momentum`` is Adam's beta1 and ``momentum2`` its beta2, ``delta`` its epsilon.
    ``needs`` lists what else the recipe does that Caffe cannot (refused by
    :func:`check_caffe_can`); ``note`` says what the data layer must do.
    """

    name: str = "custom"
    source: str = ""
    optimizer: str = "nesterov"
    base_lr: float = 0.1
    momentum: float = 0.9
    momentum2: float = 0.999
    delta: float = 1e-8
    weight_decay: float = 1e-4
    batch_size: int = 128
    test_batch_size: int = 256
    epochs: float = 160
    policy: str = "multistep"
    milestones: tuple[float, ...] = (80, 120)
    gamma: float = 0.1
    power: float = 1.0
    step_epochs: float = 0.0
    warmup_epochs: float = 0.0
    needs: tuple[str, ...] = ()
    note: str = ""

    def with_changes(self, **changes: object) -> Recipe:
        """A copy with ``changes``; a new ``epochs`` without new ``milestones`` or
        ``step_epochs`` scales them with it (they keep their fraction of the run)."""
        scaled: dict[str, object] = {}
        epochs = changes.get("epochs")
        if epochs is not None and epochs != self.epochs:
            factor = float(epochs) / self.epochs  # type: ignore[arg-type]
            if "milestones" not in changes:
                scaled["milestones"] = tuple(m * factor for m in self.milestones)
            if "step_epochs" not in changes:
                scaled["step_epochs"] = self.step_epochs * factor
        return dataclasses.replace(self, **{**scaled, **changes})  # type: ignore[arg-type]


_HYSTS = "hysts/pytorch_image_classification configs/"
_CIFAR_NOTE = ("the reference pads each 32x32 image by 4 zero pixels, crops 32x32 at random "
               "and mirrors: store 40x40 zero-padded images and train with --crop_size 32 "
               "for the same crops; it also divides by per-channel std, where Caffe has one "
               "scale factor")
_IMAGENET_NOTE = ("the reference crops a random area and aspect ratio (RandomResizedCrop); "
                  "Caffe's data layer crops a fixed square at a random place, so the "
                  "augmentation is weaker")
_CIFAR = Recipe(source=_HYSTS + "cifar/resnet.yaml", note=_CIFAR_NOTE)


def _cifar(name: str, **changes: object) -> Recipe:
    return dataclasses.replace(_CIFAR, name=f"cifar/{name}",
                               source=f"{_HYSTS}cifar/{name}.yaml", **changes)  # type: ignore


def _imagenet(name: str, **changes: object) -> Recipe:
    return Recipe(name=f"imagenet/{name}", source=f"{_HYSTS}imagenet/{name}.yaml",
                  batch_size=256, test_batch_size=256, epochs=90, milestones=(30, 60),
                  note=_IMAGENET_NOTE, **changes)  # type: ignore[arg-type]


RECIPES: Mapping[str, Recipe] = MappingProxyType({r.name: r for r in (
    _cifar("resnet"),
    _cifar("resnet_preact"),
    _cifar("se_resnet_preact"),
    _cifar("vgg"),
    _cifar("wrn", weight_decay=5e-4, epochs=200, milestones=(60, 120, 160), gamma=0.2),
    _cifar("densenet", batch_size=64, epochs=300, milestones=(150, 225)),
    _cifar("pyramidnet", epochs=300, milestones=(150, 225)),
    _cifar("resnext", weight_decay=5e-4, epochs=300, milestones=(150, 225)),
    _cifar("shake_shake", base_lr=0.2, epochs=1800, policy="cosine", milestones=()),
    _imagenet("resnet_18", base_lr=0.2),
)})

# The reference's augmentation add-ons (configs/augmentations/cifar/*.yaml): none is
# something Caffe's solver, loss or data layers do.
AUGMENTATIONS: Mapping[str, str] = MappingProxyType({
    "label_smoothing": "label smoothing (epsilon 0.1; Caffe's SoftmaxWithLoss takes hard labels)",
    "mixup": "mixup (alpha 1.0; mixes image pairs and their labels)",
    "cutmix": "CutMix (alpha 1.0; pastes patches between images and mixes labels)",
    "ricap": "RICAP (beta 0.3; patches of four images, mixed labels)",
    "cutout": "cutout (16x16 masks; Caffe's DataTransformer only crops, mirrors, scales)",
    "dual_cutout": "dual cutout (two masked views and a consistency loss)",
    "random_erasing": "random erasing (Caffe's DataTransformer only crops, mirrors, scales)",
})


def recipe(name: str) -> Recipe:
    """The recipe called ``name``: ``cifar/resnet``, or with add-ons ``cifar/resnet+mixup``."""
    base, *extras = name.split("+")
    if base not in RECIPES:
        raise UsageError(f"unknown recipe {base!r}; recipes: {', '.join(RECIPES)} "
                         f"(add-ons: {', '.join('+' + a for a in AUGMENTATIONS)})")
    found = RECIPES[base]
    needs = list(found.needs)
    for extra in extras:
        if extra not in AUGMENTATIONS:
            raise UsageError(f"unknown recipe add-on {'+' + extra!r}; add-ons: "
                             f"{', '.join('+' + a for a in AUGMENTATIONS)}")
        needs.append(AUGMENTATIONS[extra])
    return dataclasses.replace(found, name=name, needs=tuple(needs))


def default_recipe(family: str, dataset: str) -> Recipe:
    """The reference recipe of a model family (``cifar/<family>``), else its dataset's
    ResNet recipe (``cifar/resnet``, ``imagenet/resnet_18``)."""
    own = f"{dataset}/{family}"
    if own in RECIPES:
        return RECIPES[own]
    return RECIPES["cifar/resnet" if dataset == "cifar" else "imagenet/resnet_18"]


def _policies() -> str:
    return ", ".join(CAFFE_POLICIES)


def check_policy(policy: str) -> None:
    """UsageError unless ``policy`` is one of Caffe's learning-rate policies."""
    if policy in CAFFE_POLICIES:
        return
    if policy in FOREIGN_SCHEDULES:
        raise UsageError(
            f"the {policy!r} learning-rate schedule is not one Caffe has; Caffe's policies: "
            f"{_policies()} (nothing was substituted: choose one with --policy)")
    raise UsageError(f"unknown learning-rate policy {policy!r}; Caffe's policies: {_policies()}")


def check_caffe_can(r: Recipe) -> None:
    """UsageError naming the first thing in ``r`` that Caffe cannot do, or a value out
    of range.  Nothing is approximated."""
    where = f" (recipe {r.name})" if r.name != "custom" else ""
    numbers = {"base_lr": r.base_lr, "momentum": r.momentum, "momentum2": r.momentum2,
               "delta": r.delta, "weight_decay": r.weight_decay, "epochs": r.epochs,
               "gamma": r.gamma, "power": r.power, "step_epochs": r.step_epochs,
               "warmup_epochs": r.warmup_epochs}
    for flag, value in [*numbers.items(), *(("milestones", m) for m in r.milestones)]:
        if not math.isfinite(value):
            raise UsageError(f"{flag} must be a finite number, got {value:g}")
    if r.optimizer not in OPTIMIZERS:
        if r.optimizer in FOREIGN_OPTIMIZERS:
            raise UsageError(f"Caffe has no {r.optimizer!r} optimizer{where}; "
                             f"optimizers: {', '.join(OPTIMIZERS)}")
        raise UsageError(f"unknown optimizer {r.optimizer!r}; optimizers: {', '.join(OPTIMIZERS)}")
    try:
        check_policy(r.policy)
    except UsageError as exc:
        raise UsageError(f"{exc}{where}") from None
    if r.warmup_epochs:
        raise UsageError(
            f"Caffe has no learning-rate warm-up{where}: one policy ({_policies()}) runs the "
            "whole training, and none rises and then follows another; train the warm-up as "
            "its own short run (policy inv with power -1 rises linearly) and continue with "
            "--resume from its snapshot")
    if r.needs:
        raise UsageError(f"{r.name} needs {'; '.join(r.needs)}: Caffe cannot do that, so "
                         "the recipe is refused rather than trained without it")
    positive = {"base_lr": r.base_lr, "epochs": r.epochs, "batch_size": r.batch_size,
                "test_batch_size": r.test_batch_size}
    for flag, value in positive.items():
        if not value > 0:
            raise UsageError(f"{flag} must be positive, got {value:g}")
    for flag, value in {"momentum": r.momentum, "momentum2": r.momentum2}.items():
        if not 0 <= value < 1:
            raise UsageError(f"{flag} must be in [0, 1), got {value:g}")
    if r.weight_decay < 0:
        raise UsageError(f"weight_decay must not be negative, got {r.weight_decay:g}")
    if r.policy == "multistep":
        ms = r.milestones
        if not ms:
            raise UsageError("the multistep policy needs --milestones (epochs)")
        if any(b <= a for a, b in zip(ms, ms[1:])) or ms[0] <= 0 or ms[-1] >= r.epochs:
            raise UsageError(f"milestones must rise strictly inside (0, {r.epochs:g}) epochs, "
                             f"got {' '.join(f'{m:g}' for m in ms)}")
    if r.policy in ("step", "sigmoid") and not r.step_epochs > 0:
        raise UsageError(f"the {r.policy} policy needs --step_epochs (a positive number "
                         "of epochs)")


def iterations_per_epoch(train_size: int, batch_size: int) -> int:
    """Full batches in ``train_size`` images (at least 1): the reference's epoch."""
    return max(1, train_size // batch_size)


def solver_parameter(
    r: Recipe,
    *,
    net: str,
    train_size: int,
    test_size: int,
    snapshot_prefix: str,
    test_every: float = 1.0,
    snapshot_every: float = 0.0,
    display: int | None = None,
    gpu: str | None = None,
    random_seed: int | None = None,
) -> caffe_pb2.SolverParameter:
    """The Caffe solver of recipe ``r`` for a dataset of ``train_size`` / ``test_size``
    images (see the module docstring for the arithmetic).

    ``net`` is the train.prototxt path as Caffe will see it (relative to the folder
    Caffe runs in).  ``test_every`` / ``snapshot_every`` are in epochs (0: no
    periodic snapshot; Caffe always snapshots at the end); ``test_size`` 0 means no
    testing.  ``display`` (iterations between progress lines) defaults to about 50
    lines per run, at most every 100 iterations.  ``gpu`` (``"0"``, ``"0,1"``,
    ``"all"``) selects GPU mode; else CPU.  Raises UsageError for what Caffe cannot do.
    """
    check_caffe_can(r)
    for flag, epochs in (("test_every", test_every), ("snapshot_every", snapshot_every)):
        if not math.isfinite(epochs):
            raise UsageError(f"{flag} must be a finite number of epochs, got {epochs}")
    for flag, value in (("train_size", train_size), ("test_size", test_size)):
        if value < 0 or (flag == "train_size" and value == 0):
            raise UsageError(f"{flag} must be a positive number of images, got {value}")
    ipe = iterations_per_epoch(train_size, r.batch_size)

    def iters(epochs: float) -> int:
        return round(epochs * ipe)

    max_iter = max(1, iters(r.epochs))
    s = caffe_pb2.SolverParameter(
        net=net, type=OPTIMIZERS[r.optimizer], base_lr=r.base_lr, lr_policy=r.policy,
        weight_decay=r.weight_decay, max_iter=max_iter, snapshot_prefix=snapshot_prefix,
        display=display or max(1, min(100, round(max_iter / 50))),
    )
    if r.optimizer != "sgd" or r.momentum:
        s.momentum = r.momentum
    if r.optimizer == "adam":
        s.momentum2, s.delta = r.momentum2, r.delta
    if r.policy in ("step", "multistep", "exp", "inv", "sigmoid"):
        s.gamma = r.gamma
    if r.policy in ("poly", "inv"):
        s.power = r.power
    if r.policy in ("step", "sigmoid"):
        s.stepsize = max(1, iters(r.step_epochs))
    if r.policy == "multistep":
        steps = [iters(m) for m in r.milestones]
        if any(b <= a for a, b in zip(steps, steps[1:])) or steps[0] < 1:
            raise UsageError(
                f"{len(steps)} milestones do not fit in {max_iter} iterations "
                f"({ipe} per epoch): they would fall at iterations "
                f"{' '.join(map(str, steps))}; train for more epochs")
        s.stepvalue.extend(steps)
    if test_size:
        if not test_every > 0:
            raise UsageError(f"test_every must be a positive number of epochs, got {test_every}")
        s.test_iter.append(math.ceil(test_size / r.test_batch_size))
        s.test_interval = max(1, iters(test_every))
        s.test_initialization = False
    if snapshot_every < 0:
        raise UsageError(f"snapshot_every must not be negative, got {snapshot_every}")
    if snapshot_every:
        s.snapshot = max(1, iters(snapshot_every))
    s.solver_mode = caffe_pb2.SolverParameter.GPU if gpu else caffe_pb2.SolverParameter.CPU
    if gpu and gpu != "all":
        if not re.fullmatch(r"\d+(,\d+)*", gpu):
            raise UsageError(f"--gpu takes device numbers (0 or 0,1) or all, got {gpu!r}")
        s.device_id = int(gpu.split(",")[0])
    if random_seed is not None:
        s.random_seed = random_seed
    check_solver(s)
    return s


def solver_text(s: caffe_pb2.SolverParameter) -> str:
    """The solver.prototxt text Caffe reads."""
    return to_text(s)


def read_solver(path: str | Path) -> caffe_pb2.SolverParameter:
    """Parse a solver.prototxt; UsageError (one line) when it does not parse or names a
    policy or solver type Caffe does not have."""
    path = Path(path)
    s = caffe_pb2.SolverParameter()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), s)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except text_format.ParseError as exc:
        raise UsageError(f"{path} is not a Caffe solver: {exc}") from None
    try:
        check_solver(s)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return s


# The solver types of the pinned Caffe's registry, and what the deprecated
# ``solver_type`` enum names (UpgradeSolverType).
CAFFE_SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
_EVAL_TYPES = ("classification", "detection")  # this build's Solver::TestAll


def solver_type(s: caffe_pb2.SolverParameter) -> str:
    """The solver type Caffe runs: ``type``, or the deprecated ``solver_type`` enum's."""
    if s.HasField("solver_type") and not s.HasField("type"):
        return {"NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
                "ADADELTA": "AdaDelta", "ADAM": "Adam"}.get(
            caffe_pb2.SolverParameter.SolverType.Name(s.solver_type), "SGD")
    return s.type


def check_solver(s: caffe_pb2.SolverParameter) -> None:
    """UsageError for a solver the pinned Caffe would fail on, as it would: a ``CHECK``
    or fatal log of ``Solver::Init`` / ``InitTrainNet`` / ``InitTestNets``, of a solver
    type's constructor (``sgd_solvers.hpp``), of ``SGDSolver::GetLearningRate`` /
    ``Regularize``; a crash (``step`` without ``stepsize`` divides by zero:
    SIGFPE); or a setting that makes every loss NaN (``iter_size`` 0), a non-finite
    number, or a schedule that silently does nothing (``multistep`` without
    ``stepvalue``: Caffe keeps ``base_lr``)."""
    nets = [f for f in ("net", "net_param", "train_net", "train_net_param") if s.HasField(f)]
    if len(nets) != 1:
        raise UsageError("the solver must name its train net with exactly one of net, "
                         f"net_param, train_net, train_net_param; it has "
                         f"{', '.join(nets) or 'none'}")
    if s.HasField("solver_type") and s.HasField("type"):
        raise UsageError("the solver gives both type and the deprecated solver_type; Caffe "
                         "refuses that (keep type)")
    kind = solver_type(s)
    if kind not in CAFFE_SOLVER_TYPES:
        raise UsageError(f"unknown solver type {kind!r}; Caffe's: "
                         f"{', '.join(CAFFE_SOLVER_TYPES)}")
    if not s.lr_policy:  # SGDSolver::GetLearningRate: "Unknown learning rate policy: "
        raise UsageError(f"the solver sets no lr_policy; Caffe needs one of {_policies()}")
    check_policy(s.lr_policy)
    for name in ("base_lr", "momentum", "momentum2", "delta", "weight_decay", "gamma",
                 "power", "rms_decay", "clip_gradients"):
        value = getattr(s, name)
        if not math.isfinite(value):
            raise UsageError(f"{name} must be a finite number, got {value:g}")
    if s.average_loss < 1:
        raise UsageError(f"average_loss must be at least 1, got {s.average_loss} (Caffe "
                         "checks average_loss >= 1)")
    if s.iter_size < 1:
        raise UsageError(f"iter_size must be at least 1, got {s.iter_size} (Caffe divides "
                         "the loss by it)")
    policy = s.lr_policy
    if policy == "step" and s.stepsize < 1:
        raise UsageError(f"lr_policy \"step\" needs a positive stepsize (iterations per "
                         f"step), got {s.stepsize}: Caffe divides the iteration by it")
    if policy == "multistep":
        steps = list(s.stepvalue)
        if not steps:
            raise UsageError("lr_policy \"multistep\" needs stepvalue (the iterations at "
                             "which the rate is multiplied by gamma); without one Caffe "
                             "never changes the rate (use lr_policy \"fixed\" for that)")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise UsageError(f"stepvalue must rise strictly, got {' '.join(map(str, steps))}")
    if kind in ("AdaGrad", "RMSProp") and s.momentum != 0:
        raise UsageError(f"momentum cannot be used with {kind} (Caffe checks momentum == 0), "
                         f"got {s.momentum:g}")
    if kind == "RMSProp" and not 0 <= s.rms_decay < 1:
        raise UsageError(f"rms_decay must lie in [0, 1) for RMSProp, got {s.rms_decay:g}")
    if s.regularization_type not in ("L1", "L2"):
        raise UsageError(f"unknown regularization_type {s.regularization_type!r}; Caffe's: "
                         "L1, L2")
    if s.eval_type not in _EVAL_TYPES:
        raise UsageError(f"unknown eval_type {s.eval_type!r}; this Caffe's: "
                         f"{', '.join(_EVAL_TYPES)}")
    generic = s.HasField("net") or s.HasField("net_param")
    named = len(s.test_net) + len(s.test_net_param)
    if len(s.test_iter) < named or (not generic and len(s.test_iter) != named):
        raise UsageError(f"test_iter must be given once per test net: {named} test net(s), "
                         f"{len(s.test_iter)} test_iter")
    if s.test_state and len(s.test_state) != len(s.test_iter):
        raise UsageError("test_state must be unspecified or given once per test net")
    if s.test_iter and s.test_interval <= 0:
        raise UsageError(f"test_interval must be positive when the solver tests (test_iter "
                         f"is given), got {s.test_interval}")


def describe(s: caffe_pb2.SolverParameter) -> str:
    """One line: optimizer, rate and schedule in iterations."""
    parts = [f"{s.type} base_lr {s.base_lr:g}"]
    if s.HasField("momentum"):
        parts.append(f"momentum {s.momentum:g}")
    parts.append(f"weight_decay {s.weight_decay:g}")
    policy = s.lr_policy or "fixed"
    if policy == "multistep":
        policy += f" x{s.gamma:g} at {', '.join(map(str, s.stepvalue))}"
    elif policy in ("step", "sigmoid"):
        policy += f" gamma {s.gamma:g} stepsize {s.stepsize}"
    elif policy in ("exp", "inv"):
        policy += f" gamma {s.gamma:g}" + (f" power {s.power:g}" if policy == "inv" else "")
    elif policy == "poly":
        policy += f" power {s.power:g}"
    parts.append(f"lr policy {policy}")
    parts.append(f"max_iter {s.max_iter}")
    return ", ".join(parts)
