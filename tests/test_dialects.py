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


def variant_judged_by_caffe(caffe, path: Path, text: str, old: str, new: str):
    """``text`` with its one ``old`` replaced by ``new``, written to ``path``, analysed
    here and checked against real Caffe's net blob for blob."""
    from conftest import assert_report_matches_caffe

    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    inspected = load(str(path))
    assert_report_matches_caffe(inspected.report, caffe.Net(str(path), caffe.TEST))
    return inspected


def assert_whole(inspected, params: int) -> None:
    """Every layer analysed, no note, and ``params`` learnt parameters in all."""
    assert inspected.report.totals.params == params
    assert inspected.report.skipped == [] and inspected.notes == ()


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
    assert_whole(inspected, params=171_872)


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
    assert_whole(inspected, params=23_150_742)
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


def test_fast_rcnn_roi_pooling_on_rois_given_as_input(caffe, tmp_path):
    """Fast R-CNN's VGG_CNN_M_1024 test net for COCO (rbgirshick/fast-rcnn): the rois are
    a net input (1 x 5, "to be changed on-the-fly to num ROIs"), so ROIPooling is
    analysed: rois x 512 x pooled_h x pooled_w = 1 x 512 x 6 x 6, and fc6 reads
    512 * 36 = 18,432 values per roi.  Sizes by hand at 224: conv1 7x7 s2
    (224 - 7) / 2 + 1 = 109; pool1 3x3 s2 rounds up: ceil(106 / 2) + 1 = 54; conv2 5x5
    s2 p1: (54 + 2 - 5) // 2 + 1 = 26; pool2: ceil(23 / 2) + 1 = 13; conv3-5 keep 13
    (the file's spatial_scale 1/16 would give 14; Caffe's rounding gives 13).  COCO's 80
    classes and the background: cls_score 81, bbox_pred 4 * 81 = 324.  With 128 rois
    every roi-wise blob has 128 rows, whatever the image batch.  Learnt parameters by
    hand (conv1 is frozen, lr_mult 0): conv2 256*96*25 + 256 = 614,656; conv3
    512*256*9 + 512 = 1,180,160; conv4, conv5 512*512*9 + 512 = 2,359,808 each; fc6
    18,432*4096 + 4096 = 75,501,568; fc7 4096*1024 + 1024 = 4,195,328; cls_score
    1024*81 + 81 = 83,025; bbox_pred 1024*324 + 324 = 332,100: 86,626,453.  Real Caffe
    (no ROIPooling in this build) judges the net up to conv5."""
    from conftest import assert_report_matches_caffe

    path = DATA / "fast_rcnn_vgg_cnn_m_1024_coco_test.prototxt"
    inspected = load(str(path))
    s = shapes_of(inspected)
    assert s["conv1"] == (1, 96, 109, 109) and s["pool1"] == (1, 96, 54, 54)
    assert s["conv2"] == (1, 256, 26, 26) and s["conv5"] == (1, 512, 13, 13)
    assert s["roi_pool5"] == (1, 512, 6, 6)
    assert s["fc6"] == (1, 4096) and s["cls_score"] == (1, 81) and s["bbox_pred"] == (1, 324)
    fc6 = next(r for r in inspected.report.rows if r.name == "fc6")
    assert fc6.params == 18_432 * 4096 + 4096
    assert_whole(inspected, params=86_626_453)
    text = path.read_text()
    many = tmp_path / "rois128.prototxt"
    many.write_text(text.replace("dim: 1 # to be changed", "dim: 128 # to be changed"))
    s = shapes_of(load(str(many)))
    assert s["roi_pool5"] == (128, 512, 6, 6) and s["bbox_pred"] == (128, 324)
    assert s["conv5"] == (1, 512, 13, 13)
    cut = tmp_path / "cut.prototxt"
    cut.write_text(text[:text.index('layer {\n  name: "roi_pool5"')])
    assert_report_matches_caffe(load(str(cut)).report, caffe.Net(str(cut), caffe.TEST))


# DenseNet-121 of shicai/DenseNet-Caffe: its pool1 rounds down (round_mode: FLOOR)
DENSENET121 = DATA / "densenet121_round_mode.prototxt"


