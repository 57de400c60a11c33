"""Slice sizes and page counts from TIFF headers, in plain Python.

The checks before a run (``preflight``) and discovery need only a slice's size and
a stack's page count, never its pixels. Reading them here, without tifffile or
numpy, lets the Snakefile parse with nothing beyond Snakemake's own dependencies
(``snakemake --sdm conda`` from a plain Snakemake install): the jobs read pixels
with tifffile in their own environment.

Classic TIFF and BigTIFF, either byte order. A page is one IFD of the main chain
(sub-IFDs are not pages), as tifffile counts them.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterator

_WIDTH, _LENGTH = 256, 257
# TIFF field types that can hold a size: SHORT, LONG, LONG8 (BigTIFF).
_SIZE_TYPES = {3: "H", 4: "I", 16: "Q"}


class NotATiff(ValueError):
    """The file is not a TIFF, or its header is cut short."""


def _unpack(order: str, fmt: str, data: bytes, path) -> tuple:
    try:
        return struct.unpack(order + fmt, data)
    except struct.error:
        raise NotATiff(f"{path}: TIFF header cut short") from None


def _ifds(fh: BinaryIO, path) -> Iterator[tuple[str, bool, bytes]]:
    """(byte order, BigTIFF, entry bytes) of each IFD of the main chain, in file order."""
    head = fh.read(16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None:
        raise NotATiff(f"{path}: not a TIFF file (no II/MM byte-order mark)")
    (magic,) = _unpack(order, "H", head[2:4], path)
    if magic == 42:
        big, (offset,) = False, _unpack(order, "I", head[4:8], path)
    elif magic == 43:
        big, (offset,) = True, _unpack(order, "Q", head[8:16], path)
    else:
        raise NotATiff(f"{path}: not a TIFF file (version {magic})")
    count_fmt, entry, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    seen = set()
    while offset and offset not in seen:  # a loop in a damaged chain must not hang discovery
        seen.add(offset)
        fh.seek(offset)
        (n,) = _unpack(order, count_fmt, fh.read(struct.calcsize(count_fmt)), path)
        entries = fh.read(n * entry)
        (offset,) = _unpack(order, next_fmt, fh.read(struct.calcsize(next_fmt)), path)
        if len(entries) < n * entry:
            raise NotATiff(f"{path}: TIFF header cut short")
        yield order, big, entries


def _size(order: str, big: bool, entries: bytes, path) -> tuple[int, int]:
    entry = 20 if big else 12
    found = {}
    for start in range(0, len(entries), entry):
        tag, kind = struct.unpack(order + "HH", entries[start:start + 4])
        if tag in (_WIDTH, _LENGTH) and kind in _SIZE_TYPES:
            value = entries[start + (12 if big else 8):start + entry]
            fmt = _SIZE_TYPES[kind]
            found[tag] = struct.unpack(order + fmt, value[:struct.calcsize(fmt)])[0]
    if _WIDTH not in found or _LENGTH not in found:
        raise NotATiff(f"{path}: TIFF page without ImageWidth/ImageLength")
    return int(found[_LENGTH]), int(found[_WIDTH])


def image_shape(path: str | Path, page: int | None = None) -> tuple[int, int]:
    """(height, width) of a slice file, or of page ``page`` of a stack, from its header."""
    with open(path, "rb") as fh:
        for i, ifd in enumerate(_ifds(fh, path)):
            if i == (page or 0):
                return _size(*ifd, path)
    raise NotATiff(f"{path}: has no page {page or 0}")


def count_pages(path: str | Path) -> int:
    """Number of pages (slices) in a TIFF file."""
    with open(path, "rb") as fh:
        return sum(1 for _ in _ifds(fh, path))


__all__ = ["NotATiff", "count_pages", "image_shape"]
