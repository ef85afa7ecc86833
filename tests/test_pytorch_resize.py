"""This build's resampling extras in the PyTorch backend (pynetbuilder/pytorch/
emit_resize.py): PixelShuffle, Resize, BilinearInterpolate and Unsqueeze, each run by
real Caffe (the pinned brocolli-caffe build) and by the module on a grid of settings,
every blob compared by verify (1e-4 of Caffe's largest magnitude; measured: equal to
the last bit), Resize's gradient too; their shapes asked of Caffe; and R-FCN's
PSROIPooling, which this build registers without a CPU forward, against a NumPy
transcription of R-FCN's CUDA kernels.  ONNX exports run in onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import caffe_net, run_command
from test_pytorch_layers import check, layer, net_text

from pynetbuilder.errors import NetError, UsageError
from pynetbuilder.kinds import KINDS, Category
from pynetbuilder.pytorch import to_module
from pynetbuilder.pytorch.adapter import analysed
from pynetbuilder.pytorch.caffe_oracle import CaffeError, caffe_ready, run_caffe
from pynetbuilder.pytorch.verify import verify

F32 = np.float32
PHASES = ("train", "test")
SIZES = {"x": (2, 4, 10, 7), "odd": (1, 3, 5, 9), "flat": (2, 3)}
SCALES = (0.35, 0.5, 0.7, 1.5, 2.3)


def pixel_shuffle_layers() -> tuple[list[str], dict[str, tuple[int, ...]]]:
    """Factors 1, 2, 3; channels a multiple of r^2, and of r only (Caffe's check: the
    channels past (C / r^2) r^2 are never read)."""
    inputs = {"c12": (2, 12, 3, 5), "c18": (1, 18, 4, 3), "c6": (2, 6, 5, 4)}
    cases = [("c12", 1), ("c12", 2), ("c18", 3), ("c6", 2), ("c12", 3), ("c18", 2)]
    return [layer(f"ps{i}", "PixelShuffle", src, params=(
        f"pixelshuffle_param {{ upscale_factor: {r} }}")) for i, (src, r) in enumerate(cases)
    ], inputs


def resize_layers() -> list[str]:
    """To sizes up (not multiples), down, the same, one up and one down, 1 x 1; by
    scale factors (pyramid mode) up and down; on a 2-axis blob (read as N x C x 1 x 1)."""
    sizes = [(23, 17), (4, 3), (10, 7), (3, 15), (1, 1), (19, 2)]
    layers = [layer(f"r{i}", "Resize", "x", params=f"resize_param {{ height: {h} width: {w} }}")
              for i, (h, w) in enumerate(sizes)]
    layers += [layer(f"r_odd{i}", "Resize", "odd", params=(
        f"resize_param {{ height: {h} width: {w} }}"))
        for i, (h, w) in enumerate([(8, 4), (2, 13)])]
    for i, (sh, sw) in enumerate(zip(SCALES, reversed(SCALES))):
        layers.append(layer(f"r_scale{i}", "Resize", "odd", params=(
            f"resize_param {{ is_pyramid_test: true out_height_scale: {sh} "
            f"out_width_scale: {sw} }}")))
    layers.append(layer("r_flat", "Resize", "flat", params="resize_param { height: 3 width: 2 }"))
    return layers


def bilinear_layers() -> list[str]:
    """align_corners true and false, to sizes up, down, the same, mixed; only dst_h (the
    width kept); by scale_factor up and down (truncated: 0.7 x 10 is 7)."""
    layers = []
    for align in ("true", "false"):
        for i, (h, w) in enumerate([(23, 17), (4, 3), (10, 7), (3, 15), (19, 2)]):
            layers.append(layer(f"b_{align}{i}", "BilinearInterpolate", "x", params=(
                f"bilinear_interpolate_param {{ dst_h: {h} dst_w: {w} align_corners: "
                f"{align} }}")))
        layers.append(layer(f"b_{align}_h", "BilinearInterpolate", "odd", params=(
            f"bilinear_interpolate_param {{ dst_h: 12 align_corners: {align} }}")))
        for i, s in enumerate(SCALES):
            layers.append(layer(f"b_{align}_s{i}", "BilinearInterpolate", "x", params=(
                f"bilinear_interpolate_param {{ scale_factor: {s} align_corners: {align} }}")))
    return layers


def unsqueeze_layers() -> list[str]:
    """Every place in a 4-axis blob, counted from either end, and in a 2-axis one."""
    dims = [("x", d) for d in (0, 2, 4, -1, -3, -5)] + [("flat", 1), ("flat", -1)]
    return [layer(f"u{i}", "Unsqueeze", src, params=f"unsqueeze_param {{ dim: {d} }}")
            for i, (src, d) in enumerate(dims)]


def grid_text() -> str:
    shuffles, inputs = pixel_shuffle_layers()
    layers = shuffles + resize_layers() + bilinear_layers() + unsqueeze_layers()
    return net_text({**SIZES, **inputs}, layers)


@pytest.mark.parametrize("phase", PHASES)
def test_resampling_grid_equals_real_caffe(tmp_path, phase):
    """Every blob of the four types' grid, as real Caffe computes it (TRAIN and TEST:
    none of them depends on the phase)."""
    path = tmp_path / "grid.prototxt"
    path.write_text(grid_text())
    result = verify(str(path), phase=phase)
    a = analysed(str(path))
    assert {c.name for c in result.blobs} == set(a.shapes)
    assert result.ok, result.first_failure
    assert max(c.max_diff for c in result.blobs) == 0.0  # the same floats, in the same order


def test_resampling_shapes_equal_real_caffe(caffe, tmp_path):
    """The registry's rules against the shapes real Caffe allocates: the grid, and the
    truncated products of many sizes and scale factors (C++ multiplies an int by a
    float in float32: 10 x 0.7f is 7.0f, not 6.99...)."""
    from conftest import assert_report_matches_caffe

    from pynetbuilder.inspect import read_prototxt
    from pynetbuilder.report import analyze

    layers, inputs = [], {}
    for size in range(10, 30):  # at least 1 after the smallest scale
        inputs[f"in{size}"] = (1, 1, size, 39 - size)
        for j, s in enumerate((0.1, 0.3, 0.35, 0.7, 0.9, 1.1, 1.3, 1.7, 2.3, 2.9)):
            layers.append(layer(f"r{size}_{j}", "Resize", f"in{size}", params=(
                f"resize_param {{ is_pyramid_test: true out_height_scale: {s} "
                f"out_width_scale: {s} }}")))
            layers.append(layer(f"b{size}_{j}", "BilinearInterpolate", f"in{size}", params=(
                f"bilinear_interpolate_param {{ scale_factor: {s} }}")))
    for text, name in ((net_text(inputs, layers), "scales.prototxt"),
                       (grid_text(), "grid.prototxt")):
        path = tmp_path / name
        path.write_text(text)
        report = analyze(read_prototxt(path))
        assert_report_matches_caffe(report, caffe_net(caffe, text, "test", tmp_path, name))
    shapes = analyze(read_prototxt(tmp_path / "scales.prototxt")).blob_shapes
    assert shapes["r10_3"][2] == shapes["b10_3"][2] == 7  # 10 x 0.7f


def test_resize_gradients_equal_real_caffe(tmp_path):
    """Resize's Backward (resize_layer.cpp: the forward's weights added into the input's
    gradient), through a convolution before it and a second Resize after it; the other
    three types (empty Backward in Caffe) end the net and are left out of the run."""
    layers = [layer("conv", "Convolution", "x", params="convolution_param { num_output: 3 "
                    "kernel_size: 3 pad: 1 }")]
    layers += [layer(f"r{i}", "Resize", "conv", params=f"resize_param {{ height: {h} width: {w} }}")
               for i, (h, w) in enumerate([(23, 17), (4, 3), (10, 7), (3, 15), (1, 1)])]
    layers += [layer("r_scale", "Resize", "conv", params="resize_param { is_pyramid_test: true "
                     "out_height_scale: 0.7 out_width_scale: 2.3 }"),
               layer("r_back", "Resize", "r0", params="resize_param { height: 6 width: 8 }"),
               layer("ps", "PixelShuffle", "c12",
                     params="pixelshuffle_param { upscale_factor: 2 }"),
               layer("b", "BilinearInterpolate", "conv", params="bilinear_interpolate_param { "
                     "dst_h: 5 dst_w: 9 }"),
               layer("u", "Unsqueeze", "conv", params="unsqueeze_param { dim: 1 }")]
    text = net_text({"x": (2, 4, 10, 7), "c12": (2, 12, 3, 5)}, layers)
    for phase in PHASES:
        path = tmp_path / f"{phase}.prototxt"
        path.write_text(text)
        result = verify(str(path), phase=phase, gradients=True)
        assert {"d x", "d conv[0]", "d conv[1]"} <= {c.name for c in result.gradients}
        assert result.ok, result.first_failure


def caffe_input_gradient(caffe, tmp_path, body: str, shape: tuple[int, ...]) -> np.ndarray:
    """Real Caffe's gradient of the input after one backward pass of a one-layer net
    (random input and top gradient)."""
    text = "force_backward: true\n" + net_text({"x": shape}, [body])
    net = caffe_net(caffe, text, "train", tmp_path)
    rng = np.random.default_rng(7)
    net.blobs["x"].data[...] = rng.standard_normal(shape)
    net.forward()
    top = net.blobs["t"]
    top.diff[...] = rng.standard_normal(top.diff.shape)
    net.backward()
    return net.blobs["x"].diff.copy()


@pytest.mark.parametrize(("kind", "params"), [
    ("PixelShuffle", "pixelshuffle_param { upscale_factor: 2 }"),
    ("BilinearInterpolate", "bilinear_interpolate_param { dst_h: 5 dst_w: 9 }"),
    ("Unsqueeze", "unsqueeze_param { dim: 1 }"),
    ("Resize", "resize_param { height: 5 width: 9 }"),
    ("HardSwish", ""),
    ("HardSigmoid", ""),
    ("Pad", "pad_param { pad_u: 1 pad_d: 2 pad_l: 0 pad_r: 3 }"),
    ("MaxUnPool", "max_unpool_param { dst_h: 4 dst_w: 6 }"),
    ("ReLU6", ""),
])
def test_no_backward_category_is_caffes(caffe, tmp_path, kind, params):
    """Caffe's Backward of PixelShuffle, BilinearInterpolate, Unsqueeze, HardSwish,
    HardSigmoid, Pad and MaxUnPool is an empty body in this build (the input's gradient
    is left as it was: zero), so the registry marks them NO_BACKWARD; Resize's and
    ReLU6's compute one.  MaxUnPool reads a MAX pooling's values and mask."""
    body = layer("t", kind, "x", params=params)
    if kind == "MaxUnPool":
        body = (layer("p", "Pooling", "x", ["p", "m"], "pooling_param { pool: MAX "
                      "kernel_size: 2 stride: 2 }") + "\n"
                + layer("t", kind, ["p", "m"], params=params))
    gradient = caffe_input_gradient(caffe, tmp_path, body, (2, 8, 4, 6))
    assert KINDS[kind].is_a(Category.NO_BACKWARD) == (not gradient.any())
    assert KINDS[kind].is_a(Category.NO_BACKWARD) == (kind not in ("Resize", "ReLU6"))


def test_gradients_past_a_layer_without_backward_are_refused(tmp_path):
    layers = [layer("ps", "PixelShuffle", "x", params="pixelshuffle_param { upscale_factor: 2 }"),
              layer("conv", "Convolution", "ps", params="convolution_param { num_output: 2 "
                    "kernel_size: 1 }")]
    path = tmp_path / "net.prototxt"
    path.write_text(net_text({"x": (1, 8, 3, 3)}, layers))
    with pytest.raises(UsageError, match="layer 'ps' \\(PixelShuffle\\) has no backward pass"):
        verify(str(path), gradients=True)
    check(tmp_path, path.read_text(), "test")  # the forward is still compared


def test_bilinear_align_corners_to_size_one_is_refused_in_one_line(caffe, tmp_path, capsys):
    """align_corners with an output of height or width 1 divides by zero in Caffe
    ((src - 1) / (dst - 1)): its whole output is NaN.  The module refuses the layer."""
    body = layer("t", "BilinearInterpolate", "x", params="bilinear_interpolate_param { "
                 "dst_h: 1 dst_w: 4 }")
    text = net_text({"x": (1, 2, 5, 6)}, [body])
    net = caffe_net(caffe, text, "test", tmp_path)
    net.blobs["x"].data[...] = 1.0
    net.forward()
    assert np.isnan(net.blobs["t"].data).all()
    for command in (("verify",), ("export", "--to", "onnx", "-o", str(tmp_path / "b.onnx"))):
        code, out, err = run_command(command[0], str(tmp_path / "net.prototxt"), *command[1:],
                                     capsys=capsys)
        assert code != 0
        assert err.count("\n") == 1 and err.startswith("pynetbuilder: error: "), err
        assert "BilinearInterpolate layer 't': align_corners with an output of size 1 x 4" in err


def test_missing_sizes_are_refused_as_caffe_does(tmp_path):
    """Resize without height and width (not pyramid mode), or in pyramid mode without
    both scales: Caffe's set-up aborts on its CHECK; the analysis refuses in one line."""
    for params, caffe_says, ours in [
        ("resize_param { height: 4 }", "output width is required", "needs height and width"),
        ("resize_param { is_pyramid_test: true out_height_scale: 2 }",
         "output width scale is required", "needs out_height_scale and out_width_scale"),
    ]:
        text = net_text({"x": (1, 2, 5, 6)}, [layer("t", "Resize", "x", params=params)])
        path = tmp_path / "net.prototxt"
        path.write_text(text)
        with pytest.raises(NetError, match=ours):
            analysed(str(path))
        from google.protobuf import text_format

        from pynetbuilder.schema import caffe_pb2

        net = text_format.Parse(text, caffe_pb2.NetParameter())
        with pytest.raises(CaffeError, match=caffe_says):
            run_caffe(net, "deploy", {"x": np.zeros((1, 2, 5, 6), F32)})


