"""The torch engine's training loop: Caffe's ``Solver::Solve`` and ``Step`` over the
PyTorch backend's modules, for one process or one rank of many.

What happens, in Caffe's order: the train net (TRAIN phase of the solver's net) is
filled from its fillers, then ``--weights`` or a snapshot's weights are copied in;
the test net (TEST phase) shares every parameter blob with it by layer name.  Each
iteration clears the gradients, tests when ``iter % test_interval == 0`` (not at
iteration 0 unless ``test_initialization``), runs ``iter_size`` forward/backward
passes, displays when ``iter % display == 0`` (the loss averaged over
``average_loss`` iterations, the train outputs, the learning rate), updates
(:mod:`.solver`), increments ``iter`` and snapshots when ``iter % snapshot == 0``.
After ``max_iter``: a snapshot unless one was just taken, one more forward pass of
the train net to display the loss when ``max_iter % display == 0``, a test when
``max_iter % test_interval == 0`` — and, unlike Caffe, a test of the final weights
when the last test was earlier, so the run always ends with a final accuracy.

The log is written by rank 0 in Caffe's glog format (``I0521 10:00:00.123456  pid
solver.cpp:NNN] Iteration 20, loss = 0.5``), so :mod:`pynetbuilder.caffelog` and
``pynetbuilder plot`` read it as a Caffe log.  Snapshots are Caffe's
``PREFIX_iter_N.caffemodel`` and ``.solverstate``, written atomically by rank 0
(a killed run never leaves half a file).  With several ranks (DistributedDataParallel)
gradients are averaged over the ranks, each rank reads its share of the data
(:mod:`.data`), BatchNorm statistics are each rank's own and rank 0's are kept, tests
run on rank 0: as Caffe's multi-GPU training does.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from pynetbuilder.errors import NetError, UsageError
from pynetbuilder.pytorch.train import data as feeds
from pynetbuilder.pytorch.train import solver as solvers
from pynetbuilder.schema import caffe_pb2


@dataclass
class Options:
    """One run (every path absolute or relative to the working folder)."""

    folder: Path
    solver: str = "solver.prototxt"
    resume: Path | None = None
    weights: Path | None = None
    seed: int | None = None
    device: str = "cpu"  # cpu or cuda
    amp: str | None = None  # bf16 or fp16 (CUDA)
    channels_last: bool = False
    workers: int = 1  # DataLoader worker processes per data layer
    log_name: str = "train.log"
    progress: bool = True  # rank 0 prints Caffe-like progress lines


@dataclass
class Outcome:
    iteration: int
    scores: dict[str, float] = field(default_factory=dict)
    tested_at: int | None = None
    weights: Path | None = None
    state: Path | None = None
    stopped_early: bool = False


class GlogWriter:
    """Lines in glog's format into the log (rank 0), each also passed to ``on_line``."""

    def __init__(self, sink: TextIO | None, on_line: Callable[[str], None] | None) -> None:
        self.sink, self.on_line, self.pid = sink, on_line, os.getpid()

    def __call__(self, message: str, where: str = "solver.cpp:0", level: str = "I") -> None:
        if self.sink is None and self.on_line is None:
            return
        now = datetime.now()
        line = f"{level}{now:%m%d %H:%M:%S}.{now.microsecond:06d} {self.pid:>5} {where}] {message}"
        if self.sink is not None:
            self.sink.write(line + "\n")
            self.sink.flush()
        if self.on_line is not None:
            self.on_line(line)


def fmt(x: float) -> str:
    """A float as C++'s ostream prints it (6 significant digits)."""
    return f"{float(np.float32(x)):g}"


