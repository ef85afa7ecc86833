"""Rockchip RKNN-Toolkit2 as a judge of nets written with --target rknn2, and of the
rknn2 profile.

RKNN-Toolkit2 2.5.0 (PyPI) converts a Caffe prototxt and caffemodel (``load_caffe``),
compiles it for an NPU (``build``; here rk3588, float16, no quantization) and runs the
result in its simulator on x86 (``init_runtime()`` without a target).  Its pins
(protobuf <= 4.25.4, numpy <= 1.26.4, torch <= 2.4) conflict with the project's
environment, so it lives in ``.venv-rknn`` (tools/rknn_setup.py, run by ``make rknn``
and ``make test``) and runs here as a child process (tests/rknn_driver.py), which also
keeps a toolkit crash out of the test process.  Without that environment these tests
fail, never skip.

What the simulator shows is the toolkit's conversion and graph rewriting (which layer
becomes which operators, on the NPU or on the CPU) and the float16 arithmetic; it does
not execute the register program of a real NPU.  The only sign of that program seen
here is the compiler's own error log (``E RKNN: ... REGTASK``), which the tests read.

Float16 bound: RKNN computes in float16 (unit roundoff 2**-11 = 4.9e-4: the input,
the weights and every stored activation are rounded to it).  Measured, max |RKNN -
Caffe| / max |Caffe| is 2e-4 to 1.0e-3 for one-layer nets (1.0e-3: a 64x64 kernel,
decomposed into 16 convolutions) and 3e-4 to 1.4e-3 for the nets below (1.4e-3:
ResNet's Softmax output).  TOLERANCE = 4e-3 (8 roundoffs) leaves room for that and
still catches what goes wrong here: the errors measured below are 0.35 and more, a
pooling window off by one or a wrong padding value far more than 4e-3.

The nets: real Caffe's random weights (its fillers, BatchNorm statistics positive),
``pynetbuilder export|convert --target rknn2``, RKNN's outputs against real Caffe's
forward of the original net.  The profile: one-layer nets at and beyond each limit
RKNN-Toolkit2 2.5.0 shows, and beyond each limit of the 1.4.0 document it no longer
has; ``check`` flags each as the toolkit's outcome says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from conftest import ROOT, fill_caffe_weights, run_command

from pynetbuilder.inspect import load
from pynetbuilder.pytorch.adapter import analysed
from pynetbuilder.pytorch.caffe_oracle import caffe_ready, run_caffe
from pynetbuilder.schema import to_text
from pynetbuilder.targets import check, load_profile
from pynetbuilder.targets.writer import EXTEND_SUFFIX

JUDGE = ROOT / ".venv-rknn"
DRIVER = Path(__file__).with_name("rknn_driver.py")
TOLERANCE = 4e-3  # of the largest magnitude; see the module's docstring


@pytest.fixture(scope="session")
def rknn_python() -> Path:
    python = JUDGE / "bin" / "python"
    if not (JUDGE / ".installed").is_file() or not python.exists():
        pytest.fail(f"RKNN-Toolkit2's environment {JUDGE} is missing: run `make rknn` "
                    "(tools/rknn_setup.py); these tests never skip")
    return python


class Job(NamedTuple):
    prototxt: Path
    caffemodel: Path
    inputs: list[np.ndarray]


def rknn_run(python: Path, jobs: list[Job], folder: Path) -> list[dict]:
    """Every job through RKNN-Toolkit2 in one child process: per job its ``error``
    (None or the failing step), ``ops`` ((type, NPU/CPU, output shape) of the compiled
    operators), ``compiler_errors`` and ``outputs`` (the arrays RKNN gave)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = []
    for i, job in enumerate(jobs):
        np.savez(folder / f"in{i}.npz", *job.inputs)
        spec.append({"prototxt": str(job.prototxt), "caffemodel": str(job.caffemodel),
                     "inputs": str(folder / f"in{i}.npz"),
                     "outputs": str(folder / f"out{i}.npz"), "log": str(folder / f"{i}.log")})
    (folder / "jobs.json").write_text(json.dumps(spec))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home()),
           "TMPDIR": str(folder), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([str(python), str(DRIVER), str(folder / "jobs.json"),
                           str(folder / "results.json")], capture_output=True, text=True,
                          env=env, cwd=folder, timeout=600)  # it leaves .onnx dumps in cwd
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = json.loads((folder / "results.json").read_text())
    for result, job in zip(results, spec):
        outputs = np.load(job["outputs"]) if result["error"] is None else None
        result["outputs"] = None if outputs is None else [
            outputs[f"arr_{i}"] for i in range(len(outputs.files))]
        result["log"] = job["log"]
    return results


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    assert got.shape == expected.shape, (got.shape, expected.shape)
    diff = np.abs(got.astype(np.float64) - expected)
    return float(diff.max() / np.abs(expected).max())


