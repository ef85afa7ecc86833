"""Prototxt of Caffe's forks read through their dialects: real-world files
(tests/data/dialects/README.md) with shapes against the authors' figures or hand
computations written here, fields no dialect knows, conflicting dialects.  (The
pinned Caffe registers none of these fork types, BN included, so the hand
computations are the oracle.)"""

from __future__ import annotations

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
