"""BatchNorm (Caffe's three blobs), Scale, Bias, LRN, Normalize and MVN."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as nnf
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from pynetbuilder.pytorch.base import CaffeLayer, EmitError, Shape, caffe_axis


class BatchNorm(CaffeLayer):
    """Caffe's BatchNorm: blobs mean, variance (sums) and their scale factor.

    With global statistics (TEST, or ``use_global_stats: true``) it normalises with
    ``mean / s`` and ``variance / s`` (``s`` the third blob; 0 when ``s`` is 0).  Else
    with the batch's mean and biased variance, and updates the blobs as Caffe does:
    ``s = maf * s + 1``, ``mean = maf * mean + batch mean``, ``variance = maf *
    variance + m / (m - 1) * batch variance`` (``m`` values per channel).
    """

    blob_names = ("mean", "variance", "scale_factor")

    def __init__(self, channels: int, eps: float, maf: float, global_stats: bool) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("variance", torch.ones(channels))
        self.register_buffer("scale_factor", torch.ones(1))
        self.eps, self.maf, self.global_stats = eps, maf, global_stats
        self._global: tuple = ((), None, None)  # (the blobs' identity, mean / s, var / s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.affine(x, None, None)

    def global_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean / s`` and ``variance / s`` (0 when ``s`` is 0).  Six small tensor
        operations cost about as much as the normalisation itself on a 2-thread CPU, so
        eager calls reuse them until a blob changes (its storage or version counter: a
        weight load or an update); a trace (fx, TorchScript, ONNX, torch.compile) always
        records the operations."""
        blobs = (self.mean, self.variance, self.scale_factor)
        tracing = (torch.jit.is_tracing() or torch.compiler.is_compiling()
                   or is_fx_symbolic_tracing() or isinstance(self.mean, torch.fx.Proxy))
        key = () if tracing else tuple((b.data_ptr(), b._version) for b in blobs)
        if key and key == self._global[0]:
            return self._global[1], self._global[2]
        with torch.no_grad():
            s = self.scale_factor
            inv = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
            mean, var = self.mean * inv, self.variance * inv
        if key:
            self._global = (key, mean, var)
        return mean, var

    def affine(self, x: torch.Tensor, weight: torch.Tensor | None,
               bias: torch.Tensor | None) -> torch.Tensor:
        """Normalise, then ``* weight + bias`` (a following Scale layer) in one operation."""
        if self.global_stats:
            mean, var = self.global_statistics()
            return nnf.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        mean = torch.zeros_like(self.mean)
        var = torch.zeros_like(self.variance)
        y = nnf.batch_norm(x, mean, var, weight, bias, True, 1.0, self.eps)
        with torch.no_grad():  # var: the unbiased batch variance (m / (m - 1) * biased)
            self.scale_factor.mul_(self.maf).add_(1.0)
            self.mean.mul_(self.maf).add_(mean)
            self.variance.mul_(self.maf).add_(var)
        return y