def test_onnx_in_onnxruntime_gives_caffes_blobs(tmp_path, capsys):
    """``pynetbuilder export --to onnx`` of the grid: every output of the ONNX graph in
    onnxruntime equals real Caffe's blob, shape and values (gathers with constant
    indices, DepthToSpace, reshapes)."""
    path = tmp_path / "grid.prototxt"
    path.write_text(grid_text())
    a = analysed(str(path))
    rng = np.random.default_rng(3)
    inputs = {n: rng.standard_normal(a.shapes[n]).astype(F32) for n in a.net.input}
    inputs |= {la.top[0]: rng.standard_normal(a.shapes[la.top[0]]).astype(F32)
               for la in a.net.layer if la.type == "Input"}
    run = run_caffe(caffe_ready(a.net, a.shapes, 0), "deploy", inputs)
    code, out, err = run_command("export", str(path), "--to", "onnx", "-o",
                                 str(tmp_path / "grid.onnx"), capsys=capsys)
    assert code == 0, err
    session = ort.InferenceSession(str(tmp_path / "grid.onnx"))
    feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    assert len(names) == sum(la.type != "Input" for la in a.net.layer)
    for name, value in zip(names, session.run(None, feeds)):
        assert value.shape == run.blobs[name].shape, name
        diff = np.abs(value.astype(np.float64) - run.blobs[name]).max(initial=0.0)
        assert diff <= 1e-6 * np.abs(run.blobs[name]).max(initial=0.0), (name, diff)


