"""The CIFAR residual families: resnet, resnet_preact, se_resnet_preact, wrn, resnext.

Reference numbers come from hysts/pytorch_image_classification, the PyTorch code
these families follow: pytorch_image_classification/models/cifar/resnet.py,
resnet_preact.py, wrn.py (commit 974ca5c7), se_resnet_preact.py (9dc7c903) and
resnext.py (eb187cf2), run outside this project with torch 2.14.1 (CPU).  Each
``Network(config)`` was built from a stub config (dataset: 3 channels, 32x32, 10
classes; ``config.model.<arch>`` = the knobs of the row; init_mode
kaiming_fan_out), then

- params = ``sum(p.numel() for p in model.parameters())`` (BatchNorm2d's weight and
  bias are our Scale's two blobs; its running statistics are buffers, not
  parameters, as our BatchNorm's are not learnable);
- MACs = forward hooks on one 1x3x32x32 image, summing ``out.numel() *
  in_channels / groups * kh * kw`` per Conv2d and ``in_features * out_features``
  per Linear (our convention).

No deliberate difference: every family's Caffe net has exactly the reference's
parameters.  (A separate one-off check loaded the same random weights into both and
got the same logits to 2e-6 for each small configuration below.)
"""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import ROOT, check_in_caffe, small_data

from pynetbuilder import models
from pynetbuilder.errors import UsageError

OURS = ("resnet", "resnet_preact", "se_resnet_preact", "wrn", "resnext")

# (family, reference label) -> (learnable params, MACs) of the reference code with
# these knobs (the reference's configs/cifar/*.yaml and README commands):
REFERENCE = {
    # resnet: depth 110, basic, initial_channels 16
    ("resnet", "ResNet-110"): (1_730_714, 253_149_824),
    # resnet: depth 164, bottleneck, initial_channels 16 (stage widths 16/128/256)
    ("resnet", "ResNet-164 (bottleneck)"): (1_620_058, 169_036_288),
    # resnet_preact: depth 110, basic, remove_first_relu/add_last_bn False, preact_stage T T T
    ("resnet_preact", "ResNet-preact-110"): (1_730_522, 253_149_824),
    # resnet_preact: depth 164, bottleneck, the same switches
    ("resnet_preact", "ResNet-preact-164 (bottleneck)"): (1_619_290, 169_036_288),
    # se_resnet_preact: configs/cifar/se_resnet_preact.yaml: depth 110, basic,
    # se_reduction 16, remove_first_relu True, add_last_bn True, preact_stage T F F
    ("se_resnet_preact", "SE-ResNet-preact-110"): (1_748_792, 253_161_920),
    # wrn: depth 28, initial_channels 16, widening_factor 10 (drop_rate 0.0 / 0.3)
    ("wrn", "WRN-28-10"): (36_479_194, 5_243_328_768),
    ("wrn", "WRN-28-10 (dropout 0.3)"): (36_479_194, 5_243_328_768),
    # resnext: depth 29, initial_channels 64, cardinality 8 / 4, base_channels 64
    ("resnext", "ResNeXt-29 8x64d"): (34_426_698, 5_387_266_048),
    ("resnext", "ResNeXt-29 4x64d"): (17_562_442, 2_736_465_920),
}

# Small configurations (the reference code, counted the same way) that real Caffe
# builds and trains one step in a fraction of a second each.
PRE = {"remove_first_relu": False, "add_last_bn": False, "preact_stage": (True, True, True)}
SE = {"remove_first_relu": True, "add_last_bn": True, "preact_stage": (True, False, False)}
SMALL = [
    ("resnet", {"depth": 20}, 272_474, 40_813_184),
    ("resnet", {"depth": 11, "block_type": "bottleneck"}, 115_354, 12_782_080),
    ("resnet_preact", {"depth": 20, **PRE}, 272_282, 40_813_184),
    ("resnet_preact", {"depth": 11, "block_type": "bottleneck", **SE}, 115_386, 12_782_080),
    ("se_resnet_preact", {"depth": 20, "se_reduction": 16, **SE}, 275_327, 40_815_200),
    ("se_resnet_preact", {"depth": 11, "block_type": "bottleneck", "se_reduction": 4, **PRE},
     156_174, 12_823_168),
    ("wrn", {"depth": 10, "widening_factor": 2, "drop_rate": 0.3}, 303_706, 44_483_840),
    ("resnext", {"depth": 11, "initial_channels": 16, "cardinality": 4, "base_channels": 4},
     91_354, 15_059_456),
]

