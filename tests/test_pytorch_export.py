"""ONNX through onnxruntime, and OpenCV's DNN module, against real Caffe (proof of
issue 13, parts 3 and the third executor).

Deploy nets with random weights that Caffe draws: ``pynetbuilder export --to onnx``
run by onnxruntime, and ``cv2.dnn.readNetFromCaffe`` on the same prototxt and
``.caffemodel``, give Caffe's outputs (1e-4 of the largest magnitude).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import SHARED, run_command
from test_pytorch_layers import layer, net_text, pool_grid, ssd_head

from pynetbuilder.pytorch.adapter import analysed
from pynetbuilder.pytorch.caffe_oracle import caffe_ready, run_caffe
from pynetbuilder.schema import to_text

FIXTURES = SHARED / "fixtures" / "prototxt"
DEPLOY = ["squeezenet:version=1_0", "alexnet", "mobilenet:width_multiplier=0.25",
          "resnet_imagenet:blocks=1,1,1,1", "tresnet:variant=M:crop_size=64",
          "densenet:depth=40:block_type=bottleneck:compression_rate=0.5",
          str(FIXTURES / "ResNet-50-deploy.prototxt")]


def caffe_outputs(net: str, tmp_path):
    a = analysed(net)
    ready = caffe_ready(a.net, a.shapes, 0)
    name = (list(a.net.input) or [la.top[0] for la in a.net.layer if la.type == "Input"])[0]
    x = np.random.default_rng(0).standard_normal(a.shapes[name]).astype(np.float32)
    run = run_caffe(ready, "deploy", {name: x}, keep=tmp_path)
    return a, ready, x, run


def close(ours, theirs, tolerance=1e-4):
    theirs = np.asarray(theirs, np.float64)
    ours = np.asarray(ours, np.float64).reshape(theirs.shape)
    return np.abs(ours - theirs).max() <= tolerance * np.abs(theirs).max()


@pytest.mark.parametrize("net", DEPLOY)
def test_onnx_in_onnxruntime_gives_caffes_outputs(tmp_path, capsys, net):
    a, ready, x, run = caffe_outputs(net, tmp_path)
    code, out, err = run_command("export", net, "--to", "onnx", "-o", str(tmp_path / "n.onnx"),
                                 "--weights", str(run.weights), capsys=capsys)
    assert code == 0, err
    session = ort.InferenceSession(str(tmp_path / "n.onnx"))
    names = [o.name for o in session.get_outputs()]
    got = session.run(None, {"data": x})
    for name, value in zip(names, got):
        assert close(value, run.blobs[name]), name


@pytest.mark.parametrize("net", DEPLOY)
def test_opencv_dnn_gives_caffes_outputs(tmp_path, net):
    import cv2
    assert cv2.__version__.startswith("4."), "OpenCV 5 dropped the Caffe importer"
    a, ready, x, run = caffe_outputs(net, tmp_path)
    (tmp_path / "deploy.prototxt").write_text(to_text(ready))
    cv = cv2.dnn.readNetFromCaffe(str(tmp_path / "deploy.prototxt"), str(run.weights))
    cv.setInput(x, "data")
    out_name = ready.layer[-1].top[0]
    assert close(cv.forward(ready.layer[-1].name), run.blobs[out_name])


def test_onnx_keeps_caffes_pooling_rounding(tmp_path, capsys):
    """Ceil rounding, dropped last windows, AVE's divisor at the padded border: the
    pooling grid exported to ONNX agrees with Caffe blob for blob."""
    text = net_text({"x": (2, 3, 9, 6)}, pool_grid((9, 6)) + [
        layer("sum", "Eltwise", ["MAX0", "AVE0"], "sum")])
    (tmp_path / "pool.prototxt").write_text(text)
    a, ready, x, run = caffe_outputs(str(tmp_path / "pool.prototxt"), tmp_path)
    code, out, err = run_command("export", str(tmp_path / "pool.prototxt"), "--to", "onnx",
                                 "-o", str(tmp_path / "p.onnx"), "--weights", str(run.weights),
                                 capsys=capsys)
    assert code == 0, err
    session = ort.InferenceSession(str(tmp_path / "p.onnx"))
    names = [o.name for o in session.get_outputs()]
    assert len(names) > 10
    for name, value in zip(names, session.run(None, {"x": x})):
        assert close(value, run.blobs[name]), name


def test_fx_and_compile_on_a_resnet_with_batchnorm_and_inner_product():
    """torch.fx and torch.compile on the family the speed benchmark times (BatchNorm's
    cached global statistics, InnerProduct's flatten decided when the net is analysed:
    its forward used to branch on the tensor's rank, which fx cannot trace), and a
    weight load after a first call is seen (the cache follows the blobs)."""
    from pynetbuilder.pytorch import to_module

    module = to_module("resnet_imagenet:blocks=1,1,1,1").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = module(data=x)
        gm = torch.fx.symbolic_trace(module)
        compiled = torch.compile(module, backend="eager")
        for name, value in expected.items():
            assert torch.allclose(gm(data=x)[name], value, atol=1e-6), name
            assert torch.allclose(compiled(data=x)[name], value, atol=1e-6), name
        bn = next(m for m in module.modules() if type(m).__name__ == "BatchNorm")
        bn.scale_factor.copy_(torch.tensor([2.0]))  # now the statistics are halved
        changed = module(data=x)
        fresh = to_module("resnet_imagenet:blocks=1,1,1,1").eval()
        fresh.load_state_dict(module.state_dict())
        for name, value in fresh(data=x).items():
            assert torch.equal(changed[name], value), name
        assert any(not torch.equal(changed[n], expected[n]) for n in expected)


def test_torchscript_and_fx_and_compile(tmp_path, capsys):
    """The module traces: TorchScript archive, torch.fx and torch.compile agree with it."""
    from pynetbuilder.pytorch import to_module

    code, out, err = run_command("export", "squeezenet:version=1_1", "--to", "torchscript",
                                 "-o", str(tmp_path / "n.pt"), capsys=capsys)
    assert code == 0, err
    module = to_module("squeezenet:version=1_1").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = module(data=x)["prob"]
        gm = torch.fx.symbolic_trace(module)
        assert torch.allclose(gm(data=x)["prob"], expected, atol=1e-7)
        compiled = torch.compile(module, backend="eager")
        assert torch.allclose(compiled(data=x)["prob"], expected, atol=1e-7)


def test_ssd_exports_up_to_its_host_side_detection_output(tmp_path, capsys):
    """DetectionOutput keeps as many rows as boxes pass NMS, computed eagerly: traced, the
    example input's detections would become a constant graph with no input.  Export
    leaves it out (said in the output) and gives its three inputs, equal to Caffe's;
    ``--outputs`` naming its top, or a blob that is not there, is one line, exit 2."""
    path = tmp_path / "ssd.prototxt"
    path.write_text(net_text({"data": (1, 3, 64, 64)}, ssd_head(
        "CENTER_SIZE", "nms_param { nms_threshold: 0.45 top_k: 100 }", 30)))
    for outputs, message in (("det", "'det' (DetectionOutput) runs on the host"),
                             ("nope", "no blob 'nope'")):
        for fmt in ("onnx", "torchscript"):
            out = tmp_path / f"ssd.{fmt}"
            code, _, err = run_command("export", str(path), "--to", fmt, "-o", str(out),
                                       "--outputs", outputs, capsys=capsys)
            assert code == 2 and not out.exists()
            assert err.count("\n") == 1 and err.startswith("pynetbuilder: error: ")
            assert message in err
    assert "(--outputs loc,conf_f,prior)" in run_command(
        "export", str(path), "--to", "onnx", "-o", str(tmp_path / "x.onnx"), "--outputs",
        "det", capsys=capsys)[2]
    a, ready, x, run = caffe_outputs(str(path), tmp_path)
    code, out, err = run_command("export", str(path), "--to", "onnx", "-o",
                                 str(tmp_path / "ssd.onnx"), "--weights", str(run.weights),
                                 capsys=capsys)
    assert code == 0, err
    assert "layer 'det' (DetectionOutput) not exported" in out
    assert "outputs loc, conf_f, prior" in out
    session = ort.InferenceSession(str(tmp_path / "ssd.onnx"))
    assert [i.name for i in session.get_inputs()] == ["data"]
    names = [o.name for o in session.get_outputs()]
    assert names == ["loc", "conf_f", "prior"]
    for name, value in zip(names, session.run(None, {"data": x})):
        assert close(value, run.blobs[name]), name
    # a second input gives other locations and scores: they are computed, not frozen
    y = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    assert not np.allclose(session.run(["loc"], {"data": y})[0], run.blobs["loc"])


def test_export_refuses_a_net_reading_detection_output(tmp_path, capsys):
    layers = ssd_head("CENTER_SIZE", "", 30) + [layer("after", "Power", "det", "after")]
    path = tmp_path / "ssd.prototxt"
    path.write_text(net_text({"data": (1, 3, 64, 64)}, layers))
    code, out, err = run_command("export", str(path), "--to", "onnx", "-o",
                                 str(tmp_path / "ssd.onnx"), capsys=capsys)
    assert code == 2
    assert err.count("\n") == 1 and "layer 'det' (DetectionOutput) runs on the host" in err
    assert "'after' reads its output" in err
    assert not (tmp_path / "ssd.onnx").exists()
