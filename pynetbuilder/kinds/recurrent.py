"""Recurrent layer kinds: BVLC Caffe's RNN and LSTM (``recurrent_param``) and LSTMUnit.

Caffe builds an RNN or LSTM layer as an unrolled net of ``InnerProduct``, ``Scale``,
``Eltwise`` and ``TanH``/``LSTMUnit`` layers (``RecurrentLayer::LayerSetUp`` with
``RNNLayer``/``LSTMLayer::FillUnrolledNet``); the rules below give what that net
allocates, in its order:

- inputs ``x`` (T x N x ...; at least 3 axes: the input transform is an
  InnerProduct at axis 2), ``cont`` (T x N), optionally ``x_static`` (N x ...; at
  least 2 axes, InnerProduct at axis 1), then with ``expose_hidden`` the initial
  state (``h_0``; for LSTM ``h_0`` and ``c_0``, each 1 x N x num_output);
- tops ``T x N x num_output`` (then, with ``expose_hidden``, ``h_T`` (and ``c_T``)
  1 x N x num_output);
- parameter blobs, the unrolled net's own in layer order (with K = the product of
  x's axes from 2, Ks = that of x_static's from 1, D = num_output):
  LSTM ``W_xc`` (4D x K), ``b_c`` (4D), [``W_xc_static`` (4D x Ks)], ``W_hc`` (4D x D);
  RNN ``W_xh`` (D x K), ``b_h`` (D), [``W_xh_static`` (D x Ks)], ``W_hh`` (D x D),
  ``W_ho`` (D x D), ``b_o`` (D).

MACs follow InnerProduct's count (rows x inputs x outputs of each matrix product;
biases, gates and nonlinearities not counted), summed over every product the
unrolled net computes: LSTM ``T N K 4D + N Ks 4D + T N D 4D``; RNN
``T N K D + N Ks D + 2 T N D D`` (the recurrent product of the first step is
counted too: Caffe computes it, on a zero or carried-over state).
"""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.kinds.base import LayerCost, LayerLike, ParamBlob, Shape, count, kind, refuse

LAVENDER = "#d9d2e9"

# recurrent state blobs per type: Caffe's RecurrentInputBlobNames
STATES = {"RNN": ("h_0",), "LSTM": ("h_0", "c_0")}


def _bottom_counts(layer: LayerLike, bottoms: list[Shape]) -> bool:
    """Whether ``x_static`` is given (Caffe's ``static_input_``), after
    ``CheckBlobCounts`` (Min/MaxBottomBlobs, ExactNumTopBlobs)."""
    p = layer.recurrent_param
    states = len(STATES[layer.type]) if p.expose_hidden else 0
    least = 2 + states
    if not least <= len(bottoms) <= least + 1:
        named = ", ".join(["x", "cont", "[x_static]", *STATES[layer.type][:states]])
        raise refuse(layer, f"takes {least} or {least + 1} inputs ({named}), got {len(bottoms)}")
    if len(layer.top) != 1 + states:
        raise refuse(layer, f"gives {1 + states} outputs with expose_hidden "
                            f"{'true' if p.expose_hidden else 'false'}, got {len(layer.top)}")
    return len(bottoms) > least


def _recurrent(layer: LayerLike, bottoms: list[Shape]) -> tuple[int, int, int, int, int, bool]:
    """(T, N, D, K, Ks, expose) after ``RecurrentLayer::LayerSetUp``/``Reshape``'s checks
    (Ks is 0 without ``x_static``)."""
    p = layer.recurrent_param
    static = _bottom_counts(layer, bottoms)
    x, cont = bottoms[0], bottoms[1]
    if p.num_output < 1:
        raise refuse(layer, "recurrent_param.num_output must be positive")
    if len(x) < 3:
        raise refuse(layer, f"input x must be T x N x ... with at least 3 axes (its transform "
                            f"is an InnerProduct at axis 2), got {x}")
    t, n, d = x[0], x[1], p.num_output
    if cont != (t, n):
        raise refuse(layer, f"input cont must be T x N = {(t, n)}, got {cont}")
    ks = 0
    if static:
        xs = bottoms[2]
        if len(xs) < 2 or xs[0] != n:
            raise refuse(layer, f"input x_static must be N x ... with at least 2 axes and "
                                f"N = {n} (its transform is an InnerProduct at axis 1), got {xs}")
        ks = count(xs[1:])
    state = (1, n, d)
    for i, shape in enumerate(bottoms[2 + static:]):
        if shape != state:
            raise refuse(layer, f"input {STATES[layer.type][i]} must be {state}, got {shape}")
    return t, n, d, count(x[2:]), ks, p.expose_hidden


