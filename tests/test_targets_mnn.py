"""Alibaba MNN as a judge of nets written with --target mnn, and of the mnn profile.

MNN 3.6.1 from PyPI (requirements-dev.txt) brings MNN's own Caffe converter (the
compiled ``_tools.mnnconvert``, the code of MNNConvert -f CAFFE) and its runtime.  Nets
are written by ``pynetbuilder build --target mnn``, given random weights by real
pycaffe (``caffe.Net`` + ``net.save``), converted by MNN and run by MNN's runtime;
their outputs equal real Caffe's forward.  The profile's layer list is checked type
by type against what the converter accepts, and every type or field the profile
says MNN computes wrongly is shown here to differ from real Caffe.

The converter is called as ``_tools.mnnconvert`` in a child process, never through
the wheel's ``mnnconvert`` console script: that wrapper imports
MNN/tools/utils/log.py, which runs ``pip install -U aliyun-log-python-sdk`` through
``os.system`` and sends usage logs to Alibaba's servers.  Child processes also keep
a converter or runtime crash (they happen, see the probes) out of the test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import fill_caffe_weights, run_command

from pynetbuilder.errors import NetError
from pynetbuilder.inspect import load
from pynetbuilder.kinds import KINDS
from pynetbuilder.targets import check, load_profile
from pynetbuilder.targets.writer import COEFF_SUFFIX, for_target

MNN = pytest.importorskip("MNN")

_CONVERT = "import _tools, sys; _tools.mnnconvert(sys.argv)"
_RUN = textwrap.dedent('''
    import sys, numpy as np, MNN
    F = MNN.expr
    model, data, out = sys.argv[1:4]
    inputs = dict(np.load(data))
    names = sorted(inputs)
    module = MNN.nn.load_module_from_file(model, names, sys.argv[4:])
    feed = [F.convert(F.const(inputs[n], list(inputs[n].shape), F.NCHW), F.NC4HW4)
            for n in names]
    results = module.forward(feed)
    if len(results) != len(sys.argv[4:]):
        sys.exit(f"MNN gave {len(results)} of {len(sys.argv[4:])} outputs")
    got = {}
    for name, y in zip(sys.argv[4:], results):
        y = F.convert(y, F.NCHW)
        got[name] = np.array(y.read(), dtype=np.float32).reshape(y.shape)
    np.savez(out, **got)
''')


def mnn_convert(prototxt: Path, caffemodel: Path, model: Path) -> str:
    """MNN's Caffe converter on a deploy prototxt and its weights: its printed log."""
    proc = subprocess.run([sys.executable, "-c", _CONVERT, "-f", "CAFFE", "--modelFile",
                           str(caffemodel), "--prototxt", str(prototxt), "--MNNModel",
                           str(model), "--bizCode", "pynetbuilder"],
                          capture_output=True, text=True, timeout=300)
    return proc.stdout + proc.stderr + f"\n(exit status {proc.returncode})"


