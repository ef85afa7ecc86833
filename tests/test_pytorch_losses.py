"""The PyTorch module's BVLC losses, Im2col and BatchReindex against real Caffe.

Each net is run by real Caffe (pycaffe, in a child process) and as a module on the
same inputs (labels, indices and similarities drawn in range for the layer reading
them), in the TRAIN and TEST phases: every blob must agree to 1e-4 of Caffe's
largest magnitude, and in TRAIN the gradient of every input Caffe differentiates.

The pinned Caffe's SigmoidCrossEntropyLoss, HingeLoss, MultinomialLogisticLoss,
InfogainLoss, ContrastiveLoss and SmoothL1Loss read no ``loss_param``: the nets set
normalization modes and ignore_label anyway, so a module honouring them would
disagree.  Each loss reads inputs of its own, so a gradient is one layer's.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_report_matches_caffe, caffe_net
from test_pytorch_layers import PHASES, layer, net_text

from pynetbuilder.errors import ShapeError
from pynetbuilder.pytorch.verify import verify
from pynetbuilder.report import analyze
from pynetbuilder.schema import parse_net

NORMALIZATIONS = ("FULL", "VALID", "BATCH_SIZE", "NONE")


def check(tmp_path, shapes: dict[str, tuple[int, ...]], layers: list[str], phase: str,
          differentiated: tuple[str, ...] = (), **kwargs):
    """verify (with gradients in TRAIN) the net of inputs ``shapes``: every blob and
    gradient agrees; in TRAIN the gradients of ``differentiated`` were compared."""
    path = tmp_path / f"net-{phase}.prototxt"
    path.write_text(net_text(shapes, layers))
    result = verify(str(path), phase=phase, gradients=phase == "train", **kwargs)
    assert result.blobs, "nothing compared"
    bad = [c for c in result.checks if not c.ok]
    assert not bad, bad[:5]
    if phase == "train":
        compared = {c.name for c in result.gradients}
        assert {f"d {name}" for name in differentiated} <= compared, compared
    return result


def loss_settings(i: int) -> str:
    """A loss_param these layers ignore in this Caffe, and a loss_weight (not 1)."""
    mode = NORMALIZATIONS[i % len(NORMALIZATIONS)]
    return f"loss_param {{ normalization: {mode} ignore_label: 1 }} loss_weight: {0.5 + i}"


@pytest.mark.parametrize("phase", PHASES)
def test_sigmoid_cross_entropy_loss(tmp_path, phase):
    """``-sum(x (t - [x >= 0]) - log(1 + exp(-|x|))) / num`` on 2-, 3- and 4-axis scores
    (targets: probabilities); the gradient (sigmoid(x) - t) / num, none to the targets."""
    shapes = [(5, 7), (3, 4, 2), (2, 3, 2, 2)]
    inputs, layers = {}, []
    for i, shape in enumerate(shapes):
        inputs.update({f"x{i}": shape, f"t{i}": shape})
        layers.append(layer(f"l{i}", "SigmoidCrossEntropyLoss", [f"x{i}", f"t{i}"],
                            params=loss_settings(i)))
    check(tmp_path, inputs, layers, phase, differentiated=("x0", "x1", "x2"))


def test_sigmoid_cross_entropy_loss_of_hard_targets_and_large_scores(tmp_path):
    """0/1 targets (some equal to the ignore_label Caffe does not read here) and scores
    up to +-40, where ``exp`` of the naive formula would overflow."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 6)) * 15).astype(np.float32)
    x[0, :3] = [40.0, -40.0, 0.0]
    t = rng.integers(0, 2, size=(4, 6)).astype(np.float32)
    layers = [layer("l", "SigmoidCrossEntropyLoss", ["x", "t"], params=loss_settings(1))]
    check(tmp_path, {"x": (4, 6), "t": (4, 6)}, layers, "train", ("x",),
          inputs={"x": x, "t": t})


