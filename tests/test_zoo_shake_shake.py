"""The CIFAR shake-shake family, its ShakeShake Caffe Python layer and its shortcut.

Reference numbers: hysts/pytorch_image_classification,
pytorch_image_classification/models/cifar/shake_shake.py (commit 10892f7f), run
outside this project with torch 2.14.1 (CPU).  ``Network(config)`` was built from a
stub config (dataset: 3 channels, 32x32, 10 classes; ``config.model.shake_shake``:
depth and initial_channels of the row, shake_forward/backward/image True;
init_mode kaiming_fan_out) with stubs for the two modules the file imports that
hold no parameters (``initializer.create_initializer``, ``functions.
shake_shake_function``), then

- params = ``sum(p.numel() for p in model.parameters())`` (BatchNorm2d's weight and
  bias are our Scale's two blobs; its running statistics are buffers, as our
  BatchNorm blobs are not learnable);
- MACs = forward hooks on one 1x3x32x32 image in eval mode, summing
  ``out.numel() * in_channels / groups * kh * kw`` per Conv2d and
  ``in_features * out_features`` per Linear (our convention).

Parameters are identical.  MACs differ by design in one layer per downsampling
shortcut: its shifted path is a 1x1 convolution with pad 1 whose output is then
cropped (see :class:`pynetbuilder.legos.shake.ShakeShakeShortcut`), so that
convolution computes ``(H + 2/s)^2`` outputs instead of ``H^2`` (``H`` = the
block's output size, ``s`` its stride); :func:`shortcut_extra_macs` is that exact
excess.  (A one-off check loaded the same random weights into our Caffe deploy net
and the reference model in eval mode for shake-shake-14 2x16d: logits agreed to 9e-8.)

What runs a Python layer (Caffe nets of the train phase, the solver) runs in a
child process, so that a crash there fails one test instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CAFFE_TOOL, ROOT, VENV_PY, caffe_net, check_in_caffe, small_data, write_lmdb

from pynetbuilder import Net, models
from pynetbuilder.errors import ShapeError, UsageError
from pynetbuilder.graph import ALL_PHASES, prototxt_files
from pynetbuilder.kinds import UnknownShapeError, apply_rule
from pynetbuilder.legos import Input
from pynetbuilder.legos.shake import PYTHON_LAYER, PYTHON_MODULE, ShakeShake, ShakeShakeShortcut
from pynetbuilder.schema import caffe_pb2, to_text
from pynetbuilder.settings import layer_parameter

FAMILY = "shake_shake"

# reference label -> (learnable params, MACs) of the reference code (see the docstring)
REFERENCE = {
    "shake-shake-26 2x32d": (2_923_162, 426_689_792),
    "shake-shake-26 2x64d": (11_653_978, 1_685_506_560),
    "shake-shake-26 2x96d": (26_192_922, 3_776_892_672),
}
# Small configurations, counted the same way, for quick checks in real Caffe.
SMALL = {(8, 8): 40_138, (14, 16): 346_650}


def shortcut_extra_macs(initial_channels: int, size: int = 32) -> int:
    """MACs our three downsampling shortcuts add to the reference's: the shifted 1x1
    convolution (``in -> out/2`` channels) runs on ``(h + 2/s)^2`` positions, not ``h^2``."""
    k = initial_channels
    extra = 0
    for c_in, c_out, stride, h in ((16, k, 1, size), (k, 2 * k, 2, size // 2),
                                    (2 * k, 4 * k, 2, size // 4)):
        extra += ((h + 2 // stride) ** 2 - h**2) * c_in * (c_out // 2)
    return extra


# ------------------------------------------------------------------ child processes


def run_child(function: str, *args: object, cwd: Path,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``function(*args)`` of this module in a fresh pycaffe process."""
    done = subprocess.run([str(VENV_PY), __file__, function, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, (
        f"child {function} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def child_check_in_caffe(knobs: str, train_db: str, test_db: str, folder: str) -> None:
    import caffe

    caffe.set_mode_cpu()
    net = models.build(FAMILY, data=small_data((Path(train_db), Path(test_db)), "cifar"),
                       **json.loads(knobs))
    check_in_caffe(caffe, net, Path(folder))
    print("checked")


def layer_net(phase_name: str) -> Net:
    """Inputs x1, x2 (4 x 3 x 5 x 5) mixed by the ShakeShake Python layer (seeded)."""
    net = Net(f"shake_layer_{phase_name}")
    x1 = Input("x1", [(4, 3, 5, 5)], phases=ALL_PHASES)(net)
    x2 = Input("x2", [(4, 3, 5, 5)], phases=ALL_PHASES)(net)
    net.layer("Python", [x1, x2], name="y", module=PYTHON_MODULE, layer=PYTHON_LAYER,
              param_str='{"seed": 3}')
    return net


def child_layer(folder: str) -> None:
    """Two forward passes and one backward pass of the layer in TRAIN and in TEST;
    every array saved to ``layer.npz``."""
    import caffe

    caffe.set_mode_cpu()
    rng = np.random.default_rng(0)
    saved = {}
    for phase_name in ("train", "test"):
        proto = layer_net(phase_name).to_proto(phase_name)
        proto.force_backward = True  # Input blobs take gradients
        net = caffe_net(caffe, to_text(proto), phase_name, Path(folder), f"{phase_name}.prototxt")
        x1, x2, dy = (rng.normal(size=(4, 3, 5, 5)).astype(np.float32) for _ in range(3))
        net.blobs["x1"].data[...] = x1
        net.blobs["x2"].data[...] = x2
        y_first = net.forward()["y"].copy()
        y = net.forward()["y"].copy()
        net.blobs["y"].diff[...] = dy
        net.backward()
        saved.update({f"{phase_name}_{k}": v for k, v in dict(
            x1=x1, x2=x2, dy=dy, y_first=y_first, y=y,
            dx1=net.blobs["x1"].diff.copy(), dx2=net.blobs["x2"].diff.copy(),
            alpha=net.layers[2].alpha, beta=net.layers[2].beta).items()})
        del net
    np.savez(Path(folder) / "layer.npz", **saved)
    print("saved")


def child_train(train_db: str, folder: str, iterations: str) -> None:
    """SGD on a tiny shake-shake net (depth 8, 2x8d, 3 classes); prints the losses."""
    import caffe

    from pynetbuilder.legos import ClassificationData

    caffe.set_mode_cpu()
    caffe.set_random_seed(1)
    data = ClassificationData(train_db, train_db, batch_size=16, test_batch_size=16,
                              crop_size=32, mean_values=(128.0,), scale=1 / 64)
    net = models.build(FAMILY, depth=8, initial_channels=8, num_classes=3, data=data)
    folder_path = Path(folder)
    (folder_path / "train.prototxt").write_text(prototxt_files(net)["train.prototxt"])
    solver = caffe_pb2.SolverParameter(
        net=str(folder_path / "train.prototxt"), base_lr=0.05, momentum=0.9,
        weight_decay=1e-4, lr_policy="fixed", random_seed=1, display=0,
        solver_mode=caffe_pb2.SolverParameter.CPU)
    (folder_path / "solver.prototxt").write_text(to_text(solver))
    sgd = caffe.SGDSolver(str(folder_path / "solver.prototxt"))
    losses = []
    for _ in range(int(iterations)):
        sgd.step(1)
        losses.append(float(sgd.net.blobs["loss"].data))
    del sgd
    print(json.dumps(losses))


# ------------------------------------------------------------------ the family


@pytest.mark.parametrize("label", sorted(REFERENCE))
def test_reference_params_match_the_reference_code(label):
    knobs = models.FAMILIES[FAMILY].references[label]
    totals = models.build(FAMILY, **knobs).report().totals
    params, macs = REFERENCE[label]
    assert totals.params == params
    assert totals.macs == macs + shortcut_extra_macs(knobs["initial_channels"])


@pytest.mark.parametrize("depth, width", sorted(SMALL))
def test_small_configurations_match_the_reference_code(depth, width):
    net = models.build(FAMILY, depth=depth, initial_channels=width)
    assert net.report().totals.params == SMALL[depth, width]


def test_macs_difference_is_the_padded_shortcut_convolution():
    """The excess equals the shifted 1x1 convolutions' extra output positions, which
    our report lists layer by layer."""
    rows = {r.name: r for r in models.build(FAMILY, depth=26, initial_channels=32).report().rows}
    extra = 0
    for stage, (h, c_in, c_half) in enumerate(((32, 16, 16), (16, 32, 32), (8, 64, 64)), 1):
        conv = rows[f"stage{stage}_block1_shortcut_conv2"]
        positions = conv.shapes[0][2] * conv.shapes[0][3]
        assert conv.macs == positions * c_in * c_half
        extra += (positions - h * h) * c_in * c_half
    assert extra == shortcut_extra_macs(32) == 137_216


@pytest.mark.parametrize("label", sorted(REFERENCE))
def test_reference_configurations_in_caffe(cifar_lmdb, tmp_path, label):
    knobs = models.FAMILIES[FAMILY].references[label]
    done = run_child("child_check_in_caffe", json.dumps(knobs), *cifar_lmdb, tmp_path,
                     cwd=tmp_path)
    assert "checked" in done.stdout


def test_small_net_in_caffe(cifar_lmdb, tmp_path):
    done = run_child("child_check_in_caffe", '{"depth": 14, "initial_channels": 16}',
                     *cifar_lmdb, tmp_path, cwd=tmp_path)
    assert "checked" in done.stdout


def test_train_net_shakes_and_test_deploy_nets_average():
    net = models.build(FAMILY, depth=8, initial_channels=8)
    train = [layer for layer in net.train_val_proto().layer
             if layer.name == "stage1_block1_shake"]
    assert [(layer.type, [r.phase for r in layer.include]) for layer in train] == [
        ("Python", [caffe_pb2.TRAIN]), ("Eltwise", [caffe_pb2.TEST])]
    python, eltwise = train
    assert (python.python_param.module, python.python_param.layer) == (
        "pynetbuilder.caffe_layers.shake_shake", "ShakeShake")
    assert list(eltwise.eltwise_param.coeff) == [0.5, 0.5]
    assert python.top == eltwise.top == ["stage1_block1_shake"]
    deploy = net.to_proto("deploy").layer
    assert not [layer for layer in deploy if layer.type == "Python"]
    assert sum(layer.type == "Eltwise" and list(layer.eltwise_param.coeff) == [0.5, 0.5]
               for layer in deploy) == 3
    names = [layer.name for layer in deploy]
    assert names[names.index("stage2_block1_relu"):names.index("stage2_block1_add") + 1] == [
        "stage2_block1_relu",
        *(f"stage2_block1_branch{b}{c}{s}" for b in (1, 2) for c in "ab"
          for s in ("", "_bn", "_scale", "_relu") if not (c == "b" and s == "_relu")),
        "stage2_block1_shake", "stage2_block1_shortcut_conv1", "stage2_block1_shortcut_conv2",
        "stage2_block1_shortcut_crop", "stage2_block1_shortcut_concat",
        "stage2_block1_shortcut_bn", "stage2_block1_shortcut_scale", "stage2_block1_add"]


def test_deploy_only_net_gets_only_the_average():
    net = Net("deploy_only")
    a = Input("a", [(1, 4, 3, 3)])(net)
    b = Input("b", [(1, 4, 3, 3)])(net)
    ShakeShake("mix")(net, a, b)
    assert [(e.type, set(e.phases)) for e in net.entries if e.name == "mix"] == [
        ("Eltwise", {"deploy"})]


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"width": 32}, "shake_shake has no knob 'width'; its knobs: depth, initial_channels, "
                        "num_classes"),
        ({"depth": 26.0}, "knob depth accepts an integer, got 26.0"),
        ({"initial_channels": "32"}, "knob initial_channels accepts an integer, got '32'"),
        ({"depth": 27}, "knob depth accepts 6n+2: 8, 14, 20, ..., got 27"),
        ({"depth": 2}, "knob depth accepts 6n+2: 8, 14, 20, ..., got 2"),
        ({"initial_channels": 33}, "knob initial_channels accepts an even integer >= 2"),
        ({"initial_channels": 0}, "knob initial_channels accepts an even integer >= 2"),
        ({"num_classes": 0}, "knob num_classes accepts an integer >= 1, got 0"),
    ],
)
def test_bad_knobs_are_named(knobs, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        models.build(FAMILY, **knobs)


def test_bad_knob_on_the_command_line(tmp_path):
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "pynetbuilder"), "build", FAMILY,
                           "--depth", "27", "-o", "out"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "knob depth accepts 6n+2: 8, 14, 20, ..., got 27" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_app_script_writes_the_three_nets(tmp_path):
    done = subprocess.run([str(VENV_PY), str(ROOT / "apps" / "cifar" / "build_shake_shake.py"),
                           "--initial_channels", "64", "-o", "out"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Learnable params: 11,653,978" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "deploy.prototxt", "test.prototxt", "train.prototxt"]


# ------------------------------------------------------------------ the shortcut


def reference_shortcut(x, w1, w2, bn, stride):
    """NumPy: relu'd input sampled at (s*i, s*j) and, shifted by one pixel with zeros
    past the edge, at (s*i + 1, s*j + 1); 1x1 convolutions; concat; BN + Scale."""
    n, c, h, w = x.shape
    shifted = np.zeros_like(x)
    shifted[:, :, : h - 1, : w - 1] = x[:, :, 1:, 1:]
    y1 = np.einsum("oc,nchw->nohw", w1, x[:, :, ::stride, ::stride])
    y2 = np.einsum("oc,nchw->nohw", w2, shifted[:, :, ::stride, ::stride])
    z = np.concatenate([y1, y2], axis=1)
    mean, var, gamma, beta = (v[None, :, None, None] for v in bn)
    return (z - mean) / np.sqrt(var + 1e-5) * gamma + beta


def reference_shortcut_backward(x_shape, w1, w2, bn, stride, dz):
    _, var, gamma, _ = (v[None, :, None, None] for v in bn)
    dz = dz * gamma / np.sqrt(var + 1e-5)
    half = w1.shape[0]
    h, w = x_shape[2:]
    dx = np.zeros(x_shape)
    dx[:, :, ::stride, ::stride] += np.einsum("oc,nohw->nchw", w1, dz[:, :half])
    dshift = np.zeros(x_shape)
    dshift[:, :, ::stride, ::stride] += np.einsum("oc,nohw->nchw", w2, dz[:, half:])
    dx[:, :, 1:, 1:] += dshift[:, :, : h - 1, : w - 1]
    return dx


@pytest.mark.parametrize("size, stride", [(32, 1), (8, 1), (7, 1), (32, 2), (16, 2), (9, 2)])
def test_shortcut_is_exactly_the_papers_shortcut(caffe, tmp_path, size, stride):
    """Forward and backward of the Caffe shortcut (TEST phase: BN with fixed
    statistics) against NumPy, even and odd sizes, stride 1 and 2."""
    c_in, c_out = 3, 8
    net = Net("shortcut")
    x = Input("x", [(2, c_in, size, size)], phases=ALL_PHASES)(net)
    (top,) = ShakeShakeShortcut("shortcut", c_out, stride).attach(net, [x])
    proto = net.to_proto("test")
    proto.force_backward = True
    cnet = caffe_net(caffe, to_text(proto), "test", tmp_path)
    out = (size - 1) // stride + 1  # PyTorch's avg_pool2d(kernel 1, stride) size
    assert tuple(cnet.blobs[top].data.shape) == (2, c_out, out, out)
    assert net.report("test").blob_shapes[top] == (2, c_out, out, out)

    rng = np.random.default_rng(size * 10 + stride)
    w1 = rng.normal(size=(c_out // 2, c_in))
    w2 = rng.normal(size=(c_out // 2, c_in))
    bn = (rng.normal(size=c_out), rng.uniform(0.5, 2, size=c_out), rng.normal(size=c_out),
          rng.normal(size=c_out))
    cnet.params["shortcut_conv1"][0].data[...] = w1[:, :, None, None]
    cnet.params["shortcut_conv2"][0].data[...] = w2[:, :, None, None]
    for i, value in enumerate((bn[0], bn[1], np.ones(1))):
        cnet.params["shortcut_bn"][i].data[...] = value
    cnet.params["shortcut_scale"][0].data[...] = bn[2]
    cnet.params["shortcut_scale"][1].data[...] = bn[3]
    xs = rng.normal(size=(2, c_in, size, size))
    cnet.blobs["x"].data[...] = xs
    cnet.forward()
    expected = reference_shortcut(xs, w1, w2, bn, stride)
    np.testing.assert_allclose(cnet.blobs[top].data, expected, rtol=1e-4, atol=1e-4)

    dz = rng.normal(size=expected.shape)
    cnet.blobs[top].diff[...] = dz
    cnet.backward()
    np.testing.assert_allclose(cnet.blobs["x"].diff,
                               reference_shortcut_backward(xs.shape, w1, w2, bn, stride, dz),
                               rtol=1e-4, atol=1e-4)
    del cnet


def test_shortcut_refuses_what_it_cannot_express():
    with pytest.raises(UsageError, match="stride must be 1 or 2"):
        ShakeShakeShortcut("s", 8, 3)
    with pytest.raises(UsageError, match="even integer"):
        ShakeShakeShortcut("s", 7, 1)


# ------------------------------------------------------------------ the Python layer


def test_mix_is_a_per_sample_convex_combination():
    from pynetbuilder.caffe_layers.shake_shake import mix

    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, 3, 2, 2, 2))
    w = np.array([0.25, 1.0, 0.0])
    y = mix(x1, x2, w)
    for n in range(3):
        np.testing.assert_allclose(y[n], w[n] * x1[n] + (1 - w[n]) * x2[n])


def test_param_str_takes_only_a_seed():
    from pynetbuilder.caffe_layers.shake_shake import parse_seed

    assert parse_seed("") is None
    assert parse_seed('{"seed": 7}') == 7
    with pytest.raises(ValueError, match="takes"):
        parse_seed('{"alpha": 0.5}')
    with pytest.raises(ValueError, match="non-negative"):
        parse_seed('{"seed": -1}')


def test_python_layer_forward_and_backward_in_caffe(tmp_path):
    """TRAIN: y = alpha x1 + (1 - alpha) x2 per sample, alpha in [0, 1] and new each
    pass; dx1 = beta dy, dx2 = (1 - beta) dy with beta drawn apart from alpha.
    TEST: 0.5 and 0.5 both ways."""
    run_child("child_layer", tmp_path, cwd=tmp_path)
    r = np.load(tmp_path / "layer.npz")
    x1, x2, y, dy = r["train_x1"], r["train_x2"], r["train_y"], r["train_dy"]
    alpha = ((y - x2) / (x1 - x2)).reshape(4, -1)
    np.testing.assert_allclose(alpha, alpha[:, :1].repeat(alpha.shape[1], 1), atol=1e-3)
    alpha = alpha[:, 0]
    np.testing.assert_allclose(alpha, r["train_alpha"], atol=1e-3)
    assert ((alpha >= 0) & (alpha <= 1)).all() and len(set(np.round(alpha, 3))) == 4
    first = ((r["train_y_first"] - x2) / (x1 - x2)).reshape(4, -1)[:, 0]
    assert not np.allclose(first, alpha, atol=1e-3)  # a new draw every forward pass
    beta = r["train_beta"]
    assert ((beta >= 0) & (beta <= 1)).all() and not np.allclose(beta, alpha, atol=1e-3)
    np.testing.assert_allclose(r["train_dx1"], beta[:, None, None, None] * dy, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(r["train_dx2"], (1 - beta[:, None, None, None]) * dy,
                               rtol=1e-5, atol=1e-6)

    x1, x2, dy = r["test_x1"], r["test_x2"], r["test_dy"]
    np.testing.assert_allclose(r["test_y"], 0.5 * (x1 + x2), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(r["test_y_first"], r["test_y"])
    np.testing.assert_allclose(r["test_dx1"], 0.5 * dy, rtol=1e-6)
    np.testing.assert_allclose(r["test_dx2"], 0.5 * dy, rtol=1e-6)


def test_python_layer_processes_exit_cleanly(tmp_path):
    """Fresh pycaffe processes that run the layer's forward and backward exit with 0
    (no abort at teardown; see the report on "double free or corruption")."""
    for _ in range(5):
        run_child("child_layer", tmp_path, cwd=tmp_path)


def test_python_layer_shape_rule():
    python = {"module": PYTHON_MODULE, "layer": PYTHON_LAYER}
    layer = layer_parameter("Python", "shake", ["a", "b"], ["y"], python)
    assert apply_rule(layer, [(2, 4, 8, 8), (2, 4, 8, 8)]).tops == [(2, 4, 8, 8)]
    with pytest.raises(ShapeError, match="two inputs of one shape"):
        apply_rule(layer, [(2, 4, 8, 8), (2, 4, 4, 4)])
    other = layer_parameter("Python", "other", ["a"], ["y"], {"module": "m", "layer": "L"})
    with pytest.raises(UnknownShapeError, match="give the input shape"):
        apply_rule(other, [(2, 3)])
    assert apply_rule(other, [(2, 3)], [(5, 6)]).tops == [(5, 6)]


# ------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def learnable_lmdb(tmp_path_factory) -> Path:
    """48 noisy 32x32 images in 3 classes: class c has its channel c brightened by 90."""
    rng = np.random.default_rng(5)
    labels = np.arange(48) % 3
    images = rng.integers(0, 160, size=(48, 3, 32, 32))
    images[np.arange(48), labels] += 90
    return write_lmdb(tmp_path_factory.mktemp("shake_train") / "train", images, labels)


def test_tiny_shake_shake_net_learns(learnable_lmdb, tmp_path):
    """pycaffe's SGDSolver on the train net (Python layer included): the loss of the
    last iterations is far below the first ones'."""
    done = run_child("child_train", learnable_lmdb, tmp_path, 30, cwd=tmp_path)
    losses = json.loads(done.stdout.strip().splitlines()[-1])
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert first > 0.9 and last < 0.25 * first, losses


def test_caffe_tool_trains_with_the_python_layer(learnable_lmdb, tmp_path):
    """The venv's ``caffe`` tool (tools/caffe_setup.py's wrapper) imports the layer
    with no PYTHONPATH of the user's."""
    data_net = models.build(FAMILY, depth=8, initial_channels=8, num_classes=3,
                            data=small_data((learnable_lmdb, learnable_lmdb), "cifar"))
    (tmp_path / "train.prototxt").write_text(prototxt_files(data_net)["train.prototxt"])
    solver = caffe_pb2.SolverParameter(net="train.prototxt", base_lr=0.01, lr_policy="fixed",
                                       max_iter=2, display=1, snapshot_after_train=False,
                                       solver_mode=caffe_pb2.SolverParameter.CPU)
    (tmp_path / "solver.prototxt").write_text(to_text(solver))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(CAFFE_TOOL), "train", "-solver", "solver.prototxt"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Iteration 2, loss = " in done.stderr


if __name__ == "__main__":  # a child process: run_child's function and arguments
    globals()[sys.argv[1]](*sys.argv[2:])