def first_layers(net, count: int, path: Path) -> Path:
    """The first ``count`` layers of ``net`` written to ``path`` (a net whose output
    is the last one's top: RKNN gives a net's outputs only)."""
    cut = type(net)()
    cut.CopyFrom(net)
    del cut.layer[count:]
    path.write_text(to_text(cut))
    return path


# ------------------------------------------------------------ nets written for rknn2


NETS = [
    # SqueezeNet-1.0's pool4 sizes 54 -> 27 by Caffe's ceil rounding: a zero extension
    ("export", "squeezenet:version=1_0", "pool4"),
    # ResNet's pool1 (112 -> 56 by ceil); BatchNorm and Scale, the factor folded in
    ("convert", "resnet_imagenet:blocks=1,1,1,1", "pool1"),
    # a plain CIFAR ResNet-20: nothing inserted
    ("export", "resnet:depth=20", None),
]


@pytest.mark.parametrize("command, net, extended", NETS, ids=[n[1].split(":")[0] for n in NETS])
def test_rknn_runs_the_net_written_for_it_with_caffes_outputs(rknn_python, tmp_path, capsys,
                                                             command, net, extended):
    """The written net as it is (its output: the Softmax), without its Softmax (the
    logits) and, where pooling reads a zero extension, up to that pooling: RKNN's
    outputs equal real Caffe's on the original net (float16 bound), everything on the
    NPU but the Reshape after an InnerProduct, no compiler error."""
    a = analysed(net)
    ready = caffe_ready(a.net, a.shapes, 0)
    x = np.random.default_rng(0).standard_normal(a.shapes["data"]).astype(np.float32)
    run = run_caffe(ready, "deploy", {"data": x}, keep=tmp_path)  # Caffe's random weights
    prototxt = tmp_path / "rknn2" / "net.prototxt"
    prototxt.parent.mkdir()
    weights = (["--weights", str(run.weights), "-o", str(prototxt)] if command == "export"
               else ["--from", str(run.weights), "-o", str(prototxt.with_suffix(".caffemodel"))])
    code, out, err = run_command(command, net, "--target", "rknn2", *weights, capsys=capsys)
    assert code == 0, err
    assert "rknn2 still rejects" not in out + err
    written = load(str(prototxt)).net
    names = [la.name for la in written.layer]
    assert [n for n in names if n not in {la.name for la in ready.layer}] == (
        [extended + EXTEND_SUFFIX] if extended else [])
    cuts = {"as written": len(names), "logits": len(names) - 1}
    if extended:
        cuts[extended] = names.index(extended) + 1
    jobs, expected = [], []
    for what, count in cuts.items():
        top = written.layer[count - 1].top[0]
        assert all(top not in la.top for la in written.layer[count:]), what  # not in place
        path = first_layers(written, count, tmp_path / f"{top.replace('/', '_')}.prototxt")
        jobs.append(Job(path, prototxt.with_suffix(".caffemodel"), [x]))
        expected.append(run.blobs[top])
    results = rknn_run(rknn_python, jobs, tmp_path / "rknn")
    for what, result, reference in zip(cuts, results, expected):
        assert result["error"] is None, (what, result["error"], result["log"])
        assert result["compiler_errors"] == [], what
        assert relative_error(result["outputs"][0], reference) <= TOLERANCE, what
        assert [op for op in result["ops"] if op[1] != "NPU" and op[0] != "Reshape"] == [], what
    if extended:  # the extension is a ConvTranspose on the NPU, one row and column wider
        bottom = a.shapes[next(la for la in ready.layer if la.name == extended).bottom[0]]
        shape = f"({bottom[0]},{bottom[1]},{bottom[2] + 1},{bottom[3] + 1})"
        assert ["ConvTranspose", "NPU", shape] in results[-1]["ops"]


