"""Nets written with --target, judged by real executors: real Caffe (the written net
computes what the original computes) and OpenCV 4.x's Caffe importer (outputs equal
to real Caffe's; the opencv profile's layer list equals what cv2 can create)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import fill_caffe_weights

from pynetbuilder import models
from pynetbuilder.kinds import KINDS
from pynetbuilder.schema import to_text
from pynetbuilder.targets import load_profile
from pynetbuilder.targets.writer import EXTEND_SUFFIX, extension_weights, for_target

cv2 = pytest.importorskip("cv2")



def caffe_with_weights(caffe, tmp_path, proto, seed: int):
    path = tmp_path / "original.prototxt"
    path.write_text(to_text(proto))
    net = caffe.Net(str(path), caffe.TEST)
    fill_caffe_weights(net, seed, std=0.1, scale_near_one=True)
    weights = tmp_path / "original.caffemodel"
    net.save(str(weights))
    return net, weights


def test_floor_target_extension_is_exact_in_real_caffe(caffe, tmp_path):
    """SqueezeNet-1.0's pool4 (54 -> 27 by Caffe's ceil, 26 by a floor) written for
    rknn2: the extended net gives bit-identical pooling and output in real Caffe."""
    proto = models.build("squeezenet").to_proto("deploy")
    original, weights = caffe_with_weights(caffe, tmp_path, proto, seed=1)
    written = for_target(proto, "rknn2")
    assert [la.name for la in written.layer if la.name.endswith(EXTEND_SUFFIX)] == [
        "pool4" + EXTEND_SUFFIX]
    path = tmp_path / "rknn2.prototxt"
    path.write_text(to_text(written))
    target = caffe.Net(str(path), str(weights), caffe.TEST)  # the extension: bilinear filler
    extend = target.params["pool4" + EXTEND_SUFFIX][0].data
    layer = next(la for la in written.layer if la.name == "pool4" + EXTEND_SUFFIX)
    assert np.array_equal(extend, extension_weights(layer))
    assert target.blobs["pool4" + EXTEND_SUFFIX].data.shape[2:] == (55, 55)
    # 55 - 3 is even: ceil and floor agree on the extended input
    assert target.blobs["pool4"].data.shape == original.blobs["pool4"].data.shape
    x = np.random.default_rng(2).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
    original.blobs["data"].data[...] = x
    target.blobs["data"].data[...] = x
    original.forward()
    target.forward()
    assert np.array_equal(original.blobs["pool4"].data, target.blobs["pool4"].data)
    assert np.array_equal(original.blobs["prob"].data, target.blobs["prob"].data)


@pytest.mark.parametrize("family,knobs", [("mobilenet", {"width_multiplier": 0.25}),
                                          ("squeezenet", {}),
                                          ("resnet_imagenet", {"blocks": (1, 1, 1, 1)})])
def test_opencv_runs_the_net_written_for_it_with_caffes_outputs(caffe, tmp_path, family, knobs):
    proto = models.build(family, **knobs).to_proto("deploy")
    written = for_target(proto, "opencv")
    original, weights = caffe_with_weights(caffe, tmp_path, written, seed=3)
    deploy = tmp_path / "original.prototxt"  # what caffe_with_weights wrote: the target's net
    x = np.random.default_rng(4).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
    original.blobs["data"].data[...] = x
    original.forward()
    last = [la.name for la in written.layer][-2]  # the layer before the Softmax: the logits
    reference = original.blobs[last].data.copy()
    cv_net = cv2.dnn.readNetFromCaffe(str(deploy), str(weights))
    cv_net.setInput(x)
    got = cv_net.forward(last)
    assert got.shape == reference.shape
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


_PROBE = textwrap.dedent('''
    import cv2, json, os, sys, numpy as np
    found = {}
    path = os.path.join(sys.argv[1], "probe.prototxt")
    for t in sys.argv[2:]:
        text = ('input: "data" input_shape { dim: 1 dim: 4 dim: 9 dim: 9 }\\n'
                f'layer {{ name: "l" type: "{t}" bottom: "data" top: "out" }}\\n')
        with open(path, "w") as f:
            f.write(text)
        try:
            net = cv2.dnn.readNetFromCaffe(path)
            net.setInput(np.zeros((1, 4, 9, 9), np.float32))
            net.forward()
            found[t] = True
        except cv2.error as exc:
            found[t] = "Can't create layer" not in str(exc)
    print(json.dumps(found))
''')


def test_opencv_profile_lists_exactly_the_types_cv2_can_create(tmp_path):
    """One-layer nets of every registered type (and every type the profile names):
    cv2 either creates the layer (it may then complain about missing settings or
    weights) or says "Can't create layer"; the profile agrees type by type."""
    profile = load_profile("opencv")
    types = sorted((set(KINDS) | profile.supported) - {"Input", "BatchNorm"})
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path), *types],
                          capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    created = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {t for t, ok in created.items() if ok} == profile.supported & set(types)


def test_opencv_drops_a_pooling_setting_it_does_not_know(tmp_path):
    """Why `round_mode` is an unknown field for opencv: with it, cv2 loses the
    message's kernel size (and fails), where `ceil_mode` is read."""
    head = 'input: "data" input_shape { dim: 1 dim: 1 dim: 5 dim: 5 }\n'
    pool = ('layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" '
            'pooling_param {{ pool: MAX kernel_size: 2 stride: 2 {} }} }}\n')
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    shapes = {}
    for field in ("ceil_mode: false", "ceil_mode: true", "round_mode: FLOOR"):
        path = tmp_path / "p.prototxt"
        path.write_text(head + pool.format(field))
        net = cv2.dnn.readNetFromCaffe(str(path))
        net.setInput(x)
        try:
            shapes[field] = net.forward().shape[2:]
        except cv2.error as exc:
            shapes[field] = "kernel" if "kernel" in str(exc) else str(exc)
    assert shapes == {"ceil_mode: false": (2, 2), "ceil_mode: true": (3, 3),
                      "round_mode: FLOOR": "kernel"}


