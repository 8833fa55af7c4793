"""Resumable evaluation: per-attack, per-example correctness on disk, so an interrupted run continues.

Layout, under `robust_transfer.data.cache_dir()/eval/`:

    <context key>/                          one evaluation context: model weights + data + examples + batching
        <attack>-<params key>.safetensors   `correct` (uint8 [n]) and `done` (uint8 [n_batches])
        <attack>-<params key>.json          what was attacked with what, human-readable

The context key hashes the model's weights (`digests.weights_sha256`), the data's content hash, the hash
of the evaluated indices, the batch size and the seed; the params key hashes the attack's own
parameters (threat model, steps, budgets, algorithm version). A rerun with the same keys loads
the finished batches and attacks only the rest. Both files are written atomically (temp file +
`os.replace`), the safetensors first: it alone is the record, the JSON describes it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..digests import json_sha256
from ..io import atomic_write

STORE_FORMAT = "robust-transfer-eval/1"


@dataclass
class AttackState:
    """Where one attack stands: per-example correctness and which batches are finished."""

    correct: torch.Tensor   # bool [n], meaningful where its batch is done
    done: torch.Tensor      # bool [n_batches]

    @property
    def finished(self) -> bool:
        return bool(self.done.all())


class EvalStore:
    """Per-attack results of one evaluation context (see module docstring)."""

    def __init__(self, root: str | Path, context: dict):
        self.context = dict(context)
        self.key = json_sha256({"format": STORE_FORMAT, **self.context})[:32]
        self.dir = Path(root) / self.key

    def _stem(self, attack: str, params: dict) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in attack)
        return f"{safe}-{json_sha256(params)[:16]}"

    def load(self, attack: str, params: dict, n: int, n_batches: int) -> AttackState | None:
        """The stored state of `attack` with `params`, or None (absent, unreadable or not matching)."""
        path = self.dir / f"{self._stem(attack, params)}.safetensors"
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            correct, done = tensors["correct"].bool(), tensors["done"].bool()
        except (SafetensorError, KeyError, OSError, RuntimeError):
            return None             # a torn or foreign file: recompute (the next save replaces it)
        if correct.shape != (n,) or done.shape != (n_batches,):
            return None
        return AttackState(correct=correct, done=done)

    def save(self, attack: str, params: dict, state: AttackState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        stem = self._stem(attack, params)
        meta = {"format": STORE_FORMAT, "attack": attack, "params_key": json_sha256(params)}
        atomic_write(self.dir / f"{stem}.safetensors", lambda tmp: save_file(
            {"correct": state.correct.to(torch.uint8).contiguous(), "done": state.done.to(torch.uint8).contiguous()},
            tmp, metadata=meta))
        record = {**meta, "params": params, "context": self.context, "batches_done": int(state.done.sum()),
                  "batches": int(state.done.numel()), "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write(self.dir / f"{stem}.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1,
                                                                                              default=str)))
