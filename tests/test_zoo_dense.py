"""The CIFAR families vgg, densenet and pyramidnet: real Caffe, reference parameter counts,
knob errors, the command line and the thin apps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, check_in_caffe, small_data

from pynetbuilder import models
from pynetbuilder.errors import UsageError
from pynetbuilder.graph import Net
from pynetbuilder.legos import Input
from pynetbuilder.legos.pyramid import PyramidBlock
from pynetbuilder.models.pyramidnet import block_widths
from pynetbuilder.schema import to_text

VENV_BIN = ROOT / ".venv" / "bin"

# Reference counts: hysts/pytorch_image_classification, models/cifar/vgg.py (commit 738ea587),
# densenet.py and pyramidnet.py (commit eb187cf2), read with the read_file tool and run
# unchanged with torch 2.14.1 (+cu130, CPU): Network(config) with a stub config of
# dataset.n_channels=3, image_size=32, n_classes=10 and model.<name> holding the knobs
# named below (VGG: n_channels=[64, 128, 256, 512, 512], as configs/cifar/vgg.yaml), and
# a no-op create_initializer; the count is sum(p.numel() for p in model.parameters())
# (PyTorch BatchNorm's weight + bias = our Scale; its running statistics are buffers).
# Each entry: family, knobs (ours), reference count, our deliberate difference.
VGG_BN_BIASES = 2 * 64 + 2 * 128 + 3 * 256 + 3 * 512 + 3 * 512  # 4,224: see below
REFERENCES = {
    # use_bn=True: the reference's Conv2d keep bias=True before BatchNorm; ours have no
    # bias there (BN removes any constant; the Scale's shift takes its place): one bias
    # per convolution channel fewer, 4,224.
    "VGG-15 BN 64": ("vgg", {"n_channels": 64, "n_layers": (2, 2, 3, 3, 3), "use_bn": True},
                     14_728_266, -VGG_BN_BIASES),
    "VGG-15 no BN 64": ("vgg", {"use_bn": False}, 14_719_818, 0),
    # densenet: depth, block_type, growth_rate, compression_rate, drop_rate as named
    "DenseNet-100 k=12": ("densenet", {"depth": 100, "block_type": "basic",
                                       "growth_rate": 12, "compression_rate": 1.0},
                          7_083_538, 0),
    "DenseNet-BC-100 k=12": ("densenet", {"depth": 100, "block_type": "bottleneck",
                                          "growth_rate": 12, "compression_rate": 0.5},
                             769_162, 0),
    "DenseNet-16 k=12 dropout": ("densenet", {"depth": 16, "block_type": "basic",
                                              "compression_rate": 1.0, "drop_rate": 0.2},
                                 141_442, 0),
    "DenseNet-BC-22 k=12": ("densenet", {"depth": 22}, 71_686, 0),
    # pyramidnet: initial_channels=16 throughout
    "PyramidNet-110 alpha 84": ("pyramidnet", {"depth": 110, "alpha": 84,
                                               "block_type": "basic"}, 3_904_446, 0),
    "PyramidNet-110 alpha 270": ("pyramidnet", {"depth": 110, "alpha": 270,
                                                "block_type": "basic"}, 28_485_477, 0),
    "PyramidNet-164 bottleneck alpha 270": ("pyramidnet", {"depth": 164, "alpha": 270,
                                                           "block_type": "bottleneck"},
                                            27_216_021, 0),
    "PyramidNet-272 bottleneck alpha 200": ("pyramidnet", {"depth": 272, "alpha": 200,
                                                           "block_type": "bottleneck"},
                                            26_210_842, 0),
    "PyramidNet-20 alpha 24": ("pyramidnet", {"depth": 20, "alpha": 24,
                                              "block_type": "basic"}, 143_133, 0),
    "PyramidNet-29 bottleneck alpha 48": ("pyramidnet", {"depth": 29, "alpha": 48,
                                                         "block_type": "bottleneck"},
                                          309_276, 0),
}
# The smaller ones run in real Caffe (DenseNet-100 basic takes ~10 s there, the wide
# PyramidNets more; their shapes follow the same code paths as the smaller nets).
IN_CAFFE = ["VGG-15 BN 64", "DenseNet-BC-100 k=12", "DenseNet-16 k=12 dropout",
            "DenseNet-BC-22 k=12", "PyramidNet-110 alpha 84", "PyramidNet-20 alpha 24",
            "PyramidNet-29 bottleneck alpha 48"]


def test_every_named_reference_is_checked():
    for family in ("vgg", "densenet", "pyramidnet"):
        for label, knobs in models.FAMILIES[family].references.items():
            assert REFERENCES[label][:2] == (family, knobs), label


@pytest.mark.parametrize("label", REFERENCES)
def test_params_match_the_pytorch_reference(label):
    family, knobs, reference, delta = REFERENCES[label]
    assert models.build(family, **knobs).report().totals.params == reference + delta


@pytest.mark.parametrize("label", IN_CAFFE)
def test_builds_and_trains_in_caffe(caffe, cifar_lmdb, tmp_path, label):
    family, knobs, _, _ = REFERENCES[label]
    check_in_caffe(caffe, models.build(family, data=small_data(cifar_lmdb, "cifar"), **knobs),
                   tmp_path)


def test_vgg_without_bn_builds_in_caffe(caffe, cifar_lmdb, tmp_path):
    net = models.build("vgg", n_channels=8, n_layers=(1, 2, 1), use_bn=False,
                       data=small_data(cifar_lmdb, "cifar"))
    assert net.blob_shape("stage3_pool") == (1, 32, 4, 4)  # widths 8, 16, 32
    check_in_caffe(caffe, net, tmp_path)


# ------------------------------------------------------------------ structure


def layer_types(net: Net) -> set[str]:
    return {e.type for e in net.entries}


def test_vgg_widths_and_classifier():
    net = models.build("vgg")
    widths = [net.blob_shape(f"stage{s}_pool")[1] for s in range(1, 6)]
    assert widths == [64, 128, 256, 512, 512]
    assert net.blob_shape("stage5_pool") == (1, 512, 1, 1)
    assert [e.name for e in net.entries if e.type == "InnerProduct"] == ["fc"]
    assert "stage3_conv3_bn" in {e.name for e in net.entries}


def test_densenet_concat_grows_and_transitions_compress():
    net = models.build("densenet", depth=100, block_type="bottleneck")  # 16 layers per block
    assert net.blob_shape("conv1")[1] == 24  # 2k
    assert net.blob_shape("stage1_block1_concat")[1] == 36
    assert net.blob_shape("stage1_block16_concat") == (1, 24 + 16 * 12, 32, 32)
    assert net.blob_shape("stage1_transition_pool") == (1, 108, 16, 16)  # int(216 * 0.5)
    assert net.blob_shape("stage2_transition_pool") == (1, 150, 8, 8)  # int((108+192)/2)
    assert net.blob_shape("stage3_block16_concat") == (1, 342, 8, 8)
    assert net.blob_shape("stage1_block1_conv1")[1] == 48  # bottleneck 4k
    assert "Dropout" not in layer_types(net)
    dropped = models.build("densenet", depth=16, block_type="basic", drop_rate=0.2)
    drops = [e.name for e in dropped.entries if e.type == "Dropout"]
    assert len(drops) == 3 * 4 + 2  # every dense-layer and transition convolution


def test_pyramid_widths_round_like_the_reference():
    # numpy.round(16 + k * 84/36 accumulated): 18.33 -> 18, 20.67 -> 21, ... 100
    assert block_widths(16, 84, 36, 1)[:4] == [18, 21, 23, 25]
    assert block_widths(16, 84, 36, 1)[-1] == 100
    # alpha 3 over 6 blocks: 16.5, 17.0, 17.5, ... rounds half to even as numpy does
    assert block_widths(16, 3, 6, 1) == [16, 17, 18, 18, 18, 19]
    assert block_widths(16, 200, 90, 4)[-1] == 216 * 4


def test_pyramidnet_uses_only_slice_add_concat_for_padding():
    net = models.build("pyramidnet", depth=20, alpha=24, block_type="basic")
    assert layer_types(net) <= {"Data", "Input", "Convolution", "BatchNorm", "Scale", "ReLU",
                                "Pooling", "Eltwise", "Slice", "Concat", "InnerProduct",
                                "SoftmaxWithLoss", "Accuracy", "Softmax"}
    # widths round(16 + k * 24/9): 19, 21, 24 | 27, 29, 32 | 35, 37, 40
    assert net.blob_shape("stage2_block1_slice_head") == (1, 24, 16, 16)
    assert net.blob_shape("stage2_block1_slice_tail") == (1, 3, 16, 16)
    assert net.blob_shape("stage3_block3_concat") == (1, 40, 8, 8)


@pytest.mark.parametrize("branch, stride", [("basic", 2), ("bottleneck", 1), ("basic", 1)])
def test_zero_padded_shortcut_is_exact_in_caffe(caffe, tmp_path, branch, stride):
    """Caffe's output equals branch + zero-padded shortcut, bit for bit."""
    net = Net("block")
    x = Input("data", [(2, 5, 8, 8)])(net)
    width = 12 if branch == "bottleneck" else (7 if stride == 2 else 5)
    top = PyramidBlock("blk", branch, width, stride=stride)(net, x)
    path = tmp_path / "deploy.prototxt"
    path.write_text(to_text(net.to_proto("deploy")))
    cnet = caffe.Net(str(path), caffe.TEST)
    rng = np.random.default_rng(3)
    for name, blobs in cnet.params.items():
        for i, blob in enumerate(blobs):
            blob.data[...] = rng.uniform(0.5, 1.5, blob.data.shape)
            if name.endswith("_bn") and i == 2:
                blob.data[...] = 1.0  # BatchNorm's moving-average factor
    cnet.blobs["data"].data[...] = rng.standard_normal((2, 5, 8, 8))
    cnet.forward()
    last = "blk_conv3" if branch == "bottleneck" else "blk_conv2"
    expected = cnet.blobs[last].data.copy()  # branch output (BN + Scale in place)
    short = cnet.blobs["blk_shortcut_pool" if stride == 2 else "data"].data
    expected[:, :5] += short
    assert np.array_equal(cnet.blobs[top].data, expected)
    if stride == 2:
        x = cnet.blobs["data"].data
        pooled = x.reshape(2, 5, 4, 2, 4, 2).mean(axis=(3, 5))
        np.testing.assert_allclose(short, pooled, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ bad knobs


@pytest.mark.parametrize(
    "family, knobs, message",
    [
        ("vgg", {"depth": 16}, "vgg has no knob 'depth'; its knobs: n_channels, n_layers"),
        ("vgg", {"n_channels": 64.0}, "knob n_channels accepts an integer, got 64.0"),
        ("vgg", {"n_layers": "2 2 3"}, "knob n_layers accepts a list of integers"),
        ("vgg", {"use_bn": "yes"}, "knob use_bn accepts true or false"),
        ("vgg", {"n_channels": 0}, "knob n_channels accepts a positive integer"),
        ("vgg", {"n_layers": (2, 2, 3, 3, 3, 3)}, r"knob n_layers accepts 1 to 5 convolution"),
        ("vgg", {"n_layers": (2, 0, 3)}, "knob n_layers accepts positive convolution counts"),
        ("densenet", {"alpha": 3}, "densenet has no knob 'alpha'; its knobs: depth"),
        ("densenet", {"growth_rate": 12.5}, "knob growth_rate accepts an integer, got 12.5"),
        ("densenet", {"block_type": "dense"}, "knob block_type accepts one of basic, bottleneck"),
        ("densenet", {"depth": 101, "block_type": "basic"},
         r"knob depth accepts 3n\+4 for basic layers: 7, 10, 13, \.\.\., got 101"),
        ("densenet", {"depth": 43}, r"knob depth accepts 6n\+4 for bottleneck layers: 10, 16"),
        ("densenet", {"compression_rate": 0.0}, r"knob compression_rate accepts a number in "
                                                r"\(0, 1\], got 0.0"),
        ("densenet", {"compression_rate": 0.01, "depth": 10},
         "knob compression_rate accepts a rate leaving transitions at least one channel"),
        ("densenet", {"drop_rate": 1}, r"knob drop_rate accepts a number in \[0, 1\), got 1.0"),
        ("densenet", {"growth_rate": 0}, "knob growth_rate accepts a positive integer, got 0"),
        ("pyramidnet", {"growth_rate": 12}, "pyramidnet has no knob 'growth_rate'"),
        ("pyramidnet", {"alpha": 84.5}, "knob alpha accepts an integer, got 84.5"),
        ("pyramidnet", {"depth": 111, "block_type": "basic"},
         r"knob depth accepts 6n\+2 for basic blocks: 8, 14, 20, \.\.\., got 111"),
        ("pyramidnet", {"depth": 109}, r"knob depth accepts 9n\+2 for bottleneck blocks: 11, 20"),
        ("pyramidnet", {"alpha": -4}, "knob alpha accepts an integer >= 0"),
        ("pyramidnet", {"initial_channels": 0}, "knob initial_channels accepts a positive"),
        ("pyramidnet", {"num_classes": 0}, "knob num_classes accepts a positive integer"),
    ],
)
def test_bad_knobs_are_named(family, knobs, message):
    with pytest.raises(UsageError, match=message):
        models.build(family, **knobs)


def run(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["vgg", "--n_layers", "2", "two"], "vgg: knob n_layers accepts a list of integers"),
        (["densenet", "--depth", "41"], "densenet: knob depth accepts 6n+4 for bottleneck"),
        (["pyramidnet", "--alpha", "-1"], "pyramidnet: knob alpha accepts an integer >= 0"),
    ],
)
def test_bad_knob_on_the_command_line(tmp_path, args, message):
    done = run([str(VENV_BIN / "pynetbuilder"), "build", *args, "-o", "out"], tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_app_script_writes_the_three_files(tmp_path):
    done = run([sys.executable, str(ROOT / "apps" / "cifar" / "build_pyramidnet.py"),
                "--depth", "20", "--alpha", "24", "--block_type", "basic", "-o", "out"],
               tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Learnable params: 143,133" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "deploy.prototxt", "test.prototxt", "train.prototxt"]