def mnn_run(model: Path, inputs: dict[str, np.ndarray], outputs: list[str], folder: Path
            ) -> dict[str, np.ndarray]:
    """MNN's runtime (Module API, NC4HW4 inputs as MNN's Caffe models take them)."""
    data, out = folder / "inputs.npz", folder / "outputs.npz"
    np.savez(data, **inputs)
    proc = subprocess.run([sys.executable, "-c", _RUN, str(model), str(data), str(out),
                           *outputs], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    return dict(np.load(out))



def caffe_and_mnn(caffe, folder: Path, caffe_text: str, inputs: dict[str, np.ndarray],
                  outputs: list[str], mnn_text: str | None = None, seed: int = 0):
    """Real Caffe's outputs of ``caffe_text`` (random weights, saved) and MNN's outputs
    of ``mnn_text`` (default: the same text) converted with those weights; MNN's log."""
    deploy = folder / "caffe.prototxt"
    deploy.write_text(caffe_text)
    net = caffe.Net(str(deploy), caffe.TEST)
    fill_caffe_weights(net, seed, scale_near_one=True)
    weights = folder / "weights.caffemodel"
    net.save(str(weights))
    for name, value in inputs.items():
        net.blobs[name].data[...] = value
    net.forward()
    expected = {name: net.blobs[name].data.copy() for name in outputs}
    target = folder / "mnn.prototxt"
    target.write_text(mnn_text or caffe_text)
    model = folder / "net.mnn"
    log = mnn_convert(target, weights, model)
    if "Converted Success" not in log:
        return expected, None, log
    used = {k: v for k, v in inputs.items() if f'bottom: "{k}"' in target.read_text()}
    return expected, mnn_run(model, used, outputs, folder), log


def assert_close(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    # MNN keeps 4 axes where Caffe's Flatten/InnerProduct give 2: same values, same order
    assert got.size == expected.size, (what, got.shape, expected.shape)
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-4,
                               atol=1e-4 * float(np.abs(expected).max()), err_msg=what)


# ------------------------------------------------------------ nets written for MNN


ZOO = [("mobilenet", ["--width_multiplier", "0.25"]),
       ("squeezenet", []),  # pool4 and pool8 size by Caffe's ceil rounding
       ("resnet_imagenet", ["--blocks", "1", "1", "1", "1"]),
       ("densenet", ["--depth", "22"]),
       ("shake_shake", ["--depth", "8", "--initial_channels", "16"])]  # Eltwise coeff


@pytest.mark.parametrize("family,knobs", ZOO, ids=[f for f, _ in ZOO])
def test_mnn_runs_the_net_built_for_it_with_caffes_outputs(caffe, tmp_path, capsys, family,
                                                           knobs):
    code, out, err = run_command("build", family, *knobs, "--target", "mnn", "-o",
                                 str(tmp_path), capsys=capsys)
    assert code == 0, err
    assert "mnn still rejects" not in out + err
    text = (tmp_path / "deploy.prototxt").read_text()
    deploy = load(str(tmp_path / "deploy.prototxt"))
    layers = [la.name for la in deploy.net.layer]
    logits, prob = layers[-2], layers[-1]  # the layer before the Softmax, and the Softmax
    shape = deploy.report.blob_shapes["data"]
    x = np.random.default_rng(1).normal(0, 1, shape).astype(np.float32)
    expected, got, log = caffe_and_mnn(caffe, tmp_path, text, {"data": x}, [logits, prob])
    assert got is not None, log[-2000:]
    assert_close(got[logits], expected[logits], logits)
    assert_close(got[prob], expected[prob], prob)
    if family == "shake_shake":  # written without coeff (MNN cannot run it): Power layers
        assert "coeff:" not in text and f"shake{COEFF_SUFFIX}0" in text


def test_eltwise_coefficients_written_as_power_layers_compute_the_same_in_caffe(caffe,
                                                                               tmp_path):
    """Shake-Shake's deploy net averages its branches (Eltwise SUM, coeff 0.5 0.5); the
    net written for mnn scales each branch by a Power layer (scale 0.5, power 1: no
    weights) and sums: real Caffe gives the same outputs with the same weights."""
    from pynetbuilder import models
    from pynetbuilder.schema import to_text

    proto = models.build("shake_shake", depth=8, initial_channels=16).to_proto("deploy")
    original = tmp_path / "original.prototxt"
    original.write_text(to_text(proto))
    net = caffe.Net(str(original), caffe.TEST)
    fill_caffe_weights(net, 3, scale_near_one=True)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    written = for_target(proto, "mnn")
    powers = [la for la in written.layer if la.type == "Power"]
    assert len(powers) == 2 * 3 and {la.power_param.scale for la in powers} == {0.5}
    path = tmp_path / "mnn.prototxt"
    path.write_text(to_text(written))
    rewritten = caffe.Net(str(path), str(weights), caffe.TEST)
    x = np.random.default_rng(4).normal(0, 1, (1, 3, 32, 32)).astype(np.float32)
    for n in (net, rewritten):
        n.blobs["data"].data[...] = x
        n.forward()
    for blob in ("stage1_block1_shake", "stage3_block1_shake", "fc"):
        # halving is exact in floating point, so the sums are bit-identical
        assert np.array_equal(rewritten.blobs[blob].data, net.blobs[blob].data), blob


def test_mnn_needs_scale_weights_so_se_blocks_stop_the_converter(caffe, tmp_path, capsys):
    """Squeeze-and-excitation scales by a second input (Scale with two bottoms); MNN's
    Scale converter needs the factors as weights: 'caffemodel error', no model (in about
    one run of ten, seen here, the converter dies of SIGSEGV on it instead: no model
    either).  The profile's limit (Scale: at most 1 input) flags it, and build says so."""
    code, out, err = run_command("build", "se_resnet_preact", "--depth", "8", "--target", "mnn",
                                 "-o", str(tmp_path), capsys=capsys)
    assert code == 0, err
    assert "mnn still rejects: stage1_block1_se_scale (Scale): number of inputs" in out + err
    deploy = tmp_path / "deploy.prototxt"
    x = np.zeros((1, 3, 32, 32), np.float32)
    _, got, log = caffe_and_mnn(caffe, tmp_path, deploy.read_text(), {"data": x}, ["prob"])
    assert got is None
    assert "caffemodel error" in log or "(exit status -11)" in log, log


@pytest.mark.parametrize("command, net", [
    ("export", "shake_shake:depth=8:initial_channels=16"),  # coefficients: Power layers
    ("convert", "resnet_imagenet:blocks=1,1,1,1")])
def test_mnn_runs_the_net_and_weights_written_for_it(tmp_path, capsys, command, net):
    """`export|convert --target mnn` with the weights real Caffe drew for the original net
    (BatchNorm moving-average factors not 1): MNN's converter takes the written prototxt
    and caffemodel, and its runtime gives Caffe's outputs of the original net."""
    from test_pytorch_export import caffe_outputs

    a, ready, x, run = caffe_outputs(net, tmp_path)
    prototxt = tmp_path / "mnn" / "net.prototxt"
    flags = (["--weights", str(run.weights), "-o", str(prototxt)] if command == "export" else
             ["--from", str(run.weights), "-o", str(prototxt.with_suffix(".caffemodel"))])
    code, out, err = run_command(command, net, "--target", "mnn", *flags, capsys=capsys)
    assert code == 0, err
    log = mnn_convert(prototxt, prototxt.with_suffix(".caffemodel"), tmp_path / "net.mnn")
    assert "Converted Success" in log, log[-2000:]
    outputs = [ready.layer[-2].top[0], ready.layer[-1].top[0]]  # logits, Softmax
    got = mnn_run(tmp_path / "net.mnn", {"data": x}, outputs, tmp_path)
    for name in outputs:
        assert_close(got[name], run.blobs[name], name)


# ------------------------------------------------------------ the profile's layer list


_PROBE = textwrap.dedent('''
    import json, subprocess, sys, tempfile
    from pathlib import Path
    from pynetbuilder.schema import caffe_pb2
    CONVERT = "import _tools, sys; _tools.mnnconvert(sys.argv)"
    PARAMS = ("convolution_param { num_output: 4 kernel_size: 1 } "
              "inner_product_param { num_output: 4 } "
              "input_param { shape { dim: 1 dim: 4 dim: 9 dim: 9 } }")
    folder = Path(tempfile.mkdtemp())

    def attempt(kind, shapes, params):
        model = caffe_pb2.NetParameter()
        layer = model.layer.add(name="l", type=kind)
        for shape in shapes:
            blob = layer.blobs.add()
            blob.shape.dim.extend(shape)
            size = 1
            for d in shape:
                size *= d
            blob.data.extend([0.5] * size)
        (folder / "w.caffemodel").write_bytes(model.SerializeToString())
        (folder / "p.prototxt").write_text(
            'input: "data" input_shape { dim: 1 dim: 4 dim: 9 dim: 9 }\\n'
            f'layer {{ name: "l" type: "{kind}" bottom: "data" top: "out" {params} }}\\n')
        proc = subprocess.run([sys.executable, "-c", CONVERT, "-f", "CAFFE", "--modelFile",
                               str(folder / "w.caffemodel"), "--prototxt",
                               str(folder / "p.prototxt"), "--MNNModel",
                               str(folder / "o.mnn")], capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        if f"These Op Not Support: Caffe::{kind} " in log:
            return "rejected"
        return "converted" if "Converted Success" in log else "crashed"

    found = {}
    for kind in sys.argv[1:]:
        # a converter that runs may stop on weights it misses: retry with 4-axis ones
        found[kind] = attempt(kind, ([4], [4]), "")
        if found[kind] == "crashed":
            found[kind] = attempt(kind, ([4, 4, 1, 1], [4]), PARAMS)
    print(json.dumps(found))
''')

# converted by MNN, but computing something else than Caffe (shown below)
COMPUTED_WRONGLY = {"ArgMax", "Embed", "Log", "MVN", "Upsample"}


def test_mnn_profile_lists_what_the_converter_accepts_and_computes():
    """One-layer nets of every type pynetbuilder knows or the profile names, with
    weights: MNN's converter says 'These Op Not Support: Caffe::T' for a type it has no
    converter for, and converts the others.  The profile lists exactly the converted
    ones less those computed wrongly (each with a fix saying so)."""
    profile = load_profile("mnn")
    types = sorted(set(KINDS) | profile.supported | set(profile.fixes))
    proc = subprocess.run([sys.executable, "-c", _PROBE, *types], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [t for t, v in found.items() if v == "crashed"] == []
    converted = {t for t, v in found.items() if v == "converted"}
    assert converted - COMPUTED_WRONGLY == profile.supported
    assert COMPUTED_WRONGLY <= converted and COMPUTED_WRONGLY <= set(profile.fixes)
    rejected = {t for t, v in found.items() if v == "rejected"}
    assert {"Clip", "DepthwiseConvolution", "LSTM", "Axpy", "BN", "Reorg", "Region"} <= rejected


def _layer(name: str, kind: str, params: str = "", bottoms: tuple[str, ...] = ("data",),
           tops: tuple[str, ...] = ()) -> str:
    text = "".join(f' bottom: "{b}"' for b in bottoms)
    text += "".join(f' top: "{t}"' for t in (tops or (name,)))
    return f'layer {{ name: "{name}" type: "{kind}"{text} {params} }}\n'


HEAD = ('input: "data"\ninput_shape { dim: 2 dim: 6 dim: 7 dim: 8 }\n'
        'input: "pos"\ninput_shape { dim: 2 dim: 6 dim: 7 dim: 8 }\n'
        'input: "other"\ninput_shape { dim: 2 dim: 6 dim: 7 dim: 8 }\n')
# one layer of each type the profile lists that real Caffe (this build) computes;
# settings away from the defaults where a converter could drop them
AGREES = [
    ("absval", "AbsVal", ""), ("bnll", "BNLL", ""), ("elu", "ELU", "elu_param { alpha: 0.7 }"),
    ("exp", "Exp", "exp_param { base: 2 scale: 0.5 shift: 0.1 }"),
    ("power", "Power", "power_param { power: 2 scale: 0.5 shift: 0.25 }"),
    ("tanh", "TanH", ""), ("sigmoid", "Sigmoid", ""),
    ("threshold", "Threshold", "threshold_param { threshold: 0.2 }"),
    ("leaky", "ReLU", "relu_param { negative_slope: 0.1 }"), ("relu6", "ReLU6", ""),
    ("prelu", "PReLU", ""), ("bias", "Bias", ""),
    ("scale", "Scale", "scale_param { bias_term: true }"),
    ("bn", "BatchNorm", "batch_norm_param { use_global_stats: true }"),
    ("sumsq", "Reduction", "reduction_param { operation: SUMSQ axis: 1 }"),
    ("mean", "Reduction", "reduction_param { operation: MEAN axis: 2 }"),
    ("lrn", "LRN", "lrn_param { local_size: 3 alpha: 0.1 beta: 0.75 }"),
    ("lrn_within", "LRN", "lrn_param { local_size: 3 alpha: 0.1 beta: 0.75 "
                          "norm_region: WITHIN_CHANNEL }"),
    ("softmax", "Softmax", "softmax_param { axis: 2 }"), ("flatten", "Flatten", ""),
    ("permute", "Permute", "permute_param { order: 0 order: 2 order: 3 order: 1 }"),
    ("reshape", "Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 4 } }"),
    ("ip", "InnerProduct", "inner_product_param { num_output: 5 }"),
    ("conv", "Convolution", "convolution_param { num_output: 4 kernel_size: 3 pad: 2 "
                            "stride: 2 dilation: 2 group: 2 }"),
    ("deconv", "Deconvolution", "convolution_param { num_output: 6 kernel_size: 4 stride: 2 "
                                "pad: 1 group: 3 }"),
    ("maxpool", "Pooling", "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }"),
    ("avepool", "Pooling", "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
    ("global", "Pooling", "pooling_param { pool: AVE global_pooling: true }"),
    ("normalize", "Normalize", "norm_param { across_spatial: false channel_shared: false }"),
    ("prod", "Eltwise", "eltwise_param { operation: PROD }"),
    ("max", "Eltwise", "eltwise_param { operation: MAX }"),
    ("concat", "Concat", "concat_param { axis: 2 }"),
]


def test_one_layer_of_each_listed_type_computes_what_caffe_computes(caffe, tmp_path):
    """One net holding a layer of each listed type (batch 2, 6 channels: not MNN's
    multiple of 4), random weights: MNN's outputs equal real Caffe's.  Log reads the
    positive input.  MNN's ConvolutionDepthwise (ShuffleNet's type, no group written)
    is judged against Caffe's Convolution with group = channels and the same weights;
    its ShuffleChannel against the channel permutation of ShuffleNet's layer
    (channels viewed as group x C/group, transposed)."""
    # (Flatten reads another input: MNN's optimizer merges it with InnerProduct's own
    # flattening of the same input, and its output name is gone)
    body = "".join(_layer(n, k, p, ("data", "other") if k in ("Eltwise", "Concat")
                          else ("other",) if k == "Flatten" else ("data",))
                   for n, k, p in AGREES)
    body += _layer("log", "Log", "log_param { base: 2.718281828 shift: 1 scale: 2 }", ("pos",))
    body += _layer("crop", "Crop", "crop_param { axis: 2 offset: 1 offset: 2 }",
                   ("data", "small"))
    body += _layer("slice", "Slice", "slice_param { axis: 1 slice_point: 2 }",
                   tops=("slice_a", "slice_b"))
    dw = "convolution_param {{ num_output: 6 kernel_size: 3 pad: 1 {} }}"
    head = HEAD + 'input: "small"\ninput_shape { dim: 2 dim: 6 dim: 4 dim: 5 }\n'
    caffe_text = head + body + _layer("dw", "Convolution", dw.format("group: 6"))
    mnn_text = (head + body + _layer("dw", "ConvolutionDepthwise", dw.format(""))
                + _layer("shuffle", "ShuffleChannel", "shuffle_channel_param { group: 3 }"))
    rng = np.random.default_rng(5)
    inputs = {"data": rng.normal(0, 1, (2, 6, 7, 8)), "other": rng.normal(0, 1, (2, 6, 7, 8)),
              "pos": rng.uniform(0.1, 3, (2, 6, 7, 8)), "small": np.zeros((2, 6, 4, 5))}
    inputs = {k: v.astype(np.float32) for k, v in inputs.items()}
    outputs = [n for n, _, _ in AGREES] + ["log", "crop", "slice_a", "slice_b", "dw"]
    expected, got, log = caffe_and_mnn(caffe, tmp_path, caffe_text, inputs, outputs,
                                       mnn_text)
    assert got is not None, log[-2000:]
    for name in outputs:
        assert_close(got[name], expected[name], name)
    shuffle = mnn_run(tmp_path / "net.mnn", inputs, ["shuffle"], tmp_path)["shuffle"]
    x = inputs["data"]
    assert np.array_equal(shuffle, x.reshape(2, 3, 2, 7, 8).transpose(0, 2, 1, 3, 4)
                          .reshape(x.shape))


WRONG = {
    # Caffe's Upsample (this build) repeats pixels; MNN makes it a bilinear Resize
    "Upsample": _layer("out", "Upsample", "upsample_param { scale: 2 }"),
    "ArgMax": _layer("out", "ArgMax", "argmax_param { axis: 1 }"),
    "Embed": _layer("out", "Embed", "embed_param { num_output: 3 input_dim: 10 "
                                    "bias_term: false }", ("index",)),
    "MVN": _layer("out", "MVN", "mvn_param { normalize_variance: true }"),
    # without log_param.base MNN drops the layer or misreads shift
    "Log": _layer("out", "Log", "log_param { shift: 1 }", ("pos",)),
    "Reduction coeff": _layer("out", "Reduction", "reduction_param { axis: 1 coeff: 2 }"),
}


@pytest.mark.parametrize("what", sorted(WRONG))
def test_what_the_profile_says_mnn_computes_wrongly_differs_from_caffe(caffe, tmp_path, what):
    """Each type the profile leaves out although MNN converts it, and each field it
    flags, gives outputs other than real Caffe's (if a later MNN fixes one, this fails
    and the profile is to be corrected)."""
    rng = np.random.default_rng(2)
    head = HEAD + 'input: "index"\ninput_shape { dim: 2 dim: 6 dim: 7 dim: 8 }\n'
    inputs = {"data": rng.normal(0, 1, (2, 6, 7, 8)), "other": np.zeros((2, 6, 7, 8)),
              "pos": rng.uniform(0.1, 3, (2, 6, 7, 8)),
              "index": rng.integers(0, 10, (2, 6, 7, 8))}
    inputs = {k: v.astype(np.float32) for k, v in inputs.items()}
    expected, got, log = caffe_and_mnn(caffe, tmp_path, head + WRONG[what], inputs, ["out"])
    assert got is not None, log[-2000:]
    assert got["out"].size == expected["out"].size
    assert not np.allclose(got["out"].reshape(expected["out"].shape), expected["out"],
                           rtol=1e-3, atol=1e-3)
    if what == "Reduction coeff":  # the coefficient is ignored: half of Caffe's sum
        assert_close(got["out"] * 2, expected["out"], what)


def test_mnn_cannot_run_an_eltwise_with_coefficients(caffe, tmp_path):
    """Eltwise SUM with coeff (even 1, 1) converts, but MNN's runtime stops (error 2,
    no output): why --target mnn writes Power layers and a plain SUM instead."""
    text = HEAD + _layer("out", "Eltwise", "eltwise_param { operation: SUM coeff: 1 coeff: 1 }",
                         ("data", "other"))
    inputs = {k: np.ones((2, 6, 7, 8), np.float32) for k in ("data", "other", "pos")}
    with pytest.raises(AssertionError, match="code=2 in onForward"):
        caffe_and_mnn(caffe, tmp_path, text, inputs, ["out"])


# ------------------------------------------------------------ pooling and resizing sizes


def _pooling_shape(tmp_path: Path, size: int, settings: str) -> tuple[int, ...] | str:
    """MNN's output shape of one 2x2 stride-2 MAX pooling on size x size (or its error)."""
    text = (f'input: "data"\ninput_shape {{ dim: 1 dim: 4 dim: {size} dim: {size} }}\n'
            + _layer("out", "Pooling", f"pooling_param {{ pool: MAX kernel_size: 2 stride: 2 "
                                       f"{settings} }}"))
    (tmp_path / "p.prototxt").write_text(text)
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    log = mnn_convert(tmp_path / "p.prototxt", tmp_path / "empty.caffemodel", tmp_path / "p.mnn")
    if "Converted Success" not in log:
        return "has no field named" if "has no field named" in log else log
    x = np.zeros((1, 4, size, size), np.float32)
    return mnn_run(tmp_path / "p.mnn", {"data": x}, ["out"], tmp_path)["out"].shape


def test_mnn_pooling_always_rounds_up_and_keeps_a_window_in_the_padding(caffe, tmp_path):
    """MNN's parser knows round_mode (BVLC master) and not ceil_mode; it ignores
    round_mode and always rounds up (5 -> 3 where FLOOR gives 2); and it keeps a last
    window that starts in the padding, which Caffe drops (5, pad 1 -> 4 where real
    Caffe gives 3).  The profile says so: check flags both layers."""
    assert _pooling_shape(tmp_path, 5, "ceil_mode: false") == "has no field named"
    assert _pooling_shape(tmp_path, 5, "round_mode: FLOOR") == (1, 4, 3, 3)
    assert _pooling_shape(tmp_path, 5, "pad: 1") == (1, 4, 4, 4)
    text = ('input: "data"\ninput_shape { dim: 1 dim: 4 dim: 5 dim: 5 }\n'
            + _layer("p", "Pooling", "pooling_param { pool: MAX kernel_size: 2 stride: 2 "
                                     "pad: 1 }"))
    path = tmp_path / "caffe.prototxt"
    path.write_text(text)
    assert caffe.Net(str(path), caffe.TEST).blobs["p"].data.shape == (1, 4, 3, 3)
    inspected = load(str(path))
    found = check(inspected.net, inspected.report.blob_shapes, load_profile("mnn"))
    assert [(v.layer, v.rule) for v in found] == [("p", "pooling rounding")]
    assert "giving 3x3; the target keeps it: 4x4" in found[0].value
    with pytest.raises(NetError, match="cannot be written exactly for mnn"):
        for_target(inspected.net, "mnn")


def test_round_mode_floor_is_flagged_for_mnn(tmp_path, capsys):
    path = tmp_path / "floor.prototxt"
    path.write_text('input: "data"\ninput_shape { dim: 1 dim: 4 dim: 5 dim: 5 }\n'
                    + _layer("p", "Pooling", "pooling_param { pool: MAX kernel_size: 2 "
                                             "stride: 2 round_mode: FLOOR }"))
    code, out, _ = run_command("check", str(path), "--target", "mnn", capsys=capsys)
    assert code == 1
    assert "p (Pooling): pooling rounding: ceil_mode: false floors to 2x2; the target " \
           "rounds up to 3x3" in out


def test_mnn_sizes_interp_factors_its_own_way(tmp_path, capsys):
    """PSPNet's Interp (the rule of kinds/forks.py, hand-checked in test_dialects.py):
    zoom_factor 2 on 9 -> 9 + 8 = 17, shrink_factor 2 -> 8 // 2 + 1 = 5; MNN gives 13
    and 4.  height/width agree.  check flags the two factors."""
    shapes = {}
    for settings in ("zoom_factor: 2", "shrink_factor: 2", "height: 20 width: 30"):
        path = tmp_path / "interp.prototxt"
        path.write_text('input: "data"\ninput_shape { dim: 1 dim: 4 dim: 9 dim: 9 }\n'
                        + _layer("out", "Interp", f"interp_param {{ {settings} }}"))
        (tmp_path / "empty.caffemodel").write_bytes(b"")
        log = mnn_convert(path, tmp_path / "empty.caffemodel", tmp_path / "i.mnn")
        assert "Converted Success" in log, log[-1000:]
        x = np.zeros((1, 4, 9, 9), np.float32)
        ours = load(str(path)).report.blob_shapes["out"]
        theirs = mnn_run(tmp_path / "i.mnn", {"data": x}, ["out"], tmp_path)["out"].shape
        shapes[settings] = (ours, theirs)
        code, out, _ = run_command("check", str(path), "--target", "mnn", capsys=capsys)
        assert code == (0 if "height" in settings else 1), out
        if code:
            assert f"interp_param.{settings.split(':')[0]}" in out
    assert shapes == {"zoom_factor: 2": ((1, 4, 17, 17), (1, 4, 13, 13)),
                      "shrink_factor: 2": ((1, 4, 5, 5), (1, 4, 4, 4)),
                      "height: 20 width: 30": ((1, 4, 20, 30), (1, 4, 20, 30))}
