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
from conftest import fill_caffe_weights, run_command

from pynetbuilder.errors import NetError
from pynetbuilder.pytorch import save_caffemodel, to_module
from pynetbuilder.pytorch.verify import verify
from pynetbuilder.schema import caffe_pb2

cv2 = pytest.importorskip("cv2")

DATA = Path(__file__).parent / "data" / "dialects"
F32 = np.float32


# ---------------------------------------------------------------------------- helpers


def randomize(module, seed: int) -> None:
    """Every parameter blob at random: weights N(0, 1 / fan-in) (so that values stay of
    order 1 through the depth, and softmaxes do not saturate), other blobs N(0, 0.2),
    statistics sane (variances in [0.5, 1.5], BatchNorm's scale factor 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.layer_modules.values():
            for name in layer.blob_names:
                t = getattr(layer, name)
                if name == "variance":
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
                elif name == "scale_factor":
                    t.fill_(1.0)
                elif name == "weight" and t.dim() >= 2:
                    t.copy_(torch.randn(t.shape, generator=gen) / np.sqrt(t[0].numel()))
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


def module_against_opencv(path: Path, folder: Path, inputs: dict[str, np.ndarray],
                          tops: list[str], seed: int, opencv_path: Path | None = None) -> None:
    """The module of ``path`` with random weights (written by save_caffemodel) and
    OpenCV's run of ``opencv_path`` (default: the same file) with those weights agree
    on every one of ``tops``."""
    module = to_module(str(path))
    randomize(module, seed)
    weights = folder / "w.caffemodel"
    save_caffemodel(module, weights)
    ours = run_module(module, inputs)
    theirs = opencv(opencv_path or path, weights, inputs, tops)
    for top in tops:  # OpenCV may keep fully connected outputs 4-d: same values
        assert_close(ours[top].reshape(theirs[top].shape), theirs[top], top)


# -------------------------------------------------------- OpenCV: real-world files


def test_shufflenet_stage2_file_equals_opencv(tmp_path):
    """ShuffleNet 1x g3 (farmingyard/ShuffleNet, through stage 2's second unit): its
    ConvolutionDepthwise layers (one with group written, one without) and its
    ShuffleChannel with group 3, random weights written by save_caffemodel, against
    OpenCV's run of the same file and weights; every layer's own top compared."""
    module_against_opencv(DATA / "shufflenet_1x_g3_deploy_stage2.prototxt", tmp_path,
                          {"data": normal((1, 3, 224, 224), 2)},
                          ["pool1", "resx1_match_conv", "resx1_concat", "shuffle2",
                           "resx2_elewise"], seed=1)


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



def caffe_forward(caffe, text: str, folder: Path, inputs: dict[str, np.ndarray], seed: int):
    """Real Caffe on ``text`` with random weights: its blobs and parameter blobs."""
    path = folder / "caffe.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    fill_caffe_weights(net, seed, std=None)
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
    assert "cannot run layer 'conv1_bn' (BN, a layer type of the segnet/pspnet fork)" in err
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


# ------------------------------------------------- NumPy transcriptions of the C++


def segnet_bn_reference(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, learn: bool
                        ) -> np.ndarray:
    """A transcription of alexgkendall/caffe-segnet src/caffe/layers/bn_layer.cpp,
    BNLayer<float>::Forward_cpu: LEARN takes E(X) and E(X^2) over H x W per (n, c),
    then over N, the variance E(X^2) - E(X)^2, var_eps_ 1e-9; INFERENCE only scales
    and shifts."""
    num, channels = x.shape[:2]
    top = np.empty_like(x)
    for c in range(channels):
        if learn:
            spatial_mean = [F32(x[n, c].sum(dtype=F32) / F32(x[n, c].size)) for n in range(num)]
            spatial_sq = [F32((x[n, c] * x[n, c]).sum(dtype=F32) / F32(x[n, c].size))
                          for n in range(num)]
            mean = F32(sum(spatial_mean, F32(0)) / F32(num))
            variance = F32(sum(spatial_sq, F32(0)) / F32(num)) - mean * mean
            std = np.sqrt(F32(variance + F32(1e-9)))
        for n in range(num):
            value = x[n, c]
            if learn:
                value = (value - mean) / std
            top[n, c] = value * scale[0, c, 0, 0] + shift[0, c, 0, 0]
    return top


@pytest.mark.parametrize("mode", ["LEARN", "INFERENCE"])
@pytest.mark.parametrize("phase", ["train", "test"])
def test_segnet_bn_equals_the_segnet_loops(tmp_path, mode, phase):
    """SegNet's BN computes the batch's statistics in LEARN mode in every phase (the
    layer does not look at the phase), and only scales and shifts in INFERENCE."""
    path = one_layer(tmp_path, {"x": (3, 4, 5, 6)}, 'layer { name: "bn" type: "BN" '
                     f'bottom: "x" top: "x" bn_param {{ bn_mode: {mode} }} }}\n')
    module = to_module(str(path), phase=phase)
    randomize(module, 13)
    x = normal((3, 4, 5, 6), 14) * 2 + 1
    ours = run_module(module, {"x": x})["x"]
    scale, shift = blobs_of(module)["bn"]
    assert_close(ours, segnet_bn_reference(x, scale, shift, mode == "LEARN"), mode)


def pspnet_bn_reference(x: np.ndarray, blobs: list[np.ndarray], eps: float, momentum: float,
                        use_moving: bool, update: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """A transcription of hszhao/PSPNet src/caffe/layers/bn_layer.cpp (c479f4f),
    BNLayer<float>::Forward_cpu: the moving mean and variance (blobs 2, 3) in TEST or
    when frozen; else the batch's mean over H x W then N, subtracted, the mean of the
    squares likewise, each folded into its moving blob as (1 - m) * batch + m * blob;
    then times (var + eps)^-1/2, times the slope, plus the bias.  Returns the top and
    the blobs after the forward pass."""
    slope, bias, mean_blob, var_blob = (b.reshape(-1).copy() for b in blobs)
    num, channels = x.shape[:2]
    m, keep = F32(momentum), F32(1) - F32(momentum)
    top = np.empty_like(x)
    for c in range(channels):
        if use_moving:
            mean = mean_blob[c]
        else:
            mean = F32(sum((F32(x[n, c].sum(dtype=F32) / F32(x[n, c].size))
                            for n in range(num)), F32(0)) / F32(num))
            if update:
                mean_blob[c] = keep * mean + m * mean_blob[c]
        centred = [x[n, c] - mean for n in range(num)]
        if use_moving:
            variance = var_blob[c]
        else:
            variance = F32(sum((F32((d * d).sum(dtype=F32) / F32(d.size)) for d in centred),
                               F32(0)) / F32(num))
            var_blob[c] = keep * variance + m * var_blob[c]
        inv_std = F32(variance + F32(eps)) ** F32(-0.5)
        for n in range(num):
            top[n, c] = centred[n] * inv_std * slope[c] + bias[c]
    shape = blobs[0].shape
    return top, [b.reshape(shape) for b in (slope, bias, mean_blob, var_blob)]


@pytest.mark.parametrize("phase,frozen", [("test", False), ("train", False), ("train", True)])
def test_pspnet_bn_equals_the_pspnet_loops(tmp_path, phase, frozen):
    """PSPNet's BN (this build's BNParameter: momentum 0.9, eps 1e-5 by default; here
    0.8 and 1e-3): moving statistics in TEST and when frozen, the batch's otherwise,
    and the moving blobs updated in TRAIN unless frozen."""
    path = one_layer(tmp_path, {"x": (2, 3, 4, 5)}, 'layer { name: "bn" type: "BN" '
                     'bottom: "x" top: "y" bn_param { momentum: 0.8 eps: 0.001 '
                     f'frozen: {str(frozen).lower()} }} }}\n')
    module = to_module(str(path), phase=phase)
    randomize(module, 15)
    before = blobs_of(module)["bn"]
    x = normal((2, 3, 4, 5), 16) * 3 - 1
    ours = run_module(module, {"x": x})["y"]
    top, after = pspnet_bn_reference(x, before, 1e-3, 0.8, use_moving=frozen or phase == "test",
                                     update=phase == "train" and not frozen)
    assert_close(ours, top, "top")
    for got, expected in zip(blobs_of(module)["bn"], after):
        assert_close(got, expected, "blob after the forward pass")
    assert np.array_equal(after[2], before[2]) == (frozen or phase == "test")


def interp_reference(x: np.ndarray, height: int, width: int, pad_beg: int, pad_end: int
                     ) -> np.ndarray:
    """A transcription of DeepLab-v2's / PSPNet's interp_layer.cpp (Forward_cpu passes
    the crop -pad_beg, -pad_beg, H + pad_beg + pad_end, W + pad_beg + pad_end) and
    src/caffe/util/interp.cpp, caffe_cpu_interp2<float, false>."""
    num, channels, big_h, big_w = x.shape
    h1, w1 = big_h + pad_beg + pad_end, big_w + pad_beg + pad_end
    y1 = x1 = -pad_beg
    data = x.reshape(num * channels, big_h, big_w)
    out = np.empty((num * channels, height, width), F32)
    if (h1, w1) == (height, width):
        return x[:, :, y1:y1 + h1, x1:x1 + w1].copy()
    rheight = F32(h1 - 1) / F32(height - 1) if height > 1 else F32(0)
    rwidth = F32(w1 - 1) / F32(width - 1) if width > 1 else F32(0)

    def source(ratio: np.float32, i: int, size: int) -> tuple[int, int, np.float32, np.float32]:
        """h1 = int(h1r), h1p, h0lambda, h1lambda of output row i (likewise columns)."""
        position = F32(ratio * F32(i))
        index = int(position)
        far = F32(position - F32(index))
        return index, 1 if index < size - 1 else 0, F32(1) - far, far

    for h2 in range(height):
        hi, h1p, h0lambda, h1lambda = source(rheight, h2, h1)
        for w2 in range(width):
            wi, w1p, w0lambda, w1lambda = source(rwidth, w2, w1)
            for c in range(num * channels):
                p = data[c, y1 + hi:, x1 + wi:]
                out[c, h2, w2] = (h0lambda * (w0lambda * p[0, 0] + w1lambda * p[0, w1p])
                                  + h1lambda * (w0lambda * p[h1p, 0] + w1lambda * p[h1p, w1p]))
    return out.reshape(num, channels, height, width)


@pytest.mark.parametrize("setting,out_hw", [
    ("height: 9 width: 7 pad_beg: -1 pad_end: -2", (9, 7)),  # crop 8x9 -> 5x6, then up
    ("shrink_factor: 2", (4, 5)),  # (8 - 1) / 2 + 1, (9 - 1) / 2 + 1
    ("shrink_factor: 3 zoom_factor: 2", (5, 5)),  # 3 x 3, then 3 + 2 * 1
    ("zoom_factor: 2 pad_beg: -1 pad_end: -1", (11, 13)),  # 6x7 -> 6 + 5, 7 + 6
    ("shrink_factor: 1 pad_beg: -2", (6, 7))])  # a crop only: the same size, copied
def test_interp_crop_and_shrink_equal_the_interp_loops(tmp_path, setting, out_hw):
    """Interp's settings OpenCV does not take (pad_beg / pad_end crop, shrink_factor)."""
    path = one_layer(tmp_path, {"data": (2, 3, 8, 9)}, 'layer { name: "i" type: "Interp" '
                     f'bottom: "data" top: "i" interp_param {{ {setting} }} }}\n')
    x = normal((2, 3, 8, 9), 17)
    ours = run_module(to_module(str(path)), {"data": x})["i"]
    beg = int(re.search(r"pad_beg: (-\d)", setting).group(1)) if "pad_beg" in setting else 0
    end = int(re.search(r"pad_end: (-\d)", setting).group(1)) if "pad_end" in setting else 0
    assert ours.shape[2:] == out_hw
    assert_close(ours, interp_reference(x, *out_hw, beg, end), setting)


