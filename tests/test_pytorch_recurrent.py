"""BVLC Caffe's recurrent layers (RNN, LSTM, LSTMUnit) and Embed against real Caffe.

Shapes, parameter blobs and MACs: the analysis of each net agrees with the blobs
pycaffe allocates (the recurrent layers' blobs are those of the net Caffe unrolls,
in its order), and a layer Caffe refuses is refused.  Execution: ``verify`` runs
each net in real Caffe (random weights Caffe draws, saved as a ``.caffemodel`` the
module loads) and as a PyTorch module on the same inputs, and compares every blob,
the input gradients and the parameter gradients, to 1e-4 of Caffe's largest
magnitude.  Sequence indicators (``cont``) with zeros where sequences restart and
Embed's indices are given to verify as arrays (``verify(..., inputs=...)``).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_report_matches_caffe, caffe_net
from test_pytorch_layers import layer, net_text

from pynetbuilder.errors import ShapeError, UsageError
from pynetbuilder.inspect import load
from pynetbuilder.pytorch.verify import verify
from pynetbuilder.report import analyze
from pynetbuilder.schema import parse_net

T, N = 5, 3
# a new sequence in every stream at t = 0 but the last (which starts from the zero
# state of Caffe's first pass), restarts in the middle of streams 0 and 1
CONT = np.array([[0, 0, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0]], np.float32)


def rec(name: str, kind: str, bottoms, tops=None, num_output: int = 6,
        expose: bool = False) -> str:
    extra = " expose_hidden: true" if expose else ""
    return layer(name, kind, bottoms, tops,
                 f"recurrent_param {{ num_output: {num_output}{extra} }}")


def run_verify(tmp_path, text: str, phase: str = "train", gradients: bool = True,
               **kwargs):
    path = tmp_path / f"net-{phase}.prototxt"
    path.write_text(text)
    result = verify(str(path), phase=phase, gradients=gradients, **kwargs)
    assert result.blobs, "nothing compared"
    bad = [c for c in result.checks if not c.ok]
    assert not bad, bad[:5]
    return result


# ---------------------------------------------------------------- shapes, blobs, MACs

INPUTS = {"x": (T, N, 4), "x4": (T, N, 2, 3), "cont": (T, N), "xs": (N, 6),
          "xs3": (N, 2, 2), "h0": (1, N, 6), "c0": (1, N, 6), "idx": (T, N),
          "cu": (1, N, 6), "gu": (1, N, 24), "contu": (1, N)}


def shape_layers() -> list[str]:
    return [
        rec("lstm", "LSTM", ["x", "cont"]),
        rec("lstm_s", "LSTM", ["x", "cont", "xs"], num_output=5),
        rec("lstm_4", "LSTM", ["x4", "cont", "xs3"], num_output=7),
        rec("lstm_e", "LSTM", ["x", "cont", "h0", "c0"], ["lstm_e", "lstm_hT", "lstm_cT"],
            expose=True),
        rec("lstm_es", "LSTM", ["x4", "cont", "xs", "h0", "c0"],
            ["lstm_es", "lstm_es_hT", "lstm_es_cT"], expose=True),
        rec("rnn", "RNN", ["x", "cont"], num_output=3),
        rec("rnn_s", "RNN", ["x4", "cont", "xs3"], num_output=8),
        rec("rnn_e", "RNN", ["x", "cont", "h0"], ["rnn_e", "rnn_hT"], expose=True),
        rec("rnn_es", "RNN", ["x", "cont", "xs", "h0"], ["rnn_es", "rnn_es_hT"], expose=True),
        layer("unit", "LSTMUnit", ["cu", "gu", "contu"], ["unit_c", "unit_h"]),
        layer("embed", "Embed", "idx", params="embed_param { num_output: 4 input_dim: 10 }"),
        layer("embed_nb", "Embed", "idx", params="embed_param { num_output: 3 input_dim: 7 "
              "bias_term: false }"),
    ]


def caffe_macs(kind: str, blobs: list, bottoms: list) -> int:
    """MACs from the blobs Caffe allocated, as InnerProduct counts them (rows x weight
    elements): W_xc / W_xh and W_hc / W_hh / W_ho take T x N rows, the static weight
    N rows."""
    t, n = bottoms[0].shape[:2]
    static = len(blobs) == (4 if kind == "LSTM" else 6)
    sizes = [b.data.size for b in blobs if b.data.ndim == 2]
    per_step = sizes[0] + sum(sizes[2 if static else 1:])
    return t * n * per_step + (n * sizes[1] if static else 0)


def test_shapes_blobs_and_macs_agree_with_caffe(caffe, tmp_path):
    """Every top and parameter blob shape equals pycaffe's (LSTM: W_xc, b_c,
    [W_xc_static], W_hc; RNN: W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o), learnable
    parameters are the sum of Caffe's blob sizes, MACs follow from Caffe's blobs."""
    text = net_text(INPUTS, shape_layers())
    (tmp_path / "net.prototxt").write_text(text)
    report = load(str(tmp_path / "net.prototxt")).report
    assert report.skipped == []
    net = caffe_net(caffe, text, "test", tmp_path)
    assert_report_matches_caffe(report, net)
    rows = {r.name: r for r in report.rows}
    kinds = dict(zip(net._layer_names, (la.type for la in net.layers)))
    for name, blobs in net.params.items():
        assert rows[name].params == sum(b.data.size for b in blobs), name
        if kinds[name] in ("LSTM", "RNN"):
            bottoms = [net.blobs[b] for b in net.bottom_names[name]]
            assert rows[name].macs == caffe_macs(kinds[name], blobs, bottoms), name
    assert [b.shape for b in rows["lstm_s"].blobs] == [(20, 4), (20,), (20, 6), (20, 5)]
    assert [b.shape for b in rows["rnn_s"].blobs] == [(8, 6), (8,), (8, 4), (8, 8), (8, 8),
                                                      (8,)]
    assert rows["embed"].macs == 0 and rows["unit"].params == 0


REFUSED = [
    ("x of 2 axes", {"x": (T, N), "cont": (T, N)}, rec("r", "LSTM", ["x", "cont"]),
     "at least 3 axes", "axis 2 out of range"),
    ("cont of another length", {"x": (T, N, 4), "cont": (T - 1, N)},
     rec("r", "RNN", ["x", "cont"]), "cont must be T x N", "Check failed"),
    ("x_static of 1 axis", {"x": (T, N, 4), "cont": (T, N), "xs": (N,)},
     rec("r", "LSTM", ["x", "cont", "xs"]), "x_static must be N x", "axis 1 out of range"),
    ("h_0 of another size", {"x": (T, N, 4), "cont": (T, N), "h0": (1, N, 5)},
     rec("r", "RNN", ["x", "cont", "h0"], ["o", "hT"], expose=True), "h_0 must be",
     "hidden state input shape"),
    ("exposed state missing", {"x": (T, N, 4), "cont": (T, N), "h0": (1, N, 6)},
     rec("r", "LSTM", ["x", "cont", "h0"], ["h", "hT", "cT"], expose=True),
     "takes 4 or 5 inputs", "bottom blob"),
    ("LSTMUnit gates not 4D", {"c": (1, N, 5), "g": (1, N, 15), "k": (1, N)},
     layer("u", "LSTMUnit", ["c", "g", "k"], ["c1", "h1"]), "gates 1 x N x 4D",
     "Check failed"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_layers_caffe_refuses_are_refused(tmp_path, case):
    _, inputs, text, ours, theirs = case
    prototxt = net_text(inputs, [text])
    with pytest.raises(ShapeError, match=ours):
        analyze(parse_net(prototxt))
    path = tmp_path / "bad.prototxt"
    path.write_text(prototxt)
    done = subprocess.run([sys.executable, "-c", f"import caffe; caffe.Net({str(path)!r}, 1)"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and theirs in done.stderr, done.stderr[-500:]


# ---------------------------------------------------------------- execution


def recurrent_layers() -> list[str]:
    """LSTM and RNN: num_output unlike the input size, x of 3 and 4 axes, x_static of
    2 and 3 axes or none."""
    return [
        rec("lstm", "LSTM", ["x", "cont"]),
        rec("lstm_s", "LSTM", ["x", "cont", "xs"], num_output=5),
        rec("lstm_4", "LSTM", ["x4", "cont", "xs3"], num_output=7),
        rec("rnn", "RNN", ["x", "cont"], num_output=3),
        rec("rnn_s", "RNN", ["x", "cont", "xs"], num_output=8),
        rec("rnn_4", "RNN", ["x4", "cont", "xs3"], num_output=4),
    ]


@pytest.mark.parametrize("phase", ["train", "test"])
def test_rnn_and_lstm_forward_and_gradients(tmp_path, phase):
    """Every blob, d x, d x_static and every parameter gradient agree with Caffe;
    cont gets no gradient: Caffe's forced backward leaves it zero, so the registry lists
    it among the layers' constant bottoms and verify does not compare it."""
    from pynetbuilder.pytorch.adapter import analysed
    from pynetbuilder.pytorch.caffe_oracle import caffe_ready, run_caffe

    inputs = {k: INPUTS[k] for k in ("x", "x4", "cont", "xs", "xs3")}
    text = net_text(inputs, recurrent_layers())
    result = run_verify(tmp_path, text, phase, inputs={"cont": CONT})
    names = {c.name for c in result.gradients}
    assert {"d x", "d x4", "d xs", "d xs3", "d lstm_4[3]", "d rnn_s[5]"} <= names
    assert "d cont" not in names
    a = analysed(str(tmp_path / f"net-{phase}.prototxt"), phase=phase)
    data = {n: np.ones(a.shapes[n], np.float32) for n in inputs}
    run = run_caffe(caffe_ready(a.net, a.shapes, 0), phase, data, backward=True,
                    top_diffs={t: np.ones(a.shapes[t], np.float32) for t in (
                        "lstm", "lstm_s", "lstm_4", "rnn", "rnn_s", "rnn_4")})
    assert not run.diffs["cont"].any() and run.diffs["x"].any()


