"""The ImageNet ResNet app: real Caffe agrees with every shape and parameter blob,
and the original pynetbuilder's published figures reproduce."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, assert_report_matches_caffe, caffe_net

from pynetbuilder.caffe_count import legacy_counts_from_caffe
from pynetbuilder.graph import prototxt_files
from pynetbuilder.legos import ClassificationData
from pynetbuilder.models import resnet_imagenet


def data(lmdbs, batch=2, crop=224):
    train, val = lmdbs
    return ClassificationData(str(train), str(val), batch_size=batch, test_batch_size=batch,
                              crop_size=crop)


# The original pynetbuilder's README tables (models/imagenet/Readme.md of
# yahoo/pynetbuilder): (params M, flops M) as printed, i.e. truncated to 2 decimals.
PUBLISHED = [
    ("ResNet 50", dict(main_branch="bottleneck", num_output_stage1=256), "25.55", "3858.02"),
    ("ResNet 50 1by2", dict(main_branch="bottleneck", num_output_stage1=128), "6.92", "1069.59"),
    ("ResNet 77 1by2", dict(main_branch="bottleneck", num_output_stage1=128,
                            blocks=(3, 4, 15, 3)), "9.44", "1560.93"),
    ("ResNet 66 1by2 inception trick + bottleneck",
     dict(main_branch="inception_trick_bottleneck", num_output_stage1=128), "5.98", "915.46"),
    ("ResNet 68 1by2 with 4k",
     dict(main_branch="inception_trick_bottleneck", num_output_stage1=128, fc_layers=True),
     "19.55", "1029.69"),
    ("ResNet 34 inception trick",
     dict(main_branch="inception_trick", num_output_stage1=64, blocks=(2, 2, 2, 2)),
     "8.55", "1370.93"),
    ("ResNet 36 inception trick with 4k",
     dict(main_branch="inception_trick", num_output_stage1=64, blocks=(2, 2, 2, 2),
          fc_layers=True), "21.58", "1434.30"),
]


def truncated(value: float) -> str:
    return f"{math.floor(value * 100) / 100:.2f}"


@pytest.mark.parametrize("label,knobs,params,flops", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_published_table_reproduces(label, knobs, params, flops):
    t = resnet_imagenet(**knobs).report().totals
    assert truncated(t.legacy_params / 1e6) == params
    assert truncated(t.legacy_flops / 1e6) == flops


def test_resnet50_exact_figures():
    t = resnet_imagenet("bottleneck", 256).report().totals
    assert t.legacy_params == 25_556_032  # "Number of params: 25.556032 Million"
    assert t.legacy_flops == 3_858_026_368  # "Number of flops: 3858.026368 Million"
    assert t.params == 25_557_032  # torchvision.models.resnet50: sum(p.numel()) = 25,557,032
    # The original Caffe ResNet-50 (stride on the first 1x1) is 3.86 GMACs; torchvision's
    # (stride on the 3x3) is 4.09: the difference is only where the stride sits.
    assert t.macs == 3_857_973_248


@pytest.mark.parametrize("label,knobs,params,flops", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_every_shape_and_blob_equals_caffe(caffe, image_lmdb, tmp_path, label, knobs, params,
                                           flops):
    net = resnet_imagenet(**knobs, data=data(image_lmdb))
    files = prototxt_files(net)
    deploy = caffe_net(caffe, files["deploy.prototxt"], "test", tmp_path, "deploy.prototxt")
    assert_report_matches_caffe(net.report("deploy"), deploy)
    # Caffe's own count, the original way, equals the published numbers too
    caffe_params, caffe_flops = legacy_counts_from_caffe(deploy)
    assert (caffe_params, caffe_flops) == (net.report().totals.legacy_params,
                                           net.report().totals.legacy_flops)
    assert truncated(caffe_params / 1e6) == params and truncated(caffe_flops / 1e6) == flops
    if label in ("ResNet 50", "ResNet 34 inception trick"):
        test = caffe_net(caffe, files["test.prototxt"], "test", tmp_path, "test.prototxt")
        assert_report_matches_caffe(net.report("test"), test)
        del test  # closes its database before the next net opens it
        for phase in ("train", "test"):
            tv = caffe_net(caffe, files["train.prototxt"], phase, tmp_path, "train.prototxt")
            assert_report_matches_caffe(net.report(phase), tv)
            del tv


def test_train_and_test_differ_as_caffe_users_expect(caffe, image_lmdb, tmp_path):
    net = resnet_imagenet("bottleneck", 64, (1, 1, 1, 1), data=data(image_lmdb, crop=64))
    files = prototxt_files(net)
    train = caffe_net(caffe, files["train.prototxt"], "train", tmp_path, "train.prototxt")
    test = caffe_net(caffe, files["train.prototxt"], "test", tmp_path, "train.prototxt")
    assert "accuracy_top1" not in train.blobs and "accuracy_top5" in test.blobs
    assert {"loss", "label"} <= set(train.blobs)
    del test
    test_only = caffe_net(caffe, files["test.prototxt"], "test", tmp_path, "test.prototxt")
    deploy = caffe_net(caffe, files["deploy.prototxt"], "test", tmp_path, "deploy.prototxt")
    assert "loss" not in deploy.blobs and "prob" in deploy.blobs and "label" not in deploy.blobs
    assert 'use_global_stats: true' in files["test.prototxt"]
    assert 'use_global_stats' not in files["train.prototxt"]  # Caffe picks per phase
    assert files["train.prototxt"].count("mirror: true") == 1
    # real data flows: the LMDB's labels arrive, loss and accuracies are computed
    out = train.forward()
    assert set(train.blobs["label"].data) <= {0, 1, 2, 3}
    assert np.isfinite(out["loss"])
    train.backward()
    assert np.abs(train.params["conv1"][0].diff).sum() > 0
    out = test_only.forward()
    assert 0.0 <= out["accuracy_top1"] <= out["accuracy_top5"] <= 1.0
    # BatchNorm statistics are frozen parameters, never learnt
    assert files["train.prototxt"].count("lr_mult: 0") == 3 * files["train.prototxt"].count(
        'type: "BatchNorm"')


def test_layer_names_show_where_a_layer_sits():
    names = [layer.name for layer in resnet_imagenet("bottleneck", 256).to_proto("deploy").layer]
    for expected in ("conv1", "conv1_bn", "conv1_scale", "conv1_relu", "pool1",
                     "stage1_block1_branch1", "stage1_block1_branch2a", "stage1_block1_branch2c_bn",
                     "stage2_block1_branch1", "stage4_block3_add", "stage4_block3_relu", "pool5",
                     "fc_classifier", "prob"):
        assert expected in names
    assert "stage1_block2_branch1" not in names  # identity shortcut inside a stage
    assert len(names) == len(set(names))


def test_inception_trick_strides_width_then_height():
    proto = resnet_imagenet("inception_trick", 64, (2, 2, 2, 2)).to_proto("deploy")
    layers = {layer.name: layer.convolution_param for layer in proto.layer}
    a, b = layers["stage2_block1_branch2a_1x3"], layers["stage2_block1_branch2a_3x1"]
    assert (a.kernel_h, a.kernel_w, a.stride_h, a.stride_w) == (1, 3, 1, 2)
    assert (b.kernel_h, b.kernel_w, b.stride_h, b.stride_w) == (3, 1, 2, 1)


def test_fc_head_has_no_relu_on_logits():
    proto = resnet_imagenet("bottleneck", 128, fc_layers=True).to_proto("deploy")
    on_logits = [layer for layer in proto.layer if "fc_classifier" in layer.bottom]
    assert {layer.type for layer in on_logits} == {"BatchNorm", "Scale", "Softmax"}


def test_mirroring_can_be_turned_off(tmp_path):
    """`--no-mirror`: the TRAIN data layer no longer mirrors; TEST never did."""
    from pynetbuilder.graph import Phase

    def train_mirror(**kw):
        data = ClassificationData("a", "b", crop_size=224, **kw)
        net = resnet_imagenet("normal", 64, (1, 1, 1, 1), data=data)
        (layer,) = [e for e in net.layers_in(Phase.TRAIN) if e.type == "Data"]
        return layer.for_phase(Phase.TRAIN).transform_param.mirror

    assert train_mirror() is True and train_mirror(mirror=False) is False
    done = subprocess.run(
        [sys.executable, str(ROOT / "apps" / "imagenet" / "build_resnet.py"), "-m", "normal",
         "--no-mirror", "-o", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mirror" not in (tmp_path / "train.prototxt").read_text()
