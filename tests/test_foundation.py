"""The ground is real: pycaffe, the caffe tool, the schema, the set-up script's failures."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CAFFE_TOOL, ROOT, VENV_PY, caffe_net
from google.protobuf import text_format

from pynetbuilder import Net
from pynetbuilder.graph import ALL_PHASES
from pynetbuilder.kinds import param_field
from pynetbuilder.legos import ConvBNReLU, InnerProduct, Input, Pool, SoftmaxWithLoss
from pynetbuilder.schema import assign, caffe_pb2, to_text
from pynetbuilder.settings import layer_parameter

sys.path.insert(0, str(ROOT / "tools"))
import caffe_setup  # noqa: E402


def test_venv_imports_real_caffe():
    out = subprocess.run(
        [str(VENV_PY), "-c", "import caffe, sys; print(caffe.__file__); print(caffe.Net)"],
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout
    assert "caffe/__init__.py" in out and "Net" in out
    assert str(caffe_setup.cache_root()) in out  # the cached build, not a stand-in


def test_caffe_tool_answers_version():
    proc = subprocess.run([str(CAFFE_TOOL), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "caffe version 1.0.0" in proc.stdout + proc.stderr


def tiny_net() -> Net:
    net = Net("tiny")
    x = Input("data", [(2, 3, 8, 8)], phases=ALL_PHASES)(net)
    label = Input("label", [(2,)], phases=ALL_PHASES)(net)
    x = ConvBNReLU("conv1", 4, 3)(net, x)
    x = Pool("pool", "MAX", 2, stride=2)(net, x)
    logits = InnerProduct("fc", 3)(net, x)
    SoftmaxWithLoss("loss", phases=ALL_PHASES)(net, logits, label)
    return net


def test_net_written_through_schema_runs_forward_backward(caffe, tmp_path):
    net = tiny_net()
    # the TRAIN net: BatchNorm normalises with the batch's own statistics (the deploy
    # net's global statistics are still zero here, which can blow the logits up)
    text = to_text(net.to_proto("train"))
    caffe.set_random_seed(1)
    cnet = caffe_net(caffe, text, "train", tmp_path)
    rng = np.random.default_rng(1)
    cnet.blobs["data"].data[...] = rng.standard_normal((2, 3, 8, 8))
    cnet.blobs["label"].data[...] = [0, 2]
    out = cnet.forward()
    assert np.isfinite(out["loss"]) and out["loss"] > 0
    cnet.backward()
    grad = cnet.params["conv1"][0].diff
    assert np.abs(grad).sum() > 0


def test_misspelt_field_fails_at_build_time():
    net = Net("bad")
    Input("data", [(1, 3, 8, 8)])(net)
    with pytest.raises(AttributeError, match="num_outputs"):
        net.layer("Convolution", "data", name="c", num_outputs=3, kernel_size=3)


@pytest.mark.parametrize(
    "layer_type, params",
    [
        ("Convolution", {"num_output": 8, "kernel_size": 3, "stride": [2], "pad_h": 1,
                         "pad_w": 0, "weight_filler": {"type": "msra"},
                         "param": [{"lr_mult": 1}, {"lr_mult": 2, "decay_mult": 0}]}),
        ("Pooling", {"pool": "AVE", "global_pooling": True}),
        ("BatchNorm", {"param": {"lr_mult": 0}, "include": [{"phase": "TEST"}]}),
        ("Scale", {"bias_term": True, "filler": {"type": "constant", "value": 1.0},
                   "loss_weight": 0.5}),
        ("Reshape", {"shape": {"dim": [0, -1]}}),
        ("Convolution", {"convolution_param": {"num_output": 4}, "kernel_size": 1}),
    ],
)
def test_fast_layer_builder_equals_field_by_field_assignment(layer_type, params):
    """``layer_parameter`` builds through the message constructor; the result must be
    the message that setting each field in turn gives."""

    fast = layer_parameter(layer_type, "l", ["a"], ["b"], params)
    slow = caffe_pb2.LayerParameter(name="l", type=layer_type, bottom=["a"], top=["b"])
    top = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    assign(slow, {k: v for k, v in params.items() if k in top})
    own = {k: v for k, v in params.items() if k not in top}
    if own:
        assign(getattr(slow, param_field(layer_type)), own)
    assert fast == slow
    assert fast.SerializeToString(deterministic=True) == slow.SerializeToString(
        deterministic=True
    )


@pytest.mark.parametrize(
    "params, message",
    [
        ({"pool": "MAXX"}, "pool must be one of MAX, AVE, STOCHASTIC, not 'MAXX'"),
        ({"kernel_size": "three"},
         "PoolingParameter.kernel_size takes a non-negative integer, not .three."),
        ({"pooling": 3}, "PoolingParameter has no field 'pooling'"),
    ],
)
def test_bad_values_are_named(params, message):
    with pytest.raises((AttributeError, ValueError, TypeError), match=message):
        layer_parameter("Pooling", "p", ["a"], ["b"], params)


def test_schema_only_module_and_full_build_parse_identically(caffe):
    from caffe.proto import caffe_pb2 as full

    fixture = ROOT.parent / "shared" / "fixtures" / "prototxt" / "ResNet-50-deploy.prototxt"
    texts = [fixture.read_text(), to_text(tiny_net().train_val_proto())]
    for text in texts:
        ours = text_format.Parse(text, caffe_pb2.NetParameter())
        theirs = text_format.Parse(text, full.NetParameter())
        assert ours.SerializeToString() == theirs.SerializeToString()
        assert text_format.MessageToString(ours) == text_format.MessageToString(theirs)
    # the schemas themselves: same messages with the same field numbers and names
    for msg in ("NetParameter", "LayerParameter", "SolverParameter", "ConvolutionParameter"):
        a = caffe_pb2.DESCRIPTOR.message_types_by_name[msg]
        b = full.DESCRIPTOR.message_types_by_name[msg]
        assert [(f.name, f.number) for f in a.fields] == [(f.name, f.number) for f in b.fields]


# What a schema module holds, in a form two processes can compare: every public name
# (classes by qualname/module/full name and fields, enums with their values, top-level
# enum values, the _UPPERCASE descriptors by full name), and a parsed net serialized.
SCHEMA_FINGERPRINT = """
import hashlib, importlib, importlib.util, json, sys
from google.protobuf import text_format
from google.protobuf.internal import api_implementation
if sys.argv[1] == "loader":
    mod = importlib.import_module("pynetbuilder.proto.caffe_pb2")
