"""Embed, RNN, LSTM and LSTMUnit with BVLC Caffe's semantics.

- Embed (``embed_layer.cpp``): each input value, a float, is cast to an index
  (``static_cast<int>``: truncated toward zero) and picks a row of the
  input_dim x num_output table (blob 0), plus the bias (blob 1) with ``bias_term``.
  No gradient reaches the indices.
- RNN and LSTM (``recurrent_layer.cpp``, ``rnn_layer.cpp``, ``lstm_layer.cpp``): the
  unrolled net Caffe builds, step by step over the T time steps of x (T x N x ...):
  the state is gated by ``cont_t`` before each step (``h_conted = cont_t * h_{t-1}``,
  a Scale layer), LSTM's gate input is ``W_hc h_conted + (W_xc x_t + b_c)
  [+ W_xc_static x_static]`` split into Caffe's order (i, f, o, g), RNN's state
  ``h_t = tanh(W_hh h_conted + W_xh x_t + b_h [+ W_xh_static x_static])`` and output
  ``o_t = tanh(W_ho h_t + b_o)``.  The parameter blobs are the unrolled net's, in its
  order (see :mod:`pynetbuilder.kinds.recurrent`).
- LSTMUnit (``lstm_unit_layer.cpp``), also LSTM's step: ``f = 0`` where cont is 0,
  else ``cont * sigmoid(f')``; ``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``.
  Its backward takes ``f (1 - f)`` as the derivative of f, which is the true one only
  for cont in {0, 1}; the emitter reproduces Caffe's for any cont.

What Caffe does not differentiate gets no gradient here either: cont (it refuses
to), and with ``expose_hidden`` the given state ``h_0``/``c_0`` (Caffe shares only
their data with its unrolled net) and the returned ``h_T``/``c_T`` (their gradients
are never read: Caffe cannot backpropagate across batches).

One difference is by design: without ``expose_hidden`` Caffe's layer starts each
forward pass from the state its previous pass ended with (``h_T`` copied to
``h_0``; zero before the first pass), so a net fed one sequence in several batches
carries it over.  The module starts every pass from zero, which is Caffe's first
pass, and any pass whose first ``cont`` is 0 (a new sequence): carry the state
with ``expose_hidden`` instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as nnf

from pynetbuilder.pytorch.base import CaffeLayer, Shape, param


class Embed(CaffeLayer):
    def __init__(self, input_dim: int, num_output: int, bias: bool) -> None:
        super().__init__()
        self.weight = param((input_dim, num_output), 1)
        self.bias = param((num_output,), 1) if bias else None
        self.blob_names = ("weight", "bias") if bias else ("weight",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nnf.embedding(x.detach().to(torch.int64), self.weight)
        return y + self.bias if self.bias is not None else y


def embed(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.embed_param
    return Embed(p.input_dim, p.num_output, p.bias_term)


def _forget_gate(pre: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
    """LSTMUnit's f: 0 where cont is 0, else ``cont * sigmoid(pre)``, with Caffe's
    derivative ``f (1 - f)`` (``LSTMUnitLayer::Backward_cpu``): its value carries no
    graph, and ``(pre - pre.detach())``, exactly 0, carries that derivative."""
    f = torch.where(cont == 0, torch.zeros_like(pre), cont * torch.sigmoid(pre)).detach()
    return f + (pre - pre.detach()) * (f * (1 - f))


def lstm_unit_step(c_prev: torch.Tensor, gates: torch.Tensor, cont: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTMUnit on N x D states, N x 4D gate inputs (i, f, o, g) and N x 1 cont."""
    i, f, o, g = gates.chunk(4, dim=-1)
    c = _forget_gate(f, cont) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return c, torch.sigmoid(o) * torch.tanh(c)