def test_the_written_extension_states_its_stride_which_rknn_needs(rknn_python, caffe,
                                                                  tmp_path):
    """RKNN-Toolkit2 2.5.0 reads a Deconvolution's missing stride as 0 and fails to
    build (onnxruntime: 'All stride values must be positive'); with ``stride: 1``, what
    Caffe assumes, it runs.  So the zero extension is written with its stride."""
    body = ('layer {{ name: "out" type: "Deconvolution" bottom: "data" top: "out" '
            'convolution_param {{ num_output: 4 kernel_size: 2 group: 4 {} }} }}\n')
    without = probe(caffe, tmp_path / "without", (1, 4, 8, 8), body.format(""))
    explicit = probe(caffe, tmp_path / "with", (1, 4, 8, 8), body.format("stride: 1"))
    first, second = rknn_run(rknn_python, [without.job, explicit.job], tmp_path / "rknn")
    assert first["error"].startswith("build:") and "stride" in first["error"]
    assert second["error"] is None
    assert relative_error(second["outputs"][0], explicit.expected) <= TOLERANCE
    from pynetbuilder import models
    from pynetbuilder.targets.writer import for_target

    written = for_target(models.build("squeezenet").to_proto("deploy"), "rknn2")
    extension = next(la for la in written.layer if la.name.endswith(EXTEND_SUFFIX))
    assert list(extension.convolution_param.stride) == [1]


USER_DECONVOLUTIONS = """name: "up"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "up1" type: "Deconvolution" bottom: "conv1" top: "up1"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "up2" type: "Deconvolution" bottom: "up1" top: "up2"
        convolution_param { num_output: 6 kernel_size: 2 stride: 2 group: 6 } }
"""


def test_rknn_runs_a_users_deconvolution_without_stride_once_written_for_it(rknn_python,
                                                                          tmp_path, capsys):
    """A net of the user's whose Deconvolution up1 sets no stride (Caffe: 1) fails to
    build in RKNN-Toolkit2 2.5.0, and `check --target rknn2` says so; `export --target
    rknn2` writes ``stride: 1`` on it (up2's stride 2 unchanged): nothing remains to
    flag, real Caffe computes every blob of the original bit for bit, and RKNN's output
    equals Caffe's (float16 bound)."""
    original = tmp_path / "up.prototxt"
    original.write_text(USER_DECONVOLUTIONS)
    a = analysed(str(original))
    profile = load_profile("rknn2")
    assert [(v.layer, v.rule) for v in check(a.net, a.shapes, profile)] == [
        ("up1", "stride not written")]
    x = np.random.default_rng(0).standard_normal(a.shapes["data"]).astype(np.float32)
    run = run_caffe(caffe_ready(a.net, a.shapes, 0), "deploy", {"data": x}, keep=tmp_path)
    prototxt = tmp_path / "rknn2" / "up.prototxt"
    code, out, err = run_command("export", str(original), "--target", "rknn2", "--weights",
                                 str(run.weights), "-o", str(prototxt), capsys=capsys)
    assert code == 0, err
    assert "rknn2 still rejects" not in out + err
    written = load(str(prototxt))
    strides = {la.name: list(la.convolution_param.stride) for la in written.net.layer
               if la.type == "Deconvolution"}
    assert strides == {"up1": [1], "up2": [2]}
    assert check(written.net, written.report.blob_shapes, profile) == []
    again = run_caffe(written.net, "deploy", {"data": x}, weights=prototxt.with_suffix(
        ".caffemodel"))
    assert set(run.blobs) <= set(again.blobs)
    for blob in run.blobs:
        assert np.array_equal(again.blobs[blob], run.blobs[blob]), blob
    before, after = rknn_run(rknn_python, [Job(original, run.weights, [x]),
                                           Job(prototxt, prototxt.with_suffix(".caffemodel"),
                                               [x])], tmp_path / "rknn")
    assert before["error"].startswith("build:") and "stride" in before["error"]
    assert after["error"] is None and after["compiler_errors"] == []
    assert relative_error(after["outputs"][0], run.blobs["up2"]) <= TOLERANCE