def batch_norm(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.batch_norm_param
    b = bottoms[0]
    global_stats = p.use_global_stats if p.HasField("use_global_stats") else phase != "train"
    return BatchNorm(b[1] if len(b) > 1 else 1, p.eps, p.moving_average_fraction, global_stats)


def _broadcast_shape(data: Shape, axis: int, span: Shape) -> tuple[int, ...]:
    """``span`` placed at ``axis`` of a tensor of ``data``'s rank (1 elsewhere)."""
    return (1,) * axis + tuple(span) + (1,) * (len(data) - axis - len(span))


class Scale(CaffeLayer):
    """``x * scale (+ bias)``, the scale a blob or the second bottom, over ``axis..``."""

    def __init__(self, view: tuple[int, ...], blob: Shape | None, bias: Shape | None) -> None:
        super().__init__()
        names = []
        if blob is not None:
            self.weight = torch.nn.Parameter(torch.ones(blob))
            names.append("weight")
        else:
            self.weight = None
        if bias is not None:
            self.bias = torch.nn.Parameter(torch.zeros(bias))
            names.append("bias")
        else:
            self.bias = None
        self.blob_names = tuple(names)
        self.view = view

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        s = (self.weight if scale is None else scale).reshape(self.view)
        if self.bias is not None:
            return torch.addcmul(self.bias.reshape(self.view), x, s)
        return x * s


def _span(layer: Any, bottom: Shape, axis: int, num_axes: int) -> Shape:
    a = caffe_axis(axis, len(bottom))
    return tuple(bottom[a:]) if num_axes == -1 else tuple(bottom[a : a + num_axes])


def scale(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.scale_param
    data = bottoms[0]
    axis = caffe_axis(p.axis, len(data))
    span = tuple(bottoms[1]) if len(bottoms) > 1 else _span(layer, data, p.axis, p.num_axes)
    view = _broadcast_shape(data, axis, span)
    return Scale(view, None if len(bottoms) > 1 else span, span if p.bias_term else None)


class Bias(CaffeLayer):
    def __init__(self, view: tuple[int, ...], blob: Shape | None) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(blob)) if blob is not None else None
        self.blob_names = ("bias",) if blob is not None else ()
        self.view = view

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return x + (self.bias if bias is None else bias).reshape(self.view)


def bias(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.bias_param
    data = bottoms[0]
    axis = caffe_axis(p.axis, len(data))
    span = tuple(bottoms[1]) if len(bottoms) > 1 else _span(layer, data, p.axis, p.num_axes)
    return Bias(_broadcast_shape(data, axis, span), None if len(bottoms) > 1 else span)


class LRN(CaffeLayer):
    """ACROSS_CHANNELS: ``x * (k + alpha/n * sum of x^2 over n channels)^-beta``.
    WITHIN_CHANNEL: ``x * (1 + alpha * avg of x^2 over n x n)^-beta``, the average
    Caffe's AVE pooling (padding counted up to the padded border)."""

    def __init__(self, size: int, alpha: float, beta: float, k: float, within: bool) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.within = size, alpha, beta, k, within
        self.pad = (size - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sq = x * x
        if self.within:
            # Caffe's AVE pooling here: every window (stride 1, pad (n-1)/2) ends inside
            # the padded border, so its divisor is n*n everywhere, as PyTorch's
            mean = nnf.avg_pool2d(sq, self.size, 1, self.pad, count_include_pad=True)
            return x * torch.pow(1.0 + self.alpha * mean, -self.beta)
        padded = nnf.pad(sq.unsqueeze(1), (0, 0, 0, 0, self.pad, self.pad))
        mean = nnf.avg_pool3d(padded, (self.size, 1, 1), 1).squeeze(1)  # sum / size
        return x * torch.pow(self.k + self.alpha * mean, -self.beta)


def lrn(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.lrn_param
    if p.local_size % 2 == 0:
        raise EmitError(f"LRN layer {layer.name!r}: local_size must be odd (Caffe's rule)")
    within = p.norm_region == p.WITHIN_CHANNEL
    return LRN(p.local_size, p.alpha, p.beta, p.k, within)


def _l2_norm(x: torch.Tensor, across: bool, eps: float) -> torch.Tensor:
    sq = x * x
    if across:
        return torch.sqrt(sq.flatten(1).sum(1) + eps).reshape((-1,) + (1,) * (x.dim() - 1))
    return torch.sqrt(sq.sum(1, keepdim=True) + eps)


class _CaffeNormalize(torch.autograd.Function):
    """Normalize's forward, with the backward pass of SSD's C++ (normalize_layer.cpp):
    it differentiates ``x / norm`` with the top's gradient and multiplies the result by
    each channel's scale afterwards, ``s * J^T g`` where the chain rule gives
    ``J^T (s * g)``.  The two agree for a shared scale only; Caffe's is the one SSD
    models were trained with, so it is reproduced."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, across: bool, eps: float,
                view: tuple[int, ...]) -> torch.Tensor:
        norm = _l2_norm(x, across, eps)
        ctx.save_for_backward(x, weight, norm)
        ctx.across, ctx.view = across, view
        return x / norm * weight.reshape(view)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # noqa: ANN205 - autograd's contract
        x, weight, norm = ctx.saved_tensors
        scale = weight.reshape(ctx.view)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            if ctx.across:
                dot = (x * g).flatten(1).sum(1).reshape(norm.shape)
            else:
                dot = (x * g).sum(1, keepdim=True)
            dx = (g - x * (dot / (norm * norm))) / norm * scale
        if ctx.needs_input_grad[1]:
            per = x / norm * g  # top / scale, times the top's gradient
            if weight.dim() == 0:
                dw = per.sum()
            else:
                dw = per.sum([d for d in range(x.dim()) if d != 1])
        return dx, dw, None, None, None


class Normalize(CaffeLayer):
    """SSD's L2 normalisation: ``x / sqrt(sum x^2 + eps) * scale``, the sum over
    (C, H, W) per sample (``across_spatial``) or over C at each position, where
    Caffe adds eps before the sum of squares is taken; its gradient is Caffe's
    (:class:`_CaffeNormalize`)."""

    blob_names = ("weight",)

    def __init__(self, shape: Shape, across: bool, eps: float, view: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(shape))
        self.across, self.eps, self.view = across, eps, view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _CaffeNormalize.apply(x, self.weight, self.across, self.eps, self.view)


def normalize(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.norm_param
    b = bottoms[0]
    shape: Shape = () if p.channel_shared else (b[1],)
    view = (1,) * len(b) if p.channel_shared else (1, b[1]) + (1,) * (len(b) - 2)
    return Normalize(shape, p.across_spatial, p.eps, view)


class MVN(CaffeLayer):
    def __init__(self, across: bool, variance: bool, eps: float) -> None:
        super().__init__()
        self.across, self.variance, self.eps = across, variance, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim())) if self.across else tuple(range(2, x.dim()))
        y = x - x.mean(dims, keepdim=True)
        if self.variance:
            var = (y * y).mean(dims, keepdim=True)
            y = y / (torch.sqrt(var) + self.eps)
        return y


def mvn(layer: Any, bottoms: list[Shape], tops: list[Shape], phase: str) -> CaffeLayer:
    p = layer.mvn_param
    return MVN(p.across_channels, p.normalize_variance, p.eps)
