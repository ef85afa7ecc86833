"""The forks' layer types in the PyTorch backend (pynetbuilder/pytorch/emit_forks.py),
each judged by an executor that runs it or by an independent NumPy transcription of
its fork's C++:

- OpenCV 4.x's Caffe importer (opencv-python-headless) runs Interp (height/width,
  zoom_factor), ShuffleChannel, ROIPooling, ConvolutionDepthwise and Reorg (its
  ``reorg_stride`` 2: the importer does not read ``reorg_param``);
- real Caffe (the pinned build) runs DepthwiseConvolution written as a grouped
  Convolution, Axpy written as Scale + Eltwise, SegNet's BN in INFERENCE mode written
  as Scale, SegNet's Upsample written as this build's MaxUnPool (the same loop), the
  Pooling mask top, MaxUnPool and YOLO's Upsample as they are;
- the rest (BN's batch statistics, Interp's pad_beg/pad_end and shrink_factor, Reorg
  with stride 3 or reverse, Axpy, Dropout's scale_train) against NumPy transcriptions
  of the forks' C++ loops, written in the tests with the file they follow.

Nets are the real-world files of tests/data/dialects where they can run, else
one-layer nets.  Tolerance as everywhere: ``max |diff| <= 1e-4 * max |judge|``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_command

from pynetbuilder.errors import NetError
from pynetbuilder.pytorch import save_caffemodel, to_module
from pynetbuilder.pytorch.verify import verify
from pynetbuilder.schema import caffe_pb2

cv2 = pytest.importorskip("cv2")

DATA = Path(__file__).parent / "data" / "dialects"
F32 = np.float32


# ---------------------------------------------------------------------------- helpers


def randomize(module, seed: int) -> None:
    """Every parameter blob at random: weights N(0, 0.2), statistics sane (variances in
    [0.5, 1.5], BatchNorm's scale factor 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.layer_modules.values():
            for name in layer.blob_names:
                t = getattr(layer, name)
                if name == "variance":
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
                elif name == "scale_factor":
                    t.fill_(1.0)
                else:
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.2)


