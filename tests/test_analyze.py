"""Analysing existing prototxt (issue 6, item 2): ``pynetbuilder analyze`` and
:mod:`pynetbuilder.inspect`.

Real Caffe is the oracle: every net here is also built with ``caffe.Net`` and every
blob shape and parameter blob shape must equal our inference
(``conftest.assert_report_matches_caffe``).  The published ResNet-50/101/152 deploy
definitions (``../shared/fixtures/prototxt``, by the ResNet authors) are analysed
as they are, and the library's ResNet-50 is matched against the published one
layer for layer, with each deliberate difference named and measured.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHARED, VENV_PY, assert_report_matches_caffe, run_command

from pynetbuilder import models
from pynetbuilder.errors import UsageError
from pynetbuilder.inspect import block_of_name, derive_blocks, load, read_prototxt

FIXTURES = SHARED / "fixtures" / "prototxt"


# Every layer type of the issue's list that needs no labels, and this Caffe's extra
# ones, with the geometry options that change shapes (groups, dilation, rectangular
# and per-axis kernels, pooling rounding, axes, slice points ...).
MANY_TYPES = """
name: "many_types"
input: "data"
input_shape { dim: 2 dim: 8 dim: 15 dim: 17 }
layer { name: "idx" type: "Input" top: "idx" input_param { shape { dim: 3 } } }
layer { name: "ids" type: "Input" top: "ids" input_param { shape { dim: 2 dim: 5 } } }
layer { name: "gconv" type: "Convolution" bottom: "data" top: "gconv"
  convolution_param { num_output: 12 group: 4 kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1
    pad_h: 1 pad_w: 2 dilation: 2 } }
layer { name: "nd_conv" type: "Convolution" bottom: "data" top: "nd_conv"
  convolution_param { num_output: 6 kernel_size: 3 kernel_size: 1 stride: 1 stride: 2 pad: 0
    pad: 1 bias_term: false } }
layer { name: "deconv" type: "Deconvolution" bottom: "gconv" top: "deconv"
  convolution_param { num_output: 6 group: 2 kernel_size: 4 stride: 2 pad: 1 } }
layer { name: "maxpool" type: "Pooling" bottom: "data" top: "maxpool" top: "maxpool_mask"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "floorpool" type: "Pooling" bottom: "data" top: "floorpool"
  pooling_param { pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 3 ceil_mode: false } }
layer { name: "gpool" type: "Pooling" bottom: "data" top: "gpool" pooling_param { pool: AVE
    global_pooling: true } }
layer { name: "bn" type: "BatchNorm" bottom: "gconv" top: "bn" }
layer { name: "scale" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }
layer { name: "scale_hw" type: "Scale" bottom: "data" top: "scale_hw" scale_param { axis: 2
    num_axes: 2 } }
layer { name: "bias" type: "Bias" bottom: "data" top: "bias" bias_param { axis: 1 num_axes: 1 } }
layer { name: "gpool_flat" type: "Flatten" bottom: "gpool" top: "gpool_flat" }
layer { name: "scale2" type: "Scale" bottom: "data" bottom: "gpool_flat" top: "scale2"
    scale_param { axis: 0 } }
layer { name: "relu" type: "ReLU" bottom: "bn" top: "relu" relu_param { negative_slope: 0.1 } }
layer { name: "prelu" type: "PReLU" bottom: "data" top: "prelu" }
layer { name: "prelu_shared" type: "PReLU" bottom: "data" top: "prelu_shared" prelu_param {
    channel_shared: true } }
layer { name: "elu" type: "ELU" bottom: "data" top: "elu" }
layer { name: "sigmoid" type: "Sigmoid" bottom: "data" top: "sigmoid" }
layer { name: "tanh" type: "TanH" bottom: "data" top: "tanh" }
layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn" lrn_param { local_size: 3 } }
layer { name: "lrn_within" type: "LRN" bottom: "data" top: "lrn_within" lrn_param { local_size:
    3 norm_region: WITHIN_CHANNEL } }
layer { name: "drop" type: "Dropout" bottom: "data" top: "drop" }
layer { name: "power" type: "Power" bottom: "data" top: "power" power_param { power: 2 scale:
    0.5 shift: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "drop" top: "sum" eltwise_param {
    operation: SUM coeff: 1 coeff: -1 } }
layer { name: "prod" type: "Eltwise" bottom: "data" bottom: "tanh" bottom: "sigmoid" top: "prod"
    eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "data" bottom: "elu" top: "max" eltwise_param {
    operation: MAX } }
layer { name: "concat" type: "Concat" bottom: "data" bottom: "prelu" bottom: "lrn" top: "concat" }
layer { name: "concat_h" type: "Concat" bottom: "data" bottom: "sum" top: "concat_h"
    concat_param { axis: 2 } }
layer { name: "slice" type: "Slice" bottom: "concat" top: "s1" top: "s2" top: "s3" slice_param {
    slice_point: 3 slice_point: 10 } }
layer { name: "slice_even" type: "Slice" bottom: "data" top: "e1" top: "e2" slice_param { axis:
    1 } }
layer { name: "split" type: "Split" bottom: "max" top: "max_a" top: "max_b" }
layer { name: "flat" type: "Flatten" bottom: "max_a" top: "flat" flatten_param { axis: 1
    end_axis: 2 } }
layer { name: "reshape" type: "Reshape" bottom: "max_b" top: "reshape" reshape_param { shape {
    dim: 0 dim: -1 dim: 17 } } }
layer { name: "reshape_mid" type: "Reshape" bottom: "data" top: "reshape_mid" reshape_param {
    shape { dim: 2 dim: 4 } axis: 1 num_axes: 1 } }
layer { name: "crop" type: "Crop" bottom: "data" bottom: "maxpool" top: "crop" crop_param {
    axis: 2 offset: 1 offset: 2 } }
layer { name: "softmax" type: "Softmax" bottom: "data" top: "softmax" }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {
    num_output: 7 } }
