"""What `pynetbuilder verify` says when a net differs from real Caffe only by float32
rounding: the likely cause and the check to run instead (``verify.failure_hint``).

- MAX pooling sends each gradient to one maximum of its window.  Two inputs of a
  window that are equal in exact arithmetic but computed by different float32 sums
  (below: one convolution of the input, one of the input with its channel halves
  swapped and the weights swapped to match) are a near tie in both executors, and
  Caffe's OpenBLAS and PyTorch round the sums differently: the values agree to 1e-6,
  the end-to-end gradients of the two convolutions do not, while each layer's
  backward on Caffe's own inputs (``--per-layer``) agrees.  The hint names the
  pooling, not batch statistics.
- Batch statistics (a TRAIN-phase BatchNorm without use_global_stats): the hint
  blames them, and only where a BatchNorm computes them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_command

from pynetbuilder.pytorch.adapter import analysed
from pynetbuilder.pytorch.verify import BlobCheck, failure_hint

CHANNELS, WIDTH = 32, 64
HALF = CHANNELS // 2
TIES = f"""name: "ties"
layer {{ name: "data" type: "Input" top: "data"
        input_param {{ shape {{ dim: 2 dim: {CHANNELS} dim: 1 dim: {WIDTH} }} }} }}
layer {{ name: "halves" type: "Slice" bottom: "data" top: "lo" top: "hi"
        slice_param {{ axis: 1 slice_point: {HALF} }} }}
layer {{ name: "swapped" type: "Concat" bottom: "hi" bottom: "lo" top: "swapped" }}
layer {{ name: "conv_a" type: "Convolution" bottom: "data" top: "a"
        convolution_param {{ num_output: 1 kernel_h: 1 kernel_w: 3 pad_w: 1 bias_term: false }} }}
layer {{ name: "conv_b" type: "Convolution" bottom: "swapped" top: "b"
        convolution_param {{ num_output: 1 kernel_h: 1 kernel_w: 3 pad_w: 1 bias_term: false }} }}
layer {{ name: "pair" type: "Concat" bottom: "a" bottom: "b" top: "pair"
        concat_param {{ axis: 2 }} }}
layer {{ name: "pool" type: "Pooling" bottom: "pair" top: "pool"
        pooling_param {{ pool: MAX kernel_h: 2 kernel_w: 1 stride: 1 }} }}
"""
HINT = ("layer 'pool' (Pooling MAX) sends each gradient to one maximum; where two of its "
        "inputs are equal or nearly equal after float32 rounding")


def tie_net(caffe, folder):
    """The net above and its weights: conv_b's are conv_a's with the channel halves
    swapped, so a and b are equal in exact arithmetic."""
    prototxt = folder / "ties.prototxt"
    prototxt.write_text(TIES)
    net = caffe.Net(str(prototxt), caffe.TEST)
    w = np.random.default_rng(0).standard_normal((1, CHANNELS, 1, 3)).astype(np.float32)
    net.params["conv_a"][0].data[...] = w
    net.params["conv_b"][0].data[...] = np.concatenate([w[:, HALF:], w[:, :HALF]], axis=1)
    net.save(str(folder / "ties.caffemodel"))
    return prototxt, folder / "ties.caffemodel"


def test_gradients_routed_by_max_pooling_get_the_per_layer_hint(caffe, tmp_path, capsys):
    prototxt, weights = tie_net(caffe, tmp_path)
    report = tmp_path / "end_to_end.json"
    code, _, err = run_command("verify", str(prototxt), "--weights", str(weights),
                               "--gradients", "--json", str(report), capsys=capsys)
    data = json.loads(report.read_text())
    assert all(c["ok"] for c in data["blobs"])  # every value agrees, the pooling's too
    bad = [c for c in data["gradients"] if not c["ok"]]
    if not bad:  # both sums rounded alike in all 128 windows (another BLAS or CPU)
        pytest.skip("Caffe and PyTorch resolved every near-tie alike on this machine")
    assert code == 1
    assert [c["blob"] for c in bad] == ["d conv_a[0]", "d conv_b[0]"]
    assert all(c["max_abs_diff"] > 0.01 * c["caffe_max_abs"] for c in bad)  # not rounding
    assert err.count("\n") == 1 and "blob 'd conv_a[0]' differs" in err
    assert HINT in err and "--per-layer checks each layer" in err
    assert "batch statistics" not in err
    code, out, err = run_command("verify", str(prototxt), "--weights", str(weights),
                                 "--gradients", "--per-layer", "--tolerance", "1e-6",
                                 capsys=capsys)
    assert code == 0, err
    assert "blobs agree" in out


def test_the_routing_hint_only_upstream_of_the_pooling(tmp_path):
    """A gradient of a layer after the MAX pooling, or a forward value, does not depend
    on which maximum the pooling chose: no hint for them."""
    path = tmp_path / "net.prototxt"
    path.write_text(TIES + 'layer { name: "fc" type: "InnerProduct" bottom: "pool" '
                           'top: "fc" inner_product_param { num_output: 2 } }\n')
    net = analysed(str(path)).net

    def hint(name: str, phase: str = "deploy") -> str:
        return failure_hint(net, phase, BlobCheck(name, (1,), 1.0, 1.0, False))

    assert HINT in hint("d conv_a[0]") and HINT in hint("d data")
    assert hint("d fc[0]") == hint("fc") == hint("pool") == ""
    assert hint("d fc[0]", "train") == ""  # no BatchNorm: no batch statistics


def test_the_batch_statistics_hint_only_with_batch_statistics(tmp_path, capsys):
    """A TRAIN-phase BatchNorm computes batch statistics unless use_global_stats is
    true (batch_norm_layer.cpp); at a tolerance below float32 rounding the hint
    blames them only then."""
    body = ('name: "bn"\nlayer { name: "data" type: "Input" top: "data" '
            'input_param { shape { dim: 4 dim: 8 dim: 6 dim: 6 } } }\n'
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
            'convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }\n'
            'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" %s }\n')
    for setting, blamed in [("", True), ("batch_norm_param { use_global_stats: false }", True),
                            ("batch_norm_param { use_global_stats: true }", False)]:
        path = tmp_path / "bn.prototxt"
        path.write_text(body % setting)
        code, _, err = run_command("verify", str(path), "--phase", "train", "--tolerance",
                                   "1e-12", capsys=capsys)
        assert code == 1 and err.count("\n") == 1, err
        assert ("batch statistics amplify float32 rounding" in err) == blamed, (setting, err)
        assert "MAX" not in err
