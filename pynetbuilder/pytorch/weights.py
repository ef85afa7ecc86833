"""Caffe weights in and out: ``.caffemodel`` <-> a :class:`CaffeNet`'s blobs.

Blobs are matched by layer name and blob index, as Caffe's ``CopyTrainedLayersFrom``
does, and every shape is checked (a legacy 4-axis ``num/channels/height/width``
shape matches as Caffe's ``ShapeEquals`` allows).  Unlike Caffe, a layer of the net
with parameter blobs that the file lacks is an error, not left at its initial value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pynetbuilder.errors import UsageError
from pynetbuilder.schema import caffe_pb2


class WeightsError(UsageError):
    """Weights that do not fit the net (one line naming the first mismatches)."""


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its blobs (float32 arrays shaped as stored; legacy shapes kept 4-d)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read weights {path}: {exc.strerror}") from None
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(data)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise UsageError(f"{path} is not a Caffe .caffemodel (NetParameter) file") from None
    layers: dict[str, list[np.ndarray]] = {}
    for layer in [*net.layer, *net.layers]:
        if layer.blobs:
            layers[layer.name] = [_blob_array(b) for b in layer.blobs]
    return layers


def _blob_array(blob: Any) -> np.ndarray:
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    elif not any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = ()  # a 0-axis blob (a shared PReLU or Normalize scale) has no shape field
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    values = blob.data if len(blob.data) else blob.double_data
    arr = np.asarray(values, dtype=np.float32)
    if arr.size != int(np.prod(shape)):
        raise UsageError(f"a blob holds {arr.size} values for shape {shape}")
    return arr.reshape(shape)


def _fits(target: tuple[int, ...], stored: tuple[int, ...], legacy: bool) -> bool:
    if target == stored:
        return True
    if legacy and len(target) <= 4:  # Caffe's ShapeEquals with a legacy blob
        return (1,) * (4 - len(target)) + tuple(target) == tuple(stored)
    return False


def net_blobs(module: Any) -> dict[str, list[torch.Tensor]]:
    """Layer name -> the module's tensors for its Caffe blobs (in blob order)."""
    return {name: m.caffe_blobs() for name, m in module.layer_modules.items() if m.blob_names}


def check_and_map(module: Any, layers: Mapping[str, list[np.ndarray]],
                  source: str) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Pairs (module tensor, array) for every blob; WeightsError naming the first
    mismatches (up to five) if a layer is missing or a count or shape differs."""
    pairs: list[tuple[torch.Tensor, np.ndarray]] = []
    problems: list[str] = []
    for name, tensors in net_blobs(module).items():
        stored = layers.get(name)
        if stored is None:
            problems.append(f"layer {name!r} missing")
            continue
        if len(stored) != len(tensors):
            problems.append(f"layer {name!r} has {len(stored)} blobs, the net needs "
                            f"{len(tensors)}")
            continue
        for i, (t, a) in enumerate(zip(tensors, stored)):
            if not _fits(tuple(t.shape), a.shape, legacy=a.ndim == 4):
                problems.append(f"{name!r} blob {i}: {_fmt(a.shape)} in the file, "
                                f"{_fmt(tuple(t.shape))} in the net")
            else:
                pairs.append((t, a))
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise WeightsError(f"{source} does not fit net {module.net_name!r}: "
                           + "; ".join(problems[:5]) + more)
    return pairs


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def load_caffemodel(module: Any, path: str | Path) -> None:
    """Copy a ``.caffemodel``'s blobs into ``module`` (all checked before any is copied)."""
    pairs = check_and_map(module, read_caffemodel(path), str(path))
    with torch.no_grad():
        for t, a in pairs:
            t.copy_(torch.from_numpy(np.ascontiguousarray(a)).reshape(t.shape))


def caffemodel_bytes(module: Any, written: Any = None) -> bytes:
    """The module's weights as a ``.caffemodel``: its phase's layers, blobs filled in;
    with ``written`` (the module's net rewritten for a deploy target,
    :func:`pynetbuilder.targets.writer.for_target`), that net's layers and blobs
    (:func:`~pynetbuilder.targets.writer.target_blobs`)."""
    blobs: Mapping[str, Any] = net_blobs(module)
    if written is not None:
        from pynetbuilder.targets.writer import target_blobs

        blobs = target_blobs(written, {name: [t.detach().cpu().numpy() for t in tensors]
                                       for name, tensors in blobs.items()})
    net = caffe_pb2.NetParameter()
    net.CopyFrom(module.net_param if written is None else written)
    for layer in net.layer:
        del layer.blobs[:]
        for t in blobs.get(layer.name, ()):
            layer.blobs.add().ParseFromString(blob_bytes(t))
    return net.SerializeToString()


def blob_bytes(t: torch.Tensor | np.ndarray) -> bytes:
    """A serialised ``BlobProto``: the shape, then the data as one packed float field
    (written directly: converting millions of floats through Python is slow)."""
    shape = caffe_pb2.BlobProto()
    shape.shape.dim.extend(t.shape)
    if isinstance(t, torch.Tensor):
        t = t.detach().to(torch.float32).cpu().contiguous().numpy()
    data = np.ascontiguousarray(t).astype("<f4").tobytes()
    return shape.SerializeToString() + b"\x2a" + _varint(len(data)) + data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def save_caffemodel(module: Any, path: str | Path) -> None:
    """Write ``caffemodel_bytes(module)`` to ``path`` atomically."""
    from pynetbuilder.io import write_files

    write_files({Path(path): caffemodel_bytes(module)})