layer { name: "ip_axis" type: "InnerProduct" bottom: "data" top: "ip_axis" inner_product_param {
    num_output: 5 axis: 2 transpose: true } }
layer { name: "argmax" type: "ArgMax" bottom: "ip" top: "argmax" argmax_param { top_k: 2
    out_max_val: true } }
layer { name: "argmax_axis" type: "ArgMax" bottom: "data" top: "argmax_axis" argmax_param {
    top_k: 3 axis: 1 } }
layer { name: "tile" type: "Tile" bottom: "data" top: "tile" tile_param { axis: 2 tiles: 3 } }
layer { name: "reduce" type: "Reduction" bottom: "data" top: "reduce" reduction_param { axis: 2
    operation: MEAN } }
layer { name: "reduce_all" type: "Reduction" bottom: "data" top: "reduce_all" reduction_param {
    axis: 0 } }
layer { name: "upsample" type: "Upsample" bottom: "data" top: "upsample" upsample_param { scale:
    2 } }
layer { name: "upsample_w" type: "Upsample" bottom: "data" top: "upsample_w" upsample_param {
    scale: 3 dims_num: 3 } }
layer { name: "pad" type: "Pad" bottom: "data" top: "pad" pad_param { pad_u: 1 pad_d: 2 pad_l: 3
    pad_r: 0 } }
layer { name: "shuffle" type: "PixelShuffle" bottom: "data" top: "shuffle" pixelshuffle_param {
    upscale_factor: 2 } }
layer { name: "bilinear" type: "BilinearInterpolate" bottom: "data" top: "bilinear"
    bilinear_interpolate_param { dst_h: 20 } }
layer { name: "bilinear_s" type: "BilinearInterpolate" bottom: "data" top: "bilinear_s"
    bilinear_interpolate_param { scale_factor: 1.5 } }
layer { name: "unsqueeze" type: "Unsqueeze" bottom: "data" top: "unsqueeze" unsqueeze_param {
    dim: -2 } }
