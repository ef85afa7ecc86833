#!/usr/bin/env python3
"""How fast is the PyTorch module of a Caffe net?  Ours against torchvision's own.

ResNet-50 as ``resnet_imagenet --stride_in_3x3 true --pool1_pad 1`` (torchvision's
"v1.5" function) carries torchvision ``resnet50``'s weights (random, no download),
and the two are timed side by side in one run, on the CPU with 2 threads:

- inference: ``no_grad`` forward of a batch (our deploy net: BatchNorm + Scale run
  as one ``batch_norm``; torchvision in ``eval()``);
- one training step: forward, loss, backward and an SGD update (our TRAIN net: batch
  statistics with Caffe's update of BatchNorm's blobs, SoftmaxWithLoss; torchvision
  in ``train()`` with ``cross_entropy``).

Rounds alternate ours / theirs so that load on the machine falls on both alike;
medians (and minimums) over the rounds and their ratio are printed.  Then real
Caffe (CPU, OpenBLAS with 2 threads, in a child process) on the same net and batch:
``net.forward()`` and ``forward() + backward()`` of the TRAIN net.

    .venv/bin/python benchmarks/bench_pytorch.py [--rounds N] [--batches 8 32]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = "resnet_imagenet:main_branch=bottleneck:num_output_stage1=256:stride_in_3x3=true:pool1_pad=1"


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build(batch: int):
    import torch
    import torch.nn.functional as nnf
    import torchvision

    from pynetbuilder import models
    from pynetbuilder.legos import ClassificationData
    from pynetbuilder.pytorch import CaffeNet, zoo_weights
    from pynetbuilder.pytorch.adapter import analysed

    torch.manual_seed(0)
    theirs = torchvision.models.resnet50()
    data = ClassificationData("train", "val", batch_size=batch, test_batch_size=batch,
                              deploy_batch=batch)
    net = models.FAMILIES["resnet_imagenet"].build(
        data=data, main_branch="bottleneck", num_output_stage1=256, stride_in_3x3=True,
        pool1_pad=1)
    deploy = CaffeNet(analysed(net, phase="deploy"))
    train = CaffeNet(analysed(net, phase="train"))
    for ours in (deploy, train):
        zoo_weights.load_state_dict(ours, theirs.state_dict(), "torchvision_resnet")
    x = torch.randn(batch, 3, 224, 224)
    label = torch.randint(0, 1000, (batch,))

    def infer_ours():
        with torch.no_grad():
            return deploy(data=x)

    def infer_theirs():
        with torch.no_grad():
            return theirs.eval()(x)

    opt_ours = torch.optim.SGD(train.parameters(), lr=1e-4, momentum=0.9)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=1e-4, momentum=0.9)
    flabel = label.float()

    def step_ours():
        opt_ours.zero_grad(set_to_none=True)
        train.loss(train(data=x, label=flabel)).backward()  # as the torch engine runs it
        opt_ours.step()

    def step_theirs():
        opt_theirs.zero_grad(set_to_none=True)
        nnf.cross_entropy(theirs.train()(x), label).backward()
        opt_theirs.step()

    # same function: our deploy logits equal torchvision's eval logits
    with torch.no_grad():
        ours_logits = deploy.run({"data": x})["fc_classifier"]
        diff = (ours_logits - theirs.eval()(x)).abs().max() / ours_logits.abs().max()
    assert diff < 1e-4, diff
    return {"inference": (infer_ours, infer_theirs), "training step": (step_ours, step_theirs)}


def caffe_worker(batch: int, rounds: int) -> None:
    import caffe
    import numpy as np

    from pynetbuilder.pytorch.adapter import analysed
    from pynetbuilder.pytorch.caffe_oracle import caffe_ready
    from pynetbuilder.schema import to_text

    caffe.set_mode_cpu()
    out = {}
    for phase in ("test", "train"):
        a = analysed(SPEC + f":batch_size={batch}:test_batch_size={batch}", phase=phase)
        path = Path(f"/tmp/bench-caffe-{os.getpid()}-{phase}.prototxt")
        path.write_text(to_text(caffe_ready(a.net, a.shapes, 0)))
        net = caffe.Net(str(path), caffe.TRAIN if phase == "train" else caffe.TEST)
        path.unlink()
        for name in net.inputs:
            shape = net.blobs[name].data.shape
            net.blobs[name].data[...] = (np.random.randint(0, 1000, shape) if name == "label"
                                         else np.random.randn(*shape))
        if phase == "test":
            times = [timed(net.forward) for _ in range(rounds + 1)][1:]
            out["inference"] = times
        else:
            times = [timed(lambda n=net: (n.forward(), n.backward())) for _ in range(rounds + 1)]
            out["forward + backward"] = times[1:]
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--caffe-worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.caffe_worker:
        caffe_worker(args.caffe_worker, args.rounds)
        return
    import torch

    torch.set_num_threads(args.threads)
    print(f"ResNet-50, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"median (min) of {args.rounds} rounds after one warm-up")
    print(f"{'batch':>5}  {'':14}  {'ours':>16}  {'torchvision':>16}  {'ours/theirs':>11}")
    for batch in args.batches:
        cases = build(batch)
        for what, (ours, theirs) in cases.items():
            ours(), theirs()  # warm-up
            t_ours, t_theirs = [], []
            for _ in range(args.rounds):
                t_ours.append(timed(ours))
                t_theirs.append(timed(theirs))
            mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
            print(f"{batch:>5}  {what:14}  {mo * 1e3:8.0f} ({min(t_ours) * 1e3:5.0f}) ms  "
                  f"{mt * 1e3:8.0f} ({min(t_theirs) * 1e3:5.0f}) ms  {mo / mt:11.3f}",
                  flush=True)
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(args.threads),
               "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run([sys.executable, __file__, "--caffe-worker", str(batch),
                               "--rounds", str(max(2, args.rounds // 2))], env=env,
                              capture_output=True, text=True, check=True)
        caffe_times = json.loads(done.stdout.strip().splitlines()[-1])
        for what, times in caffe_times.items():
            print(f"{batch:>5}  Caffe {what}: {statistics.median(times) * 1e3:.0f} "
                  f"({min(times) * 1e3:.0f}) ms", flush=True)


if __name__ == "__main__":
    main()