# ------------------------------------------------------------ the rknn2 profile


class Probe(NamedTuple):
    job: Job
    expected: np.ndarray
    text: str  # what RKNN reads (and check judges)



def probe(caffe, folder: Path, shape: tuple[int, ...], body: str,
          rknn_body: str | None = None) -> Probe:
    """A one-layer net (output ``out``) with random weights and a standard-normal
    input: real Caffe's output; ``rknn_body`` what RKNN reads instead (a field or type
    our Caffe does not know, with the same weights and meaning)."""
    folder.mkdir(parents=True)
    dims = " ".join(f"dim: {d}" for d in shape)
    head = (f'layer {{ name: "data" type: "Input" top: "data" '
            f'input_param {{ shape {{ {dims} }} }} }}\n')
    (folder / "caffe.prototxt").write_text(head + body)
    net = caffe.Net(str(folder / "caffe.prototxt"), caffe.TEST)
    fill_caffe_weights(net, 0)
    net.save(str(folder / "net.caffemodel"))
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    text = head + (rknn_body or body)
    (folder / "rknn.prototxt").write_text(text)
    return Probe(Job(folder / "rknn.prototxt", folder / "net.caffemodel", [x]),
                 net.blobs["out"].data.copy(), text)


def conv(kernel: int, stride: int = 1, pad: int = 0, kind: str = "Convolution",
         group: int = 1, outputs: int = 4) -> str:
    grouped = f"group: {group} " if group != 1 else ""
    return (f'layer {{ name: "out" type: "{kind}" bottom: "data" top: "out" convolution_param '
            f'{{ num_output: {outputs} kernel_size: {kernel} stride: {stride} pad: {pad} '
            f'{grouped}}} }}\n')


def pool(kernel: int, stride: int, pad: int = 0, method: str = "MAX", extra: str = "") -> str:
    return (f'layer {{ name: "out" type: "Pooling" bottom: "data" top: "out" pooling_param '
            f'{{ pool: {method} kernel_size: {kernel} stride: {stride} pad: {pad} {extra} }} }}\n')


BATCHNORM = ('layer { name: "out" type: "BatchNorm" bottom: "data" top: "out" '
             'batch_norm_param { use_global_stats: true } }\n')
SOFTMAX = ('layer {{ name: "out" type: "Softmax" bottom: "data" top: "out" '
           'softmax_param {{ axis: {} }} }}\n')