layer { name: "param" type: "Parameter" top: "param" parameter_param { shape { dim: 4 dim: 3 } } }
layer { name: "reindex" type: "BatchReindex" bottom: "data" bottom: "idx" top: "reindex" }
layer { name: "im2col" type: "Im2col" bottom: "data" top: "im2col" convolution_param {
    kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "spp1" type: "SPP" bottom: "data" top: "spp1" spp_param { pyramid_height: 1 } }
layer { name: "spp3" type: "SPP" bottom: "data" top: "spp3" spp_param { pyramid_height: 3 } }
layer { name: "embed" type: "Embed" bottom: "ids" top: "embed" embed_param { num_output: 6
    input_dim: 10 } }
layer { name: "relu6" type: "ReLU6" bottom: "data" top: "relu6" }
layer { name: "hswish" type: "HardSwish" bottom: "data" top: "hswish" }
layer { name: "hsigmoid" type: "HardSigmoid" bottom: "data" top: "hsigmoid" }
layer { name: "absval" type: "AbsVal" bottom: "data" top: "absval" }
layer { name: "bnll" type: "BNLL" bottom: "data" top: "bnll" }
layer { name: "exp" type: "Exp" bottom: "data" top: "exp" }
layer { name: "log" type: "Log" bottom: "absval" top: "log" }
layer { name: "threshold" type: "Threshold" bottom: "data" top: "threshold" }
layer { name: "mvn" type: "MVN" bottom: "data" top: "mvn" }
layer { name: "unpool" type: "MaxUnPool" bottom: "maxpool" bottom: "maxpool_mask" top: "unpool"
    max_unpool_param { dst_h: 15 dst_w: 17 } }
layer { name: "silence" type: "Silence" bottom: "param" }
"""

# Loss, accuracy and the other layers with scalar or data-dependent tops (TRAIN).
LOSSES = """
name: "losses"
layer { name: "data" type: "Input" top: "data" top: "label" top: "target"
  input_param { shape { dim: 4 dim: 18 dim: 6 dim: 6 } shape { dim: 4 } shape { dim: 4 dim: 10 } } }
layer { name: "resize" type: "Resize" bottom: "data" top: "resize" resize_param { height: 9
    width: 4 } }
layer { name: "resize_p" type: "Resize" bottom: "data" top: "resize_p" resize_param {
    is_pyramid_test: true out_height_scale: 1.7 out_width_scale: 0.5 } }
layer { name: "rois" type: "Input" top: "rois" input_param { shape { dim: 5 dim: 5 } } }
layer { name: "psroi" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "psroi"
    psroi_pooling_param { spatial_scale: 0.0625 output_dim: 2 group_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param {
    num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" top: "per_class"
    accuracy_param { top_k: 3 } }
layer { name: "l2" type: "EuclideanLoss" bottom: "fc" bottom: "target" top: "l2" }
layer { name: "sce" type: "SigmoidCrossEntropyLoss" bottom: "fc" bottom: "target" top: "sce" }
layer { name: "smooth" type: "SmoothL1Loss" bottom: "fc" bottom: "target" top: "smooth" }
layer { name: "hinge" type: "HingeLoss" bottom: "fc" bottom: "label" top: "hinge" }
layer { name: "det" type: "Input" top: "det" top: "gt" input_param { shape { dim: 1 dim: 1 dim:
    6 dim: 7 } shape { dim: 1 dim: 1 dim: 4 dim: 8 } } }
layer { name: "eval" type: "DetectionEvaluate" bottom: "det" bottom: "gt" top: "eval"
    detection_evaluate_param { num_classes: 5 background_label_id: 0 } }
layer { name: "h5out" type: "HDF5Output" bottom: "fc" bottom: "target" hdf5_output_param {
    file_name: "OUT_H5" } }
"""


def ssd_head(phase: str) -> str:
    """A small SSD network: two feature maps, each with Normalize (the first),
    location / confidence convolutions, Permute, Flatten and PriorBox; Concat of
    the three kinds; DetectionOutput in the deploy net, MultiBoxLoss in training."""
    layers = [
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
        'convolution_param { num_output: 16 kernel_size: 3 stride: 2 pad: 1 } }',
        'layer { name: "conv1_relu" type: "ReLU" bottom: "conv1" top: "conv1" }',
        'layer { name: "conv1_norm" type: "Normalize" bottom: "conv1" top: "conv1_norm" '
        'norm_param { across_spatial: false channel_shared: false '
        'scale_filler { type: "constant" value: 20 } } }',
        'layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" '
        'convolution_param { num_output: 32 kernel_size: 3 stride: 2 pad: 1 } }',
    ]
    sources = [("conv1_norm", 10, 20, "aspect_ratio: 2", "step: 2"),
               ("conv2", 20, 40, "aspect_ratio: 2 aspect_ratio: 3 aspect_ratio: 0.5", "")]
    classes = 3
    for src, min_size, max_size, ratios, step in sources:
        priors = {"conv1_norm": 4, "conv2": 6}[src]  # 1 + ratios (and flips) + 1 max size
        for kind, outputs in (("loc", priors * 4), ("conf", priors * classes)):
            name = f"{src}_mbox_{kind}"
            layers += [
                f'layer {{ name: "{name}" type: "Convolution" bottom: "{src}" top: "{name}" '
                f'convolution_param {{ num_output: {outputs} kernel_size: 3 pad: 1 }} }}',
                f'layer {{ name: "{name}_perm" type: "Permute" bottom: "{name}" '
                f'top: "{name}_perm" permute_param {{ order: 0 order: 2 order: 3 order: 1 }} }}',
                f'layer {{ name: "{name}_flat" type: "Flatten" bottom: "{name}_perm" '
                f'top: "{name}_flat" }}',
            ]
        layers.append(
            f'layer {{ name: "{src}_mbox_priorbox" type: "PriorBox" bottom: "{src}" '
            f'bottom: "data" top: "{src}_mbox_priorbox" prior_box_param {{ '
            f'min_size: {min_size} max_size: {max_size} {ratios} flip: true clip: false '
            f'variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 {step} }} }}')
    for kind, axis in (("loc", 1), ("conf", 1), ("priorbox", 2)):
        suffix = "" if kind == "priorbox" else "_flat"
        bottoms = " ".join(f'bottom: "{s[0]}_mbox_{kind}{suffix}"' for s in sources)
        layers.append(f'layer {{ name: "mbox_{kind}" type: "Concat" {bottoms} '
                      f'top: "mbox_{kind}" concat_param {{ axis: {axis} }} }}')
    if phase == "deploy":
        data = ('layer { name: "data" type: "Input" top: "data" '
                'input_param { shape { dim: 2 dim: 3 dim: 64 dim: 64 } } }')
        layers += [
            'layer { name: "mbox_conf_reshape" type: "Reshape" bottom: "mbox_conf" '
            f'top: "mbox_conf_reshape" reshape_param {{ shape {{ dim: 0 dim: -1 dim: {classes} '
            '} } }',
            'layer { name: "mbox_conf_softmax" type: "Softmax" bottom: "mbox_conf_reshape" '
            'top: "mbox_conf_softmax" softmax_param { axis: 2 } }',
            'layer { name: "mbox_conf_flatten" type: "Flatten" bottom: "mbox_conf_softmax" '
            'top: "mbox_conf_flatten" }',
            'layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc" '
            'bottom: "mbox_conf_flatten" bottom: "mbox_priorbox" top: "detection_out" '
            f'detection_output_param {{ num_classes: {classes} share_location: true '
            'background_label_id: 0 nms_param { nms_threshold: 0.45 top_k: 40 } '
            'code_type: CENTER_SIZE keep_top_k: 20 confidence_threshold: 0.01 } }',
        ]
    else:
        data = ('layer { name: "data" type: "Input" top: "data" top: "label" input_param { '
                'shape { dim: 2 dim: 3 dim: 64 dim: 64 } shape { dim: 1 dim: 1 dim: 3 dim: 8 '
                '} } }')
        layers.append(
            'layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "mbox_loc" '
            'bottom: "mbox_conf" bottom: "mbox_priorbox" bottom: "label" top: "mbox_loss" '
            f'multibox_loss_param {{ loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX '
            f'num_classes: {classes} share_location: true match_type: PER_PREDICTION '
            'overlap_threshold: 0.5 background_label_id: 0 neg_pos_ratio: 3 '
            'code_type: CENTER_SIZE } }')
    return f'name: "ssd_{phase}"\n' + "\n".join([data, *layers]) + "\n"


def analysed_in_caffe(caffe, tmp_path: Path, text: str, phase: str = "test",
                      name: str = "net.prototxt", **load_args):
    """Our inspection of ``text`` and real Caffe's net of it (TRAIN or TEST)."""
    path = tmp_path / name
    path.write_text(text)
    ours = load(str(path), phase="deploy" if phase == "test" else phase, **load_args)
    net = caffe.Net(str(path), caffe.TRAIN if phase == "train" else caffe.TEST)
    return ours, net


def caffe_counts(net, types: dict[str, str]) -> tuple[int, int]:
    """Learnable params and MACs computed from a ``caffe.Net`` alone: every parameter
    blob but BatchNorm's; MACs = output elements x weight elements per output channel
    for Convolution, output elements x inputs for InnerProduct."""
    params = macs = 0
    for name, blobs in net.params.items():
        if types[name] != "BatchNorm":
            params += sum(b.data.size for b in blobs)
        top = net.blobs[net.top_names[name][0]].data
        if types[name] == "Convolution":
            weight = blobs[0].data
            macs += top.size * (weight.size // weight.shape[0])
        elif types[name] == "InnerProduct":  # weight N x K (or K x N): K per output
            macs += top.size * (blobs[0].data.size // top.shape[-1])
    return params, macs


def layer_types(net) -> dict[str, str]:
    return {name: layer.type for name, layer in zip(net._layer_names, net.layers)}


# ---------------------------------------------------------------- published ResNets


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_published_resnet_deploy_agrees_with_caffe(caffe, depth):
    path = FIXTURES / f"ResNet-{depth}-deploy.prototxt"
    inspected = load(str(path))
    report = inspected.report
    assert report.skipped == []
    net = caffe.Net(str(path), caffe.TEST)
    assert_report_matches_caffe(report, net)
    params, macs = caffe_counts(net, layer_types(net))
    assert (report.totals.params, report.totals.macs) == (params, macs)
    # Caffe adds Split layers and an Input layer named "input" for the input: header
    caffe_layers = [n for n, t in layer_types(net).items() if t != "Split" and n != "input"]
    assert [r.name for r in report.rows] == caffe_layers


def published_name(ours: str) -> str:
    """The published ResNet-50's name of a layer of our resnet_imagenet ResNet-50."""
    fixed = {"conv1": "conv1", "conv1_bn": "bn_conv1", "conv1_scale": "scale_conv1",
             "conv1_relu": "conv1_relu", "pool1": "pool1", "pool5": "pool5",
             "fc_classifier": "fc1000", "prob": "prob"}
    if ours in fixed:
        return fixed[ours]
    stage, block, rest = ours.split("_", 2)  # stage1_block2_branch2a_bn
    unit = f"{int(stage[5:]) + 1}{chr(ord('a') + int(block[5:]) - 1)}"  # "2b"
    if rest == "add":
        return f"res{unit}"
    if rest == "relu":
        return f"res{unit}_relu"
    branch, _, kind = rest.partition("_")
    prefix = {"": "res", "bn": "bn", "scale": "scale", "relu": "res"}[kind]
    return f"{prefix}{unit}_{branch}" + ("_relu" if kind == "relu" else "")


def test_library_resnet50_matches_the_published_one_layer_for_layer():
    published = load(str(FIXTURES / "ResNet-50-deploy.prototxt")).report
    ours = load("resnet_imagenet:num_output_stage1=256").report
    # Deliberate difference 1: our deploy net declares its input with an Input layer
    # (the published one with the old input:/input_dim header): one more layer, and
    # its 1x3x224x224 blob counted among the activations.
    assert ours.rows[0].type == "Input" and ours.rows[0].shapes == ((1, 3, 224, 224),)
    rows = ours.rows[1:]
    assert len(rows) == len(published.rows) == 228
    for o, p in zip(rows, published.rows):
        assert published_name(o.name) == p.name, (o.name, p.name)
        assert (o.type, o.bottoms != (), o.shapes) == (p.type, p.bottoms != (), p.shapes), o.name
        if o.name == "conv1":
            # Deliberate difference 2: the published conv1 has a bias (64 values in
            # front of BatchNorm, which cancels them); ours has none, as torchvision.
            assert [b.shape for b in p.blobs] == [(64, 3, 7, 7), (64,)]
            assert [b.shape for b in o.blobs] == [(64, 3, 7, 7)]
            assert p.params - o.params == 64
        else:
            assert o.blobs == p.blobs, o.name
            assert (o.params, o.macs) == (p.params, p.macs), o.name
    t_ours, t_pub = ours.totals, published.totals
    assert t_pub.params - t_ours.params == 64
    assert t_ours.params == 25_557_032  # torchvision's resnet50 count
    assert t_ours.macs == t_pub.macs
    assert t_ours.activations - t_pub.activations == 3 * 224 * 224
    assert t_ours.layers - t_pub.layers == 1


def test_input_shape_reshapes_the_published_net(caffe, tmp_path):
    path = FIXTURES / "ResNet-50-deploy.prototxt"
    inspected = load(str(path), input_shape=(2, 3, 320, 320))
    text = path.read_text().replace("input_dim: 1\n", "input_dim: 2\n", 1)
    text = text.replace("input_dim: 224\ninput_dim: 224", "input_dim: 320\ninput_dim: 320", 1)
    (tmp_path / "r50_320.prototxt").write_text(text)
    net = caffe.Net(str(tmp_path / "r50_320.prototxt"), caffe.TEST)
    assert net.blobs["data"].data.shape == (2, 3, 320, 320)
    assert_report_matches_caffe(inspected.report, net)
    # C,H,W keeps the prototxt's batch size
    assert load(str(path), input_shape=(3, 320, 320)).report.blob_shapes["data"] == (
        1, 3, 320, 320)


# ---------------------------------------------------------------- layer types vs Caffe


def test_many_layer_types_agree_with_caffe(caffe, tmp_path):
    ours, net = analysed_in_caffe(caffe, tmp_path, MANY_TYPES)
    assert ours.report.skipped == []
    issue_types = {  # the issue's list of types that need no labels
        "Convolution", "Deconvolution", "Pooling", "InnerProduct", "BatchNorm", "Scale",
        "Bias", "ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "LRN", "Dropout", "Eltwise",
        "Concat", "Slice", "Split", "Flatten", "Reshape", "Crop", "Power", "Softmax"}
    assert issue_types <= {r.type for r in ours.report.rows}
    assert_report_matches_caffe(ours.report, net)
    params, macs = caffe_counts(net, layer_types(net))
    # Deconvolution is not in caffe_counts: out x in-per-group x kernel per input pixel
    deconv = net.params["deconv"][0].data
    deconv_macs = net.blobs["gconv"].data.size * (deconv.size // deconv.shape[0])
    assert ours.report.totals.params == params
    assert ours.report.totals.macs == macs + deconv_macs


def test_losses_accuracy_and_detection_evaluate_agree_with_caffe(caffe, tmp_path):
    text = LOSSES.replace("OUT_H5", str(tmp_path / "out.h5"))
    ours, net = analysed_in_caffe(caffe, tmp_path, text, phase="train")
    assert ours.report.skipped == []
    assert_report_matches_caffe(ours.report, net)


def test_ssd_deploy_and_train_heads_agree_with_caffe(caffe, tmp_path):
    ours, net = analysed_in_caffe(caffe, tmp_path, ssd_head("deploy"))
    assert_report_matches_caffe(ours.report, net)
    rows = {r.name: r for r in ours.report.rows}
    # 4 and 6 priors per location on 32x32 and 16x16 maps, 4 numbers each
    assert rows["mbox_priorbox"].shapes == ((1, 2, (32 * 32 * 4 + 16 * 16 * 6) * 4),)
    assert [b.shape for b in rows["conv1_norm"].blobs] == [(16,)]
    detections = net.forward()["detection_out"]
    assert detections.shape[0:2] == (1, 1) and detections.shape[3] == 7
    del net
    ours, net = analysed_in_caffe(caffe, tmp_path, ssd_head("train"), phase="train")
    assert_report_matches_caffe(ours.report, net)
    assert ours.report.blob_shapes["mbox_loss"] == ()


def test_old_v1_layers_format_is_upgraded_as_caffe_does(caffe, tmp_path):
    text = """name: "v1"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 32 input_dim: 32
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1 blobs_lr: 0
  convolution_param { num_output: 8 kernel_size: 5 stride: 1 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "pool" type: POOLING bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool" top: "fc"
  inner_product_param { num_output: 10 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""
    ours, net = analysed_in_caffe(caffe, tmp_path, text)
    assert [r.type for r in ours.report.rows] == [
        "Convolution", "ReLU", "Pooling", "InnerProduct", "Softmax"]
    assert_report_matches_caffe(ours.report, net)
    conv = ours.report.rows[0]
    # blobs_lr: 0 became param { lr_mult: 0 }: the bias is fixed, not learnable
    assert [b.learnable for b in conv.blobs] == [True, False]
    assert conv.params == 8 * 3 * 5 * 5


# ---------------------------------------------------------------- data layers, phases


def train_val(train_db: Path, val_db: Path, transform: str = "crop_size: 227") -> str:
    """An original-style train_val prototxt: one Data layer per phase, accuracy in TEST,
    a layer only in a stage no one sets (excluded in both phases, as Caffe does)."""
    def data(phase: str, source: Path, batch: int) -> str:
        return (f'layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ '
                f'phase: {phase} }} transform_param {{ {transform} mirror: '
                f'{str(phase == "TRAIN").lower()} }} data_param {{ source: "{source}" '
                f'batch_size: {batch} backend: LMDB }} }}')

    return "\n".join([
        'name: "train_val"',
        data("TRAIN", train_db, 3),
        data("TEST", val_db, 2),
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        'convolution_param { num_output: 4 kernel_size: 11 stride: 4 } }',
        'layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" '
        'pooling_param { pool: MAX kernel_size: 3 stride: 2 } }',
        'layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" '
        'inner_product_param { num_output: 4 } }',
        'layer { name: "extra" type: "ReLU" bottom: "fc" top: "extra" '
        'include { phase: TEST stage: "deploy-check" } }',
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" '
        'top: "loss" }',
        'layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" '
        'top: "accuracy" include { phase: TEST } }',
    ]) + "\n"


def test_train_val_prototxt_per_phase_with_shapes_read_from_the_database(
        caffe, tmp_path, image_lmdb):
    path = tmp_path / "train_val.prototxt"
    path.write_text(train_val(*image_lmdb))
    for phase, caffe_phase in (("train", caffe.TRAIN), ("test", caffe.TEST)):
        ours = load(str(path), phase=phase)
        net = caffe.Net(str(path), caffe_phase)
        assert_report_matches_caffe(ours.report, net)
        assert [r.name for r in ours.report.rows] == [
            n for n, t in layer_types(net).items() if t != "Split"]
        del net
    assert load(str(path), phase="train").report.blob_shapes["data"] == (3, 3, 227, 227)
    assert "accuracy" not in {r.name for r in load(str(path), phase="train").report.rows}


def test_data_layer_without_crop_takes_the_image_size_from_the_database(
        caffe, tmp_path, image_lmdb):
    text = train_val(*image_lmdb, transform="scale: 0.00390625")
    ours, net = analysed_in_caffe(caffe, tmp_path, text, phase="train")
    assert ours.report.blob_shapes["data"] == (3, 3, 256, 256)  # the fixture's images
    assert_report_matches_caffe(ours.report, net)


def test_resize_and_rectangular_crop_follow_the_data_transformer(tmp_path, image_lmdb):
    """DataTransformer::InferBlobShape: resize height/width each replace the image's,
    then crop_h / crop_w each replace those.  Not built in Caffe here: this build has
    no OpenCV, and its prefetch thread aborts the process when it transforms a raw
    record to any size but the record's own or crop_size (a CHECK in Transform)."""
    for transform, shape in (
        ("old_resize_param { height: 240 width: 250 } crop_h: 200 crop_w: 0", (200, 250)),
        ("old_resize_param { height: 240 } crop_w: 100", (240, 100)),
        ("crop_h: 64 crop_w: 32", (64, 32)),
        ("crop_size: 100 crop_h: 64", (100, 100)),  # crop_size wins
    ):
        path = tmp_path / "resize.prototxt"
        path.write_text(train_val(*image_lmdb, transform=transform))
        # 256x256 images in the database, batch 3 in TRAIN
        assert load(str(path), phase="train").report.blob_shapes["data"] == (3, 3, *shape)


def test_hdf5_data_shapes_come_from_the_files(caffe, tmp_path):
    import h5py
    from sklearn.datasets import load_digits

    digits = load_digits()
    h5 = tmp_path / "digits.h5"
    with h5py.File(h5, "w") as f:
        f["data"] = (digits.images[:100, None] / 16).astype(np.float32)
        f["label"] = digits.target[:100].astype(np.float32)
    (tmp_path / "digits.txt").write_text(f"{h5}\n")
    text = f"""name: "digits"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param {{ source: "{tmp_path / 'digits.txt'}" batch_size: 16 }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param {{ num_output: 10 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }}
"""
    ours, net = analysed_in_caffe(caffe, tmp_path, text, phase="train")
    assert ours.report.blob_shapes["data"] == (16, 1, 8, 8)
    assert ours.report.blob_shapes["label"] == (16,)
    assert_report_matches_caffe(ours.report, net)


def test_annotated_data_label_shape_counts_the_first_records_boxes(caffe, tmp_path):
    """SSD's AnnotatedData: images from the database, the label top 1x1xBOXESx8 at set-up."""
    import lmdb

    from pynetbuilder.schema import caffe_pb2

    rng = np.random.default_rng(2)
    env = lmdb.open(str(tmp_path / "voc"), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(2):
            record = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
            record.datum.CopyFrom(caffe_pb2.Datum(
                channels=3, height=60, width=80, label=-1,
                data=rng.integers(0, 256, 3 * 60 * 80, dtype=np.uint8).tobytes()))
            for group, boxes in ((1, 2), (3, 1 + i)):
                g = record.annotation_group.add(group_label=group)
                for b in range(boxes):
                    g.annotation.add(instance_id=b, bbox=caffe_pb2.NormalizedBBox(
                        xmin=0.1, ymin=0.1, xmax=0.5, ymax=0.6))
            txn.put(f"{i:08d}".encode(), record.SerializeToString())
    env.close()
    text = f"""name: "ssd_data"
layer {{ name: "data" type: "AnnotatedData" top: "data" top: "label"
  include {{ phase: TRAIN }} transform_param {{ mean_value: 104 mean_value: 117 mean_value: 123 }}
  data_param {{ source: "{tmp_path / 'voc'}" batch_size: 2 backend: LMDB }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 4 kernel_size: 3 }} }}
layer {{ name: "silence" type: "Silence" bottom: "label" }}
"""
    ours, net = analysed_in_caffe(caffe, tmp_path, text, phase="train")
    assert ours.report.blob_shapes["data"] == (2, 3, 60, 80)
    assert ours.report.blob_shapes["label"] == (1, 1, 3, 8)  # 2 + 1 boxes in record 0
    assert_report_matches_caffe(ours.report, net)


def test_image_data_shapes_come_from_the_first_image_or_the_resize(tmp_path):
    """This Caffe is built without OpenCV, so ImageData cannot run here: the shapes are
    checked against the images this test writes (40 wide, 30 high)."""
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (40, 30), (i, 0, 0)).save(tmp_path / f"img{i}.png")
    (tmp_path / "list.txt").write_text("img0.png 0\nimg1.png 1\n")

    def shapes(params: str, transform: str = "") -> tuple:
        path = tmp_path / "image_data.prototxt"
        path.write_text(
            f'layer {{ name: "data" type: "ImageData" top: "data" top: "label" '
            f'transform_param {{ {transform} }} image_data_param {{ source: "list.txt" '
            f'root_folder: "{tmp_path}/" batch_size: 5 {params} }} }}\n')
        report = load(str(path)).report
        return report.blob_shapes["data"], report.blob_shapes["label"]

    assert shapes("") == ((5, 3, 30, 40), (5,))  # the list is found beside the prototxt
    assert shapes("is_color: false") == ((5, 1, 30, 40), (5,))
    assert shapes("new_height: 20 new_width: 24") == ((5, 3, 20, 24), (5,))
    assert shapes("new_height: 20 new_width: 24", "crop_size: 16") == ((5, 3, 16, 16), (5,))


def test_unreadable_data_source_needs_input_shape(tmp_path):
    path = tmp_path / "nodb.prototxt"
    path.write_text(train_val(tmp_path / "missing_train", tmp_path / "missing_val",
                              transform="crop_size: 64"))
    with pytest.raises(UsageError, match=r"--input-shape C \(the batch size 3"):
        load(str(path), phase="train")
    ours = load(str(path), phase="train", input_shape=(1,))
    assert ours.report.blob_shapes["data"] == (3, 1, 64, 64)
    path.write_text(train_val(tmp_path / "missing_train", tmp_path / "missing_val",
                              transform="scale: 1"))
    with pytest.raises(UsageError, match=r"give --input-shape C,H,W"):
        load(str(path), phase="test")
    assert load(str(path), phase="test", input_shape=(3, 40, 50)).report.blob_shapes[
        "data"] == (2, 3, 40, 50)


# ---------------------------------------------------------------- unknown layer types


UNKNOWN = """name: "with_unknown"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim:
    32 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "fancy" type: "FancyOp" bottom: "conv" top: "fancy" }
layer { name: "after" type: "Convolution" bottom: "fancy" top: "after"
  convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "after_relu" type: "ReLU" bottom: "after" top: "after" }
layer { name: "py" type: "Python" bottom: "conv" top: "py"
  python_param { module: "somewhere" layer: "Mystery" } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
  inner_product_param { num_output: 10 } }
"""


def test_unknown_layer_types_are_named_and_excluded_never_a_crash(caffe, tmp_path):
    path = tmp_path / "unknown.prototxt"
    path.write_text(UNKNOWN)
    report = load(str(path)).report
    skipped = {s.name: s for s in report.skipped}
    assert list(skipped) == ["fancy", "after", "after_relu", "py"]
    assert "no shape rule for type 'FancyOp'" in skipped["fancy"].reason
    assert "'fancy'" in skipped["after"].reason and "'fancy'" in skipped["after_relu"].reason
    assert skipped["py"].reason.startswith("Python layer somewhere.Mystery: its output shapes")
    assert [r.name for r in report.rows] == ["data", "conv", "pool", "fc"]
    # what was analysed is what Caffe builds of the net without those layers
    head, tail = UNKNOWN.split('layer { name: "fancy"')[0], UNKNOWN.split('layer { name: "pool"')
    pruned = head + 'layer { name: "pool"' + tail[1]
    (tmp_path / "pruned.prototxt").write_text(pruned)
    net = caffe.Net(str(tmp_path / "pruned.prototxt"), caffe.TEST)
    assert_report_matches_caffe(report, net)
    t = report.totals
    assert t.params == sum(b.data.size for bs in net.params.values() for b in bs)
    assert t.layers == 4
    # the printed report names them and says the totals exclude them
    assert "not analysed (4 layers, excluded from the totals):" in report.table()
    assert "excluding 4 layers not analysed" in report.summary()
    assert [s["name"] for s in report.to_json()["skipped_layers"]] == list(skipped)


def test_in_place_layers_are_not_cycles_and_join_their_producers_block():
    net = read_prototxt(FIXTURES / "ResNet-50-deploy.prototxt")
    blocks = derive_blocks(net)
    assert blocks["bn2a_branch2a"] == blocks["res2a_branch2a_relu"] == "res2a"
    assert blocks["bn_conv1"] == "conv1" and blocks["fc1000"] == "fc1000"
    assert block_of_name("inception_3a/1x1") == "inception_3a"
    assert block_of_name("conv2_1/dw") == "conv2_1"


# ---------------------------------------------------------------- the command


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    return run_command("analyze", *args, capsys=capsys)


def test_analyze_prints_table_and_writes_json(tmp_path, capsys):
    path = FIXTURES / "ResNet-101-deploy.prototxt"
    code, out, err = run_cli(str(path), capsys=capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["layer", "type", "output"]
    assert any(line.split()[:3] == ["res4b22_branch2a", "Convolution", "1x256x14x14"]
               for line in lines)
    assert lines[-1].startswith("ResNet-101 (deploy): 44,549,160 learnable params")
    report_file = tmp_path / "r.json"
    code, out, err = run_cli(str(path), "--json", str(report_file), "--by-block", capsys=capsys)
    assert code == 0, err
    data = json.loads(report_file.read_text())
    expected = load(str(path)).report
    assert data["params"] == expected.totals.params and data["macs"] == expected.totals.macs
    assert len(data["layers"]) == 449 and data["source"] == str(path)
    assert "res4b22_branch2a" not in out  # --json: totals and blocks on screen, no table
    block = next(line.split() for line in out.splitlines() if line.startswith("res4b22 "))
    # a 1024-256-256-1024 bottleneck at 14x14: three convolutions with BN, Scale (and
    # ReLU on two) in place, the sum and its ReLU
    weights = 1024 * 256 + 256 * 256 * 9 + 256 * 1024
    params = weights + 2 * (256 + 256 + 1024)
    activations = 14 * 14 * (256 * 4 * 2 + 1024 * 3 + 1024 * 2)
    assert block[1:] == ["13", f"{params:,}", f"{weights * 14 * 14:,}", f"{activations:,}"]


def test_analyze_a_model_with_knob_flags_or_in_one_word(capsys, tmp_path):
    expected = models.build("resnet", depth=20).report("deploy")
    for args in (["resnet", "--depth", "20"], ["resnet:depth=20"]):
        code, out, err = run_cli(*args, "--json", str(tmp_path / "m.json"), capsys=capsys)
        assert code == 0, err
        data = json.loads((tmp_path / "m.json").read_text())
        assert (data["params"], data["macs"]) == (expected.totals.params, expected.totals.macs)
    list_knob = load("resnet_imagenet:num_output_stage1=256:blocks=3,4,23,3").report
    assert list_knob.totals.params == 44_549_160  # the zoo table's ResNet-101
    train = load("resnet", ["--depth", "20", "--batch_size", "8"], phase="train").report
    assert train.blob_shapes["data"] == (8, 3, 32, 32)


def test_input_shape_on_a_model_sets_its_deploy_input():
    ours = load("resnet:depth=20", input_shape=(4, 3, 64, 64)).report
    base = load("resnet:depth=20").report
    assert ours.blob_shapes["data"] == (4, 3, 64, 64)
    # every convolution sees 4 images of 4x the pixels (16x its MACs), the classifier
    # 4 images (after the global pooling); params unchanged
    fc = next(r.macs for r in base.rows if r.type == "InnerProduct")
    assert ours.totals.macs == 16 * (base.totals.macs - fc) + 4 * fc
    assert ours.totals.params == base.totals.params


def write_text(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


INPUT = ('layer { name: "data" type: "Input" top: "data" '
         'input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n')
RELU = 'layer {{ name: "{n}" type: "ReLU" bottom: "{b}" top: "{t}" }}\n'

BAD_NETS = {
    "syntax": ('name: "x"\nlayer {\n  name: "a"\n  type: ReLU"\n}\n',
               r"syntax\.prototxt:4:9: not a valid Caffe prototxt \(line 4, column 9: "
               r"'  type: ReLU\"': Expected string but found: 'ReLU'"),
    "missing_bottom": (INPUT + RELU.format(n="r", b="dta", t="r"),
                       r"layer 'r' reads blob 'dta', which no layer produces "
                       r"\(did you mean 'data'\?\)"),
    # a layer's name read as a blob (DeepScale's SqueezeNet v1.1 deploy at a4c3305d: layer
    # conv10 writes conv10-b, relu_conv10 reads conv10): the hint names the layer's top
    "layer_name_as_blob": (INPUT + RELU.format(n="conv1", b="data", t="conv1-b")
                           + RELU.format(n="r", b="conv1", t="r"),
                           r"layer 'r' reads blob 'conv1', which no layer produces "
                           r"\(layer 'conv1' writes 'conv1-b'\)"),
    "cycle": (INPUT + RELU.format(n="a", b="y", t="x") + RELU.format(n="b", b="x", t="y"),
              r"layer 'a' reads blob 'y' in a cycle: 'b' -> 'a' -> 'b'"),
    "order": (INPUT + RELU.format(n="a", b="y", t="x") + RELU.format(n="b", b="data", t="y"),
              r"layer 'a' reads blob 'y' before layer 'b' produces it"),
    "two_producers": (INPUT + RELU.format(n="a", b="data", t="x")
                      + RELU.format(n="b", b="data", t="x"),
                      r"layer 'b' writes blob 'x', which an earlier layer already produced"),
    "no_input_shape": ('layer { name: "data" type: "Input" top: "data" }\n',
                       r"Input layer 'data' declares no shape; give --input-shape N,C,H,W"),
    "header_without_dims": ('input: "data"\n' + RELU.format(n="r", b="data", t="r"),
                            r"input 'data' of the net has no shape"),
    "shape_error": (INPUT + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
                    'convolution_param { num_output: 4 kernel_size: 3 group: 2 } }\n',
                    r"group 2 must divide both input channels 3"),
    "empty": ('name: "nothing"\n', r"the net has no layers and no inputs"),
    "input_dims": ('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\n'
                   + RELU.format(n="r", b="data", t="r"),
                   r"1 input\(s\) need 4 input_dim values each \(N, C, H, W\), got 3"),
}


@pytest.mark.parametrize("case", list(BAD_NETS))
def test_bad_prototxt_one_line_exit_2_nothing_written(case, tmp_path, capsys):
    text, message = BAD_NETS[case]
    path = write_text(tmp_path, f"{case}.prototxt", text)
    out_json = tmp_path / "out" / "report.json"
    code, out, err = run_cli(str(path), "--json", str(out_json), capsys=capsys)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pynetbuilder: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["syntax", "missing_bottom", "layer_name_as_blob", "cycle",
                                  "order", "two_producers"])
def test_caffe_refuses_the_same_bad_nets(case, tmp_path):
    """The nets refused above are nets real Caffe refuses too (it aborts the process).
    Not "input_dims": Caffe reads past the end of the list there (its shape is garbage,
    e.g. 1x3x8x22016), which we refuse rather than imitate."""
    path = write_text(tmp_path, f"{case}.prototxt", BAD_NETS[case][0])
    proc = subprocess.run(
        [str(VENV_PY), "-c", f"import caffe; caffe.Net({str(path)!r}, caffe.TEST)"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0, proc.stderr[-500:]


BAD_ARGS = [
    (["resnet_50_nothere"], "neither a prototxt file nor a model"),
    (["missing.prototxt"], "missing.prototxt: no such file"),
    (["resnet", "--depth", "21"], "knob depth accepts 6n+2"),
    (["resnet", "--nope", "1"], "resnet has no knob '--nope'"),
    (["resnet:depth"], "each knob after the model name is KNOB=VALUE"),
    ([str(FIXTURES / "ResNet-50-deploy.prototxt"), "--input-shape", "1,3,x"],
     "--input-shape: takes positive integers N,C,H,W"),
    ([str(FIXTURES / "ResNet-50-deploy.prototxt"), "--input-shape", "224,224"],
     "--input-shape 224,224 does not fit input 'data' of shape 1,3,224,224: give 4 numbers"),
    ([str(FIXTURES / "ResNet-50-deploy.prototxt"), "--input-shape", "2,3,16,16"],
     "Pooling layer 'pool5' gives 'pool5' the shape (2, 2048, -5, -5) from input "
     "(2, 2048, 1, 1): the input is too small"),
    ([str(FIXTURES / "ResNet-50-deploy.prototxt"), "--phase", "val"], "invalid choice: 'val'"),
    ([str(FIXTURES / "ResNet-50-deploy.prototxt"), "--depth", "3"], "knob flags (--depth 3)"),
    ([], "needs a NET"),
]


@pytest.mark.parametrize("args,message", BAD_ARGS, ids=[" ".join(a[0])[-40:] or "none"
                                                        for a in BAD_ARGS])
def test_bad_arguments_one_line_exit_2(args, message, capsys):
    code, out, err = run_cli(*args, capsys=capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err


def test_analyze_runs_as_a_command_line_program(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pynetbuilder", "analyze",
                           str(FIXTURES / "ResNet-152-deploy.prototxt"), "--json",
                           str(tmp_path / "r152.json")], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "r152.json").read_text())
    # the zoo table's ResNet-152 (the published 101 and 152 have no conv1 bias)
    assert (data["params"], data["macs"]) == (60_192_808, 11_282_415_616)
