"""The ImageNet zoo families: vgg16, vgg19, alexnet, squeezenet, mobilenet.

Each named configuration is checked three ways: real Caffe builds and trains it
(blob and parameter shapes equal to our inference), its learnable parameters and
its multiply-accumulates equal an independent PyTorch implementation's, and bad
knobs are refused with one line naming the knob.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import ROOT, VENV_PY, check_in_caffe, small_data

from pynetbuilder import models
from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net
from pynetbuilder.legos import Input
from pynetbuilder.legos.fire import Fire
from pynetbuilder.legos.mobile import DepthwiseSeparable
from pynetbuilder.models.mobilenet import scaled

FAMILY_NAMES = ("vgg16", "vgg19", "alexnet", "squeezenet", "mobilenet")

# Reference counts: (learnable params, MACs) of the PyTorch model, computed in a
# scratch environment (torch 2.14.1, torchvision 0.29.1, timm 1.0.31; not a project
# dependency) as
#     params = sum(p.numel() for p in model.parameters())
#     MACs   = forward hooks on every nn.Conv2d (output elements x in_channels / groups
#              x kH x kW) and nn.Linear (in x out), one 1x3x224x224 image, eval mode,
# with the models
#     torchvision.models.vgg16(), vgg16_bn(), vgg19(), vgg19_bn(), alexnet(),
#     squeezenet1_0(), squeezenet1_1()  (default num_classes=1000);
#     timm.create_model("mobilenetv1_100") for MobileNet-1.0, and for the other
#     widths timm.models.efficientnet._gen_mobilenet_v1(name, channel_multiplier)
#     with 0.75 / 0.5 / 0.25 (the function timm's mobilenetv1_100 calls with 1.0).
# The parameter counts of vgg16/vgg19/vgg16_bn/alexnet/squeezenet1_0/1_1 are also
# torchvision's documented "num_params"; the MobileNet MACs are the paper's Table 6
# (569M, 325M, 149M, 41M Mult-Adds).
#
# The third number is our deliberate difference: torchvision's vgg*_bn keep the
# convolution bias in front of BatchNorm; ConvBNReLU drops it (Scale's shift does
# the same job), one parameter per convolution output channel:
#     VGG-16: 2x64 + 2x128 + 3x256 + 3x512 + 3x512 = 4,224
#     VGG-19: 2x64 + 2x128 + 4x256 + 4x512 + 4x512 = 5,504
REFERENCES = {
    ("vgg16", "VGG-16"): (138_357_544, 15_470_264_320, 0),
    ("vgg16", "VGG-16-BN"): (138_365_992, 15_470_264_320, -4_224),
    ("vgg19", "VGG-19"): (143_667_240, 19_632_062_464, 0),
    ("vgg19", "VGG-19-BN"): (143_678_248, 19_632_062_464, -5_504),
    ("alexnet", "AlexNet"): (61_100_840, 714_188_480, 0),
    ("squeezenet", "SqueezeNet-1.0"): (1_248_424, 818_924_576, 0),
    ("squeezenet", "SqueezeNet-1.1"): (1_235_496, 349_151_936, 0),
    ("mobilenet", "MobileNet-1.0"): (4_231_976, 568_740_352, 0),
    ("mobilenet", "MobileNet-0.75"): (2_585_560, 325_400_448, 0),
    ("mobilenet", "MobileNet-0.5"): (1_331_592, 149_497_088, 0),
    ("mobilenet", "MobileNet-0.25"): (470_072, 41_030_272, 0),
}


def reference_net(family: str, label: str, data=None) -> Net:
    return models.build(family, data=data, **models.FAMILIES[family].references[label])


def test_every_named_configuration_has_a_reference_count():
    named = {(f, label) for f in FAMILY_NAMES for label in models.FAMILIES[f].references}
    assert named == set(REFERENCES)
    assert set(FAMILY_NAMES) <= set(models.list())


@pytest.mark.parametrize("family, label", sorted(REFERENCES))
def test_params_and_macs_equal_the_pytorch_reference(family, label):
    params, macs, delta = REFERENCES[family, label]
    totals = reference_net(family, label).report().totals
    assert totals.params == params + delta
    assert totals.macs == macs


# Real Caffe, 224x224 crops, batch 2.  On 2 CPU cores: a VGG takes 10-20 s (three
# nets of ~140M randomly filled parameters, a forward and a backward pass), AlexNet
# ~4 s, the others ~1 s; so one VGG-16 (plain) and one VGG-19 (BatchNorm) only.
IN_CAFFE = [
    ("vgg16", "VGG-16"),
    ("vgg19", "VGG-19-BN"),
    ("alexnet", "AlexNet"),
    ("squeezenet", "SqueezeNet-1.0"),
    ("squeezenet", "SqueezeNet-1.1"),
    ("mobilenet", "MobileNet-1.0"),
    ("mobilenet", "MobileNet-0.25"),
]


@pytest.mark.parametrize("family, label", IN_CAFFE)
def test_builds_and_trains_in_caffe(caffe, image_lmdb, tmp_path, family, label):
    net = reference_net(family, label, data=small_data(image_lmdb, "imagenet"))
    check_in_caffe(caffe, net, tmp_path)


def test_layer_names_show_where_a_layer_sits():
    names = {
        family: [row.name for row in models.build(family).report().rows]
        for family in ("vgg16", "squeezenet", "mobilenet", "alexnet")
    }
    assert names["vgg16"][1:4] == ["stage1_conv1", "stage1_conv1_relu", "stage1_conv2"]
    assert names["vgg16"][-4:] == ["fc7_relu", "fc7_drop", "fc8", "prob"]
    assert "fire9_expand3x3_relu" in names["squeezenet"] and "pool8" in names["squeezenet"]
    assert "stage4_block6_pw_scale" in names["mobilenet"] and "stage5_block3_dw" not in (
        names["mobilenet"])
    assert "pool5_drop" in names["alexnet"] and not any("norm" in n for n in names["alexnet"])


def test_squeezenet_1_1_pools_after_fire3_and_fire5():
    shapes = models.build("squeezenet", version="1_1").report().blob_shapes
    assert shapes["conv1"] == (1, 64, 111, 111)
    assert shapes["pool3"] == (1, 128, 27, 27) and shapes["pool5"] == (1, 256, 13, 13)
    assert shapes["pool10"] == (1, 1000, 1, 1)


def test_mobilenet_width_rule_is_int_of_product_at_least_8():
    # The TF-slim rule; timm's make_divisible would give 16, 24, 40 at 0.3.
    assert [scaled(c, 0.3) for c in (32, 64, 128)] == [9, 19, 38]
    assert scaled(32, 0.1) == 8
    rows = {r.name: r for r in models.build("mobilenet", width_multiplier=0.3).report().rows}
    assert rows["conv1"].blobs[0].shape == (9, 3, 3, 3)
    assert rows["stage5_block2_pw"].blobs[0].shape == (307, 307, 1, 1)


def test_num_classes_sets_the_classifier_width():
    for family in FAMILY_NAMES:
        assert models.build(family, num_classes=7).report().blob_shapes["prob"][1] == 7


@pytest.mark.parametrize(
    "family, knobs, message",
    [
        ("vgg16", {"depth": 19}, "vgg16 has no knob 'depth'; its knobs: use_bn, num_classes"),
        ("vgg19", {"use_bn": "yes"}, "vgg19: knob use_bn accepts true or false, got 'yes'"),
        ("vgg16", {"num_classes": 0}, "vgg16: knob num_classes accepts a positive integer, got 0"),
        ("alexnet", {"lrn": True}, "alexnet has no knob 'lrn'; its knobs: num_classes"),
        ("alexnet", {"num_classes": 10.0}, "knob num_classes accepts an integer, got 10.0"),
        ("alexnet", {"num_classes": -3}, "knob num_classes accepts a positive integer, got -3"),
        ("squeezenet", {"version": "1_2"}, "knob version accepts one of 1_0, 1_1, got '1_2'"),
        ("squeezenet", {"version": 1.1}, "knob version accepts one of 1_0, 1_1, got 1.1"),
        ("squeezenet", {"num_classes": 0}, "knob num_classes accepts a positive integer, got 0"),
        ("mobilenet", {"alpha": 0.5}, "mobilenet has no knob 'alpha'; its knobs: width_multiplier"),
        ("mobilenet", {"width_multiplier": "wide"},
         "knob width_multiplier accepts a number, got 'wide'"),
        ("mobilenet", {"width_multiplier": 0}, "knob width_multiplier accepts a number in (0, 8]"),
        ("mobilenet", {"width_multiplier": -0.5}, "width_multiplier accepts a number in (0, 8]"),
        ("mobilenet", {"width_multiplier": float("nan")}, "width_multiplier accepts a number in"),
        ("mobilenet", {"width_multiplier": 9.0}, "width_multiplier accepts a number in (0, 8]"),
    ],
)
def test_bad_knobs_are_named(family, knobs, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        models.build(family, **knobs)


def test_legos_refuse_bad_arguments():
    with pytest.raises(UsageError, match="fire2: fire squeeze must be a positive integer"):
        Fire("fire2", 0, 64, 64)
    with pytest.raises(UsageError, match="block1: stride must be 1 or 2, got 3"):
        DepthwiseSeparable("block1", 64, stride=3)


def test_depthwise_separable_groups_by_its_input_channels():
    net = Net("dw")
    x = Input("data", [(1, 24, 16, 16)])(net)
    DepthwiseSeparable("b", 40, stride=2)(net, x)
    rows = {r.name: r for r in net.report().rows}
    assert rows["b_dw"].blobs[0].shape == (24, 1, 3, 3)
    assert rows["b_pw"].blobs[0].shape == (40, 24, 1, 1)
    assert net.report().blob_shapes["b_pw"] == (1, 40, 8, 8)


def run(*args, cwd):
    return subprocess.run([*args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["mobilenet", "--width_multiplier", "0"],
         "mobilenet: knob width_multiplier accepts a number in (0, 8], got 0.0"),
        (["squeezenet", "--version", "1.1"], "knob version accepts one of 1_0, 1_1, got '1.1'"),
        (["vgg19", "--num_classes", "0"], "knob num_classes accepts a positive integer, got 0"),
    ],
)
def test_cli_bad_knob_one_line_exit_2_nothing_written(tmp_path, args, message):
    done = run(str(ROOT / ".venv" / "bin" / "pynetbuilder"), "build", *args, "-o", "out",
               cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert list(tmp_path.iterdir()) == []


APPS = ROOT / "apps" / "imagenet"


@pytest.mark.parametrize(
    "script, args, line",
    [
        ("build_vgg.py", ["19"], "Learnable params: 143,667,240  MACs: 19,632,062,464"),
        ("build_vgg.py", ["--use_bn"], "Learnable params: 138,361,768  MACs: 15,470,264,320"),
        ("build_alexnet.py", [], "Learnable params: 61,100,840  MACs: 714,188,480"),
        ("build_squeezenet.py", ["--version", "1_1"],
         "Learnable params: 1,235,496  MACs: 349,151,936"),
        ("build_mobilenet.py", ["--width_multiplier", "0.5"],
         "Learnable params: 1,331,592  MACs: 149,497,088"),
    ],
)
def test_apps_build_the_family(tmp_path, script, args, line):
    done = run(str(VENV_PY), str(APPS / script), *args, "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert line in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "deploy.prototxt", "test.prototxt", "train.prototxt"]


def test_vgg_app_refuses_another_depth(tmp_path):
    done = run(str(VENV_PY), str(APPS / "build_vgg.py"), "18", "-o", "out", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "pynetbuilder: error: build_vgg.py: the depth word accepts 16 or 19, got '18'\n")
    assert list(tmp_path.iterdir()) == []
