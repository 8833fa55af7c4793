"""A training job for tests/test_distributed.py, run with `torchrun --nproc_per_node=2` or as one process:
`ddp_worker.py <imagefolder> <out.pt> <mode> [key=value ...]`. It trains `nobn` (cnn4's convolutions without
BatchNorm: per-rank BatchNorm statistics would differ from one process's by design, as under DDP) through the
library's engine and writes rank 0's final parameters to <out.pt>."""
import os
import sys

import torch
from torch import nn

from robust_transfer import distributed
from robust_transfer.config import TrainConfig
from robust_transfer.models import register_arch
from robust_transfer.models.base import GlobalPool
from robust_transfer.reporting import MemoryLogger
from robust_transfer.strategies.train import train


def nobn_body():
    def block(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(block(3, 8), block(8, 16), nn.Sequential(block(16, 16), GlobalPool())), 16


def main(folder: str, out: str, mode: str, *extra: str) -> None:
    register_arch("nobn", nobn_body)
    ranks = distributed.start("cpu")
    kw = dict(dataset=f"imagefolder:{folder}", arch="nobn", mode=mode, batch_size=16, iterations=6, lr=0.05,
              precision="fp32", augment=True, n_examples=6, eval_steps=1, progress=False, device="cpu",
              checkpoint_dir=f"{out}.ckpt", replay=2)
    kw |= {k: type(kw.get(k, ""))(v) if k in kw else v for k, v in (e.split("=", 1) for e in extra)}
    assert ranks.world_size == int(os.environ.get("WORLD_SIZE", "1")), "this process did not join torchrun's job"
    result = train(TrainConfig(**kw), MemoryLogger())
    assert all(torch.isfinite(p).all() for p in result.model.parameters()), "training diverged on this rank"
    if ranks.main:
        torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:])