# ------------------------------------------------------------------------ PSROIPooling


def c_round(v: np.float32) -> np.float32:
    """CUDA's round() of a float: halves away from zero."""
    return F32(np.sign(v) * np.floor(np.abs(np.float64(v)) + 0.5))


def psroi_bins(roi: np.ndarray, scale: np.float32, group: int, height: int, width: int):
    """The bins of one roi, (hstart, hend, wstart, wend) by (ph, pw), as
    ``PSROIPoolingForward`` and ``PSROIPoolingBackwardAtomic`` compute them."""
    start_w = c_round(roi[1]) * scale
    start_h = c_round(roi[2]) * scale
    end_w = F32(np.float64(c_round(roi[3])) + 1.0) * scale
    end_h = F32(np.float64(c_round(roi[4])) + 1.0) * scale
    roi_w = F32(max(np.float64(end_w - start_w), 0.1))  # max(Dtype, double): in double
    roi_h = F32(max(np.float64(end_h - start_h), 0.1))
    bin_h, bin_w = roi_h / F32(group), roi_w / F32(group)
    bins = {}
    for ph in range(group):
        for pw in range(group):
            hstart = int(np.floor(F32(ph) * bin_h + start_h))
            wstart = int(np.floor(F32(pw) * bin_w + start_w))
            hend = int(np.ceil(F32(ph + 1) * bin_h + start_h))
            wend = int(np.ceil(F32(pw + 1) * bin_w + start_w))
            bins[ph, pw] = (min(max(hstart, 0), height), min(max(hend, 0), height),
                            min(max(wstart, 0), width), min(max(wend, 0), width))
    return bins


