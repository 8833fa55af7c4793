"""Data-parallel training under the standard launcher (`torchrun --nproc_per_node=N rtl train ...`).

torchrun starts N copies of the command with RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR in their
environment; `start` (called by the training commands before anything else) joins them into one process
group — gloo on the CPU, NCCL on CUDA, each rank on `cuda:<LOCAL_RANK>`. Without those variables (one
process, as always) nothing here does anything and training is exactly what it was.

What the engine does with N ranks (strategies/engine.py), and why it is DistributedDataParallel's maths:
- every rank draws the SAME seeded epoch order and batches (`data.BatchLoader`), and trains on its
  contiguous share of each batch (`share`): the global batch stays `batch_size`, so the budget, the
  schedule and every update are those of a one-process run with the same batch;
- after each backward the gradients are summed over ranks, each weighted by its share of the batch
  (`average_gradients`): the gradient of the global batch's mean loss, as DDP's all-reduce gives. The
  engine reduces them itself instead of wrapping the model in `torch.nn.parallel.DistributedDataParallel`
  because the objectives run attacks through the same module (input-gradient backward passes in eval
  mode, BatchNorm folded into a view) and call its parts (`features`, `head`, `normalize`) directly —
  DDP's wrapper hooks every backward of its forward and hides those parts;
- BatchNorm: each rank normalises with its own share's statistics (as under DDP), rank 0's running
  statistics are the model's (`broadcast_buffers` before validation and checkpoints, as DDP's
  broadcast_buffers); `sync_bn=true` converts BatchNorm to SyncBatchNorm (CUDA only: torch's SyncBatchNorm
  has no CPU kernel);
- rank 0 alone logs (one MLflow run, tagged `rtl.world_size`), validates, evaluates and writes checkpoints;
  the others wait for it at their next collective. Free training's carried δ is per rank (each has its own
  share), and a checkpoint keeps every rank's (`gather_state`).
A rank that dies ends the job: torchrun stops the others (SIGTERM, which `start` turns into an exception so
rank 0's run ends FAILED), and a collective that loses its peer raises `PeerLost` (one line, exit 8).
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from .errors import ConfigError, PeerLost


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that logs, validates, evaluates and writes checkpoints (the only one in one process)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


ONE_PROCESS = Ranks()   # frozen: the one shared default of every function that takes ranks


def launched() -> Ranks:
    """What torchrun's environment says this process is (one process: rank 0 of 1)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError("WORLD_SIZE/RANK/LOCAL_RANK must be integers (set by torchrun)") from None
    return Ranks(rank, world, local)


def current() -> Ranks:
    """This process's place in the job: the process group's, once `start` has joined it; else one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), launched().local_rank)
    return Ranks()


def _terminated(signum, frame):   # torchrun stops the surviving ranks with SIGTERM when one dies
    raise PeerLost(f"stopped by signal {signum}: torchrun ends every rank when one of them fails; rerun, with "
                   "--resume to continue from the last epoch's checkpoint")


def peer_lost(exc: BaseException) -> PeerLost | None:
    """The `PeerLost` behind `exc`, if any: the SIGTERM can land inside a library call (an MLflow request,
    say) that wraps whatever it was interrupted by in its own exception."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, PeerLost):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def start(device: str = "auto", batch_size: int | None = None) -> Ranks:
    """Join torchrun's process group when launched by it (gloo on the CPU, NCCL on CUDA, this rank's GPU
    made the current device, so `cuda` means it); a no-op in one process. Idempotent. With `batch_size`, a
    batch that does not split over the ranks is refused first (`check_batch`), before any run opens."""
    import torch
    import torch.distributed as dist

    want = launched()
    if batch_size is not None:
        check_batch(batch_size, want)
    if not want.parallel or dist.is_initialized():
        return current()
    from .device import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(want.local_rank)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    signal.signal(signal.SIGTERM, _terminated)
    return current()


def check_batch(batch_size: int, ranks: Ranks) -> None:
    """Each rank takes an equal share of every batch: refuse a batch that does not split so (one line)."""
    if ranks.parallel and batch_size % ranks.world_size:
        raise ConfigError(f"batch_size={batch_size} does not split evenly over {ranks.world_size} ranks "
                          f"(torchrun --nproc_per_node); use a multiple of {ranks.world_size}")


def share(n: int, ranks: Ranks) -> tuple[int, int]:
    """[lo, hi) of this rank's contiguous share of a batch of `n` (the last ranks one smaller when uneven)."""
    base, extra = divmod(n, ranks.world_size)
    lo = ranks.rank * base + min(ranks.rank, extra)
    return lo, lo + base + (ranks.rank < extra)


def _collective(fn, *args, **kw):
    """A collective call; a lost peer becomes `PeerLost` (one line) instead of a backend traceback."""
    try:
        return fn(*args, **kw)
    except RuntimeError as e:   # gloo/NCCL: DistBackendError and friends derive from RuntimeError
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise PeerLost(f"a torchrun rank was lost during training ({first}); rerun, with --resume to continue "
                       "from the last epoch's checkpoint") from None


def average_gradients(params, weight: float) -> None:
    """The gradient of the global batch: every rank's gradients × its share of the batch (`weight`), summed
    over ranks, in one flat all-reduce. Parameters without a gradient (frozen) are the same on every rank."""
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(weight)
    _collective(dist.all_reduce, flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module, *, parameters: bool = True) -> None:
    """Rank 0's buffers (BatchNorm's running statistics), and its parameters unless told otherwise, on every rank."""
    import torch.distributed as dist

    tensors = list(module.buffers()) + (list(module.parameters()) if parameters else [])
    for t in tensors:
        _collective(dist.broadcast, t.data, 0)


def sum_over_ranks(values: list[float]) -> list[float]:
    """`values` summed over the ranks (float64: counts stay exact)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    _collective(dist.all_reduce, t)
    return t.tolist()


def gather_state(tensors: dict, ranks: Ranks) -> dict:
    """Every rank's per-rank tensors (free training's δ) for rank 0's checkpoint: rank 0's under their own
    names, rank r's as `rank<r>.<name>`; `own_state` picks a rank's back out."""
    import torch.distributed as dist

    everyone: list[dict] = [{} for _ in range(ranks.world_size)]   # all_gather_object fills every slot
    _collective(dist.all_gather_object, everyone, {k: v.cpu() for k, v in tensors.items()})
    out = dict(everyone[0])
    for r, theirs in enumerate(everyone[1:], start=1):
        out |= {f"rank{r}.{k}": v for k, v in theirs.items()}
    return out


def own_state(tensors: dict, ranks: Ranks) -> dict:
    """This rank's tensors out of `gather_state`'s names."""
    if ranks.rank == 0:
        return {k: v for k, v in tensors.items() if not k.startswith("rank")}
    prefix = f"rank{ranks.rank}."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def convert_sync_bn(model, device, wanted: bool, ranks: Ranks):
    """`sync_bn=true` under torchrun: BatchNorm → SyncBatchNorm (statistics over the whole global batch).
    A no-op in one process; refused on the CPU, where torch's SyncBatchNorm does not run."""
    import torch

    if not wanted or not ranks.parallel:
        return model
    if torch.device(device).type != "cuda":
        raise ConfigError("sync_bn=true needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                          "use sync_bn=false on the CPU (each rank normalises its own share, as DDP does)")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
