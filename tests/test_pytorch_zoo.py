"""The zoo, the published ResNets and their gradients as PyTorch modules, against
real Caffe (proof of issue 13).

Caffe draws every parameter blob at random (BatchNorm statistics positive), saves
the ``.caffemodel`` the module then loads, and both run one random batch.  Every
blob agrees to 1e-4 of Caffe's largest magnitude in it.

- TEST phase: the whole net end to end.  Where float32 rounding still builds up past
  1e-4 through a deep net (measured on one machine of this project's kind, not
  another: SE-ResNet-preact-110, a sigmoid gate 3.4e-4 apart, Caffe 4.7e-4 from a
  float64 evaluation of the same net, ours 1.3e-4), the test shows that it is rounding:
  every blob of ours is within twice Caffe's own distance from the float64 values (or
  1e-4), and layer by layer both agree to 1e-4.
- TRAIN phase: each layer reads Caffe's own values of its inputs (``per_layer``).
  Measured reason: with batch statistics a deep net is ill-conditioned; on
  ResNet-164 both float32 implementations, Caffe's and ours, differ from a float64
  evaluation by up to 2e-3 of a blob's magnitude, so no float32 executor can agree
  with Caffe end to end to 1e-4.  Layer by layer they agree to ~3e-6.
- Gradients: each layer's backward on Caffe's inputs and output gradients, on an
  out-of-place copy of the net (Caffe keeps only an in-place blob's first gradient);
  a parameter gradient that cancels to ~0 is compared at the scale of its sum of
  absolute terms (see ``verify._absolute_param_gradients``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED

from pynetbuilder import models
from pynetbuilder.legos import ClassificationData
from pynetbuilder.pytorch.adapter import analysed
from pynetbuilder.pytorch.caffe_oracle import caffe_ready, run_caffe
from pynetbuilder.pytorch.module import CaffeNet
from pynetbuilder.pytorch.verify import random_inputs, verify
from pynetbuilder.pytorch.weights import load_caffemodel

FIXTURES = SHARED / "fixtures" / "prototxt"
REFERENCES = [(f.name, label) for f in models.FAMILIES for label in f.references]
SIZE = {"cifar": 32, "imagenet": 64}  # small images keep Caffe's CPU time down


def small(family: str, knobs: dict, batch: int = 2):
    f = models.FAMILIES[family]
    data = ClassificationData("train_lmdb", "test_lmdb", batch_size=batch,
                              test_batch_size=batch, crop_size=SIZE[f.dataset])
    return f.build(data=data, **knobs)


def assert_agrees(result) -> None:
    assert result.blobs, "nothing compared"
    bad = [c for c in result.checks if not c.ok]
    assert not bad, bad[:5]


def float64_distances(net, phase: str, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Per blob, Caffe's and the module's largest distance from the module run in
    float64 on the same input and weights, relative to Caffe's largest magnitude."""
    a = analysed(net, phase=phase)
    module = CaffeNet(a)
    data = random_inputs(a, module, seed)
    with tempfile.TemporaryDirectory() as tmp:
        run = run_caffe(caffe_ready(a.net, a.shapes, seed), phase, data, seed=seed,
                        keep=Path(tmp))
        load_caffemodel(module, run.weights)
    with torch.no_grad():
        ours = {k: v.numpy().copy() for k, v in module.run(
            {k: torch.from_numpy(v) for k, v in data.items()}).items()}
        exact = {k: v.numpy() for k, v in module.double().run(
            {k: torch.from_numpy(v).double() for k, v in data.items()}).items()}
    distances = {}
    for name, caffe in run.blobs.items():
        if name in exact:
            scale = float(np.abs(caffe).max()) or 1.0
            distances[name] = (float(np.abs(caffe - exact[name]).max()) / scale,
                               float(np.abs(ours[name] - exact[name]).max()) / scale)
    return distances


@pytest.mark.parametrize("family, label", REFERENCES)
def test_zoo_test_phase_end_to_end(family, label):
    net = small(family, models.FAMILIES[family].references[label])
    result = verify(net, phase="test")
    bad = [c.name for c in result.checks if not c.ok]
    if bad:  # rounding built up: both float32 executors measured against float64
        distances = float64_distances(net, "test")
        worse = {b: distances[b] for b in bad if distances[b][1] > 2 * max(distances[b][0],
                                                                         1e-4)}
        assert not worse, worse  # (Caffe's, ours) distance from float64
        assert_agrees(verify(net, phase="test", per_layer=True))
    assert result.blobs


@pytest.mark.parametrize("family, label", REFERENCES)
def test_zoo_train_phase_layer_by_layer(family, label):
    """Batch statistics, BatchNorm's updated blobs, Dropout's and ShakeShake's draws."""
    net = small(family, models.FAMILIES[family].references[label])
    result = verify(net, phase="train", per_layer=True)
    assert_agrees(result)
    if any(la.type == "BatchNorm" for la in net.to_proto("train").layer):
        assert result.params, "BatchNorm blobs after the forward pass not compared"


@pytest.mark.parametrize("family, knobs", [
    ("wrn", {"depth": 10, "widening_factor": 2, "drop_rate": 0.3}),
    ("shake_shake", {"depth": 8, "initial_channels": 16}),
    ("mobilenet", {"width_multiplier": 0.25}),
    ("squeezenet", {"version": "1_1"}),
])
def test_train_phase_end_to_end_where_well_conditioned(family, knobs):
    """Shallow nets agree end to end in TRAIN too: Dropout's masks and ShakeShake's
    per-sample coefficients replayed through the whole forward pass."""
    assert_agrees(verify(small(family, knobs), phase="train"))


@pytest.mark.parametrize("name", ["ResNet-50", "ResNet-101", "ResNet-152"])
@pytest.mark.parametrize("phase", ["train", "test"])
def test_published_resnets(name, phase):
    """The deploy files the ResNet authors published (``input:`` header, in-place
    BatchNorm/Scale/ReLU, use_global_stats), at their 224x224 input."""
    result = verify(str(FIXTURES / f"{name}-deploy.prototxt"), phase=phase)
    assert_agrees(result)
    assert {"conv1", "res2a", "fc1000", "prob"} <= {c.name for c in result.blobs}


@pytest.mark.parametrize("family, knobs, size", [
    ("resnet_imagenet", {"main_branch": "bottleneck", "num_output_stage1": 256,
                         "blocks": (2, 2, 2, 2)}, 8),
    ("densenet", {"depth": 40, "block_type": "bottleneck", "growth_rate": 12,
                  "compression_rate": 0.5}, 4),
    ("pyramidnet", {"depth": 29, "alpha": 48, "block_type": "bottleneck"}, 4),
])
def test_gradients_layer_by_layer(family, knobs, size):
    """Input and parameter gradients of a TRAIN backward pass equal Caffe's; BatchNorm's
    blobs after the forward pass equal Caffe's."""
    result = verify(small(family, knobs, size), phase="train", gradients=True, per_layer=True)
    assert_agrees(result)
    names = [c.name for c in result.gradients]
    assert "d data" in names and any(n.endswith("[0]") for n in names)
    assert result.params


def test_gradients_end_to_end_reduced_resnet50():
    """A reduced ResNet-50 is well-conditioned enough to compare its whole backward pass:
    the gradient of the loss with respect to the input and every parameter."""
    net = small("resnet_imagenet", {"main_branch": "bottleneck", "num_output_stage1": 256,
                                    "blocks": (1, 1, 1, 1)})
    result = verify(net, phase="train", gradients=True)
    assert_agrees(result)
    assert len(result.gradients) > 50