def psroi_reference(x: np.ndarray, rois: np.ndarray, output_dim: int, group: int,
                    spatial_scale: float) -> np.ndarray:
    """A transcription of R-FCN's ``PSROIPoolingForward`` (daijifeng001/caffe-rfcn
    src/caffe/layers/psroi_pooling_layer.cu, the same kernel this build ships; its
    Forward_cpu is NOT_IMPLEMENTED): one output per (roi, ctop, ph, pw), float32 where
    the kernel has Dtype, the bin's values summed in its order."""
    _, channels, height, width = x.shape
    top = np.zeros((len(rois), output_dim, group, group), F32)
    for n, roi in enumerate(rois.astype(F32)):
        batch = int(roi[0])
        for (ph, pw), (hs, he, ws, we) in psroi_bins(roi, F32(spatial_scale), group, height,
                                                     width).items():
            for ctop in range(output_dim):
                c = (ctop * group + ph) * group + pw
                total = F32(0)
                for h in range(hs, he):
                    for w in range(ws, we):
                        total = F32(total + x[batch, c, h, w])
                empty = he <= hs or we <= ws
                top[n, ctop, ph, pw] = 0 if empty else total / F32((he - hs) * (we - ws))
    return top


def psroi_backward_reference(shape: tuple[int, ...], rois: np.ndarray, top_diff: np.ndarray,
                             group: int, spatial_scale: float) -> np.ndarray:
    """A transcription of R-FCN's ``PSROIPoolingBackwardAtomic`` (the same file): each
    top gradient / bin area added to every value of its bin in its channel."""
    _, _, height, width = shape
    bottom_diff = np.zeros(shape, F32)
    for n, roi in enumerate(rois.astype(F32)):
        batch = int(roi[0])
        for (ph, pw), (hs, he, ws, we) in psroi_bins(roi, F32(spatial_scale), group, height,
                                                     width).items():
            if he <= hs or we <= ws:
                continue
            area = F32((he - hs) * (we - ws))
            for ctop in range(top_diff.shape[1]):
                c = (ctop * group + ph) * group + pw
                bottom_diff[batch, c, hs:he, ws:we] += top_diff[n, ctop, ph, pw] / area
    return bottom_diff


