"""The registry of layer kinds and the one inference engine.

Oracles: Caffe's own schema (every field an entry names exists in caffe.proto; V1
names are the V1LayerParameter enum's), real Caffe for the layers it refuses, and
the behaviour of ``analyze`` on a prototxt for a net built from legos.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys

import pytest
from conftest import ROOT, VENV_PY

from pynetbuilder import Net
from pynetbuilder.cli import emit
from pynetbuilder.errors import ShapeError
from pynetbuilder.graph import ALL_PHASES
from pynetbuilder.kinds import KINDS, Category, kind_of, param_field, types_with, v1_type
from pynetbuilder.legos import ConvBNReLU, InnerProduct, Input
from pynetbuilder.report import analyze
from pynetbuilder.schema import caffe_pb2, parse_net


def test_every_entry_names_real_schema_fields():
    from pynetbuilder.dialects.schema import dialect_schema
    from pynetbuilder.kinds import forks

    strict = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    # the forks' types name fields of their dialects (pynetbuilder/dialects/forks.proto)
    dialect = dialect_schema().LayerParameter.DESCRIPTOR.fields_by_name
    fork_types = {k.type for k in forks.KINDS}
    v1_names = caffe_pb2.V1LayerParameter.LayerType.keys()
    for name, entry in KINDS.items():
        fields = dialect if name in fork_types else strict
        assert entry.type == name
        if entry.param:
            assert entry.param in fields, name
        if entry.source:
            assert entry.source in fields and entry.is_a(Category.DATA), name
        if entry.v1:
            assert entry.v1 in v1_names and v1_type(entry.v1) == name, name
        field = param_field(name)
        assert field is None or field in fields, name


def test_types_named_after_their_message_find_their_field_and_aliases_come_from_entries():
    assert param_field("Convolution") == "convolution_param"
    assert param_field("Deconvolution") == "convolution_param"  # an entry's alias
    assert param_field("SoftmaxWithLoss") == "softmax_param"
    assert param_field("ReLU") == "relu_param"
    assert param_field("Silence") is None
    assert param_field("NoSuchType") is None


def test_categories_are_what_consumers_used_to_list():
    assert types_with(Category.INPUT | Category.DATA) == {
        "Input", "Data", "ImageData", "HDF5Data", "AnnotatedData", "MemoryData", "DummyData",
        "WindowData", "DenseImageData", "ImageSegData"}
    assert {t for t, k in KINDS.items() if k.source} == {
        "Data", "ImageData", "HDF5Data", "AnnotatedData", "WindowData", "DenseImageData",
        "ImageSegData"}
    assert "SoftmaxWithLoss" in types_with(Category.LOSS)
    assert types_with(Category.ACCURACY) >= {"Accuracy"}
    assert {"ReLU", "BatchNorm", "Scale", "Dropout"} <= types_with(Category.INPLACE)
    assert "AbsVal" in types_with(Category.NOT_INPLACE)  # absval_layer.cpp: CHECK_NE


def test_an_unknown_type_has_an_entry_without_a_rule():
    entry = kind_of("MadeUpLayer")
    assert entry.rule is None and entry.summary is None and entry.category == Category.NONE


def _net_with_unanalysable_layers() -> Net:
    net = Net("odd")
    x = Input("data", [(2, 3, 16, 16)], phases=ALL_PHASES)(net)
    x = ConvBNReLU("conv1", 8, 3, pad=1)(net, x)
    net.layer("MadeUpLayer", x, name="mystery")
    net.layer("Python", x, name="py", python_param={"module": "mine", "layer": "Thing"})
    net.layer("ReLU", "mystery", name="after", inplace=False)
    InnerProduct("fc", 4)(net, x)
    return net


def test_build_writes_a_net_with_layers_it_cannot_analyse_and_names_them(tmp_path):
    """A layer type without a rule no longer stops the build: the prototxt files are
    written and the report names the layers it could not analyse, as analyze does."""
    net = _net_with_unanalysable_layers()
    out = io.StringIO()
    emit(net, argparse.Namespace(output_folder=str(tmp_path / "o"), json=None, table=True),
         out=out)
    deploy = parse_net((tmp_path / "o" / "deploy.prototxt").read_text())
    assert [la.name for la in deploy.layer][-4:] == ["mystery", "py", "after", "fc"]
    for name in ("train.prototxt", "test.prototxt"):
        assert (tmp_path / "o" / name).is_file()
    printed = out.getvalue()
    assert "not analysed (3 layers, excluded from the totals):" in printed
    assert "  mystery (MadeUpLayer): no shape rule for type 'MadeUpLayer'" in printed
    assert "  py (Python): Python layer mine.Thing: its output shapes" in printed
    assert "  after (ReLU): input blob 'mystery' has an unknown shape" in printed
    # the same as analysing the written file
    built = net.report("deploy")
    read = analyze(deploy, phase="deploy")
    assert [(s.name, s.reason) for s in built.skipped] == [
        (s.name, s.reason) for s in read.skipped]
    assert built.rows == read.rows


def test_build_command_with_an_unanalysable_layer_exits_0(tmp_path):
    """Through a user's own script (the library's cli.emit, as apps/ use it)."""
    script = tmp_path / "mine.py"
    script.write_text(
        "import argparse, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from test_kinds import _net_with_unanalysable_layers\n"
        "from pynetbuilder.cli import emit\n"
        f"emit(_net_with_unanalysable_layers(), argparse.Namespace(output_folder="
        f"{str(tmp_path / 'o')!r}, json={str(tmp_path / 'r.json')!r}, table=False))\n"
    )
    done = subprocess.run([str(VENV_PY), str(script)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "mystery (MadeUpLayer)" in done.stdout
    assert '"skipped_layers"' in (tmp_path / "r.json").read_text()


def test_blob_shape_of_a_blob_after_an_unanalysable_layer_names_that_layer():
    net = _net_with_unanalysable_layers()
    with pytest.raises(Exception, match="layer 'mystery' could not be analysed"):
        net.blob_shape("mystery")


@pytest.mark.parametrize(
    "layer, message",
    [
        ('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 pad: 2 }',
         "pad 2x2 must be smaller than the kernel"),
        ('type: "Eltwise"', "needs at least 2 inputs"),
        ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 stride: 0 }',
         "stride must be positive"),
        ('type: "Convolution" convolution_param { num_output: 0 kernel_size: 3 }',
         "num_output must be positive"),
        ('type: "Concat" concat_param { axis: 7 }', "axis 7 is out of range"),
        ('type: "LRN" lrn_param { local_size: 4 }', "local_size must be odd"),
        # an 8x8 input's 8x8 bins: kernel 1, pad 0; 16x16 bins: kernel 1, pad 4 (Caffe's
        # SPP builds a Pooling layer per level, which checks pad < kernel)
        ('type: "SPP" spp_param { pyramid_height: 5 }', "level 4 \\(16x16 bins of a 8x8 "
         "input\\) needs pad 4x4, not smaller than its kernel 1x1"),
        # pooling_layer.cpp LayerSetUp: each of kernel, pad, stride one way or the other
        # (found in the sweep of published nets: a _h without its _w was analysed)
        ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad_h: 1 }',
         "give pad or both pad_h and pad_w"),
        ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride_h: 2 stride_w: 1 '
         'stride: 2 }', "give stride or both stride_h and stride_w"),
        ('type: "Pooling" pooling_param { pool: MAX kernel_h: 3 stride: 2 }',
         "give kernel_size or both kernel_h and kernel_w"),
        ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 kernel_h: 3 kernel_w: 2 }',
         "give kernel_size or both kernel_h and kernel_w"),
        # base_conv_layer.cpp LayerSetUp: kernel_size or kernel_h/w, not both (pad, stride)
        ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 kernel_h: 3 '
         'kernel_w: 1 }', "give kernel_size or kernel_h/kernel_w, not both"),
        ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 pad: 1 pad_h: 1 '
         '}', "give pad or pad_h/pad_w, not both"),
    ],
)
def test_layers_caffe_refuses_are_refused_with_caffes_reason(layer, message, tmp_path):
    text = ('input: "data" input_shape { dim: 1 dim: 4 dim: 8 dim: 8 }\n'
            f'layer {{ name: "x" bottom: "data" top: "x" {layer} }}\n')
    with pytest.raises(ShapeError, match=message):
        analyze(parse_net(text))
    # real Caffe refuses it too (a CHECK failure aborts: run it in a child process)
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    code = f"import caffe; caffe.Net({str(path)!r}, caffe.TEST)"
    done = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True)
    assert done.returncode != 0, f"Caffe accepted {layer}"


def test_summaries_come_from_the_entries():
    layer = caffe_pb2.LayerParameter(name="c", type="Convolution")
    layer.convolution_param.num_output = 64
    layer.convolution_param.kernel_size.append(3)
    layer.convolution_param.stride.append(2)
    assert kind_of("Convolution").summary(layer) == "3x3 s2 \u2192 64"
    assert kind_of("BatchNorm").short == "BN"


def test_the_package_imports_without_pycaffe():
    done = subprocess.run(
        [sys.executable, "-c", "import sys, pynetbuilder.kinds, pynetbuilder.inference; "
         "print('caffe' in sys.modules, 'torch' in sys.modules)"],
        capture_output=True, text=True,
    )
    assert done.stdout.split() == ["False", "False"], done.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["build", "alexnet", "--num_classes", "4294967296"],
         "layer 'fc8': InnerProduct layer: InnerProductParameter.num_output takes a "
         "non-negative integer, not 4294967296 (from 0 to 4294967295)"),
        (["build", "resnet", "--initial_channels", "99999999999"],
         "ConvolutionParameter.num_output takes a non-negative integer, not 99999999999"),
    ],
)
def test_settings_beyond_the_schema_are_one_line(argv, message, tmp_path):
    done = subprocess.run([str(VENV_PY), "-m", "pynetbuilder", *argv, "-o", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("pynetbuilder: error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_blobs_beyond_int_max_are_refused_as_caffe_does(tmp_path):
    """Caffe's Blob::Reshape: at most INT_MAX elements (checked against real Caffe)."""
    text = ('input: "data" input_shape { dim: 100000 dim: 3 dim: 3000 dim: 3000 }\n'
            'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    with pytest.raises(ShapeError, match="INT_MAX"):
        analyze(parse_net(text))
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    done = subprocess.run([str(VENV_PY), "-c", f"import caffe; caffe.Net({str(path)!r}, 1)"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "INT_MAX" in done.stderr


def test_emitters_are_named_by_the_registry_and_resolve():
    """Each emitter lives in its kind's entry (a reference imported on use)."""
    import importlib

    with_emitter = {t: k.torch for t, k in KINDS.items() if k.torch}
    assert {"Convolution", "Pooling", "BatchNorm", "SoftmaxWithLoss", "Python"} <= set(
        with_emitter)
    for reference in with_emitter.values():
        module, function = reference.split(":")
        assert callable(getattr(importlib.import_module(f"pynetbuilder.pytorch.{module}"),
                                function))