def test_expose_hidden_takes_and_gives_the_state(tmp_path):
    """With expose_hidden the state starts from the extra inputs (h_0, c_0) and the
    last state is extra outputs (h_T, c_T); Caffe differentiates neither (the random
    gradients of h_T and c_T, and what a later layer sends them, are not read)."""
    inputs = {k: INPUTS[k] for k in ("x", "x4", "cont", "xs", "h0", "c0")}
    layers = [
        rec("lstm", "LSTM", ["x", "cont", "h0", "c0"], ["h", "hT", "cT"], expose=True),
        rec("lstm_s", "LSTM", ["x4", "cont", "xs", "h0", "c0"], ["hs", "hsT", "csT"],
            expose=True),
        rec("rnn", "RNN", ["x", "cont", "h0"], ["o", "oT"], expose=True),
        rec("rnn_s", "RNN", ["x", "cont", "xs", "h0"], ["os", "osT"], expose=True),
        layer("sum", "Eltwise", ["hT", "cT"], "sum"),
    ]
    result = run_verify(tmp_path, net_text(inputs, layers), inputs={"cont": CONT})
    blobs = {c.name: c for c in result.blobs}
    assert blobs["hT"].shape == (1, N, 6) and blobs["cT"].caffe_max > 0
    gradients = {c.name: c for c in result.gradients}
    assert gradients["d h0"].caffe_max == 0.0 and gradients["d c0"].caffe_max == 0.0
    assert gradients["d x"].caffe_max > 0