# rois [batch, x1, y1, x2, y2] on a 9 x 11 map (at scale 0.5: an 18 x 22 image): inside;
# corners on halves (3.5 rounds to 4, -2.5 to -3); partly and wholly outside (empty bins);
# x2 < x1 (width clamped to 0.1); one point; the whole image; the second image
ROIS = np.array([[0, 0, 0, 10, 8], [1, 5, 3, 15, 9], [0, -3, -5, 7, 7], [1, 18, 14, 40, 40],
                 [0, 30, 30, 50, 50], [1, 9, 4, 2, 4], [0, 4, 4, 4, 4], [1, 0, 0, 21, 17],
                 [0, 3.5, 2.5, 20.5, 17.5], [1, -2.5, 1.4, 4.6, 1.6]], F32)


def psroi_net(tmp_path, output_dim: int, group: int, scale: float, rois: np.ndarray):
    channels = output_dim * group * group
    text = net_text({"data": (2, channels, 9, 11), "rois": rois.shape}, [
        layer("psroi", "PSROIPooling", ["data", "rois"], params=(
            f"psroi_pooling_param {{ spatial_scale: {scale} output_dim: {output_dim} "
            f"group_size: {group} }}"))])
    path = tmp_path / "psroi.prototxt"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("output_dim", "group", "scale"),
                         [(2, 3, 0.5), (3, 2, 0.5), (4, 1, 0.5), (2, 7, 0.5), (2, 3, 0.0625)])
