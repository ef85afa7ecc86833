"""Weights files in and out of a module: ``.caffemodel``, ``.pth``, ``.safetensors``.

A ``.pth`` / ``.safetensors`` holds a state dict: ours (keys ``LAYER.BLOB``, the
module's own ``state_dict``) or one of :data:`zoo_weights.LAYOUTS` (torchvision's or
timm's keys), told apart by its keys.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from pynetbuilder.errors import UsageError
from pynetbuilder.pytorch import zoo_weights
from pynetbuilder.pytorch.weights import caffemodel_bytes, load_caffemodel

SUFFIXES = (".caffemodel", ".pth", ".pt", ".safetensors")


def _suffix(path: str | Path, what: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(f"{what} {path}: the suffix must be one of {', '.join(SUFFIXES)}")
    return suffix


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    suffix = _suffix(path, "weights")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"weights {path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - unpickling / format errors of every kind
        raise UsageError(f"weights {path} cannot be read as a state dict: {exc}") from None
    for key in ("state_dict", "model"):  # checkpoints that wrap the state dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"weights {path} do not hold a state dict (name -> tensor)")
    return obj


def load_weights(module: Any, path: str | Path) -> str:
    """Fill ``module`` from any weights file; returns the layout read (``caffe``,
    ``ours`` or a :data:`zoo_weights.LAYOUTS` name)."""
    if _suffix(path, "weights") == ".caffemodel":
        if not Path(path).is_file():
            raise UsageError(f"weights {path}: no such file")
        load_caffemodel(module, path)
        return "caffe"
    state = read_state_dict(path)
    own = module.state_dict()
    layout = zoo_weights.detect(state)
    if layout is None and set(state) & set(own):
        _load_own(module, state, own)
        return "ours"
    if layout is None:
        raise UsageError(f"weights {path}: keys like {', '.join(list(state)[:3])} are neither "
                         f"this net's nor a known layout ({', '.join(zoo_weights.LAYOUTS)})")
    zoo_weights.load_state_dict(module, state, layout)
    return layout


def _load_own(module: Any, state: dict, own: dict) -> None:
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {', '.join(map(repr, missing[:3]))}")
    if extra:
        problems.append(f"extra keys {', '.join(map(repr, extra[:3]))}")
    if shapes:
        k = shapes[0]
        problems.append(f"{k!r} is {tuple(state[k].shape)}, the net's {tuple(own[k].shape)}")
    if problems:
        raise UsageError(f"the state dict does not fit net {module.net_name!r}: "
                         + "; ".join(problems))
    module.load_state_dict(state)


def weights_bytes(module: Any, path: str | Path, layout: str = "ours",
                  keys: Any = None) -> bytes:
    """The module's weights in the format ``path``'s suffix names, in ``layout``."""
    suffix = _suffix(path, "output")
    if suffix == ".caffemodel":
        return caffemodel_bytes(module)
    if layout == "ours":
        state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    else:
        state = zoo_weights.state_dict(module, layout, keys)
    if suffix == ".safetensors":
        from safetensors.torch import save

        return save({k: v.contiguous() for k, v in state.items()})
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