def test_densenet121_round_mode_floor_against_the_paper_and_caffe(caffe, tmp_path):
    """DenseNet-121 (shicai/DenseNet-Caffe, converted from the authors' Torch models),
    whose pool1 says BVLC master's round_mode: FLOOR.  Table 1 of the DenseNet paper:
    112 x 112 after the 7x7 s2 convolution, 56 x 56 after the 3x3 s2 max pooling, the
    transitions halve to 28, 14 and 7, a 7 x 7 global average pooling and a 1000-way
    classifier.  pool1 is 3x3 s2 pad 1 on 112: (112 + 2 - 3) / 2 = 55.5, FLOOR gives
    55 + 1 = 56, the paper's size (CEIL, Caffe's default, gives 57: see the next
    test).  Growth rate 32, blocks of 6, 12, 24, 16 layers, transitions halving the
    channels: 64 + 6*32 = 256 -> 128; 128 + 12*32 = 512 -> 256; 256 + 24*32 = 1024 ->
    512; 512 + 16*32 = 1024.  Learnt parameters by hand (convolutions have no bias; each
    BatchNorm's Scale learns 2C; BatchNorm statistics are not learnt): a dense layer
    on C channels is Scale 2C + 1x1 C*128 + Scale 256 + 3x3 128*32*9 = 130C + 37,120; a
    block of n layers from C0 sums to n(130 C0 + 37,120) + 2,080 n(n-1): 335,040;
    919,680; 2,837,760; 2,158,080; a transition on C is 2C + C*C/2: 33,280; 132,096;
    526,336; stem 7*7*3*64 + 128 = 9,536; head 2*1024 + 1024*1000 + 1000 = 1,027,048;
    total 7,978,856.  Real Caffe judges every blob and parameter shape of the same text
    with the field spelt as this build spells it (ceil_mode: false, field 13 too)."""
    from conftest import assert_report_matches_caffe

    inspected = load(str(DENSENET121))
    s = shapes_of(inspected)
    assert s["conv1"] == (1, 64, 112, 112) and s["pool1"] == (1, 64, 56, 56)
    assert s["concat_2_6"] == (1, 256, 56, 56) and s["pool2"] == (1, 128, 28, 28)
    assert s["concat_3_12"] == (1, 512, 28, 28) and s["pool3"] == (1, 256, 14, 14)
    assert s["concat_4_24"] == (1, 1024, 14, 14) and s["pool4"] == (1, 512, 7, 7)
    assert s["concat_5_16"] == (1, 1024, 7, 7) and s["pool5"] == (1, 1024, 1, 1)
    assert s["fc6"] == (1, 1000, 1, 1)
    assert_whole(inspected, params=7_978_856)
    text = DENSENET121.read_text()
    assert text.count("round_mode: FLOOR") == 1
    ours = tmp_path / "densenet121_ceil_mode.prototxt"
    ours.write_text(text.replace("round_mode: FLOOR", "ceil_mode: false"))
    assert_report_matches_caffe(inspected.report, caffe.Net(str(ours), caffe.TEST))


def test_densenet121_round_mode_ceil_changes_every_later_size(tmp_path, capsys):
    """The same file with round_mode: CEIL (Caffe's default rounding): pool1
    ceil(55.5) + 1 = 57 (Caffe would drop a last window starting past the image, when
    (57 - 1) * 2 >= 112 + 1; 112 is not, so 57 stays); every 2x2 s2 average pooling
    rounds up too (no field in the file), so the odd size carries on: pool2
    ceil((57 - 2) / 2) + 1 = 29 (floor: 28), pool3 ceil(27 / 2) + 1 = 15 (14), pool4
    ceil(13 / 2) + 1 = 8 (7).  Channels and parameters do not change.  round_mode is
    BVLC master's own field: check finds the original fine for BVLC master."""
    path = tmp_path / "densenet121_ceil.prototxt"
    path.write_text(DENSENET121.read_text().replace("round_mode: FLOOR", "round_mode: CEIL"))
    inspected = load(str(path))
    s = shapes_of(inspected)
    assert s["pool1"] == (1, 64, 57, 57) and s["pool2"] == (1, 128, 29, 29)
    assert s["pool3"] == (1, 256, 15, 15) and s["pool4"] == (1, 512, 8, 8)
    assert s["concat_5_16"] == (1, 1024, 8, 8) and s["fc6"] == (1, 1000, 1, 1)
    assert inspected.report.totals.params == 7_978_856
    code, out, _ = run_command("check", str(DENSENET121), "--target", "bvlc", capsys=capsys)
    assert code == 0 and "bvlc (BVLC Caffe (master)): ok" in out