def test_cont_of_any_value_and_lstm_unit(tmp_path, monkeypatch):
    """cont is read as a number, not a flag: random N(0, 1) values (verify's default)
    scale the state, and LSTMUnit's backward takes f (1 - f) as the derivative of
    f = cont * sigmoid(f'), which is the true derivative only for cont 0 or 1.  The
    module reproduces Caffe's (checked to matter: with the true derivative the same
    comparison fails).  LSTMUnit alone: cont 0 (f is 0), 1, 0.5 and -1.5."""
    from pynetbuilder.pytorch import emit_recurrent

    inputs = {"x": (T, 2, 4), "cont": (T, 2), "c": (1, 4, 6), "g": (1, 4, 24),
              "k": (1, 4)}
    layers = [rec("lstm", "LSTM", ["x", "cont"]), rec("rnn", "RNN", ["x", "cont"]),
              layer("unit", "LSTMUnit", ["c", "g", "k"], ["c1", "h1"])]
    text = net_text(inputs, layers)
    given = {"k": np.array([[0.0, 1.0, 0.5, -1.5]], np.float32)}
    result = run_verify(tmp_path, text, inputs=given)
    assert {"d c", "d g", "d lstm[0]", "d rnn[0]"} <= {c.name for c in result.gradients}

    def true_derivative(pre, cont):
        import torch
        return torch.where(cont == 0, torch.zeros_like(pre), cont * torch.sigmoid(pre))

    monkeypatch.setattr(emit_recurrent, "_forget_gate", true_derivative)
    path = tmp_path / "true.prototxt"
    path.write_text(text)
    again = verify(str(path), phase="train", gradients=True, inputs=given)
    assert all(c.ok for c in again.blobs)
    failed = {c.name for c in again.gradients if not c.ok}
    assert {"d g", "d lstm[0]"} <= failed, failed