# Named configurations real Caffe also runs (about 1-4 s each on 2 cores).  Left out
# for time: ResNeXt-29 8x64d (~8 s; 4x64d is the same net with 4 groups) and
# WRN-28-10 (the dropout variant is the same net plus Dropout layers).
NOT_IN_CAFFE = {("resnext", "ResNeXt-29 8x64d"), ("wrn", "WRN-28-10")}


def test_every_named_configuration_has_a_reference_count():
    registered = {(f, label) for f in OURS for label in models.FAMILIES[f].references}
    assert registered == set(REFERENCE)


@pytest.mark.parametrize("family, label", sorted(REFERENCE))
def test_named_configuration_matches_the_reference_code(family, label):
    totals = models.build(family, **models.FAMILIES[family].references[label]).report().totals
    assert (totals.params, totals.macs) == REFERENCE[family, label]


@pytest.mark.parametrize("family, label", sorted(set(REFERENCE) - NOT_IN_CAFFE))
def test_named_configuration_in_caffe(caffe, cifar_lmdb, tmp_path, family, label):
    knobs = models.FAMILIES[family].references[label]
    check_in_caffe(caffe, models.build(family, data=small_data(cifar_lmdb, "cifar"), **knobs),
                   tmp_path)


@pytest.mark.parametrize("family, knobs, params, macs", SMALL,
                         ids=[f"{f}-{k['depth']}-{k.get('block_type', '')}" for f, k, *_ in SMALL])
def test_small_configuration_matches_reference_and_caffe(caffe, cifar_lmdb, tmp_path, family,
                                                         knobs, params, macs):
    net = models.build(family, data=small_data(cifar_lmdb, "cifar"), **knobs)
    totals = net.report().totals
    assert (totals.params, totals.macs) == (params, macs)
    check_in_caffe(caffe, net, tmp_path)


def test_defaults_are_the_headline_configurations():
    for family, label in [("resnet", "ResNet-110"), ("resnet_preact", "ResNet-preact-110"),
                          ("se_resnet_preact", "SE-ResNet-preact-110"), ("wrn", "WRN-28-10"),
                          ("resnext", "ResNeXt-29 8x64d")]:
        assert models.build(family).report().totals.params == REFERENCE[family, label][0]


def _entries(net):
    return {e.name: e for e in net.entries}


def test_preact_switches_wire_the_shortcut_as_the_reference():
    """SE-ResNet-preact-20 (preact_stage T F F, remove_first_relu, add_last_bn)."""
    layers = _entries(models.build("se_resnet_preact", depth=20))
    # stage 1, block 1: BN-ReLU in place on the stem's output, shared with the shortcut
    bn = layers["stage1_block1_branch2a_bn"]
    assert bn.bottoms == bn.tops == ("conv1",)
    assert "stage1_block1_branch2a_relu" in layers
    assert layers["stage1_block1_add"].bottoms[0] == "conv1"
    # stage 2, block 1: only the branch is pre-activated, without ReLU; the projection
    # shortcut (1x1, stride 2, no BN) reads the raw input
    bn = layers["stage2_block1_branch2a_bn"]
    assert bn.bottoms == ("stage1_block3_add",) and bn.tops == ("stage2_block1_branch2a_bn",)
    assert "stage2_block1_branch2a_relu" not in layers
    assert layers["stage2_block1_branch1"].bottoms == ("stage1_block3_add",)
    assert "stage2_block1_branch1_bn" not in layers
    # last BN, then squeeze-excitation, then the sum (no ReLU after it)
    assert layers["stage2_block1_se_pool"].bottoms == ("stage2_block1_branch2b",)
    assert layers["stage2_block1_add"].bottoms == ("stage2_block1_branch1",
                                                   "stage2_block1_se_scale")
    assert "stage2_block1_relu" not in layers and "final_relu" in layers


def test_wrn_dropout_sits_between_the_convolutions():
    layers = _entries(models.build("wrn", depth=10, drop_rate=0.3))
    drop = layers["stage1_block1_branch2a_drop"]
    assert drop.bottoms == drop.tops == ("stage1_block1_branch2a",)
    assert drop.proto.dropout_param.dropout_ratio == pytest.approx(0.3)
    assert not any(e.type == "Dropout" for e in models.build("wrn", depth=10).entries)


