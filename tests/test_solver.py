"""Solvers: recipes equal the reference configs, iteration arithmetic, refusals, and real
Caffe reading our solvers and following the learning-rate schedule we meant."""

from __future__ import annotations

import math
import os
import re
import subprocess

import pytest
from conftest import CAFFE_TOOL

from pynetbuilder import solver as sv
from pynetbuilder.errors import UsageError

# A net without files: DummyData -> InnerProduct -> SoftmaxWithLoss.  One filler per
# top: labels must be constant 0 (one filler would fill them with Gaussian noise too,
# and SoftmaxWithLoss would index out of bounds with a negative label).
DUMMY_NET = """name: "dummy"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 }
                     data_filler { type: "gaussian" } data_filler { type: "constant" } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


# Values read from hysts/pytorch_image_classification configs/cifar/*.yaml and
# configs/imagenet/resnet_18.yaml (train.* and scheduler.*; nesterov: True everywhere).
REFERENCE = {
    "cifar/resnet": (0.1, 1e-4, 128, 160, (80, 120), 0.1),
    "cifar/resnet_preact": (0.1, 1e-4, 128, 160, (80, 120), 0.1),
    "cifar/se_resnet_preact": (0.1, 1e-4, 128, 160, (80, 120), 0.1),
    "cifar/vgg": (0.1, 1e-4, 128, 160, (80, 120), 0.1),
    "cifar/wrn": (0.1, 5e-4, 128, 200, (60, 120, 160), 0.2),
    "cifar/densenet": (0.1, 1e-4, 64, 300, (150, 225), 0.1),
    "cifar/pyramidnet": (0.1, 1e-4, 128, 300, (150, 225), 0.1),
    "cifar/resnext": (0.1, 5e-4, 128, 300, (150, 225), 0.1),
    "imagenet/resnet_18": (0.2, 1e-4, 256, 90, (30, 60), 0.1),
}


@pytest.mark.parametrize("name", REFERENCE)
def test_recipes_are_the_reference_configs(name):
    lr, wd, batch, epochs, milestones, decay = REFERENCE[name]
    r = sv.recipe(name)
    assert (r.optimizer, r.base_lr, r.momentum, r.weight_decay, r.batch_size, r.epochs,
            r.policy, r.milestones, r.gamma) == (
        "nesterov", lr, 0.9, wd, batch, epochs, "multistep", milestones, decay)
    sv.check_caffe_can(r)  # all of these are things Caffe does


def test_cifar_resnet_arithmetic():
    # The reference: 50,000 images, batch 128, drop_last -> 390 updates per epoch;
    # milestones 80 and 120 of 160 epochs; validation over all 10,000 images.
    s = sv.solver_parameter(sv.recipe("cifar/resnet"), net="train.prototxt", train_size=50_000,
                           test_size=10_000, snapshot_prefix="snapshots/resnet110")
    assert s.type == "Nesterov" and s.lr_policy == "multistep"
    assert s.max_iter == 160 * 390 and list(s.stepvalue) == [80 * 390, 120 * 390]
    assert s.test_iter == [math.ceil(10_000 / 256)] and s.test_interval == 390
    assert math.isclose(s.base_lr, 0.1, rel_tol=1e-7) and math.isclose(s.momentum, 0.9,
                                                                        rel_tol=1e-7)
    assert math.isclose(s.weight_decay, 1e-4, rel_tol=1e-6) and math.isclose(s.gamma, 0.1,
                                                                            rel_tol=1e-7)
    assert s.solver_mode == sv.caffe_pb2.SolverParameter.CPU and s.snapshot == 0
    assert not s.HasField("solver_type")  # the string field `type`, not the deprecated enum


def test_changing_epochs_keeps_milestone_fractions_and_gpu_mode():
    r = sv.recipe("cifar/wrn").with_changes(epochs=20)
    assert r.milestones == pytest.approx((6, 12, 16))
    s = sv.solver_parameter(r, net="n", train_size=1280, test_size=0, snapshot_prefix="s",
                           gpu="1", snapshot_every=5, random_seed=7)
    assert s.max_iter == 200 and list(s.stepvalue) == [60, 120, 160]
    assert s.snapshot == 50 and s.random_seed == 7 and not s.test_iter
    assert s.solver_mode == sv.caffe_pb2.SolverParameter.GPU and s.device_id == 1


REFUSED = [
    (sv.recipe("cifar/shake_shake"), ["cosine", "fixed, step, multistep, poly, exp, inv"]),
    (sv.recipe("cifar/resnet+mixup"), ["mixup", "refused"]),
    (sv.recipe("cifar/resnet+label_smoothing"), ["label smoothing", "refused"]),
    (sv.recipe("cifar/resnet").with_changes(warmup_epochs=5), ["warm-up", "--resume"]),
    (sv.Recipe(policy="sgdr"), ["'sgdr'", "Caffe's policies"]),
    (sv.Recipe(policy="banana"), ["unknown learning-rate policy 'banana'"]),
    (sv.Recipe(optimizer="lars"), ["no 'lars' optimizer", "sgd, nesterov, adam"]),
    (sv.Recipe(milestones=(120, 80)), ["milestones must rise"]),
    (sv.Recipe(policy="step"), ["--step_epochs"]),
    (sv.Recipe(base_lr=0), ["base_lr must be positive"]),
]


@pytest.mark.parametrize("recipe,words", REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_what_caffe_cannot_do_is_refused_with_a_reason(recipe, words):
    with pytest.raises(UsageError) as err:
        sv.solver_parameter(recipe, net="n", train_size=100, test_size=0, snapshot_prefix="s")
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unknown_recipe_and_add_on_name_the_choices():
    with pytest.raises(UsageError, match="recipes: cifar/resnet"):
        sv.recipe("cifar/nope")
    with pytest.raises(UsageError, match=r"add-ons: \+label_smoothing"):
        sv.recipe("cifar/resnet+autoaugment")


def test_milestones_that_do_not_fit_are_refused():
    r = sv.Recipe(epochs=1, milestones=(0.5, 0.6))
    with pytest.raises(UsageError, match="train for more epochs"):
        sv.solver_parameter(r.with_changes(batch_size=10), net="n", train_size=20, test_size=0,
                           snapshot_prefix="s")


def test_read_solver_refuses_unknown_policy(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "train.prototxt"\nbase_lr: 0.1\nlr_policy: "cosine"\n')
    with pytest.raises(UsageError, match="'cosine'.*not one Caffe has"):
        sv.read_solver(path)
    path.write_text('net: "train.prototxt"\nbase_lr: 0.1\nlr_plicy: "step"\n')
    with pytest.raises(UsageError, match="not a Caffe solver"):
        sv.read_solver(path)


@pytest.mark.parametrize("optimizer,cls", [("sgd", "SGDSolver"), ("nesterov", "NesterovSolver"),
                                           ("adam", "AdamSolver")])
def test_pycaffe_builds_our_solver(caffe, tmp_path, optimizer, cls):
    (tmp_path / "net.prototxt").write_text(DUMMY_NET)
    r = sv.Recipe(optimizer=optimizer, base_lr=0.01, epochs=2, milestones=(1,), batch_size=2)
    s = sv.solver_parameter(r, net=str(tmp_path / "net.prototxt"), train_size=4, test_size=0,
                           snapshot_prefix=str(tmp_path / "snap"))
    (tmp_path / "solver.prototxt").write_text(sv.solver_text(s))
    solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    assert type(solver).__name__ == cls
    solver.step(s.max_iter)
    assert solver.iter == s.max_iter == 4


def caffe_lrs(tmp_path, s) -> dict[int, float]:
    """Run real `caffe train` with solver ``s`` on the dummy net; the lr it logged per
    iteration."""
    (tmp_path / "net.prototxt").write_text(DUMMY_NET)
    s.net, s.snapshot_prefix, s.display, s.snapshot_after_train = "net.prototxt", "snap", 1, False
    (tmp_path / "solver.prototxt").write_text(sv.solver_text(s))
    proc = subprocess.run([str(CAFFE_TOOL), "train", "-solver", "solver.prototxt"],
                          cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "GLOG_logtostderr": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lrs = {int(i): float(v) for i, v in re.findall(r"Iteration (\d+), lr = (\S+)", proc.stderr)}
    assert sorted(lrs) == list(range(s.max_iter))
    return lrs


# Each policy's rate by its textbook definition, at iteration t (T = max_iter), for
# the recipe below: 10 images, batch 2 -> 5 iterations per epoch, 4 epochs -> T = 20.
SCHEDULES = {
    # PyTorch MultiStepLR: base * gamma ** (number of milestones <= t), milestones at
    # epochs 2 and 3 = iterations 10 and 15
    "multistep": (dict(milestones=(2, 3), gamma=0.5),
                  lambda t: 0.1 * 0.5 ** sum(t >= m for m in (10, 15))),
    "step": (dict(step_epochs=1, gamma=0.5), lambda t: 0.1 * 0.5 ** (t // 5)),
    "poly": (dict(power=2.0), lambda t: 0.1 * (1 - t / 20) ** 2),
    "exp": (dict(gamma=0.9), lambda t: 0.1 * 0.9 ** t),
    "inv": (dict(gamma=0.1, power=0.75), lambda t: 0.1 * (1 + 0.1 * t) ** -0.75),
    "sigmoid": (dict(gamma=-0.5, step_epochs=2),
                lambda t: 0.1 / (1 + math.exp(0.5 * (t - 10)))),
    "fixed": (dict(), lambda t: 0.1),
}


@pytest.mark.parametrize("policy", SCHEDULES)
def test_caffe_follows_the_schedule_we_meant(tmp_path, policy):
    changes, expected = SCHEDULES[policy]
    r = sv.Recipe(optimizer="sgd", base_lr=0.1, epochs=4, batch_size=2, policy=policy,
                 **{"milestones": (), **changes})
    s = sv.solver_parameter(r, net="n", train_size=10, test_size=0, snapshot_prefix="s")
    assert s.max_iter == 20
    for t, lr in caffe_lrs(tmp_path, s).items():
        assert lr == pytest.approx(expected(t), rel=2e-5), (policy, t)
