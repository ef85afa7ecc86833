"""``ShakeShake``: the Caffe Python layer of shake-shake regularisation (Gastaldi, 2017).

Two bottoms ``x1``, ``x2`` of one shape, one top ``y``.  For each sample ``n`` of
the batch:

- TRAIN forward: ``y[n] = alpha[n] * x1[n] + (1 - alpha[n]) * x2[n]`` with
  ``alpha[n] ~ U(0, 1)`` drawn anew every forward pass;
- TRAIN backward: ``dx1[n] = beta[n] * dy[n]``, ``dx2[n] = (1 - beta[n]) * dy[n]``
  with ``beta[n] ~ U(0, 1)`` drawn anew, independently of ``alpha``
  ("shake-shake-image": one coefficient per image);
- TEST: ``alpha = beta = 0.5`` (the expectation), forward and backward.

``param_str`` may hold a JSON object ``{"seed": 7}`` to make the draws repeatable;
without it they come from fresh OS entropy.  The layer keeps no reference to any
Caffe blob (nor to a NumPy view of one) between calls: views live only inside
``forward``/``backward``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import caffe
import numpy as np


def per_sample(weights: np.ndarray, ndim: int) -> np.ndarray:
    """``weights`` (one per sample) shaped to broadcast over an ``ndim``-axis blob."""
    return weights.reshape((-1,) + (1,) * (ndim - 1))


def mix(x1: np.ndarray, x2: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``w[n] * x1[n] + (1 - w[n]) * x2[n]`` per sample ``n``."""
    w = per_sample(weights, x1.ndim).astype(x1.dtype)
    return w * x1 + (1 - w) * x2


def parse_seed(param_str: str) -> int | None:
    """The optional ``seed`` of the layer's ``param_str`` (a JSON object, or empty)."""
    if not param_str.strip():
        return None
    params = json.loads(param_str)
    if not isinstance(params, dict) or set(params) - {"seed"}:
        raise ValueError(f'ShakeShake param_str takes {{"seed": int}}, got {param_str!r}')
    seed = params.get("seed")
    if seed is not None and (not isinstance(seed, int) or seed < 0):
        raise ValueError(f"ShakeShake seed must be a non-negative integer, got {seed!r}")
    return seed


class ShakeShake(caffe.Layer):
    """Random per-sample convex combination of two blobs (see the module docstring)."""

    def setup(self, bottom: Sequence[Any], top: Sequence[Any]) -> None:
        if len(bottom) != 2 or len(top) != 1:
            raise ValueError(
                f"ShakeShake takes two bottoms and gives one top, got {len(bottom)} "
                f"and {len(top)}"
            )
        self.rng = np.random.default_rng(parse_seed(self.param_str))
        self.training = self.phase == caffe.TRAIN
        self.alpha: np.ndarray | None = None  # the last draws (own arrays, not blob views)
        self.beta: np.ndarray | None = None

    def reshape(self, bottom: Sequence[Any], top: Sequence[Any]) -> None:
        first, second = tuple(bottom[0].shape), tuple(bottom[1].shape)
        if first != second:
            raise ValueError(f"ShakeShake needs bottoms of one shape, got {first} and {second}")
        top[0].reshape(*first)

    def _draw(self, n: int) -> np.ndarray:
        if self.training:
            return self.rng.uniform(0.0, 1.0, size=n)
        return np.full(n, 0.5)

    def forward(self, bottom: Sequence[Any], top: Sequence[Any]) -> None:
        self.alpha = self._draw(bottom[0].shape[0])
        top[0].data[...] = mix(bottom[0].data, bottom[1].data, self.alpha)

    def backward(
        self, top: Sequence[Any], propagate_down: Sequence[bool], bottom: Sequence[Any]
    ) -> None:
        self.beta = beta = self._draw(top[0].shape[0])
        dy = top[0].diff
        w = per_sample(beta, dy.ndim).astype(dy.dtype)
        if propagate_down[0]:
            bottom[0].diff[...] = w * dy
        if propagate_down[1]:
            bottom[1].diff[...] = (1 - w) * dy