class LSTMUnit(CaffeLayer):
    def forward(self, c_prev: torch.Tensor, gates: torch.Tensor, cont: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        c, h = lstm_unit_step(c_prev[0], gates[0], cont.detach()[0].unsqueeze(-1))
        return c.unsqueeze(0), h.unsqueeze(0)


def lstm_unit(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    return LSTMUnit()


class _Recurrent(CaffeLayer):
    """What RNN and LSTM share: the shapes, the optional inputs, the state's start."""

    def __init__(self, steps: int, streams: int, num_output: int, static: bool,
                 expose: bool) -> None:
        super().__init__()
        self.steps, self.streams, self.num_output = steps, streams, num_output
        self.static, self.expose = static, expose

    def _split(self, rest: tuple[torch.Tensor, ...]
               ) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...]]:
        """x_static (or None) and the given states (detached), from the inputs after
        x and cont."""
        static = rest[0] if self.static else None
        states = tuple(s.detach().reshape(self.streams, self.num_output)
                       for s in rest[int(self.static):])
        return static, states

    @staticmethod
    def _input_terms(x: torch.Tensor, cont: torch.Tensor, static: torch.Tensor | None,
                     w: torch.Tensor, b: torch.Tensor, w_static: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """cont as T x N x 1 (no gradient: Caffe gives it none), W x_t + b for every step
        (T x N x .) and W_static x_static (or None): what each step adds to W h."""
        return (cont.detach().unsqueeze(-1), nnf.linear(x.flatten(2), w, b),
                nnf.linear(static.flatten(1), w_static) if static is not None else None)

    @staticmethod
    def _pre(h: torch.Tensor, cont_t: torch.Tensor, w_rec: torch.Tensor, x_t: torch.Tensor,
             static: torch.Tensor | None) -> torch.Tensor:
        """One step's pre-activation: W (cont_t h) + W x_t + b (+ W_static x_static)."""
        pre = nnf.linear(cont_t * h, w_rec) + x_t
        return pre if static is None else pre + static

    def _zeros(self, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros((self.streams, self.num_output))

    def _outputs(self, out: torch.Tensor, last: tuple[torch.Tensor, ...]):
        if not self.expose:
            return out
        return (out, *(s.detach().unsqueeze(0) for s in last))


class LSTM(_Recurrent):
    def __init__(self, steps: int, streams: int, num_output: int, k: int, k_static: int,
                 expose: bool) -> None:
        super().__init__(steps, streams, num_output, k_static > 0, expose)
        gates = 4 * num_output
        self.w_xc, self.b_c = param((gates, k), k), param((gates,), k)
        self.w_xc_static = param((gates, k_static), k_static) if k_static else None
        self.w_hc = param((gates, num_output), num_output)
        self.blob_names = ("w_xc", "b_c", *(("w_xc_static",) if k_static else ()), "w_hc")

    def forward(self, x: torch.Tensor, cont: torch.Tensor, *rest: torch.Tensor):
        static, states = self._split(rest)
        h, c = states if self.expose else (self._zeros(x), self._zeros(x))
        cont, w_xc_x, w_static = self._input_terms(x, cont, static, self.w_xc, self.b_c,
                                                   self.w_xc_static)
        hs = []
        for t in range(self.steps):
            gates = self._pre(h, cont[t], self.w_hc, w_xc_x[t], w_static)
            c, h = lstm_unit_step(c, gates, cont[t])
            hs.append(h)
        return self._outputs(torch.stack(hs), (h, c))


def lstm(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    t, n, k, k_static, expose = _geometry(layer, bottoms, 2)
    return LSTM(t, n, layer.recurrent_param.num_output, k, k_static, expose)


class RNN(_Recurrent):
    def __init__(self, steps: int, streams: int, num_output: int, k: int, k_static: int,
                 expose: bool) -> None:
        super().__init__(steps, streams, num_output, k_static > 0, expose)
        d = num_output
        self.w_xh, self.b_h = param((d, k), k), param((d,), k)
        self.w_xh_static = param((d, k_static), k_static) if k_static else None
        self.w_hh, self.w_ho, self.b_o = param((d, d), d), param((d, d), d), param((d,), d)
        self.blob_names = ("w_xh", "b_h", *(("w_xh_static",) if k_static else ()), "w_hh",
                           "w_ho", "b_o")

    def forward(self, x: torch.Tensor, cont: torch.Tensor, *rest: torch.Tensor):
        static, states = self._split(rest)
        h = states[0] if self.expose else self._zeros(x)
        cont, w_xh_x, w_static = self._input_terms(x, cont, static, self.w_xh, self.b_h,
                                                   self.w_xh_static)
        hs = []
        for t in range(self.steps):
            h = torch.tanh(self._pre(h, cont[t], self.w_hh, w_xh_x[t], w_static))
            hs.append(h)
        out = torch.tanh(nnf.linear(torch.stack(hs), self.w_ho, self.b_o))
        return self._outputs(out, (h,))


def rnn(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    t, n, k, k_static, expose = _geometry(layer, bottoms, 1)
    return RNN(t, n, layer.recurrent_param.num_output, k, k_static, expose)


def _geometry(layer: Any, bottoms: list[Shape], states: int
              ) -> tuple[int, int, int, int, bool]:
    """T, N, K (x's inputs per step), Ks (x_static's, 0 without it), expose_hidden:
    the analysed shapes, checked by the shape rule already."""
    expose = layer.recurrent_param.expose_hidden
    static = len(bottoms) > 2 + (states if expose else 0)
    x = bottoms[0]
    k_static = math.prod(bottoms[2][1:]) if static else 0
    return x[0], x[1], math.prod(x[2:]), k_static, expose