def test_resnext_groups_the_3x3_and_strides_it():
    layers = _entries(models.build("resnext", depth=11, cardinality=4, base_channels=8))
    conv = layers["stage2_block1_branch2b"].proto.convolution_param
    assert (conv.group, conv.num_output, list(conv.stride)) == (4, 64, [2])
    assert list(layers["stage2_block1_branch2a"].proto.convolution_param.stride) == [1]


@pytest.mark.parametrize(
    "family, knobs, message",
    [
        ("resnet", {"width": 16}, "resnet has no knob 'width'; its knobs: depth, block_type"),
        ("resnet", {"depth": "110"}, "knob depth accepts an integer, got '110'"),
        ("resnet", {"depth": 21},
         "knob depth accepts 6n+2 for basic blocks: 8, 14, 20, ..., got 21"),
        ("resnet", {"depth": 2}, "knob depth accepts 6n+2"),
        ("resnet", {"depth": 32, "block_type": "bottleneck"},
         "knob depth accepts 9n+2 for bottleneck blocks: 11, 20, 29"),
        ("resnet", {"block_type": "wide"}, "knob block_type accepts one of basic, bottleneck"),
        ("resnet", {"initial_channels": 0}, "knob initial_channels accepts a positive integer"),
        ("resnet", {"depth": 164, "block_type": "bottleneck", "initial_channels": 6},
         "knob initial_channels accepts a multiple of 4 for bottleneck blocks"),
        ("resnet", {"num_classes": 0}, "knob num_classes accepts a positive integer, got 0"),
        ("resnet_preact", {"preact_stage": (True, False)},
         "knob preact_stage accepts 3 true/false values (one per stage)"),
        ("resnet_preact", {"preact_stage": (1, 0, 1)},
         "knob preact_stage accepts a list of true/false values"),
        ("resnet_preact", {"add_last_bn": "yes"}, "knob add_last_bn accepts true or false"),
        ("resnet_preact", {"se_reduction": 16}, "resnet_preact has no knob 'se_reduction'"),
        ("se_resnet_preact", {"se_reduction": 32},
         "knob se_reduction accepts an integer from 1 to initial_channels (16), got 32"),
        ("se_resnet_preact", {"se_reduction": 0}, "knob se_reduction accepts an integer from 1"),
        ("se_resnet_preact", {"se_reduction": 4.0}, "knob se_reduction accepts an integer"),
        ("wrn", {"depth": 29}, "knob depth accepts 6n+4: 10, 16, 22, ..., got 29"),
        ("wrn", {"widening_factor": 0}, "knob widening_factor accepts a positive integer"),
        ("wrn", {"drop_rate": 1.0}, "knob drop_rate accepts a number from 0 up to"),
        ("wrn", {"drop_rate": "0.3"}, "knob drop_rate accepts a number, got '0.3'"),
        ("resnext", {"depth": 30},
         "knob depth accepts 9n+2 for bottleneck blocks: 11, 20, 29, ..., got 30"),
        ("resnext", {"cardinality": 0}, "knob cardinality accepts a positive integer"),
        ("resnext", {"base_channels": -4}, "knob base_channels accepts a positive integer"),
        ("resnext", {"groups": 8}, "resnext has no knob 'groups'"),
    ],
)
def test_bad_knobs_are_named(family, knobs, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        models.build(family, **knobs)


def run(*args, cwd):
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(
    "command, message",
    [
        ([ROOT / ".venv/bin/pynetbuilder", "build", "wrn", "--depth", "27"],
         "wrn: knob depth accepts 6n+4"),
        ([ROOT / ".venv/bin/python", ROOT / "apps/cifar/build_se_resnet_preact.py",
          "--preact_stage", "true", "maybe", "false"],
         "se_resnet_preact: knob preact_stage accepts a list of true/false values"),
    ],
)
def test_bad_knob_on_the_command_line(tmp_path, command, message):
    done = run(*command, "-o", "out", cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_app_script_writes_the_reference_net(tmp_path):
    done = run(ROOT / ".venv/bin/python", ROOT / "apps/cifar/build_se_resnet_preact.py",
               "--depth", "110", "--preact_stage", "true", "false", "false", "-o", "out",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Learnable params: 1,748,792" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "deploy.prototxt", "test.prototxt", "train.prototxt"]