def reorg_reference(x: np.ndarray, stride: int, reverse: bool) -> np.ndarray:
    """A transcription of the YOLOv2 ports' reorg_layer.hpp ``reorg_cpu(bottom_data,
    b_w, b_h, b_c, b_n, stride, forward, top_data)`` as ``Forward_cpu`` calls it
    (``forward`` = ``reverse``)."""
    b_n, b_c, b_h, b_w = x.shape
    t_c, t_w, t_h = b_c // (stride * stride), b_w * stride, b_h * stride
    bottom = x.reshape(-1)
    top = np.empty_like(bottom)
    for n in range(b_n):
        for c in range(b_c):
            for h in range(b_h):
                for w in range(b_w):
                    bottom_index = w + b_w * (h + b_h * (c + b_c * n))
                    c2 = c % t_c
                    offset = c // t_c
                    w2 = w * stride + offset % stride
                    h2 = h * stride + offset // stride
                    top_index = w2 + t_w * (h2 + t_h * (c2 + t_c * n))
                    if reverse:
                        top[top_index] = bottom[bottom_index]
                    else:
                        top[bottom_index] = bottom[top_index]
    if reverse:
        return top.reshape(b_n, t_c, t_h, t_w)
    return top.reshape(b_n, b_c * stride * stride, b_h // stride, b_w // stride)


@pytest.mark.parametrize("stride,reverse,shape", [(3, False, (2, 18, 6, 9)),
                                                  (2, True, (1, 8, 3, 5)),
                                                  (2, False, (1, 4, 4, 6))])
def test_reorg_equals_the_ports_loops(tmp_path, stride, reverse, shape):
    path = one_layer(tmp_path, {"data": shape}, 'layer { name: "r" type: "Reorg" '
                     f'bottom: "data" top: "r" reorg_param {{ stride: {stride} '
                     f'reverse: {str(reverse).lower()} }} }}\n')
    x = normal(shape, 18)
    ours = run_module(to_module(str(path)), {"data": x})["r"]
    assert np.array_equal(ours, reorg_reference(x, stride, reverse))


def axpy_reference(a: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A transcription of hujie-frank/SENet src/caffe/layers/axpy_layer.cpp,
    AxpyLayer<float>::Forward_cpu: top = y, then per (n, c) caffe_axpy of x's plane
    with a[n * C + c]."""
    top = y.copy().reshape(-1)
    num, channels = x.shape[:2]
    spatial = x[0, 0].size
    scale, data = a.reshape(-1), x.reshape(-1)
    for n in range(num):
        for c in range(channels):
            offset = n * channels + c
            plane = slice(offset * spatial, (offset + 1) * spatial)
            top[plane] = scale[offset] * data[plane] + top[plane]
    return top.reshape(x.shape)


def test_axpy_equals_the_senet_loops(tmp_path):
    path = one_layer(tmp_path, {"a": (2, 3, 1, 1), "x": (2, 3, 4, 5), "y": (2, 3, 4, 5)},
                     'layer { name: "s" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" '
                     'top: "s" }\n')
    a, x, y = normal((2, 3, 1, 1), 19), normal((2, 3, 4, 5), 20), normal((2, 3, 4, 5), 21)
    ours = run_module(to_module(str(path)), {"a": a, "x": x, "y": y})["s"]
    assert_close(ours, axpy_reference(a, x, y), "axpy")


def test_opencv_computes_axpy_with_x_and_y_swapped(tmp_path):
    """Why OpenCV is no judge of Axpy: OpenCV 4.13's importer rewrites Axpy as Scale of
    its third bottom by the first, plus the second (``a * y + x``), not SENet's ``a * x +
    y``; and it refuses a batch of more than one."""
    path = one_layer(tmp_path, {"a": (1, 3, 1, 1), "x": (1, 3, 4, 5), "y": (1, 3, 4, 5)},
                     'layer { name: "s" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" '
                     'top: "s" }\n')
    a, x, y = normal((1, 3, 1, 1), 22), normal((1, 3, 4, 5), 23), normal((1, 3, 4, 5), 24)
    theirs = opencv(path, None, {"a": a, "x": x, "y": y}, ["s"])["s"]
    assert np.allclose(theirs, a * y + x) and not np.allclose(theirs, a * x + y)


def test_fast_rcnn_dropout_scale_train_false(tmp_path):
    """Fast R-CNN's Dropout with scale_train: false (caffe-fast-rcnn dropout_layer.cpp,
    Forward_cpu): TRAIN keeps or drops without scaling; TEST multiplies by 1 / scale_,
    scale_ = 1 / (1 - ratio) held as a float (here 1 - 0.3, as float32 arithmetic
    gives it)."""
    path = one_layer(tmp_path, {"x": (4, 50)}, 'layer { name: "d" type: "Dropout" '
                     'bottom: "x" top: "x" dropout_param { dropout_ratio: 0.3 '
                     'scale_train: false } }\n')
    x = normal((4, 50), 25)
    scale_ = F32(1.0 / (1.0 - F32(0.3)))
    expected = x * F32(1.0 / np.float64(scale_))  # caffe_scal<float>(count, 1. / scale_)
    assert np.array_equal(run_module(to_module(str(path)), {"x": x})["x"], expected)
    train = run_module(to_module(str(path), phase="train"), {"x": x})["x"]
    kept = train != 0
    assert np.array_equal(train[kept], x[kept]) and 0 < kept.mean() < 1


# -------------------------------------------- more real-world files, OpenCV the judge


def test_yolov2_passthrough_file_equals_opencv(tmp_path):
    """YOLOv2's passthrough branch (eric612/Caffe-YOLOv3-Windows) up to conv22, the
    output the port's YoloDetectionOutput reads (no known dialect's layer, cut off):
    Reorg with darknet's index order, Concat, leaky ReLUs, random weights; OpenCV runs
    the same text and weights."""
    text = (DATA / "yolov2_voc_passthrough.prototxt").read_text()
    cut = tmp_path / "yolov2.prototxt"
    cut.write_text(text[:text.index('layer {\n  name: "detection_out"')])
    module_against_opencv(cut, tmp_path, {"conv13": normal((1, 512, 26, 26), 27)},
                          ["reorg1", "concat2", "conv22"], seed=26)


def test_pspnet_pyramid_pooling_file_equals_opencv(tmp_path):
    """PSPNet-50's pyramid pooling module (hszhao/PSPNet) up to the concat (conv5_4, a
    68-GMAC 3x3 convolution at 60 x 60, left out): four AVE poolings, 1x1 convolutions,
    PSPNet's frozen BN and Interp back to 60 x 60 (height/width).  OpenCV has no BN: its
    text says BatchNorm (use_global_stats, BN's eps) + Scale with bias, which computes
    frozen BN's ``(x - mean) / sqrt(var + eps) * slope + bias``, with the same blobs."""
    from pynetbuilder.inspect import read_prototxt

    path = DATA / "pspnet50_ade20k_ppm.prototxt"
    text = path.read_text()
    cut = tmp_path / "pyramid.prototxt"
    cut.write_text(text[:text.index('layer {\n  name: "conv5_4"\n')])
    module = to_module(str(cut))
    randomize(module, 28)
    weights = blobs_of(module)
    eps = {la.name: la.bn_param.eps for la in read_prototxt(cut).layer if la.type == "BN"}
    assert len(eps) == 4

    def batch_norm_and_scale(m: re.Match) -> str:
        name, bottom, top = m.groups()
        slope, bias, mean, var = (b.reshape(-1) for b in weights.pop(name))
        weights[name] = [mean, var, np.ones(1, np.float32)]
        weights[name + "/scale"] = [slope, bias]
        assert "frozen: true" in m.group(0)
        return (f'layer {{ name: "{name}" type: "BatchNorm" bottom: "{bottom}" top: "{top}" '
                f'batch_norm_param {{ use_global_stats: true eps: {eps[name]!r} }} }}\n'
                f'layer {{ name: "{name}/scale" type: "Scale" bottom: "{top}" top: "{top}" '
                'scale_param { bias_term: true } }\n')

    bn = re.compile(r'layer \{\n  name: "([^"]+)"\n  type: "BN"\n  bottom: "([^"]+)"\n'
                    r'  top: "([^"]+)"\n.*?\n\}\n', re.S)
    opencv_text = tmp_path / "opencv.prototxt"
    opencv_text.write_text(bn.sub(batch_norm_and_scale, cut.read_text()))
    caffemodel = write_caffemodel(tmp_path / "w.caffemodel", weights)
    x = normal((1, 2048, 60, 60), 29)
    ours = run_module(module, {"conv5_3": x})
    tops = [f"conv5_3_pool{b}_interp" for b in (1, 2, 3, 6)] + ["conv5_3_concat"]
    theirs = opencv(opencv_text, caffemodel, {"conv5_3": x}, tops)
    for top in tops:
        assert_close(ours[top], theirs[top], top)


def test_faster_rcnn_zf_head_with_given_rois_equals_opencv(tmp_path):
    """py-faster-rcnn's ZF test net with its Python proposal layer replaced by an input
    of 8 rois (the layer is Python, analysed by nobody): ROIPooling 6 x 6 at 1/16 on
    conv5 and the fully connected head (im_info, read by the proposal layer alone, goes
    too).  Its Dropout layers set Fast R-CNN's
    scale_train: false, so in TEST they multiply by 1 - 0.5 (dropout_layer.cpp), as
    OpenCV's importer does too (test_targets_judges.py pins it on one layer)."""
    text = (DATA / "faster_rcnn_zf_test.prototxt").read_text()
    proposal = re.search(r"layer \{\s*name: 'proposal'.*?\n\}\n", text, re.S)
    rois = np.array([[0, 0, 0, 223, 223], [0, 16, 32, 100, 90], [0, 50.5, 7.9, 60, 200],
                     [0, 180, 170, 260, 300], [0, 8, 8, 8, 8], [0, 100, 100, 40, 40],
                     [0, -20, -20, 30, 30], [0, 31.9, 64.1, 190.3, 127.5]], np.float32)
    text = text[:proposal.start()] + text[proposal.end():]
    im_info = 'input: "im_info"\ninput_shape {\n  dim: 1\n  dim: 3\n}\n'  # read by it alone
    assert im_info in text
    text = text.replace(im_info, 'input: "rois"\ninput_shape { dim: 8 dim: 5 }\n')
    assert text.count("scale_train: false") == 2
    ours_path = tmp_path / "zf.prototxt"
    ours_path.write_text(text)
    module_against_opencv(ours_path, tmp_path, {"data": normal((1, 3, 224, 224), 31),
                                                "rois": rois},
                          ["rpn_cls_prob_reshape", "rpn_bbox_pred", "roi_pool_conv5", "fc7",
                           "cls_prob", "bbox_pred"], seed=30)


def test_interp_to_the_size_of_a_second_input_equals_the_interp_loops(tmp_path):
    """Interp with no size setting takes its second input's height and width
    (interp_layer.cpp, Reshape); only the first input's values are read."""
    path = one_layer(tmp_path, {"data": (2, 3, 8, 9), "ref": (2, 1, 5, 13)},
                     'layer { name: "i" type: "Interp" bottom: "data" bottom: "ref" '
                     'top: "i" }\n')
    x = normal((2, 3, 8, 9), 32)
    ours = run_module(to_module(str(path)), {"data": x, "ref": normal((2, 1, 5, 13), 33)})
    assert_close(ours["i"], interp_reference(x, 5, 13, 0, 0), "size of ref")


def test_fork_nets_export_to_onnx_with_the_same_outputs(tmp_path):
    """The forks' emitters stay exportable: SegNet-Basic (masks, unpooling by
    scatter), ROIPooling (its bins as masks, C's rounding without trunc) and a cropping
    Interp through ``export --to onnx`` and onnxruntime give the module's outputs."""
    ort = pytest.importorskip("onnxruntime")
    from pynetbuilder.pytorch.export import export_bytes

    roi = one_layer(tmp_path, {"data": (2, 3, 10, 12), "rois": ROIS.shape},
                    'layer { name: "p" type: "ROIPooling" bottom: "data" bottom: "rois" '
                    'top: "p" roi_pooling_param { pooled_h: 3 pooled_w: 2 '
                    'spatial_scale: 0.5 } }\n', name="roi.prototxt")
    interp = one_layer(tmp_path, {"data": (1, 2, 8, 9)}, 'layer { name: "i" type: "Interp" '
                       'bottom: "data" top: "i" interp_param { zoom_factor: 2 pad_beg: -1 '
                       'pad_end: -1 } }\n', name="interp.prototxt")
    for path, shape in ((DATA / "segnet_basic_inference.prototxt", (3, 40, 48)),
                        (roi, None), (interp, None)):
        module = to_module(str(path), input_shape=shape)
        randomize(module, 34)
        inputs = {n: normal(module.blob_shapes[n], 35) for n in module.inputs}
        if "rois" in inputs:
            inputs["rois"] = ROIS
        session = ort.InferenceSession(export_bytes(module, "onnx"))
        got = session.run(None, {i.name: inputs[n] for i, n in zip(session.get_inputs(),
                                                                    module.inputs)})
        ours = run_module(module, inputs)
        for name, value in zip(module.outputs, got):
            assert_close(value, ours[name], f"{path.name}: {name}")