# outcome in RKNN-Toolkit2 2.5.0: "exact" (Caffe's output within the float16 bound, every
# operator on the NPU, no compiler error), "cpu" (exact, part on the CPU), "register"
# (exact in the simulator, the compiler logs a register overflow), "wrong", "fails"
# (no model).  flagged: what `check --target rknn2` says.  Sizes where floor and ceil
# agree unless the name says "ceil".
PROBES = {
    # Deconvolution: strides 1, 2, 4, 8 on the NPU (the 1.4.0 document: 2, 4, 8)
    "deconv stride 1": ((1, 4, 8, 8), conv(2, 1, kind="Deconvolution"), None, "exact", False),
    "deconv stride 2": ((1, 4, 8, 8), conv(2, 2, kind="Deconvolution"), None, "exact", False),
    "deconv stride 3": ((1, 4, 8, 8), conv(3, 3, kind="Deconvolution"), None, "cpu", True),
    "deconv stride 4": ((1, 4, 8, 8), conv(4, 4, kind="Deconvolution"), None, "exact", False),
    "deconv stride 5": ((1, 4, 8, 8), conv(5, 5, kind="Deconvolution"), None, "cpu", True),
    "deconv stride 8": ((1, 4, 8, 8), conv(8, 8, kind="Deconvolution"), None, "exact", False),
    # Deconvolution kernel: 16 fits the compiler's register field (kernel - 1 <= 15)
    "deconv kernel 16": ((1, 2, 6, 6), conv(16, 2, kind="Deconvolution", outputs=2), None,
                         "exact", False),
    "deconv kernel 17": ((1, 2, 6, 6), conv(17, 2, kind="Deconvolution", outputs=2), None,
                         "register", True),
    # Pooling pad: a MAX kernel of 8 or more is split in two; a pad over half the kernel
    # then becomes a Pad of zeros (wrong where the input is negative, as here)
    # Pooling channels: a 13-bit register field (channels rounded up to 8, less 1)
    "max 8192 channels": ((1, 8192, 2, 2), pool(2, 2), None, "exact", False),
    "max 8193 channels": ((1, 8193, 2, 2), pool(2, 2), None, "register", True),
    "max kernel 8 pad 4": ((1, 2, 24, 24), pool(8, 2, 4), None, "exact", False),
    "max kernel 8 pad 5": ((1, 2, 24, 24), pool(8, 2, 5), None, "wrong", True),
    "max kernel 9 pad 5": ((1, 2, 25, 25), pool(9, 2, 5), None, "exact", True),  # (1)
    "max kernel 9 pad 6": ((1, 2, 25, 25), pool(9, 2, 6), None, "wrong", True),
    "max kernel 13 pad 6": ((1, 2, 25, 25), pool(13, 2, 6), None, "exact", True),  # (1)
    "max kernel 7 pad 6": ((1, 2, 25, 25), pool(7, 2, 6), None, "exact", True),  # (1)
    # rounding: ceil-rounded sizes are flagged, which is right for AVE (the overhanging
    # window divided by the whole kernel) and for MAX poolings that fail to build ...
    "ave ceil 6 -> 3": ((1, 2, 6, 6), pool(3, 2, method="AVE"), None, "wrong", True),
    "ave ceil pad 6 -> 4": ((1, 2, 6, 6), pool(3, 2, 1, "AVE"), None, "wrong", True),
    "max ceil stride 3 24 -> 9": ((1, 2, 24, 24), pool(3, 3, 1), None, "fails", True),
    "max ceil stride 9 40 -> 5": ((1, 2, 40, 40), pool(9, 9), None, "fails", True),
    # ... and more than needed for other MAX ones (2)
    "max ceil 6 -> 3": ((1, 2, 6, 6), pool(3, 2), None, "exact", True),
    # a last window Caffe drops (it starts in the padding): 5 -> 3, fails (3)
    "max dropped window 5 -> 3": ((1, 2, 5, 5), pool(2, 2, 1), None, "fails", False),
    # what 2.5.0 runs beyond the 1.4.0 document's limits (no longer in the profile)
    "conv kernel 32": ((1, 2, 40, 40), conv(32), None, "exact", False),
    "conv kernel 64": ((1, 2, 70, 70), conv(64), None, "exact", False),
    "conv stride 8": ((1, 2, 40, 40), conv(3, 8), None, "exact", False),
    "conv stride 16": ((1, 2, 70, 70), conv(3, 16), None, "exact", False),
    "conv pad 16": ((1, 2, 8, 8), conv(17, 1, 16), None, "exact", False),
    "deconv pad 16": ((1, 2, 20, 20), conv(16, 2, 16, kind="Deconvolution", outputs=2), None,
                      "exact", False),
    "depthwise kernel 9": ((1, 8, 20, 20), conv(9, group=8, outputs=8),
                           conv(9, kind="ConvolutionDepthwise", outputs=8), "exact", False),
    "max stride 9": ((1, 2, 36, 36), pool(9, 9), None, "exact", False),
    "max stride 16": ((1, 2, 64, 64), pool(16, 16), None, "exact", False),
    "batchnorm 8193 channels": ((1, 8193, 2, 2), BATCHNORM, None, "exact", False),
    "batchnorm height 8193": ((1, 1, 8193, 2), BATCHNORM, None, "exact", False),
    "batchnorm width 8177": ((1, 1, 2, 8177), BATCHNORM, None, "exact", False),
    "softmax 8193 channels": ((1, 8193, 1, 1), SOFTMAX.format(1), None, "exact", False),
    "softmax axis 2": ((1, 3, 4, 5), SOFTMAX.format(2), None, "exact", False),
    # 2.5.0's caffe.proto has ceil_mode and round_mode, and floors on request
    "max ceil_mode false 6 -> 2": ((1, 4, 6, 6), pool(3, 2, extra="ceil_mode: false"), None,
                                   "exact", False),
    "max round_mode FLOOR 6 -> 2": ((1, 4, 6, 6), pool(3, 2, extra="ceil_mode: false"),
                                    pool(3, 2, extra="round_mode: FLOOR"), "exact", False),
}
# (1) the profile's pad limit is simpler than the rule: pads over 4 flagged, whatever the
#     kernel; (2) the rounding rule cannot tell MAX poolings 2.5.0 sizes right from those
#     it fails to build: all are flagged, and --target rknn2 extends them (exact, above);
# (3) listed in the profile as unverified: `check` cannot see it


