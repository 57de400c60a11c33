"""Saved PatchCore files read with the standard library only, so the config check (in
Snakemake's own process, before any job) can read them too: the original tool's files checked
without running or importing anything, and what an older model.json's volume settings meant.

``patchcore_params.pkl`` is read by an unpickler that admits plain containers and numbers
only: any attempt to import (the way a malicious pickle runs code) is refused.
``nnscorer_search_index.faiss`` must be a flat L2 index whose header adds up to its size.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

# model.json's volume settings that a model saved before a key existed was scored with
# ('reference' and 'edges' came with issue #30's missing-slices benchmark, 'kernel_width' after it).
LEGACY_VOLUME = {"reference": "median", "edges": "shifted", "kernel_width": 1.0}

_HEADER = struct.Struct("<4siqqqBiQ")  # fourcc, d, ntotal, 2 dummies, is_trained, metric, n


class UnsafeModelFile(ValueError):
    """A model file that tried to import code, or is not what it claims to be."""


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, fh, path: Path):
        super().__init__(fh)
        self.path = path

    def find_class(self, module: str, name: str):
        raise UnsafeModelFile(
            f"{self.path}: refused: the pickle asks to import {module}.{name}; "
            "a PatchCore params file holds plain values only"
        )


def load_params(path: str | Path) -> dict:
    """Read ``patchcore_params.pkl`` without running any pickle code."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            params = _PlainUnpickler(fh, path).load()
    except UnsafeModelFile:
        raise
    except Exception as exc:
        raise UnsafeModelFile(f"{path}: not a readable params pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(params, dict):
        raise UnsafeModelFile(f"{path}: expected a dict, found {type(params).__name__}")
    required = ["backbone.name", "layers_to_extract_from", "input_shape", "pretrain_embed_dimension",
                "target_embed_dimension", "patchsize", "patchstride"]
    missing = [k for k in required if k not in params]
    if missing:
        raise UnsafeModelFile(f"{path}: missing keys {missing}")
    return params


def flat_index_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a faiss flat L2 index whose header matches its size (None when it is);
    only the header is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_HEADER.size)
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror or exc})"
    if len(head) < _HEADER.size:
        return f"{path}: too short for a faiss index ({size} bytes)"
    fourcc, d, ntotal, _, _, _, metric, n = _HEADER.unpack(head)
    if fourcc != b"IxF2":
        return f"{path}: index type {fourcc!r} is not a flat L2 index (IxF2)"
    if metric != 1 or n != ntotal * d or size != _HEADER.size + 4 * n:
        return f"{path}: inconsistent header (d={d}, ntotal={ntotal}, n={n}, metric={metric}, {size} bytes)"
    return None


__all__ = ["UnsafeModelFile", "flat_index_problem", "load_params"]
