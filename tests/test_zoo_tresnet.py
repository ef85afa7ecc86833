"""The TResNet family: Caffe builds and trains it, its size equals timm's, its
space-to-depth and blur layers compute timm's tensors, bad knobs are named."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import ROOT, check_in_caffe, small_data

from pynetbuilder import Net, models
from pynetbuilder.errors import UsageError
from pynetbuilder.legos import Input
from pynetbuilder.legos.tresnet import BlurPool, SpaceToDepth
from pynetbuilder.schema import to_text

# Reference sizes from timm 1.0.31 (torch 2.14.1, CPU), timm/models/tresnet.py:
# model = timm.create_model(name, pretrained=False) for name in tresnet_m, tresnet_l,
# tresnet_xl; params = sum(p.numel() for p in model.parameters()) (the blur filters
# are buffers, BN statistics are buffers); MACs = forward hooks on every nn.Conv2d
# (out.numel() / batch * in/groups * kh * kw) and nn.Linear (in * out) during one
# forward of a 1 x 3 x 224 x 224 input.  timm's BlurPool2d calls F.conv2d on a
# buffer, so no hook sees it; ours is two average poolings, which count no MACs
# either (it would be C x H/2 x W/2 x 9 per blur: 1,580,544 in M, 1,876,896 in L,
# 2,049,768 in XL).  No deliberate delta: both figures are equal.
TIMM = {
    "TResNet-M": (31_389_032, 5_734_965_248),
    "TResNet-L": (55_989_256, 10_875_689_984),
    "TResNet-XL": (78_436_244, 15_165_013_664),
}
REFERENCES = models.FAMILIES["tresnet"].references


@pytest.mark.parametrize("label", sorted(TIMM))
def test_params_and_macs_equal_timm(label):
    totals = models.build("tresnet", **REFERENCES[label]).report().totals
    assert (totals.params, totals.macs) == TIMM[label]


@pytest.mark.parametrize("label", sorted(TIMM))
def test_builds_and_trains_in_caffe(caffe, image_lmdb, tmp_path, label):
    # 224 x 224, batch 2: M takes about 5 s, L 7 s, XL 10 s on 2 CPU cores.
    net = models.build("tresnet", data=small_data(image_lmdb, "imagenet"), **REFERENCES[label])
    check_in_caffe(caffe, net, tmp_path)


def test_layer_names_show_the_structure():
    names = [r.name for r in models.build("tresnet").report().rows]
    for expected in ("s2d", "conv1_relu", "stage1_block1_se_gate", "stage2_block1_down_pool",
                     "stage2_block1_conv1_blur", "stage3_block1_conv2_blur",
                     "stage4_block3_conv3_scale", "fc", "prob"):
        assert expected in names, expected
    assert not any(n.startswith("stage4") and "_se_" in n for n in names)  # no SE in stage 4


# ------------------------------------------------------------ exactness in real Caffe


def timm_space_to_depth(x: np.ndarray, b: int = 4) -> np.ndarray:
    """timm's SpaceToDepth: view (N, C, H/b, b, W/b, b), permute (0, 3, 5, 1, 2, 4), view."""
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


def timm_blur(x: np.ndarray) -> np.ndarray:
    """timm's BlurPool2d(filt_size=3, stride=2): reflect pad 1, depthwise [1,2,1]x[1,2,1]/16."""
    p = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    taps = np.array([1.0, 2.0, 1.0]) / 4
    h_out, w_out = (x.shape[2] - 1) // 2 + 1, (x.shape[3] - 1) // 2 + 1
    out = np.zeros((*x.shape[:2], h_out, w_out))
    for a in range(3):
        for b in range(3):
            out += taps[a] * taps[b] * p[:, :, a : a + 2 * h_out : 2, b : b + 2 * w_out : 2]
    return out


def run_in_caffe(caffe, tmp_path, lego, x: np.ndarray) -> np.ndarray:
    net = Net("exact")
    Input("data", [x.shape])(net)
    (top,) = lego.attach(net, ["data"])
    path = tmp_path / "exact.prototxt"
    path.write_text(to_text(net.to_proto("deploy")))
    cnet = caffe.Net(str(path), caffe.TEST)
    cnet.blobs["data"].data[...] = x
    out = cnet.forward()[top].copy()
    assert out.shape == net.blob_shape(top)
    return out


@pytest.mark.parametrize("shape", [(2, 3, 8, 12), (1, 5, 4, 4), (2, 3, 224, 224)])
def test_space_to_depth_is_timms_bit_for_bit(caffe, tmp_path, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = run_in_caffe(caffe, tmp_path, SpaceToDepth("s2d"), x)
    np.testing.assert_array_equal(got, timm_space_to_depth(x))


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 2, 7, 5), (1, 4, 2, 3), (1, 2, 3, 2),
                                   (2, 8, 56, 56), (1, 3, 25, 13)])
def test_blur_is_timms_reflect_padded_binomial(caffe, tmp_path, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    got = run_in_caffe(caffe, tmp_path, BlurPool("blur"), x)
    np.testing.assert_allclose(got, timm_blur(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ bad knobs


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"depth": 50}, "tresnet has no knob 'depth'; its knobs: variant, num_classes"),
        ({"variant": "S"}, "knob variant accepts one of M, L, XL, got 'S'"),
        ({"variant": 1}, "knob variant accepts one of M, L, XL, got 1"),
        ({"num_classes": 2.5}, "knob num_classes accepts an integer, got 2.5"),
        ({"num_classes": 0}, "knob num_classes accepts a positive integer, got 0"),
    ],
)
def test_bad_knobs_are_named(knobs, message):
    with pytest.raises(UsageError, match=message):
        models.build("tresnet", **knobs)


def test_input_size_must_suit_space_to_depth(image_lmdb):
    from pynetbuilder.legos import ClassificationData

    data = ClassificationData(str(image_lmdb[0]), str(image_lmdb[1]), crop_size=226)
    with pytest.raises(UsageError, match="s2d: space-to-depth needs .* divisible by 4, "
                                         "got 226 x 226"):
        models.build("tresnet", data=data)


def test_cli_bad_knob_exit_2_one_line_nothing_written(tmp_path):
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "pynetbuilder"), "build", "tresnet",
                           "--variant", "S", "-o", "out"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "knob variant accepts one of M, L, XL, got 'S'" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_app_script_builds_tresnet_l(tmp_path):
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "python"),
                           str(ROOT / "apps" / "imagenet" / "build_tresnet.py"),
                           "--variant", "L", "-o", "out"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Learnable params: 55,989,256" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "deploy.prototxt", "test.prototxt", "train.prototxt"]