def test_embed_reads_floats_as_truncated_indices(tmp_path):
    """Indices are floats cast to int (truncated: 2.7 reads row 2); with and without
    bias; an Embed feeding an LSTM (a sequence of word indices).  Caffe aborts when
    force_backward reaches an Embed, so the gradients come from a backward pass driven
    by loss weights on the outputs: every parameter gradient is compared."""
    idx = np.array([[0, 9, 2.7], [5.2, 1, 3], [9.9, 0.5, 4], [7, 8, 6], [2, 2, 0]],
                   np.float32)
    layers = [
        layer("embed", "Embed", "idx", params="embed_param { num_output: 4 input_dim: 10 }"),
        layer("embed_nb", "Embed", "idx", params="embed_param { num_output: 3 input_dim: 10 "
              "bias_term: false }"),
        rec("lstm", "LSTM", ["embed", "cont"], num_output=5),
        rec("rnn", "RNN", ["embed_nb", "cont"], num_output=2),
    ]
    text = net_text({"idx": (T, N), "cont": (T, N)}, layers)
    result = run_verify(tmp_path, text, inputs={"idx": idx, "cont": CONT})
    names = {c.name for c in result.gradients}
    assert {"d embed[0]", "d embed[1]", "d embed_nb[0]", "d lstm[0]", "d rnn[4]"} <= names
    assert "d idx" not in names  # Caffe differentiates no input without force_backward
    run_verify(tmp_path, text, "test", gradients=False)  # verify's own random indices


def test_inputs_given_to_verify_are_checked(tmp_path):
    path = tmp_path / "n.prototxt"
    path.write_text(net_text({"x": (T, N, 4), "cont": (T, N)},
                             [rec("r", "RNN", ["x", "cont"])]))
    with pytest.raises(UsageError, match="input 'cnt' given to verify is not an input of the "
                       "net \\(its inputs: x, cont\\)"):
        verify(str(path), inputs={"cnt": CONT})
    with pytest.raises(UsageError, match=r"input 'cont' given to verify has the shape \(3, 5\); "
                       r"the net's is \(5, 3\)"):
        verify(str(path), inputs={"cont": CONT.T})


def test_module_blobs_are_caffes_and_the_module_traces_and_exports(tmp_path, capsys):
    """The module's parameters are named and ordered as Caffe's blobs; torch.fx traces
    it; ONNX in onnxruntime gives Caffe's outputs."""
    import onnxruntime as ort
    import torch
    from conftest import run_command

    from pynetbuilder.pytorch import to_module
    from pynetbuilder.pytorch.adapter import analysed
    from pynetbuilder.pytorch.caffe_oracle import caffe_ready, run_caffe

    inputs = {k: INPUTS[k] for k in ("idx", "cont", "xs")}
    layers = [
        layer("embed", "Embed", "idx", params="embed_param { num_output: 4 input_dim: 10 }"),
        rec("lstm", "LSTM", ["embed", "cont", "xs"]),
        rec("rnn", "RNN", ["embed", "cont"], num_output=3),
    ]
    path = tmp_path / "seq.prototxt"
    path.write_text(net_text(inputs, layers))
    module = to_module(str(path))
    assert module.layer_modules["lstm"].blob_names == ("w_xc", "b_c", "w_xc_static", "w_hc")
    assert module.layer_modules["rnn"].blob_names == ("w_xh", "b_h", "w_hh", "w_ho", "b_o")

    a = analysed(str(path))
    rng = np.random.default_rng(3)
    data = {"idx": rng.integers(0, 10, size=(T, N)).astype(np.float32), "cont": CONT,
            "xs": rng.standard_normal((N, 6)).astype(np.float32)}
    run = run_caffe(caffe_ready(a.net, a.shapes, 0), "deploy", data, keep=tmp_path)
    code, _, err = run_command("export", str(path), "--to", "onnx", "-o",
                               str(tmp_path / "seq.onnx"), "--weights", str(run.weights),
                               capsys=capsys)
    assert code == 0, err
    session = ort.InferenceSession(str(tmp_path / "seq.onnx"))
    feeds = {i.name: data[i.name] for i in session.get_inputs()}
    for out, value in zip(session.get_outputs(), session.run(None, feeds)):
        theirs = run.blobs[out.name]
        assert np.abs(value - theirs).max() <= 1e-4 * np.abs(theirs).max(), out.name

    tensors = {k: torch.from_numpy(v) for k, v in data.items()}
    with torch.no_grad():
        expected = module(**tensors)
        traced = torch.fx.symbolic_trace(module)(**tensors)
    for name, value in expected.items():
        assert torch.equal(traced[name], value), name
