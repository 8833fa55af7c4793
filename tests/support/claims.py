"""Helpers shared by the claim tests (test_report.py, test_verdicts.py)."""
from __future__ import annotations


def per_example(n: int, first: int = 0, **correct: int) -> dict:
    """An `evaluation/per_example.json` of n examples (dataset positions first .. first + n - 1) where the first k of
    each attack's list are correct, so a later attack's correct examples are a subset of an earlier one's with a
    smaller k, as attacks' are."""
    import torch

    from robust_transfer.digests import indices_sha256

    bad = {a: k for a, k in correct.items() if not 0 <= k <= n}
    assert not bad, f"correct counts must lie in [0, {n}]: {bad}"   # else the lists are not n long
    idx = list(range(first, first + n))
    return {"split": "test", "n_examples": n, "indices_sha256": indices_sha256(torch.tensor(idx)), "indices": idx,
            "correct": {a: [1] * k + [0] * (n - k) for a, k in correct.items()}}