def test_psroi_pooling_equals_the_rfcn_kernels(tmp_path, output_dim, group, scale):
    """Forward and gradient against the transcriptions (group sizes 1 to 7, a scale of
    1/16 with rois in image coordinates 8 times larger)."""
    rois = ROIS if scale == 0.5 else ROIS * np.array([1, 8, 8, 8, 8], F32)
    module = to_module(str(psroi_net(tmp_path, output_dim, group, scale, rois)))
    rng = np.random.default_rng(group)
    x = rng.standard_normal((2, output_dim * group * group, 9, 11)).astype(F32)
    data = torch.from_numpy(x).requires_grad_(True)
    top = module.run({"data": data, "rois": torch.from_numpy(rois)})["psroi"]
    reference = psroi_reference(x, rois, output_dim, group, scale)
    assert top.shape == reference.shape
    diff = np.abs(top.detach().numpy().astype(np.float64) - reference).max()
    assert diff <= 1e-6 * np.abs(reference).max(), diff
    assert (reference[4] == 0).all() and reference[0].all()  # outside: empty bins give 0
    top_diff = rng.standard_normal(reference.shape).astype(F32)
    (top * torch.from_numpy(top_diff)).sum().backward()
    expected = psroi_backward_reference(x.shape, rois, top_diff, group, scale)
    diff = np.abs(data.grad.numpy().astype(np.float64) - expected).max()
    assert diff <= 1e-6 * np.abs(expected).max(), diff


def test_psroi_pooling_cannot_be_verified_in_this_build(tmp_path, capsys):
    """This build's PSROIPooling aborts in its CPU forward (NOT_IMPLEMENTED, asked of
    real Caffe); verify says so in one line before running it, and the kind has no
    backward for Caffe either."""
    from google.protobuf import text_format

    from pynetbuilder.schema import caffe_pb2

    path = psroi_net(tmp_path, 2, 3, 0.5, ROIS)
    net = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    with pytest.raises(CaffeError, match="Not Implemented"):
        run_caffe(net, "deploy", {"data": np.zeros((2, 18, 9, 11), F32), "rois": ROIS})
    code, out, err = run_command("verify", str(path), capsys=capsys)
    assert code != 0 and err.count("\n") == 1, err
    assert "cannot run layer 'psroi' (PSROIPooling: R-FCN's kernel is GPU-only" in err
    assert KINDS["PSROIPooling"].is_a(Category.NO_BACKWARD)


def test_psroi_pooling_exports_to_onnx(tmp_path, capsys):
    """The bins are masks, so the trace keeps no roi's values: onnxruntime, fed other
    rois than the trace's (zeros), gives the transcription's outputs."""
    path = psroi_net(tmp_path, 2, 3, 0.5, ROIS)
    code, out, err = run_command("export", str(path), "--to", "onnx", "-o",
                                 str(tmp_path / "psroi.onnx"), capsys=capsys)
    assert code == 0, err
    x = np.random.default_rng(5).standard_normal((2, 18, 9, 11)).astype(F32)
    session = ort.InferenceSession(str(tmp_path / "psroi.onnx"))
    (got,) = session.run(None, {"data": x, "rois": ROIS})
    reference = psroi_reference(x, ROIS, 2, 3, 0.5)
    assert got.shape == reference.shape
    assert np.abs(got.astype(np.float64) - reference).max() <= 1e-6 * np.abs(reference).max()
