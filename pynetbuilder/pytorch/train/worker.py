"""One torchrun worker of the torch engine: ``python -m
pynetbuilder.pytorch.train.worker JOB_JSON`` (see :mod:`.launch`).  Errors end the
worker with one ``pynetbuilder: error: rank R: ...`` line and status 2."""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta


def main(argv: list[str]) -> int:
    import torch
    import torch.distributed as dist

    from pynetbuilder.errors import NetError, UsageError
    from pynetbuilder.pytorch.train import engine
    from pynetbuilder.pytorch.train.launch import PROGRESS, Job, _options

    job = Job(**json.loads(argv[0]))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    if job.gpu:
        torch.cuda.set_device(local)
        backend, device = "nccl", "cuda"
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        backend, device = "gloo", "cpu"
    try:
        dist.init_process_group(backend, timeout=timedelta(minutes=10))
        try:
            engine.train(_options(job, device), rank=rank, world=world,
                         emit=lambda line: print(PROGRESS + line, flush=True))
        finally:
            dist.destroy_process_group()
    except (UsageError, NetError) as exc:
        print(f"pynetbuilder: error: rank {rank}: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