@pytest.mark.parametrize("phase", PHASES)
def test_hinge_loss(tmp_path, phase):
    """L1 and L2 norms over ``num`` items of ``count / num`` values (a 4-axis input's
    label indexes C x H x W), labels as N and N x 1 x 1 x 1 blobs."""
    cases = [("L1", (6, 5), (6,)), ("L2", (6, 5), (6,)), ("L1", (3, 2, 2, 3), (3, 1, 1, 1)),
             ("L2", (4, 3, 2, 1), (4,))]
    inputs, layers = {}, []
    for i, (norm, shape, labels) in enumerate(cases):
        inputs.update({f"x{i}": shape, f"y{i}": labels})
        layers.append(layer(f"l{i}", "HingeLoss", [f"x{i}", f"y{i}"], params=(
            f"hinge_loss_param {{ norm: {norm} }} {loss_settings(i)}")))
    check(tmp_path, inputs, layers, phase, differentiated=tuple(f"x{i}" for i in range(4)))


def test_labels_are_floats_cast_to_int(tmp_path):
    """Caffe reads a label with ``static_cast<int>``: 2.9 is class 2 (and 0.5 class 0)."""
    x = np.random.default_rng(4).standard_normal((4, 5)).astype(np.float32)
    labels = np.array([2.9, 0.5, 4.99, 1.0], dtype=np.float32)
    layers = [layer("hinge", "HingeLoss", ["x", "y"]),
              layer("sm", "Softmax", "x", "p"),
              layer("mll", "MultinomialLogisticLoss", ["p", "y"])]
    check(tmp_path, {"x": (4, 5), "y": (4,)}, layers, "train", ("x",),
          inputs={"x": x, "y": labels})


@pytest.mark.parametrize("phase", PHASES)
def test_multinomial_logistic_loss(tmp_path, phase):
    """``-sum log(max(p[label], 1e-20)) / num`` of Softmax probabilities (over axis 1 of
    a 2- and a 4-axis input: labels index C x H x W)."""
    inputs = {"x0": (5, 6), "y0": (5,), "x1": (3, 4, 2, 2), "y1": (3, 1, 1, 1)}
    layers = [layer("sm0", "Softmax", "x0", "p0"),
              layer("l0", "MultinomialLogisticLoss", ["p0", "y0"], params=loss_settings(0)),
              layer("sm1", "Softmax", "x1", "p1", "softmax_param { axis: 2 }"),
              layer("l1", "MultinomialLogisticLoss", ["p1", "y1"], params=loss_settings(2))]
    check(tmp_path, inputs, layers, phase, differentiated=("x0", "x1"))


