"""GPU training throughput: our torch engine's ResNet-50 (``resnet_imagenet``, the
PyTorch backend's CaffeNet with Caffe's SGD arithmetic) against torchvision's
``resnet50`` with torch's SGD, same settings: synthetic data on the device, batch
256, bf16 autocast, channels-last, momentum 0.9, weight decay 1e-4; optionally
``torch.compile`` on both.  Prints images/s (median of the timed rounds) side by
side and the ratio ours/theirs (the issue asks for our time at most 1.05x theirs).

    python benchmarks/bench_torch_engine.py [--batch 256] [--steps 20] [--rounds 5]
                                            [--compile]

Needs a CUDA device; exits 2 with one line otherwise.  Not run by the tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main() -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench_torch_engine: error: needs a CUDA device", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    x = torch.randn(args.batch, 3, 224, 224, device=dev).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch,), device=dev)

    ours_step = _ours(args, x, y)
    theirs_step = _theirs(args, x, y)
    results = {}
    for name, step in (("ours (torch engine, resnet_imagenet)", ours_step),
                       ("torchvision resnet50 + torch SGD", theirs_step)):
        for _ in range(args.warmup):
            step()
        torch.cuda.synchronize()
        rates = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            torch.cuda.synchronize()
            rates.append(args.batch * args.steps / (time.perf_counter() - t0))
        results[name] = statistics.median(rates)
    print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; batch {args.batch}, "
          f"bf16 autocast, channels-last, compile={args.compile}; {time.strftime('%Y-%m-%d')}")
    for name, rate in results.items():
        print(f"{name:40s} {rate:10.1f} images/s")
    ours, theirs = results.values()
    print(f"time ratio ours/theirs: {theirs / ours:.3f} (target <= 1.05)")
    return 0


def _ours(args, x, y):
    import torch

    from pynetbuilder.models.spec import parse_model_spec
    from pynetbuilder.pytorch import to_module
    from pynetbuilder.pytorch.train.fillers import fill
    from pynetbuilder.pytorch.train.solver import CaffeSolver, net_blobs
    from pynetbuilder.schema import caffe_pb2

    spec = parse_model_spec(["resnet_imagenet", "--batch_size",
                             str(args.batch), "--train_source", "/nonexistent",
                             "--test_source", "/nonexistent"])
    net = spec.build()
    proto = net.to_proto("train")
    for layer in proto.layer:  # synthetic data: the data layer becomes an Input
        if layer.type == "Data":
            layer.type = "Input"
            layer.ClearField("data_param")
            layer.ClearField("transform_param")
            layer.input_param.shape.add().dim.extend([args.batch, 3, 224, 224])
            layer.input_param.shape.add().dim.extend([args.batch])
    m = to_module(proto, phase="train")
    fill(m, torch.Generator().manual_seed(0))
    m.cuda().to(memory_format=torch.channels_last)
    s = caffe_pb2.SolverParameter(type="SGD", base_lr=0.1, momentum=0.9, weight_decay=1e-4,
                                  lr_policy="fixed", max_iter=10**9)
    solver = CaffeSolver(s, net_blobs(m))
    names = m.inputs
    fwd = torch.compile(m) if args.compile else m

    def step():
        for b in solver.blobs:
            b.tensor.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fwd(**{names[0]: x, names[1]: y.float()})
            loss = m.loss(out)
        loss.backward()
        solver.update(solver.rate())
        solver.iter += 1
    return step


def _theirs(args, x, y):
    import torch
    import torchvision

    model = torchvision.models.resnet50().cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    fwd = torch.compile(model) if args.compile else model

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()
    return step


if __name__ == "__main__":
    sys.exit(main())