else:  # protoc's module alone, by path: importing the package would import the loader
    spec = importlib.util.spec_from_file_location("pynetbuilder.proto.caffe_protoc_pb2",
                                                  sys.argv[3])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
out = {"backend": api_implementation.Type()}
def describe(v):
    if isinstance(v, type):
        d = v.DESCRIPTOR
        nested = sorted(n for n in dir(v) if not n.startswith("_")
                        and isinstance(getattr(v, n), type))
        return ["class", v.__qualname__, v.__module__, d.full_name,
                [(f.name, f.number) for f in d.fields], nested,
                [describe(getattr(v, n)) for n in nested]]
    if isinstance(v, int):
        return ["int", v]
    if hasattr(v, "keys") and hasattr(v, "DESCRIPTOR"):  # an EnumTypeWrapper
        return ["enum", v.DESCRIPTOR.full_name, list(v.items())]
    return [type(v).__name__, getattr(v, "full_name", getattr(v, "name", None))]
for name in sorted(vars(mod)):
    if not name.startswith("__"):
        out[name] = describe(getattr(mod, name))
net = text_format.Parse(open(sys.argv[2]).read(), mod.NetParameter())
out["net"] = hashlib.sha256(net.SerializeToString()).hexdigest()
out["enum"] = mod.PoolingParameter.PoolMethod.Name(mod.PoolingParameter.AVE)
print(json.dumps(out, sort_keys=True))
"""


@pytest.mark.parametrize("backend", ["upb", "python"])
def test_schema_loader_builds_protocs_module(backend, tmp_path):
    """caffe_pb2 (the loader made by caffe_setup.schema_loader) holds what protoc's own
    module holds, class for class and name for name, and parses a net to the same
    bytes; on upb (built from the extension) and on pure-Python protobuf (protoc's
    module re-exported).  Each module runs alone: on upb the same .proto file cannot
    be added to the default pool twice."""
    fixture = ROOT.parent / "shared" / "fixtures" / "prototxt" / "ResNet-50-deploy.prototxt"
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=backend,
               PYTHONPATH=str(ROOT))
    script = tmp_path / "fingerprint.py"
    script.write_text(SCHEMA_FINGERPRINT)
    prints = {}
    protoc_file = ROOT / "pynetbuilder" / "proto" / "caffe_protoc_pb2.py"
    for module in ("loader", "protoc"):
        proc = subprocess.run([str(VENV_PY), str(script), module, str(fixture),
                               str(protoc_file)], env=env,
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        prints[module] = json.loads(proc.stdout)
    loader, protoc = prints.values()
    assert loader["backend"] == protoc["backend"] == backend
    for skip in ("_api",):  # protoc's module keeps none of the loader's own helpers
        assert skip not in loader
    # protoc's module also holds its import aliases (_descriptor, _builder, ...) and
    # _sym_db / _globals; every other name is the same thing in both
    extra = {k for k in protoc if k not in loader}
    assert extra <= {"_descriptor", "_descriptor_pool", "_runtime_version",
                     "_symbol_database", "_builder", "_sym_db", "_globals"}, extra
    assert {k: protoc[k] for k in loader} == loader
    assert len([k for k, v in loader.items() if v[0] == "class"]) > 90


PY_LAYER = '''
import caffe

class Double(caffe.Layer):
    def setup(self, bottom, top):
        pass
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff
'''


def test_python_layers_are_compiled_in(tmp_path):
    """WITH_PYTHON_LAYER: a ``type: "Python"`` layer runs in pycaffe (in a child process)."""
    (tmp_path / "double_layer.py").write_text(PY_LAYER)
    net = Net("py")
    x = Input("data", [(2, 3)])(net)
    net.layer("Python", x, name="double", module="double_layer", layer="Double",
              shapes={"deploy": [(2, 3)]})
    (tmp_path / "net.prototxt").write_text(to_text(net.to_proto("deploy")))
    script = (
        "import caffe, numpy as np\n"
        "n = caffe.Net('net.prototxt', caffe.TEST)\n"
        "n.blobs['data'].data[...] = np.arange(6).reshape(2, 3)\n"
        "print(n.forward()['double'].sum())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([str(VENV_PY), "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) == 30.0


def test_caffe_tool_times_a_net(tmp_path):
    (tmp_path / "net.prototxt").write_text(to_text(tiny_net().to_proto("deploy")))
    proc = subprocess.run([str(CAFFE_TOOL), "time", "-model", "net.prototxt", "-iterations", "2"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Average Forward-Backward" in proc.stderr


# --------------------------------------------------------------- set-up failures


def test_checksum_mismatch_is_refused_and_nothing_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PYNETBUILDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(caffe_setup, "CAFFE_SHA256", "0" * 64)
    with pytest.raises(caffe_setup.SetupError, match="sha256"):
        caffe_setup.fetch_sdist()
    downloads = tmp_path / "cache" / "downloads"
    assert list(downloads.iterdir()) == []  # neither the archive nor a temp folder


def test_failed_download_says_what_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("PYNETBUILDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(caffe_setup, "CAFFE_VERSION", "0.0.0-no-such-version")
    with pytest.raises(caffe_setup.SetupError, match="download of brocolli-caffe"):
        caffe_setup.fetch_sdist()


def test_failed_compile_names_the_log(tmp_path):
    makefile = "all:\n\t@echo 'CXX broken.cpp'\n\t@echo 'error: boom'; false\n"
    (tmp_path / "Makefile").write_text(makefile)
    log = tmp_path / "build.log"
    with pytest.raises(caffe_setup.SetupError, match="make all.*failed.*build.log"):
        caffe_setup.run_make(tmp_path, ["all"], log, 1, "test")
    assert "error: boom" in log.read_text()


def test_setup_script_reports_one_line_and_exit_1(tmp_path):
    """Run with the bare interpreter instead of the venv: refused in one line."""
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    env = dict(os.environ, PYNETBUILDER_CACHE=str(tmp_path))
    proc = subprocess.run([str(base_python), str(ROOT / "tools" / "caffe_setup.py"), "build"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert proc.stderr.count("error:") == 1 and "virtual environment" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_cached_build_is_complete():
    abi = caffe_setup.python_abi()
    final = caffe_setup.cache_root() / caffe_setup.build_key(abi)
    assert (final / "BUILD_OK").exists()
    src = final / caffe_setup.SOURCE_DIR_NAME
    assert (src / "build" / "tools" / "caffe").exists()
    assert list((src / "python" / "caffe").glob("_caffe*.so"))
    # no half-built staging folders left beside it
    assert not [p for p in final.parent.iterdir() if "-building-" in p.name]


def test_schema_module_is_generated_not_committed():
    spec = importlib.util.find_spec("pynetbuilder.proto.caffe_pb2")
    assert spec is not None and spec.origin
    tracked = subprocess.run(["git", "ls-files", "pynetbuilder/proto"], cwd=ROOT,
                             capture_output=True, text=True).stdout
    assert tracked.strip() == ""
    assert Path(spec.origin).read_text().startswith("# Generated by tools/caffe_setup.py")
