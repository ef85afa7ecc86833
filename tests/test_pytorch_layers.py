"""Every emitter against real Caffe, on a grid of geometries (proof of issue 13).

Each net below is run by real Caffe (pycaffe, in a child process) with random
weights it draws itself (BatchNorm statistics positive) and saved as a
``.caffemodel``; the PyTorch module loads that file and runs the same random input.
Every blob must agree to 1e-4 of Caffe's largest magnitude in it, in the TRAIN and
the TEST phase (Dropout's masks replayed from Caffe's generator).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pynetbuilder.pytorch.verify import verify

PHASES = ("train", "test")


def net_text(inputs: dict[str, tuple[int, ...]], layers: list[str]) -> str:
    head = "name: 'grid'\n"
    for name, shape in inputs.items():
        dims = " ".join(f"dim: {d}" for d in shape)
        head += (f"layer {{ name: '{name}' type: 'Input' top: '{name}' "
                 f"input_param {{ shape {{ {dims} }} }} }}\n")
    return head + "\n".join(layers) + "\n"


def layer(name: str, kind: str, bottoms, tops=None, params: str = "") -> str:
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [name] if tops is None else ([tops] if isinstance(tops, str) else tops)
    text = f"layer {{ name: '{name}' type: '{kind}' "
    text += "".join(f"bottom: '{b}' " for b in bottoms)
    text += "".join(f"top: '{t}' " for t in tops)
    return text + params + " }"


def check(tmp_path, text: str, phase: str, **kwargs) -> None:
    path = tmp_path / f"net-{phase}.prototxt"
    path.write_text(text)
    result = verify(str(path), phase=phase, **kwargs)
    assert result.blobs, "nothing compared"
    bad = [c for c in result.checks if not c.ok]
    assert not bad, bad[:5]


def conv_grid() -> list[str]:
    """Kernels (square, rectangular), strides, pads, dilations, groups, bias or not."""
    layers = []
    cases = itertools.product((1, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2), (1, 2, 6))
    for i, (k, s, p, d, g) in enumerate(cases):
        if (k - 1) * d + 1 > 13 + 2 * p:
            continue
        bias = "" if i % 3 else "bias_term: false "
        layers.append(layer(f"conv{i}", "Convolution", "x", params=(
            f"convolution_param {{ num_output: 6 kernel_size: {k} stride: {s} pad: {p} "
            f"dilation: {d} group: {g} {bias}}}")))
    layers.append(layer("rect", "Convolution", "x", params=(
        "convolution_param { num_output: 4 kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1 "
        "pad_h: 1 pad_w: 2 }")))
    for i, (k, s, p, g) in enumerate([(4, 2, 1, 1), (3, 1, 0, 2), (2, 2, 0, 6), (3, 2, 1, 3)]):
        layers.append(layer(f"deconv{i}", "Deconvolution", "x", params=(
            f"convolution_param {{ num_output: 6 kernel_size: {k} stride: {s} pad: {p} "
            f"group: {g} }}")))
    layers.append(layer("deconv_dil", "Deconvolution", "x", params=(
        "convolution_param { num_output: 3 kernel_size: 3 stride: 2 dilation: 2 "
        "bias_term: false }")))
    return layers


@pytest.mark.parametrize("phase", PHASES)
def test_convolution_grid(tmp_path, phase):
    check(tmp_path, net_text({"x": (2, 6, 13, 11)}, conv_grid()), phase)


def pool_grid(size: tuple[int, int]) -> list[str]:
    """MAX and AVE: ceil rounding, windows clipped at the padded border, a last window
    that Caffe drops (it would start in the padding), global, floor (ceil_mode false)."""
    layers = []
    cases = [(2, 2, 0), (3, 2, 0), (3, 2, 1), (3, 3, 1), (2, 3, 1), (5, 3, 2), (4, 2, 1),
             (3, 1, 1), (7, 4, 3)]
    for method in ("MAX", "AVE"):
        for i, (k, s, p) in enumerate(cases):
            if k > size[0] + 2 * p or k > size[1] + 2 * p:
                continue
            layers.append(layer(f"{method}{i}", "Pooling", "x", params=(
                f"pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }}")))
        layers.append(layer(f"{method}_rect", "Pooling", "x", params=(
            f"pooling_param {{ pool: {method} kernel_h: 3 kernel_w: 2 stride_h: 2 "
            "stride_w: 3 pad_h: 1 pad_w: 1 }")))
        layers.append(layer(f"{method}_floor", "Pooling", "x", params=(
            f"pooling_param {{ pool: {method} kernel_size: 3 stride: 2 pad: 1 "
            "ceil_mode: false }")))
        layers.append(layer(f"{method}_global", "Pooling", "x", params=(
            f"pooling_param {{ pool: {method} global_pooling: true }}")))
    return layers


@pytest.mark.parametrize("size", [(7, 7), (8, 8), (9, 6), (10, 13)])
@pytest.mark.parametrize("phase", PHASES)
def test_pooling_grid(tmp_path, phase, size):
    check(tmp_path, net_text({"x": (2, 3, *size)}, pool_grid(size)), phase)


def test_pooling_window_past_the_image_is_caffes(tmp_path):
    """No padding, ceil rounding: Caffe keeps a last window that starts past the image
    (PyTorch's own rule drops it): empty, so MAX gives -FLT_MAX and AVE 0/0."""
    layers = [layer("max", "Pooling", "x", params="pooling_param { pool: MAX kernel_size: 1 "
                    "stride: 2 }"),
              layer("ave", "Pooling", "x", params="pooling_param { pool: AVE kernel_size: 1 "
                    "stride: 2 }")]
    check(tmp_path, net_text({"x": (1, 2, 6, 6)}, layers), "test")


def normalisation_layers() -> list[str]:
    return [
        layer("conv", "Convolution", "x", params="convolution_param { num_output: 8 "
              "kernel_size: 3 pad: 1 }"),
        layer("bn", "BatchNorm", "conv", "conv"),
        layer("scale", "Scale", "conv", "conv", "scale_param { bias_term: true }"),
        layer("bn2", "BatchNorm", "conv", "bn2", "batch_norm_param { eps: 0.001 "
              "moving_average_fraction: 0.9 }"),
        layer("bn3", "BatchNorm", "x", "bn3", "batch_norm_param { use_global_stats: true }"),
        layer("scale_hw", "Scale", "bn2", "scale_hw", "scale_param { axis: 2 num_axes: 2 }"),
        layer("scale_all", "Scale", "bn2", "scale_all", "scale_param { axis: 1 num_axes: -1 "
              "bias_term: true }"),
        layer("scale_two", "Scale", ["bn2", "w"], "scale_two", "scale_param { axis: 0 }"),
        layer("bias_one", "Bias", "bn2", "bias_one", "bias_param { axis: 1 num_axes: 1 }"),
        layer("bias_two", "Bias", ["bn2", "w"], "bias_two", "bias_param { axis: 0 }"),
        layer("lrn", "LRN", "conv", "lrn", "lrn_param { local_size: 5 alpha: 0.01 beta: 0.75 "
              "k: 2 }"),
        layer("lrn3", "LRN", "x", "lrn3", "lrn_param { local_size: 3 }"),
        layer("lrn_within", "LRN", "conv", "lrn_within", "lrn_param { local_size: 3 alpha: 0.1 "
              "beta: 0.75 norm_region: WITHIN_CHANNEL }"),
        layer("norm", "Normalize", "conv", "norm", "norm_param { across_spatial: false "
              "channel_shared: false }"),
        layer("norm_all", "Normalize", "conv", "norm_all", ""),
        layer("mvn", "MVN", "conv", "mvn", ""),
        layer("mvn2", "MVN", "conv", "mvn2", "mvn_param { across_channels: true "
              "normalize_variance: false }"),
    ]


@pytest.mark.parametrize("phase", PHASES)
def test_normalisation_layers(tmp_path, phase):
    """BatchNorm (TRAIN: batch statistics and the update of its three blobs, checked
    after the forward pass; TEST: global statistics over the scale factor), Scale and
    Bias (axis, num_axes, second bottom, bias_term), LRN both regions, Normalize, MVN."""
    text = net_text({"x": (2, 5, 7, 9), "w": (2,)}, normalisation_layers())
    check(tmp_path, text, phase)


def neuron_layers() -> list[str]:
    return [
        layer("relu", "ReLU", "x", "relu"),
        layer("leaky", "ReLU", "x", "leaky", "relu_param { negative_slope: 0.1 }"),
        layer("prelu", "PReLU", "x", "prelu"),
        layer("prelu_shared", "PReLU", "x", "prelu_shared", "prelu_param { channel_shared: "
              "true }"),
        layer("elu", "ELU", "x", "elu", "elu_param { alpha: 0.7 }"),
        layer("sigmoid", "Sigmoid", "x", "sigmoid"),
        layer("tanh", "TanH", "x", "tanh"),
        layer("abs", "AbsVal", "x", "abs"),
        layer("power", "Power", "x", "power", "power_param { power: 2 scale: 0.5 shift: 1 }"),
        layer("power_abs", "Power", "abs", "power_abs", "power_param { power: 0.5 shift: 0.1 }"),
        layer("power_const", "Power", "x", "power_const", "power_param { power: 2 scale: 0 "
              "shift: 3 }"),
        layer("exp", "Exp", "x", "exp"),
        layer("exp2", "Exp", "x", "exp2", "exp_param { base: 2 scale: 0.5 shift: 0.3 }"),
        layer("log", "Log", "abs", "log", "log_param { shift: 0.5 }"),
        layer("log10", "Log", "abs", "log10", "log_param { base: 10 scale: 2 shift: 1 }"),
        layer("bnll", "BNLL", "x", "bnll"),
        layer("threshold", "Threshold", "x", "threshold", "threshold_param { threshold: 0.2 }"),
        layer("relu6", "ReLU6", "x6", "relu6"),
        layer("relu6b", "ReLU6", "x6", "relu6b", "relu6_param { negative_slope: 0.1 "
              "threshold: 4 }"),
        layer("hswish", "HardSwish", "x6", "hswish"),
        layer("hsigmoid", "HardSigmoid", "x6", "hsigmoid"),
        layer("drop", "Dropout", "x", "drop", "dropout_param { dropout_ratio: 0.3 }"),
        layer("drop_inplace", "Dropout", "relu", "relu"),
        layer("x6", "Power", "x", "x6", "power_param { scale: 5 }"),
    ]


@pytest.mark.parametrize("phase", PHASES)
def test_neuron_layers(tmp_path, phase):
    layers = neuron_layers()
    layers.insert(0, layers.pop())  # x6 first
    check(tmp_path, net_text({"x": (2, 4, 5, 6)}, layers), phase)


def structure_layers() -> list[str]:
    return [
        layer("sum", "Eltwise", ["a", "b", "c"], "sum", "eltwise_param { operation: SUM "
              "coeff: 0.5 coeff: -2 coeff: 1 }"),
        layer("sum_plain", "Eltwise", ["a", "b"], "sum_plain"),
        layer("prod", "Eltwise", ["a", "b", "c"], "prod", "eltwise_param { operation: PROD }"),
        layer("max", "Eltwise", ["a", "b", "c"], "max", "eltwise_param { operation: MAX }"),
        layer("cat1", "Concat", ["a", "b"], "cat1"),
        layer("cat2", "Concat", ["a", "c"], "cat2", "concat_param { axis: 2 }"),
        layer("slice", "Slice", "cat1", ["s1", "s2", "s3"], "slice_param { slice_point: 1 "
              "slice_point: 5 }"),
        layer("slice_even", "Slice", "cat2", ["e1", "e2"], "slice_param { axis: 2 }"),
        layer("split", "Split", "a", ["a1", "a2"]),
        layer("flat", "Flatten", "a", "flat"),
        layer("flat2", "Flatten", "a", "flat2", "flatten_param { axis: 2 }"),
        layer("reshape", "Reshape", "a", "reshape", "reshape_param { shape { dim: 0 dim: -1 "
              "dim: 3 } }"),
        layer("reshape_axis", "Reshape", "a", "reshape_axis", "reshape_param { axis: 2 "
              "shape { dim: 3 dim: -1 } }"),
        layer("crop", "Crop", ["big", "a"], "crop", "crop_param { axis: 2 offset: 1 offset: 2 }"),
        layer("crop1", "Crop", ["big", "a"], "crop1", "crop_param { axis: 1 offset: 1 }"),
        layer("softmax", "Softmax", "a", "softmax"),
        layer("softmax2", "Softmax", "a", "softmax2", "softmax_param { axis: 2 }"),
        layer("ip", "InnerProduct", "a", "ip", "inner_product_param { num_output: 7 }"),
        layer("ip_axis", "InnerProduct", "a", "ip_axis", "inner_product_param { num_output: 5 "
              "axis: 2 bias_term: false }"),
        layer("ip_t", "InnerProduct", "a", "ip_t", "inner_product_param { num_output: 3 "
              "transpose: true }"),
        layer("argmax", "ArgMax", "a", "argmax", "argmax_param { top_k: 2 }"),
        layer("argmax_val", "ArgMax", "a", "argmax_val", "argmax_param { top_k: 3 "
              "out_max_val: true }"),
        layer("argmax_axis", "ArgMax", "a", "argmax_axis", "argmax_param { axis: 1 }"),
        layer("permute", "Permute", "a", "permute", "permute_param { order: 0 order: 2 "
              "order: 3 order: 1 }"),
        layer("up", "Upsample", "a", "up", "upsample_param { scale: 2 }"),
        layer("pad", "Pad", "a", "pad", "pad_param { pad_u: 1 pad_d: 2 pad_l: 0 pad_r: 3 "
              "pad_value: 0.5 }"),
        layer("silence", "Silence", ["a2", "e1"], []),
    ]


@pytest.mark.parametrize("phase", PHASES)
def test_structure_layers(tmp_path, phase):
    """Eltwise (SUM with coefficients, PROD, MAX), Concat, Slice, Split, Flatten,
    Reshape, Crop, Softmax, InnerProduct (axis, transpose), ArgMax, Permute, Upsample,
    Pad, Silence."""
    inputs = {"a": (2, 4, 5, 6), "b": (2, 4, 5, 6), "c": (2, 4, 5, 6), "big": (2, 6, 8, 9)}
    check(tmp_path, net_text(inputs, structure_layers()), phase)


@pytest.mark.parametrize("normalization", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
@pytest.mark.parametrize("phase", PHASES)
def test_losses_and_accuracy(tmp_path, phase, normalization):
    """SoftmaxWithLoss over a spatial map (every normalization, ignore_label,
    loss_weight; this Caffe cannot build its two-top form: its inner Softmax copies
    the loss weights) and Accuracy (top_k, ignore_label, per-class)."""
    layers = [
        layer("loss", "SoftmaxWithLoss", ["score", "label"], "loss",
              f"loss_param {{ ignore_label: 1 normalization: {normalization} }}"),
        layer("loss_plain", "SoftmaxWithLoss", ["score", "label"], "loss_plain",
              f"loss_param {{ normalization: {normalization} }} loss_weight: 0.5"),
        layer("loss_legacy", "SoftmaxWithLoss", ["score", "label"], "loss_legacy",
              "loss_param { normalize: false }"),
        layer("acc", "Accuracy", ["score", "label"], ["acc", "per_class"],
              "accuracy_param { top_k: 2 ignore_label: 1 }"),
        layer("acc1", "Accuracy", ["score", "label"], "acc1"),
        layer("euclid", "EuclideanLoss", ["score", "score2"], "euclid"),
    ]
    inputs = {"score": (3, 5, 2, 3), "label": (3, 1, 2, 3), "score2": (3, 5, 2, 3)}
    check(tmp_path, net_text(inputs, layers), phase)


def test_prior_box(tmp_path):
    """SSD's PriorBox as this Caffe computes it (min sizes as integers, clip, flip,
    four variances), next to Normalize and Permute as SSD uses them."""
    layers = [
        layer("pb", "PriorBox", ["feat", "img"], "pb", "prior_box_param { min_size: 30.5 "
              "max_size: 60 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: true "
              "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 offset: 0.5 }"),
        layer("pb2", "PriorBox", ["feat", "img"], "pb2", "prior_box_param { min_size: 10 "
              "min_size: 20 aspect_ratio: 2 step: 16 variance: 0.1 }"),
    ]
    check(tmp_path, net_text({"feat": (1, 2, 5, 4), "img": (1, 3, 70, 64)}, layers), "test")


def test_in_place_chains_and_several_tops(tmp_path):
    """In-place layers rebinding one blob, a Convolution with two bottoms (two tops),
    a TRAIN/TEST include rule: each phase keeps Caffe's layers."""
    layers = [
        layer("conv", "Convolution", ["x", "y"], ["cx", "cy"], "convolution_param { "
              "num_output: 3 kernel_size: 3 }"),
        layer("relu", "ReLU", "cx", "cx"),
        layer("scale", "Scale", "cx", "cx", "scale_param { bias_term: true }"),
        layer("drop", "Dropout", "cx", "cx", "include { phase: TRAIN }"),
        layer("pow", "Power", "cy", "cy", "power_param { scale: 2 } include { phase: TEST }"),
        layer("sum", "Eltwise", ["cx", "cy"], "sum"),
    ]
    text = net_text({"x": (2, 3, 6, 6), "y": (2, 3, 6, 6)}, layers)
    for phase in PHASES:
        check(tmp_path, text, phase)


def test_random_draws_are_replayed_so_dropout_agrees_end_to_end(tmp_path):
    """Dropout's TRAIN masks: Caffe's caffe_rng_bernoulli replayed, so a net with
    two dropouts and layers after them agrees blob for blob (not only in distribution)."""
    layers = [
        layer("fc1", "InnerProduct", "x", "fc1", "inner_product_param { num_output: 50 }"),
        layer("drop1", "Dropout", "fc1", "fc1", "dropout_param { dropout_ratio: 0.5 }"),
        layer("fc2", "InnerProduct", "fc1", "fc2", "inner_product_param { num_output: 40 }"),
        layer("drop2", "Dropout", "fc2", "fc2", "dropout_param { dropout_ratio: 0.2 }"),
    ]
    path = tmp_path / "drop.prototxt"
    path.write_text(net_text({"x": (4, 30)}, layers))
    result = verify(str(path), phase="train")
    assert result.ok, result.first_failure
    # and the masks are not trivial: some outputs dropped, some kept
    from pynetbuilder.pytorch.caffe_oracle import CaffeNoise

    mask = np.asarray(CaffeNoise(0)(type("D", (), {"ratio": 0.5})(), (4, 50)))
    assert 0.3 < mask.mean() < 0.7


def ssd_head(code_type: str, nms: str, keep_top_k: int) -> list[str]:
    """Two feature maps, SSD's loc/conf convolutions, Permute/Flatten/Concat, PriorBox,
    Softmax over classes and DetectionOutput, as SSD's deploy nets wire them."""
    layers = [layer("f1", "Convolution", "data", "f1", "convolution_param { num_output: 8 "
                    "kernel_size: 3 stride: 4 pad: 1 }"),
              layer("f1n", "Normalize", "f1", "f1n", "norm_param { across_spatial: false "
                    "channel_shared: false }"),
              layer("f2", "Convolution", "f1", "f2", "convolution_param { num_output: 8 "
                    "kernel_size: 3 stride: 2 pad: 1 }")]
    locs, confs, priors = [], [], []
    for f, feat in (("a", "f1n"), ("b", "f2")):
        layers += [
            layer(f"{f}_loc", "Convolution", feat, f"{f}_loc", "convolution_param { "
                  "num_output: 16 kernel_size: 3 pad: 1 }"),
            layer(f"{f}_loc_perm", "Permute", f"{f}_loc", f"{f}_loc_perm", "permute_param { "
                  "order: 0 order: 2 order: 3 order: 1 }"),
            layer(f"{f}_loc_flat", "Flatten", f"{f}_loc_perm", f"{f}_loc_flat"),
            layer(f"{f}_conf", "Convolution", feat, f"{f}_conf", "convolution_param { "
                  "num_output: 20 kernel_size: 3 pad: 1 }"),
            layer(f"{f}_conf_perm", "Permute", f"{f}_conf", f"{f}_conf_perm",
                  "permute_param { order: 0 order: 2 order: 3 order: 1 }"),
            layer(f"{f}_conf_flat", "Flatten", f"{f}_conf_perm", f"{f}_conf_flat"),
            layer(f"{f}_prior", "PriorBox", [feat, "data"], f"{f}_prior", "prior_box_param { "
                  "min_size: 20 max_size: 40 aspect_ratio: 2 flip: true clip: false "
                  "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }"),
        ]
        locs.append(f"{f}_loc_flat")
        confs.append(f"{f}_conf_flat")
        priors.append(f"{f}_prior")
    layers += [
        layer("loc", "Concat", locs, "loc"),
        layer("conf", "Concat", confs, "conf"),
        layer("prior", "Concat", priors, "prior", "concat_param { axis: 2 }"),
        layer("conf_r", "Reshape", "conf", "conf_r", "reshape_param { shape { dim: 0 "
              "dim: -1 dim: 5 } }"),
        layer("conf_s", "Softmax", "conf_r", "conf_s", "softmax_param { axis: 2 }"),
        layer("conf_f", "Flatten", "conf_s", "conf_f"),
        layer("det", "DetectionOutput", ["loc", "conf_f", "prior"], "det",
              f"detection_output_param {{ num_classes: 5 share_location: true "
              f"background_label_id: 0 {nms} code_type: {code_type} "
              f"keep_top_k: {keep_top_k} confidence_threshold: 0.15 }}"),
    ]
    return layers


@pytest.mark.parametrize("code_type, nms, keep_top_k", [
    ("CENTER_SIZE", "nms_param { nms_threshold: 0.45 top_k: 100 }", 30),
    ("CORNER", "nms_param { nms_threshold: 0.3 eta: 0.9 }", -1),
    ("CORNER_SIZE", "", 50),
])
def test_ssd_head_to_detection_output(tmp_path, code_type, nms, keep_top_k):
    """Decoding, confidence threshold, NMS (adaptive eta, top_k), keep_top_k: the rows
    Caffe keeps, in its order."""
    layers = ssd_head(code_type, nms, keep_top_k)
    path = tmp_path / "ssd.prototxt"
    path.write_text(net_text({"data": (2, 3, 64, 64)}, layers))
    result = verify(str(path), phase="test")
    det = next(c for c in result.blobs if c.name == "det")
    assert det.shape[2] > 2, det  # some boxes kept: the comparison means something
    assert result.ok, result.first_failure


def test_detection_output_saving_results_is_left_out(tmp_path):
    """Published SSD deploy nets keep their authors' ``save_output_param``: Caffe's
    set-up would delete its ``output_directory`` (``remove_all``), recreate it and abort
    on the missing label-map file.  verify runs the net without it: the folder named
    there is untouched, and the detections still equal Caffe's."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "keep.txt").write_text("not Caffe's to delete\n")
    save = (f"save_output_param {{ output_directory: '{results}' output_name_prefix: "
            "'comp4_det_test_' output_format: 'VOC' label_map_file: "
            f"'{tmp_path / 'no_labelmap.prototxt'}' name_size_file: "
            f"'{tmp_path / 'no_name_size.txt'}' num_test_image: 10 }}")
    layers = ssd_head("CENTER_SIZE", "nms_param { nms_threshold: 0.45 top_k: 100 }", 30)
    layers[-1] = layers[-1].replace("code_type:", save + " code_type:")
    path = tmp_path / "ssd.prototxt"
    path.write_text(net_text({"data": (2, 3, 64, 64)}, layers))
    result = verify(str(path), phase="test")
    det = next(c for c in result.blobs if c.name == "det")
    assert det.shape[2] > 2, det
    assert result.ok, result.first_failure
    assert (results / "keep.txt").read_text() == "not Caffe's to delete\n"
    assert [p.name for p in results.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("kind", ["Axpy", "Clip"])
def test_a_type_this_caffe_lacks_is_one_line_naming_the_layer(kind):
    """A fork's type (SENet's Axpy) or BVLC master's Clip is not in the pinned build:
    asked before Caffe builds the net, so the refusal names the layer and its type in one
    line instead of Caffe's fatal check with its whole registry."""
    from google.protobuf import text_format

    from pynetbuilder.pytorch.caffe_oracle import CaffeError, run_caffe
    from pynetbuilder.schema import caffe_pb2

    bottoms = ["r", "x", "x"] if kind == "Axpy" else ["r"]
    text = net_text({"x": (1, 2, 3, 3)}, [layer("relu", "ReLU", "x", "r"),
                                           layer("odd", kind, bottoms)])
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    with pytest.raises(CaffeError) as info:
        run_caffe(net, "deploy", {"x": np.zeros((1, 2, 3, 3), np.float32)})
    message = str(info.value)
    assert "\n" not in message and len(message) < 200, message
    assert f"layer 'odd' of type '{kind}' is not a layer type of the Caffe build" in message


@pytest.mark.parametrize("header", [
    "input: 'x' input_dim: 10 input_dim: 3 input_dim: 9 input_dim: 9",
    "input: 'x' input_shape { dim: 10 dim: 3 dim: 9 dim: 9 }",
    "input: 'x'",  # no dims at all: --input-shape gives them
])
def test_input_shape_reaches_a_header_input(tmp_path, header):
    """Published deploy nets declare their input in the old header (SqueezeNet's
    input_shape 10x3x227x227, MobileNet v2's input_dim): --input-shape must change what
    Caffe runs too, not only the analysis (Caffe ran the header's batch of 10, filled by
    broadcasting our one image, and every blob differed in size)."""
    text = header + "\n" + "\n".join([
        layer("conv", "Convolution", "x", params="convolution_param { num_output: 4 "
              "kernel_size: 3 stride: 2 }"),
        layer("pool", "Pooling", "conv", params="pooling_param { pool: AVE "
              "global_pooling: true }")]) + "\n"
    path = tmp_path / "header.prototxt"
    path.write_text(text)
    result = verify(str(path), input_shape=(2, 3, 11, 7))
    shapes = {c.name: c.shape for c in result.blobs}
    assert shapes["x"] == (2, 3, 11, 7) and shapes["pool"] == (2, 4, 1, 1), shapes
    assert result.ok, result.first_failure


def test_a_blob_of_another_size_is_reported_as_such():
    """A size disagreement (how the header-input defect above showed: Caffe's data blob
    10x3x227x227, the module's 1x3x227x227) is named with both shapes, not as an
    infinite difference."""
    from pynetbuilder.pytorch.verify import compare

    c = compare("data", np.zeros((1, 3, 4, 4)), np.ones((10, 3, 4, 4)), 1e-4)
    assert not c.ok and c.shape == (10, 3, 4, 4) and c.our_shape == (1, 3, 4, 4)
    assert c.as_dict()["module_shape"] == [1, 3, 4, 4]
    same = compare("data", np.ones((1, 48)), np.ones((1, 3, 4, 4)), 1e-4)  # Caffe's 2-d view
    assert same.ok and same.our_shape is None and "module_shape" not in same.as_dict()


def test_layers_sharing_a_name(tmp_path):
    """HED's deploy net names five Crop layers 'crop': without parameters a shared
    name is harmless and the net verifies.  Two layers with parameters under one name
    cannot both get their weights: Caffe matches them by name (its own reload of the
    .caffemodel it saved aborts here), so the module refuses the net in one line."""
    import subprocess
    import sys

    from pynetbuilder.pytorch.base import EmitError

    crops = [layer("c1", "Convolution", "x", "c1", "convolution_param { num_output: 2 "
                   "kernel_size: 3 pad: 2 }"),
             layer("crop", "Crop", ["c1", "x"], "k1", "crop_param { offset: 1 }"),
             layer("up", "Deconvolution", "x", "u", "convolution_param { num_output: 2 "
                   "kernel_size: 4 stride: 2 }"),
             layer("crop", "Crop", ["u", "x"], "k2", "crop_param { offset: 1 }")]
    check(tmp_path, net_text({"x": (1, 2, 6, 7)}, crops), "test")

    convs = [layer("c", "Convolution", "x", "a", "convolution_param { num_output: 3 "
                   "kernel_size: 3 }"),
             layer("c", "Convolution", "a", "b", "convolution_param { num_output: 4 "
                   "kernel_size: 1 }")]
    path = tmp_path / "dup.prototxt"
    path.write_text(net_text({"x": (1, 2, 5, 5)}, convs))
    with pytest.raises(EmitError, match="layers 'c' \\(Convolution\\) and 'c' \\(Convolution\\) "
                       "share a name and both have parameter blobs"):
        verify(str(path))
    reload = (f"import caffe; n = caffe.Net({str(path)!r}, caffe.TEST); "
              f"n.save({str(tmp_path / 'w.caffemodel')!r}); "
              f"caffe.Net({str(path)!r}, {str(tmp_path / 'w.caffemodel')!r}, caffe.TEST)")
    done = subprocess.run([sys.executable, "-c", reload], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "Cannot copy param 0 weights from layer 'c'" in done.stderr


def test_engine_cudnn_runs_as_caffes_own(tmp_path):
    """Published prototxt often pin ``engine: CUDNN`` (convolution, pooling, ReLU,
    Sigmoid, TanH, Softmax, LRN); the CPU build aborts on it ("has unknown engine").
    The oracle runs Caffe's own engine, which computes the same function."""
    layers = [
        layer("c", "Convolution", "x", "c", "convolution_param { num_output: 4 "
              "kernel_size: 3 engine: CUDNN }"),
        layer("r", "ReLU", "c", "c", "relu_param { engine: CUDNN }"),
        layer("n", "LRN", "c", "n", "lrn_param { local_size: 3 engine: CUDNN }"),
        layer("p", "Pooling", "n", "p", "pooling_param { pool: AVE kernel_size: 3 stride: 2 "
              "pad: 1 engine: CUDNN }"),
        layer("t", "TanH", "p", "t", "tanh_param { engine: CUDNN }"),
        layer("g", "Sigmoid", "t", "g", "sigmoid_param { engine: CUDNN }"),
        layer("s", "Softmax", "g", "s", "softmax_param { engine: CUDNN }"),
    ]
    check(tmp_path, net_text({"x": (2, 3, 9, 8)}, layers), "test")


def more_bvlc_layers() -> list[str]:
    """BVLC types outside the zoo that published nets use: SPP (SPPnet), Tile,
    Reduction (every operation, axis and coefficient), Parameter."""
    layers = [
        layer("spp_max", "SPP", "x", params="spp_param { pyramid_height: 3 }"),
        layer("spp_ave", "SPP", "x", params="spp_param { pyramid_height: 2 pool: AVE }"),
        layer("spp_one", "SPP", "x", params="spp_param { pyramid_height: 1 }"),
        layer("tile_c", "Tile", "x", params="tile_param { axis: 1 tiles: 3 }"),
        layer("tile_w", "Tile", "x", params="tile_param { axis: -1 tiles: 2 }"),
        layer("param", "Parameter", [], "param", "parameter_param { shape { dim: 3 dim: 13 "
              "} }"),
        layer("scaled", "Scale", ["x", "param"], "scaled", "scale_param { axis: 1 }"),
    ]
    for i, (op, axis, coeff) in enumerate([("SUM", 0, 1), ("ASUM", 1, 2.5), ("SUMSQ", 2, 1),
                                           ("MEAN", 1, 1), ("MEAN", -1, -0.5)]):
        layers.append(layer(f"red{i}", "Reduction", "x", params=(
            f"reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}")))
    return layers


@pytest.mark.parametrize("phase", PHASES)
def test_more_bvlc_layers(tmp_path, phase):
    check(tmp_path, net_text({"x": (2, 3, 13, 11)}, more_bvlc_layers()), phase,
          gradients=phase == "train")


def test_gradients_of_nets_with_layers_caffe_cannot_differentiate(tmp_path):
    """Caffe has no backward pass for ArgMax, Threshold, DetectionOutput (and Accuracy):
    verify's forced backward reached them and Caffe aborted ("Not Implemented Yet").
    At the end of a net they are left out of the gradient run (a segmentation net's
    ArgMax, SSD's DetectionOutput); read by a later layer, the net is refused."""
    from pynetbuilder.errors import UsageError

    layers = [
        layer("c", "Convolution", "x", "c", "convolution_param { num_output: 4 "
              "kernel_size: 3 }"),
        layer("smx", "Softmax", "c", "smx"),
        layer("am", "ArgMax", "smx", "am", "argmax_param { axis: 1 }"),
        layer("th", "Threshold", "c", "th", "threshold_param { threshold: 0.1 }"),
        layer("p", "Pooling", "c", "p", "pooling_param { pool: MAX kernel_size: 2 }"),
    ]
    text = net_text({"x": (2, 3, 7, 6)}, layers)
    for phase in PHASES:
        path = tmp_path / f"{phase}.prototxt"
        path.write_text(text)
        result = verify(str(path), phase=phase, gradients=True)
        assert {"d x", "d c[0]", "d c[1]"} <= {c.name for c in result.gradients}
        assert result.ok, result.first_failure

    path = tmp_path / "ssd.prototxt"
    path.write_text(net_text({"data": (1, 3, 64, 64)}, ssd_head(
        "CENTER_SIZE", "nms_param { nms_threshold: 0.45 top_k: 100 }", 30)))
    result = verify(str(path), phase="test", gradients=True)
    assert "d data" in {c.name for c in result.gradients}
    assert result.ok, result.first_failure

    read = layers + [layer("after", "Eltwise", ["th", "c"], "after")]
    path = tmp_path / "read.prototxt"
    path.write_text(net_text({"x": (2, 3, 7, 6)}, read))
    with pytest.raises(UsageError, match="layer 'th' \\(Threshold\\) has no backward pass in "
                       "Caffe and layer 'after' reads its output"):
        verify(str(path), gradients=True)


def test_normalize_gradient_is_caffes(tmp_path):
    """SSD's Normalize backward multiplies the gradient of x / norm by each channel's
    scale afterwards (the chain rule scales the top's gradient before): with per-channel
    scales the two differ by ~20% (measured), and Caffe's is reproduced."""
    layers = [layer(f"n{i}", "Normalize", "x", params=(
        f"norm_param {{ across_spatial: {a} channel_shared: {s} eps: 1e-6 }}"))
        for i, (a, s) in enumerate(itertools.product(("true", "false"), repeat=2))]
    check(tmp_path, net_text({"x": (2, 8, 5, 4)}, layers), "train", gradients=True)