def test_multinomial_logistic_loss_clips_at_log_threshold(tmp_path):
    """Probabilities below kLOG_THRESHOLD (1e-20; here negative scores) count as 1e-20,
    and Caffe still gives them the gradient -1 / 1e-20 / num (not 0, as autograd of a
    clamp would)."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0.05, 1.0, size=(6, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1, 2], dtype=np.float32)
    x[0, 0], x[1, 1], x[2, 2] = -0.5, 0.0, 1e-30
    layers = [layer("l", "MultinomialLogisticLoss", ["x", "y"], params="loss_weight: 3")]
    result = check(tmp_path, {"x": (6, 4), "y": (6,)}, layers, "train", ("x",),
                   inputs={"x": x, "y": labels})
    loss = next(c for c in result.blobs if c.name == "l")
    assert loss.caffe_max > 3 * 46 / 6  # three items at -log(1e-20) = 46.05


@pytest.mark.parametrize("phase", PHASES)
def test_infogain_loss_with_its_matrix_as_an_input(tmp_path, phase):
    """``-sum_i sum_j H[label_i, j] log(max(p_ij, 1e-20)) / num``, H the third input
    (1 x 1 x dim x dim; dim = C x H x W for a 4-axis input).  Caffe aborts when force_
    backward reaches H, so verify runs its backward from the loss, inputs held as learnt
    blobs."""
    inputs = {"x0": (4, 5), "y0": (4,), "h0": (1, 1, 5, 5),
              "x1": (2, 3, 2, 1), "y1": (2, 1, 1, 1), "h1": (1, 1, 6, 6)}
    layers = [layer("sm0", "Softmax", "x0", "p0"),
              layer("l0", "InfogainLoss", ["p0", "y0", "h0"], params=loss_settings(0)),
              layer("sm1", "Softmax", "x1", "p1"),
              layer("l1", "InfogainLoss", ["p1", "y1", "h1"], params=loss_settings(3))]
    check(tmp_path, inputs, layers, phase, differentiated=("x0", "x1"))


def write_blob(path, matrix: np.ndarray, legacy: bool) -> None:
    """A binary BlobProto (what Caffe's infogain_loss_param.source reads)."""
    from pynetbuilder.schema import caffe_pb2

    blob = caffe_pb2.BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = (1, 1, *matrix.shape)
    else:
        blob.shape.dim.extend((1, 1, *matrix.shape))
    blob.data.extend(matrix.astype(np.float32).ravel().tolist())
    path.write_bytes(blob.SerializeToString())


@pytest.mark.parametrize("legacy", [True, False])
def test_infogain_loss_reads_its_matrix_from_source(tmp_path, legacy):
    """``infogain_loss_param.source``: the matrix of a BlobProto file (legacy num/
    channels/height/width or a shape); clipped probabilities (negative inputs) included."""
    rng = np.random.default_rng(6)
    h = rng.uniform(0.0, 2.0, size=(5, 5))
    write_blob(tmp_path / "H.binaryproto", h, legacy)
    layers = [layer("sm", "Softmax", "x", "p"),
              layer("l", "InfogainLoss", ["p", "y"], params=(
                  f"infogain_loss_param {{ source: '{tmp_path / 'H.binaryproto'}' }} "
                  "loss_weight: 2")),
              layer("raw", "InfogainLoss", ["z", "w"], params=(
                  f"infogain_loss_param {{ source: '{tmp_path / 'H.binaryproto'}' }}"))]
    for phase in PHASES:
        check(tmp_path, {"x": (3, 5), "y": (3,), "z": (4, 5), "w": (4,)}, layers, phase,
              differentiated=("x", "z"))


def test_infogain_loss_source_problems_are_one_line(tmp_path):
    """A missing or malformed matrix file, or one of the wrong size: one line naming the
    layer and the file (Caffe aborts on each)."""
    from pynetbuilder.pytorch import to_module

    write_blob(tmp_path / "small.binaryproto", np.eye(3), legacy=True)
    (tmp_path / "junk.binaryproto").write_bytes(b"\xff\xff\xff")
    cases = [("nothere.binaryproto", "cannot read infogain_loss_param.source"),
             ("junk.binaryproto", "is not a binary BlobProto file"),
             ("small.binaryproto", "Caffe needs 1 x 1 x 5 x 5")]
    for name, message in cases:
        text = net_text({"x": (2, 5), "y": (2,)}, [layer(
            "info", "InfogainLoss", ["x", "y"],
            params=f"infogain_loss_param {{ source: '{tmp_path / name}' }}")])
        with pytest.raises(Exception, match=message) as caught:
            to_module(parse_net(text), phase="train")
        assert "InfogainLoss layer 'info'" in str(caught.value)
        assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize("phase", PHASES)
def test_contrastive_loss(tmp_path, phase):
    """Similar pairs ``d^2``, dissimilar ``max(margin - d^2, 0)`` (legacy_version) or
    ``max(margin - d, 0)^2`` (Caffe's gradient there divides by d + 1e-4), over 2 num;
    N x C and N x C x 1 x 1 inputs, margins that leave some pairs outside."""
    cases = [("true", 1.0, (8, 3)), ("false", 1.0, (8, 3)), ("true", 6.0, (7, 4, 1, 1)),
             ("false", 2.5, (7, 4, 1, 1)), ("false", 4.0, (9, 2))]
    inputs, layers = {}, []
    for i, (legacy, margin, shape) in enumerate(cases):
        inputs.update({f"a{i}": shape, f"b{i}": shape, f"s{i}": (shape[0],)})
        layers.append(layer(f"l{i}", "ContrastiveLoss", [f"a{i}", f"b{i}", f"s{i}"], params=(
            f"contrastive_loss_param {{ margin: {margin} legacy_version: {legacy} }} "
            f"{loss_settings(i)}")))
    differentiated = tuple(f"{ab}{i}" for i in range(len(cases)) for ab in "ab")
    check(tmp_path, inputs, layers, phase, differentiated=differentiated)


def test_contrastive_loss_similarity_is_any_nonzero_integer(tmp_path):
    """``static_cast<int>(similarity)``: 0.7 is dissimilar, 2 and -1 similar."""
    rng = np.random.default_rng(7)
    a, b = (rng.standard_normal((5, 3)).astype(np.float32) for _ in range(2))
    s = np.array([0.7, 2.0, -1.0, 0.0, 1.0], dtype=np.float32)
    layers = [layer("l", "ContrastiveLoss", ["a", "b", "s"],
                    params="contrastive_loss_param { margin: 3 legacy_version: false }")]
    check(tmp_path, {"a": (5, 3), "b": (5, 3), "s": (5,)}, layers, "train", ("a", "b"),
          inputs={"a": a, "b": b, "s": s})


def test_contrastive_loss_gradient_of_close_dissimilar_pairs(tmp_path):
    """Dissimilar pairs 1e-3 to 1e-2 apart, where Caffe's d + 1e-4 differs from d by up
    to 6% (the exact derivative of its loss would fail here; measured)."""
    rng = np.random.default_rng(9)
    a = rng.standard_normal((6, 3)).astype(np.float32)
    step = np.array([1e-3, 2e-3, 5e-3, 1e-2, 1.0, 0.5], np.float32).reshape(-1, 1)
    b = (a + step * rng.choice([-1.0, 1.0], size=(6, 3))).astype(np.float32)
    s = np.array([0, 0, 0, 0, 1, 0], np.float32)
    layers = [layer("l", "ContrastiveLoss", ["a", "b", "s"],
                    params="contrastive_loss_param { margin: 2 legacy_version: false }")]
    check(tmp_path, {"a": (6, 3), "b": (6, 3), "s": (6,)}, layers, "train", ("a", "b"),
          inputs={"a": a, "b": b, "s": s})


@pytest.mark.parametrize("phase", PHASES)
def test_smooth_l1_loss(tmp_path, phase):
    """SSD's SmoothL1Loss (this build's extra): ``0.5 d^2`` below 1, ``|d| - 0.5`` above,
    over num; gradients to both inputs."""
    inputs = {"a0": (4, 6), "b0": (4, 6), "a1": (2, 3, 4, 2), "b1": (2, 3, 4, 2)}
    layers = [layer("l0", "SmoothL1Loss", ["a0", "b0"]),
              layer("l1", "SmoothL1Loss", ["a1", "b1"], params="loss_weight: 0.25")]
    check(tmp_path, inputs, layers, phase, differentiated=("a0", "b0", "a1", "b1"))


def im2col_grid(planar: str = "x") -> list[str]:
    """Square and rectangular kernels, strides, pads, dilations on ``planar`` (N x C x H
    x W); 3-d and 1-d spatial inputs; channels at axis 2 (axes before it are items);
    force_nd_im2col."""
    geometries = [
        ("x", "kernel_size: 3 stride: 2 pad: 1 dilation: 2"),
        ("x", "kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1"),
        ("x", "kernel_size: 1"),
        ("x", "kernel_size: 3 pad: 1 force_nd_im2col: true"),
        ("v", "kernel_size: 2 kernel_size: 3 kernel_size: 2 stride: 2 pad: 1"),
        ("v", "axis: 2 kernel_size: 3 pad: 1"),
        ("v", "axis: -3 kernel_size: 2 stride: 1 stride: 3 dilation: 2"),
        ("s", "kernel_size: 4 stride: 3 pad: 2"),
    ]
    return [layer(f"im{i}", "Im2col", planar if blob == "x" else blob,
                  params=f"convolution_param {{ {geometry} }}")
            for i, (blob, geometry) in enumerate(geometries)]


@pytest.mark.parametrize("phase", PHASES)
def test_im2col(tmp_path, phase):
    """Caffe's column layout (channel, then kernel position, then output position) and
    its backward (col2im: overlapping windows add up), without a loss: the gradients
    of random output gradients."""
    inputs = {"x": (2, 3, 7, 6), "v": (2, 3, 5, 6, 7), "s": (2, 3, 9)}
    check(tmp_path, inputs, im2col_grid(), phase, differentiated=("x", "v", "s"))


@pytest.mark.parametrize("phase", PHASES)
def test_batch_reindex(tmp_path, phase):
    """Items picked by index (repeated, skipped; more and fewer than the input's),
    the gradient summed back into each item picked.  Caffe's force_backward would
    reach the index input and abort ("Cannot backprop to index"): verify runs the
    backward from a loss instead."""
    inputs = {"x": (4, 3, 2), "i": (6,), "t": (6, 3, 2), "z": (5, 2), "j": (2,)}
    layers = [layer("r", "BatchReindex", ["x", "i"], "r"),
              layer("l", "EuclideanLoss", ["r", "t"]),
              layer("r2", "BatchReindex", ["z", "j"], "r2"),
              layer("sq", "Power", "r2", "sq", "power_param { power: 2 }"),
              layer("sum", "Reduction", "sq", "sum", "loss_weight: 0.5")]
    check(tmp_path, inputs, layers, phase, differentiated=("x", "t", "z"))


def test_batch_reindex_indices_are_cast_to_int(tmp_path):
    x = np.random.default_rng(8).standard_normal((3, 4)).astype(np.float32)
    index = np.array([2.7, 0.2, 2.0, 1.999], dtype=np.float32)
    layers = [layer("r", "BatchReindex", ["x", "i"], "r"),
              layer("l", "EuclideanLoss", ["r", "t"])]
    t = np.zeros((4, 4), np.float32)
    check(tmp_path, {"x": (3, 4), "i": (4,), "t": (4, 4)}, layers, "train", ("x",),
          inputs={"x": x, "i": index, "t": t})


def test_caffe_aborts_when_force_backward_reaches_an_index(tmp_path):
    """Why verify cannot force Caffe's backward through BatchReindex or InfogainLoss's
    matrix: Caffe itself aborts (caffe_oracle.forcing_aborts names the layer, from the
    registry).  Without a loss to start from, verify puts loss weights on the outputs
    and compares the gradient of the reindexed input all the same."""
    from pynetbuilder.pytorch.adapter import analysed
    from pynetbuilder.pytorch.caffe_oracle import (
        CaffeError,
        caffe_ready,
        forcing_aborts,
        run_caffe,
    )

    cases = [
        ({"x": (3, 2), "i": (2,)}, [layer("r", "BatchReindex", ["x", "i"], "r")],
         "Cannot backprop to index"),
        ({"p": (2, 3), "y": (2,), "h": (1, 1, 3, 3)},
         [layer("l", "InfogainLoss", ["p", "y", "h"])], "cannot backpropagate to infogain"),
    ]
    for inputs, layers, message in cases:
        path = tmp_path / "net.prototxt"
        path.write_text(net_text(inputs, layers))
        a = analysed(str(path), phase="train")
        data = {name: np.zeros(shape, np.float32) for name, shape in inputs.items()}
        with pytest.raises(CaffeError, match=message):
            run_caffe(caffe_ready(a.net, a.shapes, 0), "train", data, backward=True)
        assert forcing_aborts(a.net).name == a.net.layer[-1].name
    path.write_text(net_text(*cases[0][:2]))
    result = verify(str(path), phase="train", gradients=True)
    assert result.ok, result.first_failure
    d_x = next(c for c in result.gradients if c.name == "d x")
    assert d_x.caffe_max > 0 and "d i" not in {c.name for c in result.gradients}


def test_header_inputs_become_learnt_blobs_for_a_backward_from_the_loss(tmp_path):
    """A net whose inputs are declared in its header (``input:``) runs the same way."""
    text = ("name: 'header'\ninput: 'x'\ninput_shape { dim: 4 dim: 3 }\n"
            "input: 'i'\ninput_shape { dim: 5 }\ninput: 't'\ninput_shape { dim: 5 dim: 3 }\n"
            + layer("r", "BatchReindex", ["x", "i"], "r") + "\n"
            + layer("l", "EuclideanLoss", ["r", "t"]) + "\n")
    path = tmp_path / "header.prototxt"
    path.write_text(text)
    result = verify(str(path), phase="train", gradients=True)
    assert result.ok, result.first_failure
    assert {"d x", "d t"} <= {c.name for c in result.gradients}


# ---------------------------------------------------------------- shape rules


def test_shapes_agree_with_caffe(caffe, tmp_path):
    """The analysed top of every layer here (a scalar loss; Im2col's columns with
    channels at any axis; BatchReindex's items) is the blob Caffe allocates."""
    h = tmp_path / "H.binaryproto"
    write_blob(h, np.eye(4), legacy=True)
    layers = [
        layer("sce", "SigmoidCrossEntropyLoss", ["x", "x"]),
        layer("hinge", "HingeLoss", ["x", "y"]),
        layer("mll", "MultinomialLogisticLoss", ["x", "y"]),
        layer("info", "InfogainLoss", ["x", "y", "h"]),
        layer("info_src", "InfogainLoss", ["x", "y"],
              params=f"infogain_loss_param {{ source: '{h}' }}"),
        layer("contrastive", "ContrastiveLoss", ["x", "x", "y"]),
        layer("smooth", "SmoothL1Loss", ["x", "x"]),
        layer("reindex", "BatchReindex", ["x", "j"], "reindex"),
        *im2col_grid("planar"),
    ]
    inputs = {"x": (2, 4), "y": (2,), "h": (1, 1, 4, 4), "j": (5,), "planar": (2, 3, 7, 6),
              "v": (2, 3, 5, 6, 7), "s": (2, 3, 9)}
    text = net_text(inputs, layers)
    report = analyze(parse_net(text), phase="test")
    assert not report.skipped, report.skipped
    assert_report_matches_caffe(report, caffe_net(caffe, text, "test", tmp_path))


REFUSED = [
    ('type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "y"', "as many targets as scores"),
    ('type: "HingeLoss" bottom: "x" bottom: "z"', "one first axis"),
    ('type: "MultinomialLogisticLoss" bottom: "x" bottom: "x"', "one label per item"),
    ('type: "InfogainLoss" bottom: "x" bottom: "y"', "needs its matrix H"),
    ('type: "InfogainLoss" bottom: "x" bottom: "y" bottom: "x"', "must be 1 x 1 x 4 x 4"),
    ('type: "ContrastiveLoss" bottom: "x" bottom: "x" bottom: "x"', "one similarity per pair"),
    ('type: "ContrastiveLoss" bottom: "q" bottom: "q" bottom: "y"', "N x C \\(x 1 x 1\\)"),
    ('type: "ContrastiveLoss" bottom: "x" bottom: "y"', "takes 3 inputs"),
    ('type: "SmoothL1Loss" bottom: "x" bottom: "x" bottom: "x"', "takes 2 inputs"),
    ('type: "SmoothL1Loss" bottom: "x" bottom: "y"', "one channels, height and width"),
    ('type: "HingeLoss" bottom: "x" bottom: "y" top: "extra"', "one output"),
    ('type: "MultinomialLogisticLoss" bottom: "f" bottom: "y"', "at most 4 axes"),
    ('type: "Im2col" bottom: "v" convolution_param { kernel_h: 2 kernel_w: 2 }',
     "for 2-D inputs"),
]


@pytest.mark.parametrize("layer_text, message", REFUSED)
def test_layers_caffe_refuses_are_refused_with_its_reason(layer_text, message, tmp_path):
    text = ('input: "x" input_shape { dim: 2 dim: 4 }\n'
            'input: "y" input_shape { dim: 2 }\n'
            'input: "z" input_shape { dim: 3 }\n'
            'input: "v" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 dim: 6 }\n'
            'input: "f" input_shape { dim: 2 dim: 1 dim: 1 dim: 1 dim: 4 }\n'
            'input: "q" input_shape { dim: 2 dim: 4 dim: 2 dim: 1 }\n'
            f'layer {{ name: "l" top: "l" {layer_text} }}\n')
    with pytest.raises(ShapeError, match=message):
        analyze(parse_net(text))
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    # real Caffe refuses it too: a failed CHECK aborts at set-up or in the first forward
    code = (f"import caffe; net = caffe.Net({str(path)!r}, caffe.TEST); "
            "[b.data.__setitem__(..., 0) for b in net.blobs.values()]; net.forward()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0, f"Caffe accepted {layer_text}"


def test_modules_trace_with_torch_fx(tmp_path):
    """No control flow on tensor values: torch.fx traces a net of every layer here and
    the traced module gives the same losses and columns (and the same gradients)."""
    import torch

    from pynetbuilder.pytorch import to_module

    h = tmp_path / "H.binaryproto"
    write_blob(h, np.eye(4) + 0.5, legacy=False)
    layers = [
        layer("sce", "SigmoidCrossEntropyLoss", ["x", "t"]),
        layer("hinge", "HingeLoss", ["x", "y"], params="hinge_loss_param { norm: L2 }"),
        layer("sm", "Softmax", "x", "p"),
        layer("mll", "MultinomialLogisticLoss", ["p", "y"]),
        layer("info", "InfogainLoss", ["p", "y", "h"]),
        layer("info_src", "InfogainLoss", ["p", "y"],
              params=f"infogain_loss_param {{ source: '{h}' }}"),
        layer("contrastive", "ContrastiveLoss", ["x", "t", "y"]),
        layer("smooth", "SmoothL1Loss", ["x", "t"]),
        layer("reindex", "BatchReindex", ["x", "j"], "reindex"),
        *im2col_grid("planar"),
    ]
    shapes = {"x": (3, 4), "t": (3, 4), "y": (3,), "h": (1, 1, 4, 4), "j": (5,),
              "planar": (2, 3, 7, 6), "v": (2, 3, 5, 6, 7), "s": (2, 3, 9)}
    module = to_module(parse_net(net_text(shapes, layers)), phase="train")
    rng = np.random.default_rng(10)
    inputs = {k: torch.from_numpy(rng.standard_normal(v).astype(np.float32))
              for k, v in shapes.items()}
    inputs["y"] = torch.tensor([0.0, 3.0, 1.0])
    inputs["j"] = torch.tensor([2.0, 0.0, 0.0, 1.0, 2.0])
    traced = torch.fx.symbolic_trace(module)
    grads = []
    for run in (module, traced):
        x = inputs["x"].clone().requires_grad_(True)
        outputs = run(**{**inputs, "x": x})
        module.loss(outputs).backward()
        grads.append((outputs, x.grad))
    (expected, expected_grad), (got, got_grad) = grads
    assert expected.keys() == got.keys() and len(expected) == 16
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    assert torch.equal(got_grad, expected_grad) and expected_grad.abs().sum() > 0


def test_losses_written_without_a_top_get_caffes_automatic_top(tmp_path):
    """Caffe gives a loss layer written without a top its scalar top (Net::Init's
    AutoTopBlobs), and trains on it: verify --gradients compares the loss values and the
    gradients they start, here of two such losses (it used to stop with 'no loss')."""
    text = net_text({"x": (4, 5), "label": (4,), "t": (4, 3)}, [
        layer("fc", "InnerProduct", "x", params="inner_product_param { num_output: 3 }"),
        layer("loss", "SoftmaxWithLoss", ["fc", "label"], tops=[]),
        layer("l2", "EuclideanLoss", ["fc", "t"], tops=[])])
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    result = verify(str(path), phase="train", gradients=True)
    assert result.ok, result.first_failure
    values = {c.name: c for c in result.blobs}
    assert values["(automatic loss)"].caffe_max > 0 and values["(automatic l2)"].shape == ()
    assert {"d x", "d fc[0]", "d fc[1]"} <= {c.name for c in result.gradients}
