"""Shape and parameter rules of every layer type, checked against real Caffe."""

from __future__ import annotations

import itertools

import pytest
from conftest import assert_report_matches_caffe, caffe_net

from pynetbuilder import Net, ShapeError
from pynetbuilder.graph import ALL_PHASES
from pynetbuilder.legos import Input
from pynetbuilder.schema import to_text


def check(caffe, net: Net, tmp_path, phase: str = "deploy"):
    report = net.report(phase)
    cnet = caffe_net(caffe, to_text(net.to_proto(phase)), "test", tmp_path)
    assert_report_matches_caffe(report, cnet)
    return report


def test_convolution_and_pooling_rounding_grid(caffe, tmp_path):
    """Every small geometry: convolution floors, pooling ceils and clips the last window."""
    net = Net("grid")
    n = 0
    for size in range(1, 9):
        x = Input(f"in{size}", [(1, 2, size, size + 1)])(net)
        for k, s, p in itertools.product(range(1, 5), range(1, 4), range(0, 3)):
            if p >= k:
                continue  # Caffe requires pad < kernel for pooling
            for d in (1, 2):
                if (k - 1) * d + 1 <= size + 2 * p:
                    net.layer("Convolution", x, name=f"c{n}", num_output=3, kernel_size=k,
                              stride=s, pad=p, dilation=d)
                    n += 1
            if k <= size + 2 * p:
                for pool in ("MAX", "AVE"):
                    net.layer("Pooling", x, name=f"p{n}", pool=pool, kernel_size=k, stride=s,
                              pad=p)
                    n += 1
    assert n > 300
    check(caffe, net, tmp_path)


def test_many_layer_types(caffe, tmp_path):
    net = Net("zoo_of_layers")
    x = Input("data", [(2, 6, 9, 7)])(net)
    rect = net.layer("Convolution", x, name="rect", num_output=4, kernel_h=3, kernel_w=1,
                     stride_h=2, stride_w=1, pad_h=1, pad_w=0)[0]
    grp = net.layer("Convolution", x, name="group", num_output=6, kernel_size=3, group=3,
                    bias_term=False)[0]
    dw = net.layer("Convolution", grp, name="dw", num_output=6, kernel_size=3, group=6, pad=1)[0]
    deconv = net.layer("Deconvolution", dw, name="deconv", num_output=4, kernel_size=4,
                       stride=2, pad=1)[0]
    net.layer("Pooling", x, name="gpool", pool="AVE", global_pooling=True)
    fc = net.layer("InnerProduct", x, name="fc", num_output=5)[0]
    net.layer("InnerProduct", x, name="fc_axis2", num_output=3, axis=2)
    bnin = net.layer("Convolution", x, name="bnin", num_output=6, kernel_size=1)[0]
    net.layer("BatchNorm", bnin, name="bn", inplace=True)
    net.layer("Scale", bnin, name="scale", inplace=True, bias_term=True)
    net.layer("Scale", x, name="scale_hw", axis=2, num_axes=2)
    net.layer("Bias", x, name="bias")
    net.layer("PReLU", x, name="prelu")
    net.layer("PReLU", x, name="prelu_shared", channel_shared=True)
    for t in ("ReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "Dropout", "Power", "Softmax", "LRN"):
        net.layer(t, x, name=t.lower())
    a = net.layer("Convolution", x, name="a", num_output=4, kernel_size=1)[0]
    net.layer("Eltwise", [a, a], name="sum", coeff=[0.5, 0.5])
    net.layer("Eltwise", [a, a], name="prod", operation="PROD")
    net.layer("Eltwise", [a, a], name="max", operation="MAX")
    cat = net.layer("Concat", [x, a], name="cat")[0]
    net.layer("Slice", cat, name="slice", ntop=3, slice_point=[2, 7])
    net.layer("Slice", x, name="halves", ntop=2, axis=3 - 1, slice_point=[4])
    net.layer("Split", x, name="split", ntop=2)
    net.layer("Flatten", x, name="flat")
    net.layer("Reshape", x, name="reshape", shape={"dim": [0, -1, 7]})
    net.layer("Crop", [deconv, rect], name="crop", axis=2, offset=[0])
    pooled = net.layer("Pooling", x, name="pool_for_scale", pool="AVE", global_pooling=True)[0]
    squeezed = net.layer("Flatten", pooled, name="squeeze")[0]
    net.layer("Scale", [x, squeezed], name="channel_scale", axis=0)
    net.layer("Silence", fc, name="silence", ntop=0)
    report = check(caffe, net, tmp_path)
    rows = {r.name: r for r in report.rows}
    assert rows["group"].macs == 2 * 6 * 7 * 5 * (6 // 3) * 9
    assert rows["dw"].macs == 2 * 6 * 7 * 5 * 1 * 9
    assert rows["fc"].macs == 2 * (6 * 9 * 7) * 5
    assert rows["deconv"].macs == 2 * 6 * 7 * 5 * 4 * 16
    assert rows["bn"].params == 0 and rows["scale"].params == 12


def test_losses_and_accuracy(caffe, tmp_path):
    net = Net("loss")
    x = Input("data", [(4, 5)], phases=ALL_PHASES)(net)
    label = Input("label", [(4,)], phases=ALL_PHASES)(net)
    net.layer("SoftmaxWithLoss", [x, label], name="loss")
    net.layer("Accuracy", [x, label], name="acc", top_k=2)
    net.layer("EuclideanLoss", [x, x], name="l2")
    check(caffe, net, tmp_path)


def test_unknown_blob_and_collapse_are_errors():
    net = Net("bad")
    Input("data", [(1, 3, 2, 2)])(net)
    with pytest.raises(Exception, match="no earlier layer produces"):
        net.layer("ReLU", "nothing", name="r")
    with pytest.raises(ShapeError, match="too small"):
        net.layer("Convolution", "data", name="c", num_output=2, kernel_size=3)
        net.report()


def test_in_place_on_a_blob_read_twice_is_refused():
    """Caffe rejects it ("Top blob produced by multiple sources"); we say so at build time."""
    net = Net("inplace")
    x = Input("data", [(1, 3, 4, 4)])(net)
    c = net.layer("Convolution", x, name="c", num_output=2, kernel_size=1)[0]
    net.layer("Pooling", c, name="p", pool="MAX", kernel_size=2)
    with pytest.raises(Exception, match="would overwrite blob 'c', which 'p' also reads"):
        net.layer("ReLU", c, name="r", inplace=True)
