"""Weights both ways (proof of issue 13, part 2).

- torchvision's / timm's models with random weights (no downloads): their state
  dict into our module gives their logits; ours back gives their tensors.
- ``pynetbuilder convert``: a torchvision ``.pth`` to a ``.caffemodel`` that real
  Caffe loads and runs to torchvision's logits; between .pth and .safetensors.
- Bad input: another net's weights, a state dict with missing or extra keys: one
  line, exit 2, nothing written.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from conftest import ROOT, run_command

from pynetbuilder.pytorch import to_module, zoo_weights
from pynetbuilder.pytorch.adapter import analysed
from pynetbuilder.pytorch.caffe_oracle import caffe_ready, run_caffe

RESNET = "resnet_imagenet:stride_in_3x3=true:pool1_pad=1"
TORCHVISION = [
    ("resnet18", f"{RESNET}:main_branch=normal:num_output_stage1=64:blocks=2,2,2,2",
     "fc_classifier"),
    ("resnet34", f"{RESNET}:main_branch=normal:num_output_stage1=64:blocks=3,4,6,3",
     "fc_classifier"),
    ("resnet50", f"{RESNET}:main_branch=bottleneck:num_output_stage1=256", "fc_classifier"),
    ("resnet101", f"{RESNET}:main_branch=bottleneck:num_output_stage1=256:blocks=3,4,23,3",
     "fc_classifier"),
    ("resnet152", f"{RESNET}:main_branch=bottleneck:num_output_stage1=256:blocks=3,8,36,3",
     "fc_classifier"),
    ("vgg16", "vgg16", "fc8"),
    ("vgg19", "vgg19", "fc8"),
    ("alexnet", "alexnet", "fc8"),
    ("squeezenet1_0", "squeezenet:version=1_0", "pool10"),
    ("squeezenet1_1", "squeezenet:version=1_1", "pool10"),
]


def randomized(model):
    """Random BatchNorm statistics and affine parameters too (torch's defaults are 0/1)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def assert_close(ours, theirs, tolerance=1e-4):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = np.abs(theirs).max()
    assert np.abs(ours.reshape(theirs.shape) - theirs).max() <= tolerance * scale


@pytest.mark.parametrize("name, spec, logits", TORCHVISION)
def test_torchvision_round_trip(name, spec, logits):
    torch.manual_seed(1)
    theirs = randomized(getattr(torchvision.models, name)())
    state = theirs.state_dict()
    layout = zoo_weights.detect(state)
    ours = to_module(spec)
    zoo_weights.load_state_dict(ours, state, layout)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = theirs(x)
        got = ours.run({"data": x})[logits]
    assert_close(got, expected)
    back = zoo_weights.state_dict(ours, layout, state.keys())
    fresh = getattr(torchvision.models, name)()
    fresh.load_state_dict(back)  # strict: every key, no extra
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(back[key], value), key


def test_timm_mobilenet_v1_round_trip():
    """timm's mobilenetv1_100 has our parameters; its activation is ReLU6 where ours is
    ReLU, so with its ReLU6 swapped for ReLU the two compute one function."""
    import timm
    torch.manual_seed(2)
    theirs = randomized(timm.create_model("mobilenetv1_100", pretrained=False))
    for m in theirs.modules():
        if hasattr(m, "act") and isinstance(m.act, torch.nn.ReLU6):
            m.act = torch.nn.ReLU()
    ours = to_module("mobilenet:width_multiplier=1.0")
    state = theirs.state_dict()
    assert zoo_weights.detect(state) == "timm_mobilenetv1"
    zoo_weights.load_state_dict(ours, state, "timm_mobilenetv1")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_close(ours.run({"data": x})["fc"], theirs(x))
    back = zoo_weights.state_dict(ours, "timm_mobilenetv1")
    assert set(back) == set(state)


def caffe_logits(spec: str, weights, x: np.ndarray, blob: str) -> np.ndarray:
    a = analysed(spec)
    return run_caffe(caffe_ready(a.net, a.shapes, 0), "deploy", {"data": x},
                     weights=weights).blobs[blob]


def test_convert_torchvision_pth_to_caffemodel_that_caffe_runs(tmp_path, capsys):
    """torchvision's ResNet-50 (v1.5) -> .caffemodel -> real Caffe: torchvision's logits."""
    torch.manual_seed(3)
    theirs = randomized(torchvision.models.resnet50())
    torch.save(theirs.state_dict(), tmp_path / "r50.pth")
    spec = f"{RESNET}:main_branch=bottleneck:num_output_stage1=256"
    code, out, err = run_command("convert", spec, "--from", str(tmp_path / "r50.pth"),
                                 "-o", str(tmp_path / "r50.caffemodel"), capsys=capsys)
    assert code == 0, err
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    assert_close(caffe_logits(spec, tmp_path / "r50.caffemodel", x, "fc_classifier"), expected)
    # and back: the .caffemodel to torchvision's names, equal to what we started from
    code, out, err = run_command("convert", spec, "--from", str(tmp_path / "r50.caffemodel"),
                                 "-o", str(tmp_path / "back.safetensors"),
                                 "--layout", "torchvision_resnet", capsys=capsys)
    assert code == 0, err
    from safetensors.torch import load_file

    back = load_file(str(tmp_path / "back.safetensors"))
    fresh = torchvision.models.resnet50()
    fresh.load_state_dict(back)
    for key, value in theirs.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(back[key], value), key


def test_written_caffemodel_reloads_in_caffe_with_the_same_outputs(tmp_path, capsys):
    """Our own state dict (.pth) -> .caffemodel; `verify --weights` runs it in Caffe."""
    spec = "squeezenet:version=1_1"
    module = to_module(spec)
    torch.save(module.state_dict(), tmp_path / "sq.pth")
    code, out, err = run_command("convert", spec, "--from", str(tmp_path / "sq.pth"),
                                 "-o", str(tmp_path / "sq.caffemodel"), capsys=capsys)
    assert code == 0, err
    code, out, err = run_command("verify", spec, "--weights", str(tmp_path / "sq.caffemodel"),
                                 capsys=capsys)
    assert code == 0, err
    assert "blobs agree" in out
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ours = module.run({"data": torch.from_numpy(x)})["prob"].numpy()
    assert_close(caffe_logits(spec, tmp_path / "sq.caffemodel", x, "prob"), ours)


def test_caffemodel_of_another_net_is_refused(tmp_path, capsys):
    other = to_module("squeezenet:version=1_0")
    from pynetbuilder.pytorch import save_caffemodel

    save_caffemodel(other, tmp_path / "other.caffemodel")
    code, out, err = run_command("convert", "squeezenet:version=1_1", "--from",
                                 str(tmp_path / "other.caffemodel"), "-o",
                                 str(tmp_path / "x.pth"), capsys=capsys)
    assert code == 2
    assert err.count("\n") == 1 and "does not fit" in err
    assert "'conv1' blob 0: 96x3x7x7 in the file, 64x3x3x3 in the net" in err
    assert not (tmp_path / "x.pth").exists()
    code, out, err = run_command("verify", "squeezenet:version=1_1", "--weights",
                                 str(tmp_path / "other.caffemodel"), capsys=capsys)
    assert code == 2 and "'conv1' blob 0" in err and err.count("\n") == 1


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("fc.bias"), "missing key 'fc.bias'"),
    (lambda s: s.update(extra=torch.zeros(1)), "extra keys 'extra'"),
    (lambda s: s.update({"fc.weight": torch.zeros(3, 3)}), "'fc.weight' is (3, 3)"),
])
def test_state_dict_with_missing_or_extra_keys_is_one_line(tmp_path, capsys, change, message):
    state = torchvision.models.resnet18().state_dict()
    change(state)
    torch.save(state, tmp_path / "bad.pth")
    code, out, err = run_command(
        "convert", f"{RESNET}:main_branch=normal:num_output_stage1=64:blocks=2,2,2,2",
        "--from", str(tmp_path / "bad.pth"), "-o", str(tmp_path / "out.caffemodel"),
        capsys=capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.caffemodel").exists()


def test_bad_suffix_and_missing_file(tmp_path, capsys):
    code, _, err = run_command("convert", "alexnet", "--from", str(tmp_path / "w.bin"),
                               "-o", str(tmp_path / "o.pth"), capsys=capsys)
    assert code == 2 and "suffix" in err
    code, _, err = run_command("convert", "alexnet", "--from", str(tmp_path / "w.pth"),
                               "-o", str(tmp_path / "o.pth"), capsys=capsys)
    assert code == 2 and "no such file" in err


def test_a_layer_type_without_emitter_is_named(tmp_path, capsys):
    (tmp_path / "n.prototxt").write_text(
        "layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 1 dim: 2 "
        "dim: 4 dim: 4 } } }\n"
        "layer { name: 'act' type: 'Swish' bottom: 'x' top: 'y' }\n")  # BVLC master's
    code, _, err = run_command("verify", str(tmp_path / "n.prototxt"), capsys=capsys)
    assert code == 2 and err.count("\n") == 1
    assert "layer 'act' of type 'Swish' has no PyTorch emitter" in err


def test_pynetbuilder_verify_exit_status_1_names_the_blob(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pynetbuilder", "verify", "alexnet",
                           "--tolerance", "1e-12", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 1
    assert "differs" in done.stderr and done.stderr.count("\n") == 1
    import json

    data = json.loads(done.stdout)
    assert data["ok"] is False and data["blobs"][1]["blob"] == "conv1"


def test_importing_pynetbuilder_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", (
        "import sys, pynetbuilder, pynetbuilder.commands, pynetbuilder.models, "
        "pynetbuilder.inspect; sys.exit('torch' in sys.modules)")], cwd=ROOT, timeout=120)
    assert done.returncode == 0


@pytest.mark.parametrize("variant", ["M"])
def test_timm_tresnet_round_trip(variant):
    """timm's TResNet: space-to-depth, anti-aliased downsampling, SE and inplace-ABN
    (leaky ReLU) as our Caffe layers compute them; its weights give its logits."""
    import timm

    torch.manual_seed(4)
    theirs = randomized(timm.create_model(f"tresnet_{variant.lower()}", pretrained=False))
    state = theirs.state_dict()
    assert zoo_weights.detect(state) == "timm_tresnet"
    ours = to_module(f"tresnet:variant={variant}")
    zoo_weights.load_state_dict(ours, state, "timm_tresnet")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_close(ours.run({"data": x})["fc"], theirs(x))
    back = zoo_weights.state_dict(ours, "timm_tresnet")
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(back[key], value), key
