"""Deploy-target profiles and `pynetbuilder check`: the rules hold the limits the vendor
documents quote (each test cites the sentence), the command's verdicts, exit status
and bad input, and the zoo's table of verdicts (README.md, Deploy targets)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, run_command

from pynetbuilder.inspect import load
from pynetbuilder.targets import check, known_targets, load_profile

TARGETS = ("ascend", "bvlc", "mnn", "nnie", "opencv", "rknn2", "tpu-mlir")
HEADER = 'name: "t"\nlayer { name: "data" type: "Input" top: "data" ' \
         'input_param { shape { dim: 1 dim: %d dim: %d dim: %d } } }\n'


def violations(tmp_path, body: str, target: str, channels: int = 3, size: int = 64):
    path = tmp_path / "net.prototxt"
    path.write_text(HEADER % (channels, size, size) + body)
    inspected = load(str(path))
    return check(inspected.net, inspected.report.blob_shapes, load_profile(target))


def conv(kernel: int = 3, stride: int = 1, pad: int = 0, kind: str = "Convolution",
         extra: str = "") -> str:
    return (f'layer {{ name: "c" type: "{kind}" bottom: "data" top: "c" convolution_param {{ '
            f"num_output: 8 kernel_size: {kernel} stride: {stride} pad: {pad} {extra} }} }}\n")


def pool(kernel: int, stride: int, pad: int = 0, extra: str = "", bottom: str = "data") -> str:
    return (f'layer {{ name: "p" type: "Pooling" bottom: "{bottom}" top: "p" pooling_param {{ '
            f"pool: MAX kernel_size: {kernel} stride: {stride} pad: {pad} {extra} }} }}\n")


def rules(found) -> list[str]:
    return [v.rule for v in found]


def test_every_target_of_the_issue_ships_and_cites_its_sources():
    assert set(TARGETS) <= set(known_targets())
    for name in TARGETS:
        profile = load_profile(name)
        cited = {r.source for r in profile.format.values()} | {lim.source for lim in profile.limits}
        if profile.layers_source is not None:
            cited.add(profile.layers_source)
        assert cited and all(s.title and s.url for s in cited), name


# ------------------------------------------------------------ limits quoted from documents
# (rknn2's: measured in RKNN-Toolkit2 2.5.0 where it contradicts its 1.4.0 document)


def test_rknn2_drops_the_limits_the_toolkit_runs_beyond(tmp_path):
    # RKNN-Toolkit2 OP support 1.4.0 quotes Conv "kernel height/width: [1, 31] stride
    # height/width: [1, 7] pad left/right/top/bottom: [0, 15]", ConvolutionDepthwise
    # "kernel height/width: [1, 8]", Softmax "channel: [1, 8192] axis: 1"; RKNN-Toolkit2
    # 2.5.0 runs every value beyond them exactly on the NPU (tests/test_targets_rknn.py)
    assert violations(tmp_path, conv(32), "rknn2") == []
    assert violations(tmp_path, conv(3, stride=8), "rknn2") == []
    assert violations(tmp_path, conv(17, pad=16), "rknn2") == []
    assert violations(tmp_path, conv(9, kind="ConvolutionDepthwise"), "rknn2", channels=8) == []
    soft = 'layer { name: "s" type: "Softmax" bottom: "data" top: "s" softmax_param { axis: %d } }'
    assert violations(tmp_path, soft % 1, "rknn2", channels=8193, size=1) == []
    assert violations(tmp_path, soft % 2, "rknn2") == []


def test_rknn2_deconvolution_and_pooling_limits(tmp_path):
    # what RKNN-Toolkit2 2.5.0 shows (tests/test_targets_rknn.py): ConvTranspose on the
    # NPU for strides 1, 2, 4, 8 (3 and 5 partly on the CPU) and kernels up to 16 (17:
    # the compiler's register field overflows)
    for stride in (1, 2, 4, 8):
        assert violations(tmp_path, conv(4, stride=stride, kind="Deconvolution"), "rknn2") == []
    assert rules(violations(tmp_path, conv(4, stride=3, kind="Deconvolution"), "rknn2")) == [
        "stride (stride_h)"]
    assert violations(tmp_path, conv(16, stride=2, kind="Deconvolution"), "rknn2") == []
    assert rules(violations(tmp_path, conv(17, stride=2, kind="Deconvolution"), "rknn2")) == [
        "kernel size (kernel_h)"]
    # Pooling: pads up to 4 (zeros as padding beyond, for large MAX kernels), no stride
    # limit where floor and ceil agree, ceil-rounded sizes flagged
    assert violations(tmp_path, pool(9, 1, pad=4), "rknn2") == []
    assert rules(violations(tmp_path, pool(9, 1, pad=5), "rknn2")) == ["padding (pad_h)"]
    assert violations(tmp_path, pool(16, 16), "rknn2") == []  # 64: ceil and floor agree
    assert rules(violations(tmp_path, pool(9, 9), "rknn2")) == ["pooling rounding"]
    found = violations(tmp_path, pool(3, 2), "rknn2")  # 64 -> ceil 32, floor 31
    assert rules(found) == ["pooling rounding"]
    assert "32x32" in found[0].value and "31x31" in found[0].value
    assert violations(tmp_path, pool(2, 2), "rknn2", channels=8192, size=2) == []
    assert rules(violations(tmp_path, pool(2, 2), "rknn2", channels=8193, size=2)) == [
        "input channels (input_channels)"]
    # 2.5.0's caffe.proto has ceil_mode (and round_mode) and honours ceil_mode: false
    assert violations(tmp_path, pool(3, 2, extra="ceil_mode: false"), "rknn2") == []


def test_rknn2_wants_a_deconvolutions_stride_written_and_gets_it(tmp_path):
    # RKNN-Toolkit2 2.5.0 reads an unset Deconvolution stride as 0 and fails to build
    # (tests/test_targets_rknn.py); Caffe reads it as 1, which --target rknn2 writes
    from pynetbuilder.targets.writer import for_target

    deconv = ('layer { name: "d" type: "Deconvolution" bottom: "data" top: "d" '
              'convolution_param { num_output: 8 kernel_size: 4 %s } }\n')
    found = violations(tmp_path, deconv % "", "rknn2")
    assert [(v.layer, v.rule, v.value) for v in found] == [
        ("d", "stride not written", "unset (Caffe's default: 1)")]
    assert "--target rknn2 writes it" in found[0].fix
    assert violations(tmp_path, deconv % "stride_h: 1 stride_w: 1", "rknn2") == []
    unset_conv = deconv.replace("Deconvolution", "Convolution") % ""
    assert violations(tmp_path, unset_conv, "rknn2") == []  # a Convolution's is not needed
    for target in set(TARGETS) - {"rknn2"}:
        assert "stride not written" not in rules(violations(tmp_path, deconv % "", target))
    net = load(str(tmp_path / "net.prototxt")).net
    (written,) = [la for la in for_target(net, "rknn2").layer if la.name == "d"]
    assert list(written.convolution_param.stride) == [1]
    assert list(for_target(net, "opencv").layer[-1].convolution_param.stride) == []


def test_ascend_filter_limit_and_batchnorm_statistics(tmp_path):
    # CANN Convolution: "The value range of Filter_W and Filter_h is 1 to 255."
    assert violations(tmp_path, conv(255), "ascend", size=255) == []
    assert rules(violations(tmp_path, conv(256), "ascend", size=256)) == [
        "kernel size (kernel_h)"]
    # Caffe operator boundaries, BatchNorm: "use_global_stats: bool, must be true"
    bn = 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" %s }'
    assert violations(tmp_path, bn % "batch_norm_param { use_global_stats: true }",
                      "ascend") == []
    found = violations(tmp_path, bn % "", "ascend")
    assert [(v.rule, v.value) for v in found] == [("BatchNorm use_global_stats", "unset")]
    # ConvolutionDepthwise is rewritten as Convolution with group (the document's example)
    found = violations(tmp_path, conv(3, kind="ConvolutionDepthwise"), "ascend", channels=8)
    assert rules(found) == ["layer type not supported"] and "group" in found[0].fix


def test_nnie_takes_one_or_three_channel_images(tmp_path):
    # "支持输入图像为单通道（灰度图）和三通道（RGB 格式）"
    relu = 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }'
    assert violations(tmp_path, relu, "nnie", channels=1) == []
    assert violations(tmp_path, relu, "nnie", channels=3) == []
    assert rules(violations(tmp_path, relu, "nnie", channels=4)) == ["channels of input 'data'"]


def test_bvlc_master_has_no_ceil_mode_and_no_brocolli_layers(tmp_path):
    # BVLC master's PoolingParameter field 13 is round_mode; this build's is ceil_mode.
    found = violations(tmp_path, pool(3, 2, extra="ceil_mode: false"), "bvlc")
    assert [(v.rule, v.value) for v in found] == [
        ("field the target's parser does not know", "pooling_param.ceil_mode")]
    found = violations(tmp_path, 'layer { name: "r" type: "ReLU6" bottom: "data" top: "r" }',
                       "bvlc")
    assert [(v.rule, v.value) for v in found] == [("layer type not supported", "ReLU6")]


def test_deploy_only_targets_reject_data_and_loss_layers(tmp_path):
    path = tmp_path / "train.prototxt"
    path.write_text(
        'layer { name: "d" type: "Data" top: "data" top: "label" '
        'data_param { source: "nowhere" batch_size: 2 } }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        "inner_product_param { num_output: 4 } }\n"
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "l" }\n')
    inspected = load(str(path), input_shape=(3, 8, 8))
    found = check(inspected.net, inspected.report.blob_shapes, load_profile("opencv"))
    assert [(v.layer, v.value) for v in found] == [("d", "a data layer"),
                                                    ("loss", "a loss layer")]
    assert check(inspected.net, inspected.report.blob_shapes, load_profile("bvlc")) == []


# ------------------------------------------------------------ the command


def test_check_exit_status_and_json(capsys):
    code, out, err = run_command("check", "mobilenet", "--target", "opencv", capsys=capsys)
    assert code == 0 and out.startswith("opencv (") and ": ok" in out
    code, out, _ = run_command("check", "resnet_imagenet", "--target", "rknn2,bvlc", "--json",
                               capsys=capsys)
    assert code == 1
    doc = json.loads(out)
    rknn, bvlc = doc["targets"]
    assert bvlc["ok"] and not rknn["ok"]
    (v,) = rknn["violations"]
    assert v["layer"] == "pool1" and v["rule"] == "pooling rounding"
    assert "rknn-toolkit2" in v["source"] and "--target rknn2" in v["fix"]


def test_check_bad_input_is_one_line_exit_2(tmp_path, capsys):
    code, out, err = run_command("check", "mobilenet", "--target", "jetson", capsys=capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unknown target 'jetson'" in err
    assert all(t in err for t in TARGETS)
    bad = tmp_path / "mine.toml"
    bad.write_text('name = "mine"\ntitle = "x"\n[sources.a]\ntitle = "t"\nurl = \n')
    code, out, err = run_command("check", "mobilenet", "--target", str(bad), "--json",
                                 str(tmp_path / "v.json"), capsys=capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{bad}:5:" in err and "does not parse" in err
    assert not (tmp_path / "v.json").exists()


def test_a_profile_file_with_a_wrong_key_names_its_line(tmp_path, capsys):
    bad = tmp_path / "mine.toml"
    bad.write_text('name = "mine"\ntitle = "x"\n[sources.a]\ntitle = "t"\nurl = "u"\n'
                   '[format]\nround = {value = "floor", source = "a"}\n')
    code, _, err = run_command("check", "mobilenet", "--target", str(bad), capsys=capsys)
    assert code == 2 and f"{bad}:7:" in err and "unknown format rule 'round'" in err


def test_zoo_verdict_table_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "target_table.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, "run tools/target_table.py --write and review the diff"


@pytest.mark.parametrize("target", ["rknn2", "bvlc", "opencv"])
def test_build_for_a_target_writes_what_check_accepts(tmp_path, capsys, target):
    out = tmp_path / "out"
    code, printed, err = run_command("build", "squeezenet", "--target", target, "-o", str(out),
                                     capsys=capsys)
    assert code == 0, err
    code, printed, _ = run_command("check", str(out / "deploy.prototxt"), "--target", target,
                                   capsys=capsys)
    assert code == 0, printed  # rknn2: pool4 reads a zero extension (a stride-1 ConvTranspose)
    if target == "rknn2":
        assert "pool4/extend" in (out / "deploy.prototxt").read_text()