def test_opencv_honours_scale_train_and_check_flags_its_axpy(tmp_path, capsys):
    """Fast R-CNN's Dropout with ``scale_train: false`` multiplies by 1 - ratio in TEST
    (caffe-fast-rcnn dropout_layer.cpp, see test_pytorch_forks.py); cv2 4.13 reads the
    field and does the same (so the opencv profile does not list it), and passes a plain
    Dropout through.  Its Axpy, though, computes a * y + x (test_pytorch_forks.py): ``check``
    names that layer, exit 1."""
    from conftest import run_command

    x = np.arange(1, 7, dtype=np.float32).reshape(1, 6)
    for setting, expected in (("scale_train: false", x * np.float32(0.7)), ("", x)):
        path = tmp_path / "drop.prototxt"
        path.write_text('input: "x" input_shape { dim: 1 dim: 6 }\n'
                        'layer { name: "d" type: "Dropout" bottom: "x" top: "y" dropout_param '
                        f'{{ dropout_ratio: 0.3 {setting} }} }}\n')
        net = cv2.dnn.readNetFromCaffe(str(path))
        net.setInput(x, "x")
        assert np.allclose(net.forward("d").reshape(x.shape), expected, rtol=1e-6), setting
    code, printed, _ = run_command("check", str(tmp_path / "drop.prototxt"), "--target",
                                   "opencv", capsys=capsys)
    assert code == 0, printed
    axpy = tmp_path / "axpy.prototxt"
    axpy.write_text('input: "a" input_shape { dim: 1 dim: 3 dim: 1 dim: 1 }\n'
                    'input: "x" input_shape { dim: 1 dim: 3 dim: 4 dim: 5 }\n'
                    'input: "y" input_shape { dim: 1 dim: 3 dim: 4 dim: 5 }\n'
                    'layer { name: "s" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" '
                    'top: "s" }\n')
    code, printed, _ = run_command("check", str(axpy), "--target", "opencv", capsys=capsys)
    assert code == 1 and "s (Axpy): layer type the target computes differently" in printed
