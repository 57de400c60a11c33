"""Where models run: ``device: auto`` takes CUDA when present and the CPU otherwise."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a config value (``auto``, ``cpu``, ``cuda``, ``cuda:1``) into a torch device.

    Raises:
        ValueError: CUDA was asked for explicitly but is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use device: auto or cpu")
    return device


def set_threads(threads: int) -> None:
    """Use exactly the cores Snakemake gave the job (torch and faiss both default to all)."""
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:  # faiss is only needed by PatchCore
        pass
