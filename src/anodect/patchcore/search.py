"""Nearest-neighbour search over the memory bank: faiss, on GPU when it can be.

Scores are squared L2 distances to the nearest bank vector (k=1), as faiss's
IndexFlatL2 returns and as the original tool scored.

Exact search costs the bank's size per query: fine for the demo's 70k vectors, half a
second per crop for the 806k of 6,000 training crops (533 ms; 50 ms approximate). Above
``SearchSettings.approximate_above`` vectors (or when forced) the bank is searched
through an inverted file (faiss ``IndexIVFFlat``): the bank clustered by k-means
into ``4 sqrt(n)`` lists, each query compared with the vectors of its ``nprobe``
nearest lists only, on the CPU (faiss's GPU inverted file is not used). What that costs in recall@1 (the approximate distance equal to
the exact one) is measured by ``benchmarks/patchcore_scale.py`` and checked at
training (``recall_at_1``, saved in model.json).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSettings:
    """The ``patchcore.search`` config keys."""

    index: str = "auto"  # auto (exact up to approximate_above vectors), exact, approximate
    approximate_above: int = 200_000
    nprobe: int = 16
    seed: int = 0

    def __post_init__(self):
        if self.index not in ("auto", "exact", "approximate"):
            raise ValueError(f"patchcore.search.index must be auto, exact or approximate, not {self.index!r}")

    @classmethod
    def from_config(cls, section: dict | None) -> "SearchSettings":
        section = section or {}
        return cls(**{k: section[k] for k in ("index", "approximate_above", "nprobe") if k in section})

    def approximate(self, n: int) -> bool:
        return self.index == "approximate" or (self.index == "auto" and n > self.approximate_above)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "seed"}


class NearestNeighbourIndex:
    """L2 search of query vectors against a fixed bank: exact, or an inverted file (module docstring)."""

    def __init__(self, bank: np.ndarray, device: torch.device | str = "cpu",
                 settings: SearchSettings | None = None):
        import faiss

        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.device = torch.device(device)
        self.settings = settings or SearchSettings(index="exact")
        self._torch_bank = None
        self._params = None
        self._left_out = np.zeros(0, np.int64)
        d = self.bank.shape[1]
        if self.settings.approximate(len(self.bank)):
            nlist = max(1, min(int(round(4 * math.sqrt(len(self.bank)))), len(self.bank) // 39))
            quantiser = faiss.IndexFlatL2(d)
            index = faiss.IndexIVFFlat(quantiser, d, nlist)
            index.cp.seed = self.settings.seed
            # k-means on a seeded sample of 64 vectors per list (faiss's default sample is 256 per list)
            sample = np.random.default_rng(self.settings.seed).permutation(len(self.bank))[:64 * nlist]
            index.train(self.bank[np.sort(sample)])
            index.add(self.bank)
            index.nprobe = min(self.settings.nprobe, nlist)
            self._quantiser = quantiser  # the IVF index does not own it
            self.backend = f"faiss-cpu IVF{nlist} nprobe {index.nprobe}"
        else:
            index = faiss.IndexFlatL2(d)
            index.add(self.bank)
            self.backend = "faiss-cpu"
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

    @property
    def approximate(self) -> bool:
        return self.backend.startswith("faiss-cpu IVF")

    def without(self, rows: np.ndarray) -> "NearestNeighbourIndex":
        """The same search with bank rows ``rows`` left out (held-out scoring of a training cell)."""
        if not self.approximate:
            keep = np.ones(len(self.bank), bool)
            keep[rows] = False
            return NearestNeighbourIndex(self.bank[keep], self.device, SearchSettings(index="exact"))
        import faiss

        # One inverted file for every held-out cell: its own vectors are filtered out at search time.
        view = object.__new__(NearestNeighbourIndex)
        view.__dict__.update(self.__dict__)
        view._left_out = np.ascontiguousarray(rows, dtype=np.int64)
        view._selector_ids = faiss.IDSelectorBatch(view._left_out)
        view._selector = faiss.IDSelectorNot(view._selector_ids)
        view._params = faiss.SearchParametersIVF(sel=view._selector, nprobe=self.index.nprobe)
        return view

    def search(self, queries: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Squared L2 distance of each query row to its nearest bank row."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self._torch_bank is None:
            if self._params is not None:
                distances, _ = self.index.search(queries, 1, params=self._params)
            else:
                distances, _ = self.index.search(queries, 1)
            # A query whose probed lists hold only left-out vectors finds none (inf): the bank's
            # largest possible answer is not known, so it is searched exactly.
            lost = ~np.isfinite(distances[:, 0]) | (distances[:, 0] > np.finfo(np.float32).max / 2)
            if lost.any():
                distances[lost, 0] = self._exact_fallback(queries[lost])
            return np.maximum(distances[:, 0], 0)
        out = []
        for start in range(0, len(queries), chunk):
            q = torch.from_numpy(queries[start:start + chunk]).to(self.device)
            d = (q**2).sum(1, keepdim=True) - 2 * q @ self._torch_bank.T + self._torch_norms
            out.append(d.min(1).values.clamp_min(0).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _exact_fallback(self, queries: np.ndarray) -> np.ndarray:
        import faiss

        keep = np.ones(len(self.bank), bool)
        keep[self._left_out] = False
        flat = faiss.IndexFlatL2(self.bank.shape[1])
        flat.add(self.bank[keep])
        return flat.search(np.ascontiguousarray(queries, np.float32), 1)[0][:, 0]

    def recall_at_1(self, queries: np.ndarray) -> float:
        """Share of ``queries`` whose approximate nearest distance is the exact one (1.0 when exact)."""
        if not self.approximate or len(queries) == 0:
            return 1.0
        exact = self._exact_fallback(queries)
        approx = self.search(queries)
        return float(np.mean(approx <= exact * (1 + 1e-5) + 1e-6))
