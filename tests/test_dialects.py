"""Prototxt of Caffe's forks read through their dialects: real-world files
(tests/data/dialects/README.md) with shapes against the authors' figures or hand
computations written here, fields no dialect knows, conflicting dialects.  (The
pinned Caffe registers none of these fork types, BN included, so the hand
computations are the oracle; where a fork's type computes what a BVLC type computes,
or the file can be cut before its fork layers, real Caffe judges the rest.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import run_command

from pynetbuilder.inspect import load

DATA = Path(__file__).parent / "data" / "dialects"


def shapes_of(inspected) -> dict[str, tuple[int, ...]]:
    return {r.name: r.shapes[0] for r in inspected.report.rows if r.shapes}


def test_segnet_basic_on_camvid():
    """SegNet-Basic at CamVid's 360x480 (the paper's and the tutorial's size): four
    2x2 poolings 360x480 -> 23x30 (45 / 2 rounds up), four unpoolings back; upsample4
    has pad_out_h, so 23 * 2 - 1 = 45 rows; the classifier gives the 11 CamVid classes at
    full size.  Parameters by hand: conv1 64*3*7*7 + 64 = 9,472; seven 64->64 7x7
    convolutions 7 * (64*64*49 + 64) = 1,405,376; classifier 11*64 + 11 = 715; eight
    SegNet BN layers with scale and shift, 8 * 2 * 64 = 1,024: 1,416,587."""
    inspected = load(str(DATA / "segnet_basic_inference.prototxt"), input_shape=(3, 360, 480))
    s = shapes_of(inspected)
    assert s["pool4"] == (1, 64, 23, 30)
    assert s["upsample4"] == (1, 64, 45, 60)
    assert s["upsample1"] == (1, 64, 360, 480)
    assert s["conv_classifier"] == (1, 11, 360, 480)
    assert inspected.report.totals.params == 1_416_587
    assert inspected.report.skipped == []


def test_faster_rcnn_zf_names_the_python_proposal_layer_as_not_analysed():
    """ZF at 224: conv1 7x7 s2 p3 -> 112; pool1 3x3 s2 p1 rounds up: 57; conv2 5x5 s2 p2
    -> 29; pool2 -> 15; conv3-5 and the RPN keep 15x15 (stride 16 as the paper says,
    plus Caffe's rounding).  The proposal layer is Python: it and what reads its rois
    (ROIPooling, the fully connected head) are listed as not analysed."""
    inspected = load(str(DATA / "faster_rcnn_zf_test.prototxt"))
    s = shapes_of(inspected)
    assert s["pool1"] == (1, 96, 57, 57) and s["conv2"] == (1, 256, 29, 29)
    assert s["conv5"] == (1, 256, 15, 15)
    assert s["rpn_cls_score"] == (1, 18, 15, 15) and s["rpn_bbox_pred"] == (1, 36, 15, 15)
    assert s["rpn_cls_score_reshape"] == (1, 2, 135, 15)
    skipped = {x.name: x.reason for x in inspected.report.skipped}
    assert "proposal" in skipped and "Python layer rpn.proposal_layer" in skipped["proposal"]
    assert {"roi_pool_conv5", "fc6", "cls_score", "bbox_pred"} <= set(skipped)
    assert not any("no known dialect" in n for n in inspected.notes)  # scale_train is known


def test_faster_rcnn_roi_pooling_rule():
    """ROIPooling by itself (rois given as an input): rois x C x pooled_h x pooled_w."""
    text = (DATA / "faster_rcnn_zf_test.prototxt").read_text()
    assert "pooled_w: 6" in text


def test_shufflenet_stage2_against_the_paper():
    """ShuffleNet 1x, g = 3 (Table 1 of the paper): after conv1 (24 channels, 112x112)
    and max pooling (56x56), stage 2 outputs 240 channels at 28x28: the first unit
    concatenates a 3x3 s2 average pooling of its input (24) with 216 channels of the
    grouped branch; its depthwise 3x3 s2 convolution (no group written) has 54 3x3
    filters, 54 * 9 = 486 weights."""
    inspected = load(str(DATA / "shufflenet_1x_g3_deploy_stage2.prototxt"))
    s = shapes_of(inspected)
    assert s["conv1"] == (1, 24, 112, 112) and s["pool1"] == (1, 24, 56, 56)
    assert s["resx1_match_conv"] == (1, 24, 28, 28)
    assert s["resx1_concat"] == (1, 240, 28, 28) and s["resx2_elewise"] == (1, 240, 28, 28)
    assert s["shuffle2"] == (1, 60, 28, 28)
    dw = next(r for r in inspected.report.rows if r.name == "resx1_conv2")
    assert dw.params == 54 * 9 and dw.macs == 54 * 28 * 28 * 9


POOL = ('name: "m"\ninput: "data"\ninput_shape {{ dim: 1 dim: 3 dim: 8 dim: 8 }}\n'
        'layer {{\n  name: "p"\n  type: "Pooling"\n  bottom: "data"\n  top: "p"\n'
        '  pooling_param {{ pool: MAX kernel_size: 3 stride: 2 {} }}\n}}\n')


def test_bvlc_master_round_mode_is_read(tmp_path):
    """BVLC master's round_mode: FLOOR on 8 -> (8 - 3) // 2 + 1 = 3 (CEIL: 4)."""
    for field, size in (("round_mode: FLOOR", 3), ("round_mode: CEIL", 4)):
        path = tmp_path / "p.prototxt"
        path.write_text(POOL.format(field))
        assert shapes_of(load(str(path)))["p"] == (1, 3, size, size)


def test_a_field_no_dialect_knows_marks_only_its_layer(tmp_path, capsys):
    path = tmp_path / "u.prototxt"
    path.write_text(POOL.format("") + 'layer {\n  name: "r"\n  type: "ReLU"\n  bottom: "p"\n'
                    '  top: "r"\n  relu_param { slope_of_doom: 0.1 }\n}\n'
                    'layer {\n  name: "s"\n  type: "Sigmoid"\n  bottom: "data"\n  top: "s"\n}\n')
    code, out, err = run_command("analyze", str(path), capsys=capsys)
    assert code == 0, err
    assert f"{path}:16:16: field 'slope_of_doom' of layer 'r'" in out
    inspected = load(str(path))
    assert [x.name for x in inspected.report.skipped] == ["r"]
    assert set(shapes_of(inspected)) == {"p", "s"}


def test_mixing_round_mode_and_ceil_mode_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "mix.prototxt"
    path.write_text(POOL.format("round_mode: FLOOR") + 'layer {\n  name: "q"\n  type: "Pooling"'
                    '\n  bottom: "p"\n  top: "q"\n  pooling_param { pool: MAX kernel_size: 2 '
                    "ceil_mode: false }\n}\n")
    code, out, err = run_command("analyze", str(path), "--json", str(tmp_path / "r.json"),
                                 capsys=capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "mixes two Caffe dialects" in err and "'p' sets round_mode" in err
    assert not (tmp_path / "r.json").exists()


def test_check_knows_the_fields_a_target_lacks(tmp_path, capsys):
    """round_mode is BVLC master's own field; OpenCV's parser does not know it."""
    path = tmp_path / "p.prototxt"
    path.write_text(POOL.format("round_mode: FLOOR"))
    code, out, _ = run_command("check", str(path), "--target", "bvlc,opencv", capsys=capsys)
    assert code == 1
    assert "bvlc (BVLC Caffe (master)): ok" in out
    assert "pooling_param.round_mode" in out


def _one(tmp_path, body: str, shape=(1, 8, 9, 9), extra_inputs: str = ""):
    path = tmp_path / "one.prototxt"
    dims = " ".join(f"dim: {d}" for d in shape)
    path.write_text(f'name: "one"\ninput: "data"\ninput_shape {{ {dims} }}\n{extra_inputs}{body}')
    return shapes_of(load(str(path)))


def test_interp_follows_pspnet_arithmetic(tmp_path):
    """PSPNet's Interp (interp_layer.cpp): zoom_factor z on size s gives s + (s-1)(z-1)
    (9 -> 17 for z = 2, DeepLab's 'align corners' growth); shrink_factor k gives
    (s-1)//k + 1 (9 -> 5 for k = 2); height/width are taken as they are."""
    interp = 'layer {{ name: "i" type: "Interp" bottom: "data" top: "i" interp_param {{ {} }} }}\n'
    assert _one(tmp_path, interp.format("zoom_factor: 2"))["i"] == (1, 8, 17, 17)
    assert _one(tmp_path, interp.format("shrink_factor: 2"))["i"] == (1, 8, 5, 5)
    assert _one(tmp_path, interp.format("height: 60 width: 30"))["i"] == (1, 8, 60, 30)


def test_axpy_reorg_region(tmp_path):
    """SENet's Axpy: a (N x C x 1 x 1) * x + y keeps x's shape.  YOLOv2's Reorg with
    stride 2: C * 4 channels, half the size (8 x 8 x 8 -> 32 x 4 x 4); Region keeps its
    input's shape."""
    extra = 'input: "a"\ninput_shape { dim: 1 dim: 8 dim: 1 dim: 1 }\n'
    axpy = 'layer { name: "x" type: "Axpy" bottom: "a" bottom: "data" bottom: "data" top: "x" }\n'
    assert _one(tmp_path, axpy, extra_inputs=extra)["x"] == (1, 8, 9, 9)
    reorg = ('layer { name: "r" type: "Reorg" bottom: "data" top: "r" reorg_param { stride: 2 } }'
             '\nlayer { name: "g" type: "Region" bottom: "r" top: "g" }\n')
    s = _one(tmp_path, reorg, shape=(1, 8, 8, 8))
    assert s["r"] == (1, 32, 4, 4) and s["g"] == (1, 32, 4, 4)


# ------------------------------------------------ more forks' real-world files (README.md)


def test_se_resnet50_axpy_against_the_senet_paper():
    """SE-ResNet-50 as published with the SENet paper (hujie-frank/SENet), its Axpy
    layers (a * x + y: the excitation scales the residual branch and adds the
    shortcut).  Table 1 of the paper: conv2_x at 56 x 56 with 256 channels and the
    excitation's fc [16, 256] (r = 16).  pool1 3x3 s2 on 112 rounds up: 56.
    Parameters by hand: conv1 7*7*3*64 = 9,408 + its Scale 128; block 2_1: 1x1 64*64
    = 4,096 + 128, 3x3 64*64*9 = 36,864 + 128, 1x1 64*256 = 16,384 + 512, fc down
    256*16 + 16 = 4,112, fc up 16*256 + 256 = 4,352, projection 64*256 = 16,384 + 512:
    83,472; block 2_2 (no projection, 1x1 reduce 256*64): 78,864.  Total 171,872
    (BatchNorm statistics are not learnt; Axpy has no parameters)."""
    inspected = load(str(DATA / "se_resnet50_stage2.prototxt"))
    s = shapes_of(inspected)
    assert s["pool1/3x3_s2"] == (1, 64, 56, 56)
    assert s["conv2_1_1x1_down"] == (1, 16, 1, 1) and s["conv2_1_1x1_up"] == (1, 256, 1, 1)
    assert s["conv2_1"] == (1, 256, 56, 56) and s["conv2_2"] == (1, 256, 56, 56)
    axpy = next(r for r in inspected.report.rows if r.name == "conv2_2")
    assert axpy.params == 0
    assert inspected.report.totals.params == 171_872
    assert inspected.report.skipped == [] and inspected.notes == ()


def test_pspnet_pyramid_pooling_interp_against_the_paper(capsys):
    """PSPNet-50 on ADE20K (hszhao/PSPNet), its pyramid pooling module.  The excerpt's
    input, conv5_3 at 60 x 60, is what the full file gives for the 473 x 473 crop:
    conv1_1 3x3 s2 p1: (473 + 2 - 3) / 2 + 1 = 237; pool1 3x3 s2 p1 rounds up:
    ceil(236 / 2) + 1 = 119; conv3_1 1x1 s2: 118 / 2 + 1 = 60; conv4 and conv5 are
    dilated with stride 1 (and the pooling kernels 60, 30, 20, 10 say so).  The
    paper's bins 1 x 1, 2 x 2, 3 x 3, 6 x 6; each Interp back to 60 x 60; the concat
    2048 + 4 * 512 = 4096 channels; ADE20K's 150 classes; the last Interp zooms by
    8: 60 + 59 * 7 = 473, the crop size.  Parameters by hand: four 1x1 2048->512
    convolutions 4,194,304, conv5_4 3x3 4096->512 18,874,368, conv6 512*150 + 150 =
    76,950, five PSPNet BN layers with slope and bias 5 * 2 * 512 = 5,120:
    23,150,742.  PSPNet's BN fields (slope_filler, frozen, momentum) are this build's
    BNParameter: read with no note."""
    inspected = load(str(DATA / "pspnet50_ade20k_ppm.prototxt"))
    s = shapes_of(inspected)
    assert [s[f"conv5_3_pool{b}"][2:] for b in (1, 2, 3, 6)] == [(1, 1), (2, 2), (3, 3), (6, 6)]
    assert all(s[f"conv5_3_pool{b}_interp"] == (1, 512, 60, 60) for b in (1, 2, 3, 6))
    assert s["conv5_3_concat"] == (1, 4096, 60, 60)
    assert s["conv6"] == (1, 150, 60, 60) and s["conv6_interp"] == (1, 150, 473, 473)
    assert inspected.report.totals.params == 23_150_742
    assert inspected.report.skipped == [] and inspected.notes == ()
    # MNN sizes zoom_factor its own way (tests/test_targets_mnn.py): check says so for
    # conv6_interp only; the height/width Interp layers are fine there
    code, out, _ = run_command("check", str(DATA / "pspnet50_ade20k_ppm.prototxt"), "--target",
                               "mnn", capsys=capsys)
    assert code == 1
    flagged = [line.split(" (")[0].strip() for line in out.splitlines() if "interp_param" in line]
    assert flagged == ["conv6_interp"]


def test_mobilenet_depthwise_convolution_against_the_paper_and_caffe(caffe, tmp_path):
    """MobileNet with yonghenglh6's DepthwiseConvolution type (the layer's own
    repository).  Table 1 of the MobileNet paper: conv/s2 224 -> 112 x 112 x 32,
    conv dw/s1 3x3x32 at 112 x 112, conv/s1 1x1x32x64, conv dw/s2 3x3x64 from 112 to
    56, conv/s1 1x1x64x128 at 56 x 56.  A depthwise layer costs D_K*D_K*M*D_F*D_F
    (the paper's formula): 3*3*32*112*112 = 3,612,672 MACs, 3*3*32 = 288 weights.
    DepthwiseConvolution computes a Convolution with group = channels (which the file
    writes too): the same text with type Convolution gives, in real Caffe, every blob
    and parameter shape we give the original."""
    from conftest import assert_report_matches_caffe

    text = (DATA / "mobilenet_depthwise_stage2.prototxt").read_text()
    inspected = load(str(DATA / "mobilenet_depthwise_stage2.prototxt"))
    s = shapes_of(inspected)
    assert s["conv1"] == (1, 32, 112, 112) and s["conv2_1/dw"] == (1, 32, 112, 112)
    assert s["conv2_1/sep"] == (1, 64, 112, 112) and s["conv2_2/dw"] == (1, 64, 56, 56)
    assert s["conv2_2/sep"] == (1, 128, 56, 56)
    dw = next(r for r in inspected.report.rows if r.name == "conv2_1/dw")
    assert dw.params == 288 and dw.macs == 3_612_672
    grouped = tmp_path / "grouped.prototxt"
    grouped.write_text(text.replace('"DepthwiseConvolution"', '"Convolution"'))
    assert_report_matches_caffe(inspected.report, caffe.Net(str(grouped), caffe.TEST))


def test_yolov2_reorg_against_the_yolo9000_paper():
    """YOLOv2 for VOC (eric612/Caffe-YOLOv3-Windows), its passthrough (Reorg) branch.
    YOLO9000 paper: the passthrough layer "turns the 26 x 26 x 512 feature map into a
    13 x 13 x 2048 feature map", concatenated with the 13 x 13 x 1024 features; the
    output has 5 anchors x (20 classes + 5) = 125 channels.  The port's own
    YoloDetectionOutput (and its yolo_detection_output_param) is no known dialect's:
    that layer alone is listed as not analysed, with file, line and column."""
    inspected = load(str(DATA / "yolov2_voc_passthrough.prototxt"))
    s = shapes_of(inspected)
    assert s["pool13"] == (1, 512, 13, 13) and s["conv20"] == (1, 1024, 13, 13)
    assert s["reorg1"] == (1, 2048, 13, 13) and s["concat2"] == (1, 3072, 13, 13)
    assert s["conv22"] == (1, 125, 13, 13)
    skipped = {x.name: x.reason for x in inspected.report.skipped}
    assert list(skipped) == ["detection_out"]
    assert "yolo_detection_output_param" in skipped["detection_out"]
    assert "yolov2_voc_passthrough.prototxt:593:3" in skipped["detection_out"]


def test_yolov3_tiny_upsample_and_the_ports_own_pooling(caffe, tmp_path, capsys):
    """YOLOv3-tiny as converted by ChenYingpeng/caffe-yolov3 (Upsample, scale 2).
    darknet's layer 12 is a 2x2 max pooling with stride 1 that keeps 13 x 13; the
    port's Caffe patches Pooling::Reshape to add 1 when kernel - stride is odd
    (caffe_layers/pooling_layer/pooling_layer.cpp, "added by chen for darknet yolov3
    tiny maxpool layer stride=1,size=2"), which no field of the file says.  By
    Caffe's arithmetic (13 - 2) / 1 + 1 = 12: the upsampled 24 x 24 map cannot be
    concatenated with layer9's 26 x 26.  pynetbuilder and real Caffe both refuse the
    file there.  Up to the upsampling (the file cut before layer21-route) every blob
    and parameter shape equals real Caffe's (this build has YOLO's Upsample):
    layer16-conv has 3 x (80 + 5) = 255 channels (the YOLOv3 paper), the upsampling
    doubles 12 to 24."""
    from conftest import assert_report_matches_caffe

    path = DATA / "yolov3_tiny.prototxt"
    code, out, err = run_command("analyze", str(path), capsys=capsys)
    assert code == 2 and "Concat layer 'layer21-route'" in err
    assert "(1, 128, 24, 24), (1, 256, 26, 26)" in err
    proc = subprocess.run([sys.executable, "-c", "import caffe, sys; caffe.Net(sys.argv[1], "
                           "caffe.TEST)", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "(24 vs. 26)" in proc.stderr
    text = path.read_text()
    cut = tmp_path / "cut.prototxt"
    cut.write_text(text[:text.index('layer {\n    bottom: "layer20-upsample"')])
    inspected = load(str(cut))
    s = shapes_of(inspected)
    assert s["layer12-maxpool"] == (1, 512, 12, 12) and s["layer16-conv"] == (1, 255, 12, 12)
    assert s["layer20-upsample"] == (1, 128, 24, 24)
    assert_report_matches_caffe(inspected.report, caffe.Net(str(cut), caffe.TEST))