def _tops(layer: LayerLike, t: int, n: int, d: int, expose: bool) -> list[Shape]:
    states = len(STATES[layer.type]) if expose else 0
    return [(t, n, d)] + [(1, n, d)] * states


def _lstm(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
          ) -> LayerCost:
    t, n, d, k, ks, expose = _recurrent(layer, bottoms)
    gates = 4 * d
    blobs = [ParamBlob((gates, k)), ParamBlob((gates,))]
    if ks:
        blobs.append(ParamBlob((gates, ks)))
    blobs.append(ParamBlob((gates, d)))
    macs = t * n * k * gates + n * ks * gates + t * n * d * gates
    return LayerCost(_tops(layer, t, n, d, expose), blobs, macs)


def _rnn(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
         ) -> LayerCost:
    t, n, d, k, ks, expose = _recurrent(layer, bottoms)
    blobs = [ParamBlob((d, k)), ParamBlob((d,))]
    if ks:
        blobs.append(ParamBlob((d, ks)))
    blobs += [ParamBlob((d, d)), ParamBlob((d, d)), ParamBlob((d,))]
    macs = t * n * k * d + n * ks * d + 2 * t * n * d * d
    return LayerCost(_tops(layer, t, n, d, expose), blobs, macs)


def _lstm_unit(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
               ) -> LayerCost:
    """``LSTMUnitLayer::Reshape``: c_{t-1} (1 x N x D), gate inputs (1 x N x 4D) and
    cont (1 x N) give c_t and h_t (1 x N x D)."""
    if len(bottoms) != 3 or len(layer.top) != 2:
        raise refuse(layer, f"takes 3 inputs (c_prev, gates, cont) and gives 2 outputs (c, h), "
                            f"got {len(bottoms)} and {len(layer.top)}")
    c, x, cont = bottoms
    n = c[1] if len(c) > 1 else 0
    if len(c) != 3 or len(x) != 3 or len(cont) != 2 or {c[0], x[0], cont[0]} != {1} \
            or x[1] != n or cont[1] != n or x[2] != 4 * c[2]:
        raise refuse(layer, f"needs c_prev 1 x N x D, gates 1 x N x 4D and cont 1 x N, got "
                            f"{c}, {x} and {cont}")
    return LayerCost([c, c])


def _summary(layer: LayerLike) -> str:
    p = layer.recurrent_param
    return f"\u2192 {p.num_output}" + (" exposed" if p.expose_hidden else "")


# cont (the sequence continuation indicators) is never differentiated: RNN's and LSTM's
# bottom 1 (recurrent_layer.cpp: "Cannot backpropagate to sequence indicators"),
# LSTMUnit's bottom 2 (lstm_layer.hpp's AllowForceBackward)
KINDS = (
    kind("RNN", _rnn, param="recurrent_param", summary=_summary, fill=LAVENDER,
         torch="emit_recurrent:rnn", constant_bottoms=(1,)),
    kind("LSTM", _lstm, param="recurrent_param", summary=_summary, fill=LAVENDER,
         torch="emit_recurrent:lstm", constant_bottoms=(1,)),
    kind("LSTMUnit", _lstm_unit, fill=LAVENDER, torch="emit_recurrent:lstm_unit",
         constant_bottoms=(2,)),
)