def read_net(folder: Path, s: Any, text: str | None = None) -> Any:
    """The solver's net (``text``, else read from ``folder``) as a NetParameter, data
    sources and mean files made absolute (relative ones are from ``folder``)."""
    from pynetbuilder.schema import parse_net

    name = s.net or s.train_net
    if not name:
        raise UsageError("the solver names no net (net: or train_net:)")
    path = folder / name
    try:
        net = parse_net(text if text is not None else path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the net {path}: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001 - the prototxt parser's errors
        raise UsageError(f"{path} is not a Caffe net: {exc}") from None
    return absolute_sources(net, folder)


def absolute_sources(net: Any, folder: Path) -> Any:
    """``net`` with every data source and mean file absolute (from ``folder``)."""
    from pynetbuilder import datasource

    for layer in net.layer:
        for fname in ("data_param", "image_data_param", "hdf5_data_param"):
            if layer.HasField(fname) and getattr(layer, fname).source:
                p = getattr(layer, fname)
                p.source = str(datasource.resolve(p.source, (folder,)).absolute())
        if layer.transform_param.mean_file:
            t = layer.transform_param
            t.mean_file = str(datasource.resolve(t.mean_file, (folder,)).absolute())
    return net


def share(test: Any, train: Any) -> None:
    """The test module uses the train module's blobs (Caffe's ShareTrainedLayersWith)."""
    source = train.layer_modules
    for name, mod in test.layer_modules.items():
        src = source.get(name)
        if src is None:
            continue
        for b in mod.blob_names:
            t = getattr(src, b)
            if tuple(t.shape) != tuple(getattr(mod, b).shape):
                raise NetError(f"layer {name!r}: blob {b} is {tuple(t.shape)} in the train net "
                               f"and {tuple(getattr(mod, b).shape)} in the test net")
            if b in mod._parameters:
                mod._parameters[b] = t
            else:
                mod._buffers[b] = t


@dataclass
class Run:
    """Everything the loop needs, built by :func:`prepare` (also used to check a run
    before launching processes)."""

    s: Any
    net: Any
    train_feed: feeds.Feed
    test_feed: feeds.Feed | None


def prepare(folder: Path, solver_file: str = "solver.prototxt", world: int = 1) -> Run:
    """Read and check a run folder for the torch engine (:func:`check`)."""
    from pynetbuilder import solver as recipes

    s = recipes.read_solver(folder / solver_file)
    return check(s, read_net(folder, s), folder, world)


def check(s: Any, net: Any, folder: Path, world: int = 1) -> Run:
    """Check a solver and its net (sources absolute, :func:`absolute_sources`) for the
    torch engine: the solver's fields, the data layers, the data size against the
    world size, every layer's PyTorch emitter.  UsageError naming what is refused."""
    from pynetbuilder.inspect import filter_phase
    from pynetbuilder.pytorch import to_module

    solvers.check_reproducible(s)
    train_feed = feeds.feed_of(filter_phase(net, "train"), "train", folder)
    test_feed = None
    if s.test_iter and s.test_iter[0] > 0:
        test_feed = feeds.feed_of(filter_phase(net, "test"), "test", folder)
    need = world * train_feed.batch_size
    if train_feed.count < need:
        raise UsageError(f"the train data source {train_feed.source} holds {train_feed.count} "
                         f"records, fewer than one batch of {train_feed.batch_size} for each "
                         f"of {world} processes ({need}): each rank would read records again "
                         "within one step; use fewer processes or a smaller batch")
    try:
        to_module(net, phase="train")
    except (ValueError, KeyError) as exc:
        raise UsageError(f"the torch engine cannot build the train net: {exc}") from None
    return Run(s, net, train_feed, test_feed)


def _seed(s: Any, opts: Options) -> int:
    if s.random_seed >= 0:
        return int(s.random_seed)
    if opts.seed is not None:
        return opts.seed
    return random.SystemRandom().randrange(2**31)


def train(opts: Options, *, rank: int = 0, world: int = 1,
          emit: Callable[[str], None] = print) -> Outcome:
    """Train the run folder ``opts.folder`` (see the module doc).  With ``world > 1``
    the default process group must be initialised."""
    from pynetbuilder import training
    from pynetbuilder.pytorch import load_caffemodel, to_module
    from pynetbuilder.pytorch.train.fillers import fill

    folder = Path(opts.folder)
    run = prepare(folder, opts.solver, world)
    s = run.s
    seed = _seed(s, opts)
    torch.manual_seed(seed)
    device = torch.device(opts.device if opts.device != "cuda" else
                          f"cuda:{torch.cuda.current_device()}")
    net = to_module(run.net, phase="train")
    tester = to_module(run.net, phase="test") if run.test_feed is not None else None
    fill(net, torch.Generator().manual_seed(seed))
    if opts.weights is not None:
        load_caffemodel(net, opts.weights)
    state = None
    if opts.resume is not None:
        state = caffe_pb2.SolverState.FromString(Path(opts.resume).read_bytes())
        load_caffemodel(net, training.read_snapshot(opts.resume, folder).weights)
    net.to(device)
    if opts.channels_last:
        net.to(memory_format=torch.channels_last)
    if tester is not None:
        tester.to(device)
        share(tester, net)
    solver = solvers.CaffeSolver(s, solvers.net_blobs(net))
    if state is not None:
        solver.load_state(state, str(opts.resume))
    model: Any = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False)
    leader = rank == 0
    sink = (folder / opts.log_name).open("w", encoding="utf-8") \
        if leader else None
    progress = training.Progress(s.max_iter, emit) if leader and opts.progress else None
    log = GlogWriter(sink, progress)
    try:
        return _solve(opts, run, net, model, tester, solver, log, rank, world, seed, device)
    finally:
        if progress is not None:
            progress.close()
        if sink is not None:
            sink.close()


