"""Running the torch engine: in this process, or as ``torchrun`` workers.

One process (``--nproc-per-node 1``, one node) trains here.  Otherwise the command
starts ``python -m torch.distributed.run`` (torchrun, static rendezvous at
``--master-addr:--master-port``, no restarts) with ``--nproc-per-node`` workers on
this node; every worker runs :mod:`.worker` (gloo on CPU, NCCL on CUDA).  The world
is ``nproc_per_node * nnodes`` processes: the effective batch is the net's
``batch_size`` times the world (the learning rate is left as the solver says).

Rank 0 writes the log and the snapshots and prints the progress; torchrun's own
output (warnings, errors of every rank) goes to ``launch.log`` in the run folder.
A rank that fails (an error, a signal) ends the run: torchrun stops the others and
this raises :class:`EngineError` naming the rank, how it ended, the last whole
snapshot and the logs.  A node other than 0 first waits for the master's port, at
most ``$PYNETBUILDER_CONNECT_TIMEOUT`` seconds (default 60).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pynetbuilder.errors import NetError, UsageError

PROGRESS = "\x1epnb "  # marks rank 0's progress lines in torchrun's output
CONNECT_ENV = "PYNETBUILDER_CONNECT_TIMEOUT"


class EngineError(NetError):
    """The torch engine ran and failed (a rank crashed or was killed)."""


@dataclass
class Launch:
    """How to run: processes, nodes, devices."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    gpu: str | None = None  # CUDA devices: 0, 0,1 or all
    amp: str | None = None  # bf16 or fp16

    @property
    def world(self) -> int:
        return self.nproc_per_node * self.nnodes


def devices(gpu: str | None) -> list[int]:
    """The CUDA devices ``--gpu`` names (``all``: every one); UsageError when CUDA or a
    device is missing."""
    if gpu is None:
        return []
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"--gpu {gpu}: this machine has no CUDA device (torch sees none)")
    count = torch.cuda.device_count()
    if gpu == "all":
        return list(range(count))
    if not re.fullmatch(r"\d+(,\d+)*", gpu):
        raise UsageError(f"--gpu takes device numbers (0 or 0,1) or all, got {gpu!r}")
    ids = [int(x) for x in gpu.split(",")]
    missing = [i for i in ids if i >= count]
    if missing:
        raise UsageError(f"--gpu {gpu}: no CUDA device {missing[0]} (this machine has {count})")
    return ids