def run_module(module, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        blobs = module.run({k: torch.from_numpy(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in blobs.items()}


def write_caffemodel(path: Path, layers: dict[str, list[np.ndarray]]) -> Path:
    """A .caffemodel holding these blobs (real Caffe and OpenCV load it by layer name)."""
    net = caffe_pb2.NetParameter()
    for name, arrays in layers.items():
        layer = net.layer.add(name=name)
        for a in arrays:
            blob = layer.blobs.add()
            blob.shape.dim.extend(a.shape)
            blob.data.extend(np.asarray(a, np.float32).ravel().tolist())
    path.write_bytes(net.SerializeToString())
    return path


def blobs_of(module) -> dict[str, list[np.ndarray]]:
    return {name: [t.detach().numpy().copy() for t in m.caffe_blobs()]
            for name, m in module.layer_modules.items() if m.blob_names}


def opencv(prototxt: Path, weights: Path | None, inputs: dict[str, np.ndarray],
           blobs: list[str]) -> dict[str, np.ndarray]:
    """OpenCV's values of ``blobs``: the outputs of the layers that write them last (an
    in-place layer's output is its blob's final value, as the module's)."""
    from pynetbuilder.inspect import read_prototxt

    last = {top: layer.name for layer in read_prototxt(prototxt).layer for top in layer.top}
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights) if weights else "")
    for name, value in inputs.items():
        net.setInput(value, name)
    return dict(zip(blobs, net.forward([last[b] for b in blobs])))


def assert_close(ours: np.ndarray, judge: np.ndarray, what: str) -> float:
    """Shapes equal and ``max |diff| <= 1e-4 * max |judge|``; the difference."""
    assert ours.shape == judge.shape, (what, ours.shape, judge.shape)
    diff = float(np.abs(ours.astype(np.float64) - judge).max(initial=0.0))
    assert diff <= 1e-4 * float(np.abs(judge).max(initial=0.0)), (what, diff)
    return diff


def one_layer(tmp_path: Path, inputs: dict[str, tuple[int, ...]], body: str,
              name: str = "net.prototxt") -> Path:
    text = "".join(f'input: "{n}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in s)} }}\n'
                   for n, s in inputs.items())
    path = tmp_path / name
    path.write_text(text + body)
    return path


def normal(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


# -------------------------------------------------------- OpenCV: real-world files


def test_shufflenet_stage2_file_equals_opencv(tmp_path):
    """ShuffleNet 1x g3 (farmingyard/ShuffleNet, through stage 2's second unit): its
    ConvolutionDepthwise layers (one with group written, one without) and its
    ShuffleChannel with group 3, random weights written by save_caffemodel, against
    OpenCV's run of the same file and weights; every layer's own top compared."""
    path = DATA / "shufflenet_1x_g3_deploy_stage2.prototxt"
    module = to_module(str(path))
    randomize(module, 1)
    weights = tmp_path / "w.caffemodel"
    save_caffemodel(module, weights)
    x = normal((1, 3, 224, 224), 2)
    ours = run_module(module, {"data": x})
    tops = ["pool1", "resx1_match_conv", "resx1_concat", "shuffle2", "resx2_elewise"]
    theirs = opencv(path, weights, {"data": x}, tops)
    for top in tops:
        assert_close(ours[top], theirs[top], top)


# ---------------------------------------------------------------- one-layer judges


@pytest.mark.parametrize("setting,shape", [("height: 11 width: 9", (2, 3, 6, 4)),
                                           ("zoom_factor: 3", (1, 4, 6, 5)),
                                           ("height: 6 width: 5", (1, 2, 6, 5)),
                                           ("height: 1 width: 3", (1, 2, 6, 5))])
def test_interp_equals_opencv(tmp_path, setting, shape):
    """PSPNet's Interp (align-corners bilinear) where OpenCV's Interp reads the
    settings: height/width (larger, equal: a copy, a single row) and zoom_factor."""
    path = one_layer(tmp_path, {"data": shape}, 'layer { name: "i" type: "Interp" '
                     f'bottom: "data" top: "i" interp_param {{ {setting} }} }}\n')
    x = normal(shape, 3)
    ours = run_module(to_module(str(path)), {"data": x})["i"]
    assert_close(ours, opencv(path, None, {"data": x}, ["i"])["i"], setting)


@pytest.mark.parametrize("group,shape", [(3, (2, 12, 3, 2)), (4, (1, 12, 5, 5)),
                                         (12, (1, 12, 2, 2))])
def test_shuffle_channel_equals_opencv(tmp_path, group, shape):
    path = one_layer(tmp_path, {"data": shape}, 'layer { name: "s" type: "ShuffleChannel" '
                     f'bottom: "data" top: "s" shuffle_channel_param {{ group: {group} }} }}\n')
    x = normal(shape, 4)
    ours = run_module(to_module(str(path)), {"data": x})["s"]
    assert np.array_equal(ours, opencv(path, None, {"data": x}, ["s"])["s"])


def test_reorg_stride_2_equals_opencv(tmp_path):
    """YOLOv2's passthrough Reorg, darknet's index order included: OpenCV reproduces
    darknet, and reads no reorg_param (its stride is 2, the one YOLOv2 uses)."""
    path = one_layer(tmp_path, {"data": (2, 8, 6, 4)}, 'layer { name: "r" type: "Reorg" '
                     'bottom: "data" top: "r" reorg_param { stride: 2 } }\n')
    x = normal((2, 8, 6, 4), 5)
    ours = run_module(to_module(str(path)), {"data": x})["r"]
    assert ours.shape == (2, 32, 3, 2)
    assert np.array_equal(ours, opencv(path, None, {"data": x}, ["r"])["r"])


def c_round(v: np.float32) -> int:
    """C's round() of a float: halves away from zero."""
    return int(np.sign(v) * np.floor(np.abs(np.float64(v)) + 0.5))


def roi_pooling_reference(x: np.ndarray, rois: np.ndarray, pooled_h: int, pooled_w: int,
                          spatial_scale: float) -> np.ndarray:
    """A transcription of rbgirshick/caffe-fast-rcnn src/caffe/layers/roi_pooling_layer.cpp,
    ROIPoolingLayer<float>::Forward_cpu: its loops, float32 where the C++ has Dtype."""
    _, channels, height, width = x.shape
    scale = F32(spatial_scale)
    top = np.full((len(rois), channels, pooled_h, pooled_w), -np.finfo(F32).max, F32)
    for n, roi in enumerate(rois.astype(F32)):
        batch = int(roi[0])
        start_w, start_h = c_round(roi[1] * scale), c_round(roi[2] * scale)
        end_w, end_h = c_round(roi[3] * scale), c_round(roi[4] * scale)
        roi_height = max(end_h - start_h + 1, 1)
        roi_width = max(end_w - start_w + 1, 1)
        bin_h = F32(roi_height) / F32(pooled_h)
        bin_w = F32(roi_width) / F32(pooled_w)
        for c in range(channels):
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    hstart = int(np.floor(F32(ph) * bin_h))
                    wstart = int(np.floor(F32(pw) * bin_w))
                    hend = int(np.ceil(F32(ph + 1) * bin_h))
                    wend = int(np.ceil(F32(pw + 1) * bin_w))
                    hstart = min(max(hstart + start_h, 0), height)
                    hend = min(max(hend + start_h, 0), height)
                    wstart = min(max(wstart + start_w, 0), width)
                    wend = min(max(wend + start_w, 0), width)
                    if hend <= hstart or wend <= wstart:
                        top[n, c, ph, pw] = 0
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            if x[batch, c, h, w] > top[n, c, ph, pw]:
                                top[n, c, ph, pw] = x[batch, c, h, w]
    return top


# rois [batch, x1, y1, x2, y2] at spatial_scale 0.5 on a 10 x 12 map: inside; corners on
# halves (5 * 0.5 = 2.5 rounds to 3, -3 * 0.5 = -1.5 to -2); partly and wholly outside;
# degenerate (x2 < x1: one column); the whole map of the second image
ROIS = np.array([[0, 0, 0, 10, 8], [1, 5, 3, 15, 9], [0, -3, -5, 7, 7], [1, 18, 14, 40, 40],
                 [0, 30, 30, 50, 50], [1, 9, 4, 2, 4], [1, 0, 0, 23, 19],
                 [0, 3.1, 2.9, 20.7, 17.2]], np.float32)


def test_roi_pooling_equals_opencv_and_the_fast_rcnn_loops(tmp_path):
    path = one_layer(tmp_path, {"data": (2, 3, 10, 12), "rois": ROIS.shape},
                     'layer { name: "p" type: "ROIPooling" bottom: "data" bottom: "rois" '
                     'top: "p" roi_pooling_param { pooled_h: 3 pooled_w: 2 '
                     'spatial_scale: 0.5 } }\n')
    x = normal((2, 3, 10, 12), 6)
    ours = run_module(to_module(str(path)), {"data": x, "rois": ROIS})["p"]
    reference = roi_pooling_reference(x, ROIS, 3, 2, 0.5)
    assert np.array_equal(ours, reference)
    assert (reference[4] == 0).all()  # the roi outside the map: empty bins give 0
    theirs = opencv(path, None, {"data": x, "rois": ROIS}, ["p"])["p"]
    assert np.array_equal(ours, theirs)


# ------------------------------------------------------------ real Caffe as the judge


def caffe_random_weights(net, seed: int) -> None:
    """Every parameter blob of a pycaffe net at random (BatchNorm: mean N(0, 0.1),
    variance in [0.5, 1.5], scale factor 1)."""
    rng = np.random.default_rng(seed)
    types = dict(zip(net._layer_names, (layer.type for layer in net.layers)))
    for name, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            data = rng.normal(0, 0.2, blob.data.shape)
            if types[name] == "BatchNorm":
                data = [rng.normal(0, 0.1, blob.data.shape),
                        rng.uniform(0.5, 1.5, blob.data.shape), np.ones(blob.data.shape)][i]
            blob.data[...] = data


def caffe_forward(caffe, text: str, folder: Path, inputs: dict[str, np.ndarray], seed: int):
    """Real Caffe on ``text`` with random weights: its blobs and parameter blobs."""
    path = folder / "caffe.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    caffe_random_weights(net, seed)
    for name, value in inputs.items():
        net.blobs[name].data[...] = value
    net.forward()
    blobs = {k: v.data.copy() for k, v in net.blobs.items()}
    params = {k: [b.data.copy() for b in v] for k, v in net.params.items()}
    return blobs, params


def compare_blobs(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]
                  ) -> dict[str, float]:
    """Every blob both have (not the judge's own split blobs or rewritten steps)."""
    common = [n for n in theirs if n in ours]
    assert len(common) >= len(theirs) // 2, sorted(set(theirs) - set(ours))
    return {n: assert_close(ours[n], theirs[n], n) for n in common}


def test_mobilenet_depthwise_convolution_file_equals_real_caffe(caffe, tmp_path):
    """yonghenglh6's DepthwiseConvolution is Caffe's ConvolutionLayer with group =
    channels: real Caffe runs the file with the type written Convolution (the file
    writes the group), random weights; the module of the original file, given those
    weights, equals every blob."""
    path = DATA / "mobilenet_depthwise_stage2.prototxt"
    text = path.read_text()
    x = normal((1, 3, 224, 224), 7)
    theirs, params = caffe_forward(caffe, text.replace('"DepthwiseConvolution"',
                                                       '"Convolution"'), tmp_path, {"data": x}, 8)
    weights = write_caffemodel(tmp_path / "w.caffemodel", params)
    ours = run_module(to_module(str(path), weights=str(weights)), {"data": x})
    compare_blobs(ours, theirs)
    assert {"conv2_1/dw", "conv2_2/dw"} <= set(theirs)


_AXPY = re.compile(r'layer \{\s*name: "([^"]+)"\s*type: "Axpy"\s*bottom: "([^"]+)"\s*'
                   r'bottom: "([^"]+)"\s*bottom: "([^"]+)"\s*top: "([^"]+)"\s*\}')


def _axpy_as_bvlc(m: re.Match) -> str:
    """a * x + y in BVLC layers: a (N x C x 1 x 1) flattened to N x C, Scale x by it
    (axis 0, two bottoms), Eltwise SUM with y."""
    name, a, x, y, top = m.groups()
    return (f'layer {{ name: "{name}/a" type: "Reshape" bottom: "{a}" top: "{name}/a" '
            'reshape_param { shape { dim: 0 dim: -1 } } }\n'
            f'layer {{ name: "{name}/ax" type: "Scale" bottom: "{x}" bottom: "{name}/a" '
            f'top: "{name}/ax" scale_param {{ axis: 0 }} }}\n'
            f'layer {{ name: "{name}" type: "Eltwise" bottom: "{name}/ax" bottom: "{y}" '
            f'top: "{top}" }}')


def test_se_resnet50_axpy_file_equals_real_caffe(caffe, tmp_path):
    """SE-ResNet-50's first two blocks (hujie-frank/SENet) with their Axpy layers
    (bottoms a, x, y: ``a * x + y``, axpy_layer.cpp) written for real Caffe as
    Reshape + Scale + Eltwise, random weights: the module of the original file equals
    every blob Caffe computes (the Axpy tops conv2_1 and conv2_2 included)."""
    path = DATA / "se_resnet50_stage2.prototxt"
    text = path.read_text()
    bvlc, count = _AXPY.subn(_axpy_as_bvlc, text)
    assert count == 2
    x = normal((1, 3, 224, 224), 9)
    theirs, params = caffe_forward(caffe, bvlc, tmp_path, {"data": x}, 10)
    weights = write_caffemodel(tmp_path / "w.caffemodel", params)
    ours = run_module(to_module(str(path), weights=str(weights)), {"data": x})
    compare_blobs(ours, theirs)
    assert {"conv2_1", "conv2_2"} <= set(theirs)


# SegNet-Basic at 40 x 48: the four 2x2 poolings give 20x24, 10x12, 5x6, 3x3 (5 / 2
# rounds up); upsample4 (pad_out_h) gives 3 * 2 - 1 = 5 rows, 3 * 2 = 6 columns, then
# 10x12, 20x24, 40x48: the sizes each pooling mask indexes
SEGNET_UNPOOL = {"upsample4": (5, 6), "upsample3": (10, 12), "upsample2": (20, 24),
                 "upsample1": (40, 48)}


def _segnet_for_caffe(text: str) -> str:
    """SegNet-Basic for the pinned Caffe: DenseImageData as an Input, each BN
    (bn_mode INFERENCE: x * scale + shift, bn_layer.cpp) a Scale with bias, each
    Upsample this build's MaxUnPool of the size SegNet's Upsample computes."""
    text = re.sub(r'type: "DenseImageData"\s*top: "data"\s*top: "label"\s*'
                  r'dense_image_data_param \{[^}]*\}',
                  'type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 40 '
                  'dim: 48 } }', text)
    text = re.sub(r'type: "BN"\s*bn_param \{\s*bn_mode: INFERENCE\s*scale_filler \{[^}]*\}'
                  r'\s*shift_filler \{[^}]*\}\s*\}',
                  'type: "Scale" scale_param { bias_term: true }', text)
    for name, (h, w) in SEGNET_UNPOOL.items():
        text = re.sub(rf'name: "{name}"\s*type: "Upsample"(.*?)upsample_param \{{[^}}]*\}}',
                      rf'name: "{name}" type: "MaxUnPool"\1max_unpool_param {{ dst_h: {h} '
                      rf'dst_w: {w} }}', text, flags=re.S)
    return text


def test_segnet_basic_file_equals_real_caffe(caffe, tmp_path):
    """SegNet-Basic's inference net (alexgkendall/SegNet-Tutorial) at 40 x 48: SegNet's
    BN in INFERENCE mode, the poolings' mask tops and SegNet's unpooling Upsample.  Real
    Caffe runs it with BN written as Scale (with bias) and Upsample as MaxUnPool,
    random weights; the module of the original file (the BN blobs 1 x C x 1 x 1, as
    SegNet's) equals every blob: masks, unpooled maps, probabilities."""
    path = DATA / "segnet_basic_inference.prototxt"
    bvlc = _segnet_for_caffe(path.read_text())
    assert '"BN"' not in bvlc and '"Upsample"' not in bvlc and "DenseImageData" not in bvlc
    x = normal((1, 3, 40, 48), 11)
    theirs, params = caffe_forward(caffe, bvlc, tmp_path, {"data": x}, 12)
    bn_layers = [la.name for la in to_module(str(path), input_shape=(3, 40, 48))
                 .net_param.layer if la.type == "BN"]
    assert len(bn_layers) == 8
    for name in bn_layers:  # Scale's blobs are C; SegNet's BN keeps 1 x C x 1 x 1
        params[name] = [b.reshape(1, -1, 1, 1) for b in params[name]]
    weights = write_caffemodel(tmp_path / "w.caffemodel", params)
    module = to_module(str(path), input_shape=(3, 40, 48), weights=str(weights))
    ours = run_module(module, {"data": x, "label": np.zeros(module.blob_shapes["label"],
                                                             np.float32)})
    compare_blobs(ours, theirs)
    assert {"pool4_mask", "upsample4", "upsample1", "prob"} <= set(theirs)
    assert theirs["upsample4"].shape == (1, 64, 5, 6)


def check_verify(path: Path, phase: str = "test") -> None:
    result = verify(str(path), phase=phase)
    assert result.blobs, "nothing compared"
    bad = [c for c in result.checks if not c.ok]
    assert not bad, bad[:5]


@pytest.mark.parametrize("pool,size", [("kernel_size: 2 stride: 2", (9, 10)),
                                       ("kernel_size: 3 stride: 2", (9, 10)),
                                       ("kernel_size: 3 stride: 2 pad: 1", (8, 11)),
                                       ("kernel_size: 3 stride: 2 pad: 2", (8, 11))])
def test_max_pooling_mask_and_max_unpool_equal_real_caffe(tmp_path, pool, size):
    """A MAX Pooling's second top (the mask SegNet feeds its Upsample: the index h * W +
    w of each window's maximum), on windows that PyTorch's own pooling reproduces and on
    windows it cannot (pad 2 > kernel 3 / 2: the module pads explicitly), then
    this build's MaxUnPool of it back to the input's size: real Caffe judges both, via
    ``verify`` (TRAIN and TEST)."""
    h, w = size
    text = (f'input: "x"\ninput_shape {{ dim: 2 dim: 3 dim: {h} dim: {w} }}\n'
            f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "p" top: "mask" '
            f'pooling_param {{ pool: MAX {pool} }} }}\n'
            f'layer {{ name: "u" type: "MaxUnPool" bottom: "p" bottom: "mask" top: "u" '
            f'max_unpool_param {{ dst_h: {h} dst_w: {w} }} }}\n')
    path = tmp_path / "pool.prototxt"
    path.write_text(text)
    for phase in ("train", "test"):
        check_verify(path, phase)


def test_yolov3_tiny_upsample_through_verify(tmp_path):
    """YOLOv3-tiny (ChenYingpeng/caffe-yolov3) up to its Upsample (the file cut where
    its port's own pooling arithmetic takes over, see test_dialects): this build's
    Upsample is the port's (nearest neighbour, upsample_layer.cu), and ``verify`` runs
    the cut file in real Caffe: every blob agrees."""
    text = (DATA / "yolov3_tiny.prototxt").read_text()
    cut = tmp_path / "cut.prototxt"
    cut.write_text(text[:text.index('layer {\n    bottom: "layer20-upsample"')])
    result = verify(str(cut))
    assert not [c for c in result.checks if not c.ok]
    assert "layer20-upsample" in {c.name for c in result.blobs}


def test_verify_refuses_a_net_caffe_cannot_run_in_one_line(tmp_path, capsys):
    """verify judges with real Caffe, which registers none of the forks' types: one
    line naming the first such layer, exit 2, nothing written; a fork's field on a BVLC
    type (Fast R-CNN's Dropout scale_train) too, as Caffe would run the layer without it."""
    report = tmp_path / "r.json"
    code, out, err = run_command("verify", str(DATA / "segnet_basic_inference.prototxt"),
                                 "--input-shape", "3,40,48", "--json", str(report),
                                 capsys=capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "cannot run layer 'conv1_bn' (BN, a layer type of the segnet fork)" in err
    assert not report.exists()
    dropout = one_layer(tmp_path, {"x": (2, 5)}, 'layer { name: "d" type: "Dropout" '
                        'bottom: "x" top: "d" dropout_param { dropout_ratio: 0.5 '
                        'scale_train: false } }\n')
    code, out, err = run_command("verify", str(dropout), capsys=capsys)
    assert code == 2 and err.count("\n") == 1
    assert "layer 'd' (Dropout sets a field of a fork's dialect" in err
    upsample = one_layer(tmp_path, {"x": (1, 2, 4, 4)}, 'layer { name: "p" type: "Pooling" '
                         'bottom: "x" top: "p" top: "m" pooling_param { pool: MAX '
                         'kernel_size: 2 stride: 2 } }\nlayer { name: "u" type: "Upsample" '
                         'bottom: "p" bottom: "m" top: "u" upsample_param { scale: 2 } }\n')
    code, out, err = run_command("verify", str(upsample), capsys=capsys)
    assert code == 2 and "layer 'u' (Upsample with SegNet's pooling mask)" in err


def test_region_has_no_emitter_and_says_why(tmp_path):
    path = one_layer(tmp_path, {"x": (1, 125, 13, 13)}, 'layer { name: "region" '
                     'type: "Region" bottom: "x" top: "r" region_param { classes: 20 '
                     'coords: 4 boxes_of_each_grid: 5 softmax: true } }\n')
    with pytest.raises(NetError, match="'region' of type 'Region'.*never initialises"):
        to_module(str(path))
