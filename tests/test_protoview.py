"""Plain-data views of layer settings read exactly as the protobuf messages they stand for.

While a net is built, shape rules read :class:`~pynetbuilder.protoview.MessageView`
objects instead of protobuf messages.  Every setting of every zoo net is compared
here field by field (values, defaults, presence, nested messages) with the message
protobuf builds from the same parameters, and the message built back from the view
is compared byte for byte.
"""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from pynetbuilder import models
from pynetbuilder.protoview import MessageView, view
from pynetbuilder.schema import LayerTemplates, Setting, caffe_pb2, layer_parameter


def _same(v, m, path: str) -> None:
    """``v`` (a view) reads as message ``m`` does, for every field, recursively."""
    for f in m.DESCRIPTOR.fields:
        name = f"{path}.{f.name}"
        ours, theirs = getattr(v, f.name), getattr(m, f.name)
        if f.is_repeated:
            assert len(ours) == len(theirs), name
            for i, (a, b) in enumerate(zip(ours, theirs)):
                if f.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                    _same(a, b, f"{name}[{i}]")
                else:
                    assert a == b and type(a) is type(b), name
            continue
        assert v.HasField(f.name) == m.HasField(f.name), name
        if f.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            _same(ours, theirs, name)
        else:
            assert ours == theirs and type(ours) is type(theirs), (name, ours, theirs)


@pytest.fixture
def recorded(monkeypatch):
    """Record the parameters of every layer the nets built in a test add."""
    from pynetbuilder.graph import Net

    calls: list[tuple[str, dict, int]] = []
    add = Net.add

    def recording(self, layer_type, bottoms, name, params, **options):
        tops = add(self, layer_type, bottoms, name, params, **options)
        ntop = len(tops)
        calls.append((layer_type, dict(params), ntop))
        for extra in (options.get("overrides") or {}).values():
            calls.append((layer_type, {**params, **extra}, ntop))
        return tops

    monkeypatch.setattr(Net, "add", recording)
    return calls


def test_every_zoo_setting_reads_as_its_message(recorded):
    for name in models.list():
        models.build(name)
    seen = set()
    checked = 0
    for layer_type, params, ntop in recorded:
        key = (layer_type, repr(params), ntop)
        if key in seen:
            continue
        seen.add(key)
        setting = Setting(0, layer_type, params, ntop)
        message = layer_parameter(layer_type, "", [], [""] * ntop, params)
        assert isinstance(setting.view, MessageView), (layer_type, params)
        _same(setting.view, message, layer_type)
        assert setting.message().SerializeToString() == message.SerializeToString()
        checked += 1
    assert checked > 100  # the zoo has well over a hundred distinct settings


def test_float_fields_hold_32_bit_values_and_enums_their_numbers():
    params = {"negative_slope": 0.1}
    _same(Setting(0, "ReLU", params, 1).view, layer_parameter("ReLU", "", [], [""], params), "")
    assert Setting(0, "ReLU", params, 1).view.relu_param.negative_slope != 0.1  # float32
    pool = Setting(0, "Pooling", {"pool": "AVE", "kernel_size": 2}, 1).view.pooling_param
    assert pool.pool == caffe_pb2.PoolingParameter.AVE
    assert pool.stride == 1 and not pool.HasField("stride")  # the schema's default
    assert not pool.HasField("pad_h") and pool.engine == caffe_pb2.PoolingParameter.DEFAULT


@pytest.mark.parametrize(
    "layer_type, params, error, match",
    [
        ("Convolution", {"num_ouput": 3}, AttributeError, "no field 'num_ouput'"),
        ("Convolution", {"num_output": 2.5}, TypeError, "num_output takes a non-negative integer"),
        ("Convolution", {"num_output": -1}, (TypeError, ValueError), "num_output"),
        ("Convolution", {"num_output": "8"}, TypeError, "num_output takes a non-negative integer"),
        ("Pooling", {"pool": "MEAN"}, ValueError, "pool must be one of MAX, AVE"),
        ("ReLU", {"negative_slope": "x"}, TypeError, "negative_slope takes a number"),
        ("ReLU", {"bogus": 1}, AttributeError, "no field 'bogus'"),
        ("Silence", {"axis": 1}, AttributeError, "has no parameter message"),
    ],
)
def test_what_protobuf_refuses_fails_when_the_setting_is_made(layer_type, params, error, match):
    with pytest.raises(error, match=match):
        LayerTemplates().get(layer_type, params)


@pytest.mark.parametrize(
    "params",
    [
        {"negative_slope": True},  # protobuf takes a bool for a float; a view does not vouch
        {"engine": 1},  # an enum by number
    ],
)
def test_values_a_view_does_not_vouch_for_are_left_to_protobuf(params):
    setting = Setting(0, "ReLU", params, 1)
    message = layer_parameter("ReLU", "", [], [""], params)
    assert setting.message().SerializeToString() == message.SerializeToString()
    assert setting.view.relu_param.negative_slope == message.relu_param.negative_slope


def test_views_are_snapshots_of_the_data_they_were_made_from():
    params = {"num_output": 4, "kernel_size": [3], "weight_filler": {"type": "msra"}}
    setting = Setting(0, "Convolution", params, 1)
    params["kernel_size"].append(5)
    params["weight_filler"]["type"] = "xavier"
    p = setting.message().convolution_param
    assert list(p.kernel_size) == [3] and p.weight_filler.type == "msra"
    assert view(caffe_pb2.FillerParameter.DESCRIPTOR, {"type": "msra"}).type == "msra"


def test_message_instances_and_plain_data_mix_in_one_repeated_field():
    spec = caffe_pb2.ParamSpec(lr_mult=0.5)
    params = {"num_output": 2, "kernel_size": 1, "param": [spec, {"lr_mult": 2, "decay_mult": 0}]}
    setting = Setting(0, "Convolution", params, 1)
    assert isinstance(setting.view, MessageView)
    expected = layer_parameter("Convolution", "", [], [""], params)
    spec.lr_mult = 7  # the setting took a copy when it was made
    assert setting.view.param[0].lr_mult == 0.5
    assert setting.message().SerializeToString() == expected.SerializeToString()


def test_views_are_read_only_even_the_shared_empty_ones():
    pool = Setting(0, "Pooling", {"pool": "MAX", "kernel_size": 2}, 1).view
    with pytest.raises(AttributeError, match="read-only"):
        pool.pooling_param.pool = 1
    relu = Setting(0, "ReLU", {}, 1).view
    with pytest.raises(AttributeError, match="read-only"):
        relu.convolution_param.num_output = 3  # an unset message field: a shared empty view
    assert relu.convolution_param.num_output == 0