def outcome(result: dict, expected: np.ndarray) -> str:
    if result["error"] is not None:
        return "fails"
    got = result["outputs"][0]
    if got.shape != expected.shape or relative_error(got, expected) > TOLERANCE:
        return "wrong"
    if result["compiler_errors"]:
        return "register"
    return "cpu" if any(op[1] != "NPU" for op in result["ops"]) else "exact"


def test_the_rknn2_profile_flags_what_the_toolkit_does_not_run_exactly(rknn_python, caffe,
                                                                      tmp_path):
    """Each probe's outcome in RKNN-Toolkit2 2.5.0 is the one measured (see PROBES), and
    `check --target rknn2` flags it as noted there: every probe that is not exact on
    the NPU but the dropped last window (listed in the profile as unverified), and none
    that is, but for the pad limit's and the rounding rule's over-approximations."""
    profile = load_profile("rknn2")
    probes = {name: probe(caffe, tmp_path / name.replace(" ", "_"), shape, body, rknn_body)
              for name, (shape, body, rknn_body, _, _) in PROBES.items()}
    results = rknn_run(rknn_python, [p.job for p in probes.values()], tmp_path / "rknn")
    got, flagged = {}, {}
    for (name, p), result in zip(probes.items(), results):
        got[name] = outcome(result, p.expected)
        inspected = load(str(p.job.prototxt))
        flagged[name] = bool(check(inspected.net, inspected.report.blob_shapes, profile))
    assert got == {name: spec[3] for name, spec in PROBES.items()}
    assert flagged == {name: spec[4] for name, spec in PROBES.items()}


def test_the_dropped_window_gap_is_listed_in_the_profile():
    listed = [what for what, source in load_profile("rknn2").unverified
              if source.key == "toolkit"]
    assert any("last window Caffe drops" in what for what in listed)
    assert not any("explicit stride" in what for what in listed)  # checked and written


# ------------------------------------------------------------ the judge's set-up


def test_rknn_setup_is_quick_and_silent_when_current(rknn_python):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "rknn_setup.py")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == proc.stderr == ""
    assert time.monotonic() - start < 5