def test_densenet169_ceil_mode_false_in_real_caffe(caffe, tmp_path):
    """DenseNet-169 before the repository moved to round_mode: pool1 says the forks'
    ceil_mode: false, this build's own field, so real Caffe reads the excerpt (stem,
    dense block 1 and transition 1) as it is and judges every shape: pool1 56 (the
    paper's; (112 + 2 - 3) / 2 = 55.5 rounded down, + 1), block 1 64 + 6*32 = 256
    channels, the transition 128 channels at 28 x 28.  Without the field (Caffe's
    ceil): 57 and ceil((57 - 2) / 2) + 1 = 29, in real Caffe and here.  Learnt
    parameters by hand: stem 9,536 + block 1 335,040 + transition 33,280 = 377,856
    (the DenseNet-121 test's arithmetic: the first block is the same)."""
    from conftest import assert_report_matches_caffe

    path = DATA / "densenet169_ceil_mode_block1.prototxt"
    inspected = load(str(path))
    s = shapes_of(inspected)
    assert s["pool1"] == (1, 64, 56, 56) and s["concat_2_6"] == (1, 256, 56, 56)
    assert s["conv2_blk"] == (1, 128, 56, 56) and s["pool2"] == (1, 128, 28, 28)
    assert_whole(inspected, params=377_856)
    assert_report_matches_caffe(inspected.report, caffe.Net(str(path), caffe.TEST))
    ceiled = variant_judged_by_caffe(caffe, tmp_path / "ceil.prototxt", path.read_text(),
                                     "    ceil_mode: false\n", "")
    s = shapes_of(ceiled)
    assert s["pool1"] == (1, 64, 57, 57) and s["pool2"] == (1, 128, 29, 29)


def test_yolov2_tiny_region_against_the_ports_readme(caffe, tmp_path):
    """Tiny YOLOv2 for 3 classes as converted by lwplw/caffe_yolov2, with the port's
    Region layer (region_param: classes 3, coords 4, boxes_of_each_grid 5, softmax, all
    fields of the yolo dialect).  The port's README: darknet keeps 13 x 13 through the
    last 2x2 stride-1 max pooling, Caffe made it 12 x 12, so the port pads that pooling
    (pad: 1 in Caffe, padding=2 in darknet) and both give 14 x 14.  By hand: five 2x2
    s2 poolings take 416 to 13; then ceil((13 + 2*1 - 2) / 1) + 1 = 14 (Caffe would
    drop a last window starting past the image, when (14 - 1) * 1 >= 13 + 1: it does
    not); without the pad (13 - 2) / 1 + 1 = 12.  The detector has 5 * (3 + 4 + 1) =
    40 channels (the cfg's filters=40); the port's RegionLayer::Reshape gives its
    input's shape.  Learnt parameters by hand: 3x3 convolutions without bias 9 * (3*16
    + 16*32 + 32*64 + 64*128 + 128*256 + 256*512 + 512*1024 + 1024*512) = 11,008,944;
    the 1x1 detector 512*40 + 40 = 20,520; Scale 2 * (16 + 32 + 64 + 128 + 256 + 512 +
    1024 + 512) = 5,088: 11,034,552.  Real Caffe (no Region in this build) judges all
    but region1, padded and not."""
    from conftest import assert_report_matches_caffe

    path = DATA / "yolov2_tiny_3_region.prototxt"
    inspected = load(str(path))
    s = shapes_of(inspected)
    assert s["layer10-maxpool"] == (1, 256, 13, 13) and s["layer12-maxpool"] == (1, 512, 14, 14)
    assert s["layer15-conv"] == (1, 40, 14, 14) and s["region1"] == (1, 40, 14, 14)
    assert_whole(inspected, params=11_034_552)
    text = path.read_text()
    head = text[:text.index('layer {\n  name: "region1"')]
    cut = tmp_path / "cut.prototxt"
    cut.write_text(head)
    assert_report_matches_caffe(load(str(cut)).report, caffe.Net(str(cut), caffe.TEST))
    inspected = variant_judged_by_caffe(caffe, tmp_path / "unpadded.prototxt", head,
                                        "        pool: MAX\n        pad: 1\n",
                                        "        pool: MAX\n")
    assert shapes_of(inspected)["layer15-conv"] == (1, 40, 12, 12)
