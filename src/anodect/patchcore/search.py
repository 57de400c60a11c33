"""Nearest-neighbour search over the memory bank: faiss, on GPU when it can be.

Scores are squared L2 distances to the nearest bank vector (k=1), as faiss's
IndexFlatL2 returns and as the original tool scored.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)


class NearestNeighbourIndex:
    """Exact L2 search of query vectors against a fixed bank."""

    def __init__(self, bank: np.ndarray, device: torch.device | str = "cpu"):
        import faiss

        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.device = torch.device(device)
        index = faiss.IndexFlatL2(self.bank.shape[1])
        index.add(self.bank)
        self.backend = "faiss-cpu"
        self._torch_bank = None
        if self.device.type == "cuda":
            if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
                self._resources = faiss.StandardGpuResources()
                index = faiss.index_cpu_to_gpu(self._resources, self.device.index or 0, index)
                self.backend = "faiss-gpu"
            else:
                # CPU faiss beside a GPU: search with torch on the GPU instead.
                self._torch_bank = torch.from_numpy(self.bank).to(self.device)
                self._torch_norms = (self._torch_bank**2).sum(1)
                self.backend = "torch-cuda"
        self.index = index

    def search(self, queries: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Squared L2 distance of each query row to its nearest bank row."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self._torch_bank is None:
            distances, _ = self.index.search(queries, 1)
            return np.maximum(distances[:, 0], 0)
        out = []
        for start in range(0, len(queries), chunk):
            q = torch.from_numpy(queries[start:start + chunk]).to(self.device)
            d = (q**2).sum(1, keepdim=True) - 2 * q @ self._torch_bank.T + self._torch_norms
            out.append(d.min(1).values.clamp_min(0).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)
