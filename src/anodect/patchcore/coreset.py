"""Approximate greedy coreset subsampling (Roth et al., 2022, Sec. 3.2).

The memory bank keeps a subset of training patches that covers the rest: greedy
farthest-point selection, with distances computed on a random projection of the
features (the paper's Johnson-Lindenstrauss trick) and started from the mean
distance to a few random anchors, as in the reference implementation.
"""

from __future__ import annotations

import numpy as np
import torch


def greedy_coreset(
    features: np.ndarray,
    fraction: float,
    projection_dim: int = 128,
    n_starts: int = 10,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Indices of a coreset of ``features``, in selection order.

    Args:
        features: [N, D] float array.
        fraction: share of rows to keep, in (0, 1]; 1 keeps all of them.
        projection_dim: dimension of the random projection used for distances
            (no projection when D is already smaller).
        n_starts: random anchors whose mean distance seeds the selection.
        seed: seeds the projection and the anchors.
        device: where the distance updates run.

    Returns:
        int64 indices, ``max(1, round(N * fraction))`` of them.
    """
    n = len(features)
    if not 0 < fraction <= 1:
        raise ValueError(f"coreset fraction must be in (0, 1], got {fraction}")
    if fraction >= 1 or n <= 1:
        return np.arange(n, dtype=np.int64)
    n_select = max(1, int(round(n * fraction)))
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    if projection_dim and x.shape[1] > projection_dim:
        projection = torch.randn(x.shape[1], projection_dim, generator=generator) / projection_dim**0.5
        x = x @ projection
    x = x.to(device)
    sq_norms = (x * x).sum(1)
    starts = torch.randperm(n, generator=generator)[: min(n_starts, n)].to(device)

    def sq_dist_to(i: torch.Tensor) -> torch.Tensor:
        # ||x - c||^2 from norms and one matrix-vector product: one pass over x.
        c = x[i]
        return (sq_norms - 2 * (x @ c.T).T + (c * c).sum(1, keepdim=True)).clamp_min_(0)

    min_dist = sq_dist_to(starts).sqrt().mean(0)
    chosen = torch.empty(n_select, dtype=torch.int64, device=device)
    for k in range(n_select):
        idx = torch.argmax(min_dist)
        chosen[k] = idx
        torch.minimum(min_dist, sq_dist_to(idx.view(1))[0].sqrt(), out=min_dist)
    return chosen.cpu().numpy()