def _solve(opts: Options, run: Run, net: Any, model: Any, tester: Any,
           solver: solvers.CaffeSolver, log: GlogWriter, rank: int, world: int, seed: int,
           device: torch.device) -> Outcome:
    s = run.s
    folder = Path(opts.folder)
    leader = rank == 0
    log(f"Solving {net.net_name} with the torch engine ({world} process"
        f"{'es' if world > 1 else ''}, {device.type}, seed {seed})")
    log(f"Learning Rate Policy: {s.lr_policy}")
    if opts.resume is not None:
        log(f"Restoring previous solver status from {opts.resume}")
        log(f"Resuming from {opts.resume}")
    train_batches = feeds.loader(run.train_feed, rank=rank, world=world, seed=seed,
                                 workers=opts.workers)
    test_batches = None
    if tester is not None and leader:
        test_batches = feeds.loader(run.test_feed, rank=0, world=1, seed=seed,  # type: ignore
                                    workers=opts.workers)
    out = Outcome(solver.iter)
    losses: list[float] = []
    smoothed = 0.0
    start = solver.iter
    average = max(1, s.average_loss)
    autocast = _autocast(opts, device)

    def forward(m: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if opts.channels_last:
            inputs = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4
                      else v for k, v in inputs.items()}
        with autocast():
            return m(**inputs)

    def smooth(loss: float) -> float:
        nonlocal smoothed
        if len(losses) < average:
            losses.append(loss)
            smoothed = (smoothed * (len(losses) - 1) + loss) / len(losses)
        else:
            idx = (solver.iter - start) % average
            smoothed += (loss - losses[idx]) / average
            losses[idx] = loss
        return smoothed

    def test() -> None:
        if test_batches is None:
            return
        log(f"Iteration {solver.iter}, Testing net (#0)")
        scores: dict[str, np.ndarray] = {}
        total = np.float32(0)
        with torch.no_grad():
            for _ in range(s.test_iter[0]):
                outputs = forward(tester, next(test_batches))
                if s.test_compute_loss:
                    total += np.float32(float(tester.loss(outputs)))
                for name in sorted(outputs):
                    value = outputs[name].detach().float().reshape(-1).cpu().numpy()
                    scores[name] = scores.get(name, 0) + value
        if s.test_compute_loss:
            log(f"Test loss: {fmt(total / s.test_iter[0])}")
        index = 0
        out.scores = {}
        for name, values in scores.items():
            weight = tester.loss_weights.get(name, 0.0)
            for v in np.asarray(values, np.float32).reshape(-1):
                mean = np.float32(v) / np.float32(s.test_iter[0])
                note = f" (* {fmt(weight)} = {fmt(weight * mean)} loss)" if weight else ""
                log(f"    Test net output #{index}: {name} = {fmt(mean)}{note}")
                index += 1
                out.scores.setdefault(name, float(mean))
        out.tested_at = solver.iter

    def snapshot() -> None:
        if not leader:
            return
        from pynetbuilder.io import write_files
        from pynetbuilder.pytorch.weights import caffemodel_bytes

        name = f"{s.snapshot_prefix}_iter_{solver.iter}"
        model_file, state_file = f"{name}.caffemodel", f"{name}.solverstate"
        log(f"Snapshotting to binary proto file {model_file}")
        log(f"Snapshotting solver state to binary proto file {state_file}")
        write_files({folder / model_file: caffemodel_bytes(net),
                     folder / state_file: solver.state_bytes(model_file)})
        out.weights, out.state = (folder / model_file).resolve(), (folder / state_file).resolve()

    stop = _StopFlag()
    scaler = _Scaler(opts.amp == "fp16")
    with stop.installed():
        while solver.iter < s.max_iter:
            for b in solver.blobs:
                b.tensor.grad = None
            if (s.test_interval and solver.iter % s.test_interval == 0
                    and (solver.iter > 0 or s.test_initialization)):
                test()
            display = s.display and solver.iter % s.display == 0
            loss = 0.0
            outputs: dict[str, torch.Tensor] = {}
            for i in range(s.iter_size):
                sync = world == 1 or i == s.iter_size - 1
                with (model.no_sync() if not sync else _Nothing()):
                    outputs = forward(model, next(train_batches))
                    value = net.loss(outputs)
                    scaler.scale(value).backward()
                loss += float(value.detach())
            loss = float(np.float32(loss) / np.float32(s.iter_size))
            if not np.isfinite(loss) and not scaler.enabled:
                pass  # Caffe trains on with nan; so does the engine (the log shows it)
            smooth(loss)
            if display:
                log(f"Iteration {solver.iter}, loss = {fmt(smoothed)}")
                index = 0
                for name in sorted(outputs):
                    weight = net.loss_weights.get(name, 0.0)
                    for v in outputs[name].detach().float().reshape(-1).cpu().tolist():
                        note = f" (* {fmt(weight)} = {fmt(weight * v)} loss)" if weight else ""
                        log(f"    Train net output #{index}: {name} = {fmt(v)}{note}")
                        index += 1
            rate = solver.rate()
            if display:
                log(f"Iteration {solver.iter}, lr = {fmt(rate)}")
            if scaler.unscale(solver):
                clipped = solver.clip()
                if clipped is not None:
                    log(f"Gradient clipping: scaling down gradients (L2 norm {fmt(clipped[0])} "
                        f"> {fmt(s.clip_gradients)}) by scale factor {fmt(clipped[1])}")
                solver.update(rate)
            solver.iter += 1
            if s.snapshot and solver.iter % s.snapshot == 0:
                snapshot()
            if stop.requested(world):
                break
    out.iteration = solver.iter
    if s.snapshot_after_train and (not s.snapshot or solver.iter % s.snapshot != 0):
        snapshot()
    if stop.requested(world):
        log("Optimization stopped early.")
        out.stopped_early = True
        return out
    if s.display and solver.iter % s.display == 0:
        with torch.no_grad():
            loss = float(net.loss(forward(model if world == 1 else net,
                                          next(train_batches))))
        log(f"Iteration {solver.iter}, loss = {fmt(smooth(loss))}")
    if s.test_interval and solver.iter % s.test_interval == 0:
        test()
    elif test_batches is not None and out.tested_at != solver.iter:
        log("Testing the final weights (the torch engine's addition)")
        test()
    log("Optimization Done.")
    return out


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _StopFlag:
    """SIGINT asks the loop to stop after the current iteration (Caffe's
    ``-sigint_effect stop``): a snapshot is taken and the run ends early.  With
    several ranks the request is shared (all-reduced) so every rank stops together."""

    def __init__(self) -> None:
        self.asked = False
        self.agreed = False

    def installed(self) -> Any:
        import contextlib
        import signal

        @contextlib.contextmanager
        def ctx():  # type: ignore[no-untyped-def]
            def handler(signum: int, frame: Any) -> None:
                self.asked = True

            try:
                previous = signal.signal(signal.SIGINT, handler)
            except ValueError:  # not the main thread
                yield
                return
            try:
                yield
            finally:
                signal.signal(signal.SIGINT, previous)
        return ctx()

    def requested(self, world: int) -> bool:
        if self.agreed:
            return True
        if world > 1:
            import torch.distributed as dist

            flag = torch.tensor([1.0 if self.asked else 0.0])
            if dist.get_backend() == "nccl":
                flag = flag.cuda()
            dist.all_reduce(flag)
            self.agreed = bool(flag.item() > 0)
        else:
            self.agreed = self.asked
        return self.agreed


class _Scaler:
    """fp16's dynamic loss scale (2^16, halved on an overflow, which skips that update;
    doubled after 2000 clean steps).  A no-op unless enabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.value, self.good = enabled, 65536.0, 0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.value if self.enabled else loss

    def unscale(self, solver: solvers.CaffeSolver) -> bool:
        if not self.enabled:
            return True
        grads = [b.tensor.grad for b in solver.blobs if b.tensor.grad is not None]
        torch._foreach_mul_(grads, 1.0 / self.value)
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if not finite:
            self.value /= 2.0
            self.good = 0
            return False
        self.good += 1
        if self.good >= 2000:
            self.value *= 2.0
            self.good = 0
        return True


def _autocast(opts: Options, device: torch.device) -> Callable[[], Any]:
    if opts.amp is None:
        return _Nothing
    dtype = torch.bfloat16 if opts.amp == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)

