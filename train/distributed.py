"""Multi-GPU (or multi-process CPU) training with torch DistributedDataParallel under torchrun.

    torchrun --standalone --nproc-per-node 8 -m train.ddp --data D --clip C --out RUN ...
    clipinspect train --nproc 8 --data D --clip C --out RUN ...      (launches the line above)

torchrun starts one process per GPU and sets RANK / LOCAL_RANK / WORLD_SIZE; `context()` reads
them. Semantics, chosen so a run means the same on 1 or N processes:

- `optim.batch_size` is the GLOBAL batch; each process takes batch_size / N (must divide).
- Data order: `DistributedSampler` seeded like the single-process `RandomSampler`
  (seed * 100003 + epoch -> one `randperm`); rank r takes every N-th index from r, so the union
  of the N local batches k is exactly the single-process global batch k. DDP averages the
  gradients over ranks, which equals the gradient of the global batch mean for per-sample-mean
  losses: a 2-process run reaches the same adapter weights as one process (float reduction
  order aside; tests/train/test_distributed.py). Exact when the image count is a multiple of the
  global batch and every image in a batch has pixel truth or none has (the pixel losses average
  over the images with masks, per process); otherwise DistributedSampler pads the last batch by
  repeating images and per-process averages weigh slightly differently - ordinary DDP behaviour.
- Rank 0 alone writes the run folder (config, train.log, metrics, checkpoints) and prints; epoch
  losses are summed over ranks first, so metrics.jsonl reads as one process would have written.
  Every rank reads the checkpoint on --resume. A barrier at the end of each epoch keeps ranks
  in step: whatever the loop does after rank 0's save (best-epoch selection, an eval) runs on
  rank 0 only while the others wait (process-group timeout 1 h).
- Backend: NCCL on CUDA (one GPU per process, `cuda:LOCAL_RANK`, AMP as configured), gloo on CPU.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from edge_runtime.errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)

SEED_STRIDE = 100003  # the single-process loop seeds epoch e's order with seed * SEED_STRIDE + e


@dataclass(frozen=True)
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> DistContext:
    """The torchrun environment of this process (world size 1 when not under torchrun)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ConfigError(f"bad torchrun environment (WORLD_SIZE/RANK/LOCAL_RANK): {exc}") from None
    return DistContext(world, rank, local)


def setup(ctx: DistContext, device: str) -> str:
    """Join the process group (NCCL on CUDA, gloo on CPU) and return this rank's device."""
    if not ctx.enabled:
        return device
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        if torch.cuda.device_count() <= ctx.local_rank:
            raise BackendUnavailable(
                f"rank {ctx.rank} wants GPU {ctx.local_rank} but torch sees "
                f"{torch.cuda.device_count()}: use --nproc-per-node <= the GPU count"
            )
        torch.cuda.set_device(ctx.local_rank)
        device = f"cuda:{ctx.local_rank}"
    if not dist.is_initialized():
        # rank 0 saves (and may evaluate) while the others wait at a barrier: allow an hour
        # rather than NCCL's 10-minute default before calling it a hang
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(hours=1))
    if not ctx.is_main:
        # one console for N processes: the others only report problems
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    return device


def teardown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def local_batch_size(global_batch: int, ctx: DistContext) -> int:
    if global_batch % ctx.world_size:
        raise ConfigError(
            f"optim.batch_size {global_batch} is the global batch and must be a multiple of the "
            f"{ctx.world_size} processes"
        )
    return global_batch // ctx.world_size


def epoch_sampler(dataset: Any, seed: int, epoch: int, ctx: DistContext) -> Any:
    """This epoch's sampler: single process as before (seeded RandomSampler), else a
    DistributedSampler drawing the same permutation."""
    import torch
    from torch.utils.data import DistributedSampler, RandomSampler

    if not ctx.enabled:
        return RandomSampler(dataset, generator=torch.Generator().manual_seed(seed * SEED_STRIDE + epoch))
    if len(dataset) < ctx.world_size:
        raise ConfigError(f"{len(dataset)} training images cannot feed {ctx.world_size} processes")
    sampler = DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed * SEED_STRIDE, drop_last=False
    )
    sampler.set_epoch(epoch)
    return sampler


def training_forward(model: Any, ctx: DistContext, device: str) -> Any:
    """A module whose forward(pixels) runs text and image towers in ONE call, wrapped in DDP
    when distributed, so every trainable parameter (text LoRA, context tokens included) is
    used inside the forward DDP watches and its gradient is averaged over ranks."""
    from torch import nn

    class TrainForward(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model(pixel_values, self.model.text_embeddings())

    step = TrainForward()
    if not ctx.enabled:
        return step
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    log.info("DDP: %d processes, backend %s, rank %d on %s", ctx.world_size, dist.get_backend(), ctx.rank, device)
    ids = [int(device.split(":")[1])] if device.startswith("cuda:") else None
    # buffers are constants (prompt ids): nothing to broadcast each step
    return DistributedDataParallel(step, device_ids=ids, broadcast_buffers=False)


def reduce_sums(sums: dict[str, float], seen: int, ctx: DistContext, device: str) -> tuple[dict[str, float], int]:
    """Epoch loss sums and image counts added over ranks (identity for one process)."""
    if not ctx.enabled:
        return sums, seen
    import torch
    import torch.distributed as dist

    keys = list(sums)
    t = torch.tensor([sums[k] for k in keys] + [float(seen)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    values = t.tolist()
    return dict(zip(keys, values[:-1])), int(values[-1])


# ----- launching ---------------------------------------------------------------------------
def launch_command(nproc: int, train_argv: Sequence[str]) -> list[str]:
    """torchrun (as `python -m torch.distributed.run`, so the venv's torch is used) running
    `python -m train.ddp` with the train arguments, single node."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "train.ddp",
        *train_argv,
    ]


def launch(nproc: int, train_argv: Sequence[str]) -> int:
    """Run the training on `nproc` local processes; returns torchrun's exit code."""
    from edge_runtime.deps import require

    require("torch", extra="train", purpose="distributed training")
    cmd = launch_command(nproc, train_argv)
    log.info("launching: %s", " ".join(cmd))
    env = dict(os.environ)
    # torchrun falls back to OMP_NUM_THREADS=1 per worker (with a warning) when it is unset;
    # state it, and let a user's value (or optim.threads) win
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call(cmd, env=env)
