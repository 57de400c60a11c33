"""Approximate greedy coreset subsampling (Roth et al., 2022, Sec. 3.2).

The memory bank keeps a subset of training patches that covers the rest: greedy
farthest-point selection, with distances computed on a random projection of the
features (the paper's Johnson-Lindenstrauss trick) and started from the mean
distance to a few random anchors, as in the reference implementation.

Every pick is one pass over all N patches, so a fraction f costs f·N² (the demo's
699k patches: 11 minutes; a production set of 8 M: days). ``coreset`` keeps that exact
selection while it makes at most ``block_picks`` picks and above it runs the same
greedy selection in blocks: the patches in a seeded random order, cut into blocks of
``block_picks / f`` patches, each block's coreset at the same fraction (``block_picks``
picks), the bank their union. The cost is N·block_picks, linear in N. Each block is a
random sample of the whole set, so its covering radius is that of ``block_picks``
centres over the whole distribution: the bank covers more coarsely than the exact
selection of as many vectors, which is why blocks are sized by their picks, not by
their patches (blocks of 16,384 patches at a 1 % coreset picked 164 vectors each and
halved a test crack's z-score). ``benchmarks/patchcore_scale.py`` and
``benchmarks/real_ct.py`` measure what it costs in time and AUROC.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

log = logging.getLogger(__name__)


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


def coreset(
    features: np.ndarray,
    fraction: float,
    projection_dim: int = 128,
    seed: int = 0,
    device: torch.device | str = "cpu",
    block_picks: int | None = None,
) -> np.ndarray:
    """Indices of a coreset of ``features``: the exact greedy selection up to ``block_picks``
    picks (``None`` or 0: always exact), the blocked one above (module docstring).

    Returns:
        int64 indices (in selection order, block after block); same seed, same indices.
    """
    n = len(features)
    if not block_picks or n * fraction <= block_picks or fraction >= 1:
        return greedy_coreset(features, fraction, projection_dim, seed=seed, device=device)
    blocks = np.array_split(np.random.default_rng(seed).permutation(n), math.ceil(n * fraction / block_picks))
    picked, t0, reported = [], time.perf_counter(), 0.0
    for b, rows in enumerate(blocks):
        rows = np.sort(rows)  # ascending rows read the features in memory order
        local = greedy_coreset(features[rows], fraction, projection_dim, seed=seed + b, device=device)
        picked.append(rows[local])
        elapsed = time.perf_counter() - t0
        if elapsed - reported >= 30 or b + 1 == len(blocks):
            reported = elapsed
            done = sum(len(p) for p in picked)
            left = elapsed / (b + 1) * (len(blocks) - b - 1)
            log.info("coreset: block %d of %d, %d picks (%.0f per s), %.0f s left", b + 1, len(blocks), done,
                     done / max(elapsed, 1e-9), left)
    return np.concatenate(picked)