def check(launch: Launch) -> None:
    """Bad launch settings, one line each (nothing started)."""
    if launch.nproc_per_node < 1 or launch.nnodes < 1:
        raise UsageError("--nproc-per-node and --nnodes must be at least 1")
    if not 0 <= launch.node_rank < launch.nnodes:
        raise UsageError(f"--node-rank {launch.node_rank} is not in 0..{launch.nnodes - 1} "
                         f"(--nnodes {launch.nnodes})")
    if launch.amp is not None:
        if launch.amp not in ("bf16", "fp16"):
            raise UsageError(f"--amp takes bf16 or fp16, got {launch.amp!r}")
        if launch.gpu is None:
            raise UsageError("--amp needs CUDA devices (--gpu): on CPU the torch engine "
                             "trains in float32, as Caffe")
    ids = devices(launch.gpu)
    if ids:
        if launch.nproc_per_node > len(ids):
            raise UsageError(f"--nproc-per-node {launch.nproc_per_node} exceeds the "
                             f"{len(ids)} CUDA device(s) of --gpu {launch.gpu}")
    else:
        cores = os.cpu_count() or 1
        if launch.nproc_per_node > cores:
            raise UsageError(f"--nproc-per-node {launch.nproc_per_node} exceeds the {cores} "
                             "CPU cores of this machine (one process per core at most; "
                             "give --gpu for CUDA devices)")
    if launch.master_port is not None and not 0 < launch.master_port < 65536:
        raise UsageError(f"--master-port {launch.master_port} is not a port number")
    if launch.nnodes > 1 and launch.master_port is None:
        raise UsageError("--nnodes > 1 needs --master-port (the same on every node)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_master(addr: str, port: int, timeout: float) -> None:
    """Until ``addr:port`` accepts a connection; UsageError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            with socket.create_connection((addr, port), timeout=2):
                return
        except OSError as exc:
            last = exc.strerror or str(exc)
        if time.monotonic() >= deadline:
            raise UsageError(f"cannot reach the master {addr}:{port} within {timeout:g} s "
                             f"({last}): is node 0 running with the same --master-addr and "
                             "--master-port?")
        time.sleep(0.5)


@dataclass
class Job:
    """What every worker runs (JSON on the worker's command line)."""

    folder: str
    solver: str
    resume: str | None
    weights: str | None
    seed: int | None
    gpu: bool
    amp: str | None
    log_name: str
    workers: int = 1


def run(job: Job, launch: Launch, *, emit: Callable[[str], None] = print) -> Any:
    """Train; returns the engine's Outcome (one process) or None (torchrun: the caller
    reads the log).  Raises EngineError when a rank fails."""
    if launch.world == 1 and launch.gpu is None:
        import torch

        from pynetbuilder.pytorch.train import engine

        threads = torch.get_num_threads()
        try:
            return engine.train(_options(job, "cpu"), emit=emit)
        finally:
            torch.set_num_threads(threads)
    folder = Path(job.folder)
    port = launch.master_port or free_port()
    if launch.node_rank > 0:
        timeout = float(os.environ.get(CONNECT_ENV, "60"))
        wait_for_master(launch.master_addr, port, timeout)
    env = dict(os.environ)
    ids = devices(launch.gpu)
    if ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
    cmd = [sys.executable, "-m", "torch.distributed.run",
           f"--nproc-per-node={launch.nproc_per_node}", f"--nnodes={launch.nnodes}",
           f"--node-rank={launch.node_rank}", f"--master-addr={launch.master_addr}",
           f"--master-port={port}", "--max-restarts=0", "--monitor-interval=0.5",
           "-m", "pynetbuilder.pytorch.train.worker", json.dumps(asdict(job))]
    log = folder / "launch.log" if launch.node_rank == 0 else folder / \
        f"launch_node{launch.node_rank}.log"
    status, lines = _follow(cmd, env, log, emit)
    if status != 0:
        raise EngineError(failure(status, lines, folder, job.log_name, log))
    return None


def _follow(cmd: list[str], env: dict[str, str], log: Path,
            emit: Callable[[str], None]) -> tuple[int, list[str]]:
    lines: list[str] = []
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=False)
    try:
        with log.open("w", encoding="utf-8", buffering=1) as sink:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(PROGRESS):
                    emit(line[len(PROGRESS):].rstrip("\n"))
                    continue
                sink.write(line)
                lines.append(line.rstrip("\n"))
                del lines[:-400]
        return proc.wait(), lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def failure(status: int, lines: list[str], folder: Path, log_name: str, launch_log: Path) -> str:
    """One line: which rank failed and how, the iteration, the last snapshot, the logs."""
    errors = [ln.split("pynetbuilder: error: ", 1)[1] for ln in lines
              if "pynetbuilder: error: " in ln]
    rank = exitcode = None
    text = "\n".join(lines)
    root = text.rsplit("Root Cause", 1)[-1] if "Root Cause" in text else ""
    if m := re.search(r"rank\s*:\s*(\d+)", root):
        rank = int(m[1])
    if m := re.search(r"exitcode\s*:\s*(-?\d+)", root):
        exitcode = int(m[1])
    if errors:
        why = errors[0]
    elif exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = f"rank {rank} was killed by {name}"
    elif rank is not None:
        last = [ln.strip() for ln in lines if re.match(r"^\w*(Error|Exception)\b", ln.strip())]
        why = f"rank {rank} exited with status {exitcode}" + (f" ({last[-1]})" if last else "")
    else:
        why = f"torchrun exited with status {status}"
    train_log = folder / log_name
    reached, snapshot = progress_of(train_log)
    where = f" at iteration {reached}" if reached is not None else " before training began"
    snap = f"; the last snapshot is {snapshot}" if snapshot else "; no snapshot was written"
    return (f"torch training failed{where}: {why}; the other ranks were stopped{snap}; "
            f"the full log is {train_log} (torchrun's output: {launch_log})")


def progress_of(log: Path) -> tuple[int | None, str | None]:
    """The last iteration a log reached and its last solver-state snapshot."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    iterations = [int(x) for x in re.findall(r"Iteration (\d+)", text)]
    snaps = re.findall(r"Snapshotting solver state to binary proto file (\S+)", text)
    return (iterations[-1] if iterations else None), (snaps[-1] if snaps else None)


def _options(job: Job, device: str) -> Any:
    from pynetbuilder.pytorch.train.engine import Options

    return Options(Path(job.folder), job.solver,
                   Path(job.resume) if job.resume else None,
                   Path(job.weights) if job.weights else None, job.seed, device, job.amp,
                   channels_last=device == "cuda", workers=job.workers, log_name=job.log_name)


def train(folder: Path, job: Job, launch: Launch, *, emit: Callable[[str], None] = print) -> Any:
    """Train and read the result from rank 0's log, as the Caffe engine's
    :class:`~pynetbuilder.training.TrainResult` (None when this node wrote no log:
    a node other than 0)."""
    from pynetbuilder import training
    from pynetbuilder.caffelog import parse_log

    outcome = run(job, launch, emit=emit)
    log = folder / job.log_name
    if launch.node_rank != 0:
        return None
    text = log.read_text(encoding="utf-8", errors="replace")
    table = parse_log(text)
    if outcome is not None:
        return training.TrainResult(log, table, outcome.iteration, dict(outcome.scores),
                                    outcome.tested_at, outcome.weights, outcome.state,
                                    outcome.stopped_early)
    weights = re.findall(r"Snapshotting to binary proto file (\S+)", text)
    states = re.findall(r"Snapshotting solver state to binary proto file (\S+)", text)
    result = training.TrainResult(
        log, table, max(table.iterations(), default=0),
        weights=(folder / weights[-1]).resolve() if weights else None,
        state=(folder / states[-1]).resolve() if states else None,
        stopped_early="Optimization stopped early" in text)
    last = {c: table.last(c) for c in table.test_columns()}
    if last:
        result.tested_at = max(it for it, _ in last.values())
        result.scores = {c.removeprefix("test_"): v for c, (it, v) in last.items()
                         if it == result.tested_at}
    return result
