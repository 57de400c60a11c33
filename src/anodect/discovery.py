"""Scan discovery: from folders of slices to a sample sheet keyed by safe scan ids.

The original tool reads ``<input_dir>/<battery>/[Z軸]/<name with 負極>_NNNN.tif``.
Battery folder names carry brackets, spaces and Japanese characters, and the same
battery name can appear under two parents, so rules never key on them: each scan
gets an ASCII id made of a readable slug and a hash of its role and relative
path. The original names travel in the sample sheet and come back in the outputs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .tiffheader import count_pages, image_shape

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ROLES = ("inspect", "train_normal", "train_defect")


@dataclass(frozen=True)
class SliceFile:
    """One axial slice: its index, its file and, for a stack, its page."""

    index: int
    path: str
    page: int = -1  # -1: the file holds this slice alone


def slice_name(path: str | Path, page: int, index: int) -> str:
    """The name of one slice, unique within its scan: the file's stem, or for a page of a
    stack the stack's stem and the slice number (``cell_0205``), the name the original
    tool's layout gives that slice. Drawn PNGs, AI_RESULTS rows and annotation matching use it."""
    stem = Path(str(path)).stem
    return stem if int(page) < 0 else f"{stem}_{int(index):04d}"


@dataclass
class Scan:
    """One scanned battery along one axis: the unit every rule works on."""

    scan_id: str
    role: str
    battery_id: str
    battery_path: str
    axis: str
    layout: str
    source: str
    slices: list[SliceFile]
    height: int = 0
    width: int = 0
    notes: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """Hash of the scan's slice files: their paths, sizes and modification times.

        The crop job takes it as a param instead of hundreds of slice files as inputs
        (Snakemake's planning cost grows with every input file), and still reruns
        when a slice file is replaced or rewritten.
        """
        return files_fingerprint(sorted({sl.path for sl in self.slices}))


@dataclass(frozen=True)
class DiscoverySettings:
    layout: str = "folders"
    file_glob: str = "*.tif*"
    name_contains: str = "負極"
    axis_folder: str | None = "Z軸"
    slice_regex: str = r"_(\d{4})\.tiff?$"
    case_sensitive: bool = False
    stack_first_index: int = 0

    @classmethod
    def from_config(cls, section: dict) -> "DiscoverySettings":
        return cls(**{k: section[k] for k in cls.__dataclass_fields__ if k in section})

    def compiled_regex(self) -> re.Pattern:
        flags = 0 if self.case_sensitive else re.IGNORECASE
        pattern = re.compile(self.slice_regex, flags)
        if pattern.groups < 1:
            raise ValueError(
                f"discovery.slice_regex {self.slice_regex!r} needs one capture group for the slice index"
            )
        return pattern

    def matches_file(self, name: str) -> bool:
        glob, contains, target = self.file_glob, self.name_contains or "", name
        if not self.case_sensitive:
            glob, contains, target = glob.lower(), contains.lower(), name.lower()
        return fnmatch.fnmatchcase(target, glob) and contains in target

    def matches_axis(self, folder_name: str) -> bool:
        if not self.axis_folder:
            return True
        if self.case_sensitive:
            return self.axis_folder in folder_name
        return self.axis_folder.lower() in folder_name.lower()


def slugify(text: str, max_len: int = 40) -> str:
    """ASCII, wildcard-safe rendering of a name: letters, digits, '-' and '_' only."""
    text = unicodedata.normalize("NFKD", text)
    text = text.encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return text[:max_len].strip("_") or "scan"


def make_scan_id(role: str, rel_path: str, battery_id: str, axis: str) -> str:
    """Stable id for a scan: readable slug plus a hash of role and relative path.

    The hash keeps two batteries of the same name under different parents (or
    under different roles) apart; the slug keeps ids readable in file names.
    """
    digest = hashlib.sha1(f"{role}\0{rel_path}".encode("utf-8")).hexdigest()[:8]
    slug = slugify(f"{battery_id}_{axis}" if axis else battery_id)
    return f"{slug}-{digest}"


def _in_range(index: int, index_range: tuple[int, int] | None) -> bool:
    return index_range is None or index_range[0] <= index <= index_range[1]


def _rel(path: Path, root: Path) -> str:
    rel = os.path.relpath(path, root)
    return "" if rel == "." else rel.replace(os.sep, "/")


def _walk(root: Path):
    """os.walk in a fixed (sorted) order so ids and sheets never depend on the filesystem."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        # Hidden folders hold tool state (.snakemake, .git), never scans.
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        yield Path(dirpath), sorted(filenames)


def discover_folders(
    root: Path, role: str, settings: DiscoverySettings, index_range: tuple[int, int] | None,
    skipped: list[dict] | None = None,
) -> Iterator[Scan]:
    """Scans laid out as one TIFF per slice in ``<battery>/<axis>/`` folders, one at a time.

    Folders with slice files but no usable slice are reported in ``skipped``.
    """
    regex = settings.compiled_regex()
    skipped = [] if skipped is None else skipped
    for folder, filenames in _walk(root):
        candidates = [f for f in filenames if settings.matches_file(f)]
        if not candidates:
            continue
        if settings.axis_folder:
            if not settings.matches_axis(folder.name):
                log.debug("%s: slice files outside an axis folder matching %r, skipped",
                          folder, settings.axis_folder)
                continue
            battery_dir, axis = folder.parent, folder.name
        else:
            battery_dir, axis = folder, ""
        by_index: dict[int, SliceFile] = {}
        notes = []
        unnumbered, out_of_range = [], []
        for name in candidates:
            m = regex.search(name)
            if not m:
                unnumbered.append(name)
                continue
            index = int(m.group(1))
            if not _in_range(index, index_range):
                out_of_range.append(index)
                continue
            if index in by_index:
                notes.append(
                    f"slice {index}: duplicate index in {name!r} and "
                    f"{Path(by_index[index].path).name!r}; kept the first"
                )
                continue
            by_index[index] = SliceFile(index, str(folder / name))
        if unnumbered:
            notes.append(f"{len(unnumbered)} file(s) without a slice number matching discovery.slice_regex "
                         f"{settings.slice_regex!r}, e.g. {unnumbered[0]!r}; not read")
        if not by_index:
            why = "; ".join(notes)
            if out_of_range:
                why = (f"{len(out_of_range)} slice(s) {min(out_of_range)}..{max(out_of_range)}, none in "
                       f"filter_index_range {index_range[0]}..{index_range[1]}" + (f"; {why}" if why else ""))
            skipped.append({"role": role, "source": str(folder), "scan_id": "", "note": f"no scan: {why}"})
            continue
        rel = _rel(folder, root)
        battery_id = battery_dir.name
        yield Scan(
            scan_id=make_scan_id(role, rel, battery_id, axis),
            role=role,
            battery_id=battery_id,
            battery_path=_rel(battery_dir, root) or battery_id,
            axis=axis,
            layout="folders",
            source=str(folder),
            slices=[by_index[i] for i in sorted(by_index)],
            notes=notes,
        )


def discover_stacks(
    root: Path, role: str, settings: DiscoverySettings, index_range: tuple[int, int] | None,
    skipped: list[dict] | None = None,
) -> Iterator[Scan]:
    """Scans stored as one multi-page TIFF each, one at a time; page p is slice ``stack_first_index + p``."""
    skipped = [] if skipped is None else skipped
    for folder, filenames in _walk(root):
        for name in filenames:
            if not settings.matches_file(name):
                continue
            path = folder / name
            try:
                n_pages = count_pages(path)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not fatal
                log.warning("%s: not a readable TIFF stack (%s), skipped", path, exc)
                skipped.append({"role": role, "source": str(path), "scan_id": "",
                                "note": f"no scan: not a readable TIFF stack ({type(exc).__name__}: {exc})"})
                continue
            slices = [
                SliceFile(settings.stack_first_index + p, str(path), p)
                for p in range(n_pages)
                if _in_range(settings.stack_first_index + p, index_range)
            ]
            if not slices:
                first = settings.stack_first_index
                skipped.append({"role": role, "source": str(path), "scan_id": "",
                                "note": f"no scan: pages {first}..{first + n_pages - 1}, none in "
                                        f"filter_index_range {index_range[0]}..{index_range[1]}"})
                continue
            rel = _rel(path, root)
            axis = folder.name if settings.axis_folder and settings.matches_axis(folder.name) else ""
            battery_id = Path(name).stem
            yield Scan(
                scan_id=make_scan_id(role, rel, battery_id, axis),
                role=role,
                battery_id=battery_id,
                battery_path=str(Path(rel).with_suffix("")),
                axis=axis,
                layout="stack",
                source=str(path),
                slices=slices,
            )


def discover(
    root: str | Path,
    role: str,
    settings: DiscoverySettings,
    index_range: tuple[int, int] | None,
    read_sizes: bool = True,
    skipped: list[dict] | None = None,
) -> list[Scan]:
    """Find every scan under ``root``, in a fixed order, with its slices in range.

    Args:
        root: the folder to search (``input_dir`` or a training folder).
        role: what the scans are for, one of ``ROLES``.
        settings: the ``discovery`` config section.
        index_range: inclusive (min, max) slice-index filter, or None for all.
        read_sizes: read each scan's image size from its first slice's header.
        skipped: when given, receives a record (role, source, scan_id, note) for every
            folder or file with slice files that gave no scan, and why.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found")
    finder = discover_stacks if settings.layout == "stack" else discover_folders
    scans = list(finder(root, role, settings, index_range, skipped))
    if read_sizes:
        for scan in scans:
            for sl in scan.slices:
                try:
                    scan.height, scan.width = image_shape(sl.path, sl.page if sl.page >= 0 else None)
                    break
                except Exception as exc:  # noqa: BLE001 - the crop stage reports bad slices
                    scan.notes.append(f"slice {sl.index}: header unreadable ({exc})")
    for scan in scans:
        for note in scan.notes:
            log.warning("%s (%s): %s", scan.source, scan.scan_id, note)
    for rec in skipped or []:
        if rec["role"] == role and str(rec["source"]).startswith(str(root)):
            log.warning("%s: %s", rec["source"], rec["note"])
    return scans


def first_scan(root: str | Path, settings: DiscoverySettings, index_range: tuple[int, int] | None) -> Scan | None:
    """The first scan ``discover`` would find under ``root``, found without walking the rest.

    What a pre-run check needs (is there anything, and how large are its images):
    for a folder that holds scans this reads one folder, not thousands.
    """
    finder = discover_stacks if settings.layout == "stack" else discover_folders
    return next(iter(finder(Path(root), "inspect", settings, index_range, [])), None)


def folders_fingerprint(root: str | Path, settings: DiscoverySettings,
                        index_range: tuple[int, int] | None = None) -> str:
    """16 hex digits that change when scans appear in, vanish from or are re-exported under ``root``.

    Per folder: its modification time (a file or folder added, removed or renamed in
    it changes it) and the size and time of its first and last slice file in range
    (a scan exported again over its old files). Two stats per folder instead of one
    per slice file: at 5,000 scans of 300 slices, 10,000 stats instead of 1.5 million.
    A slice rewritten in place in the middle of a scan, both ends left alone, is not
    seen here (``snakemake --forcerun discover_scans`` looks again).
    """
    digest = hashlib.sha1()
    root = Path(root)
    regex = settings.compiled_regex()

    def usable(name: str) -> bool:
        if not settings.matches_file(name):
            return False
        if settings.layout == "stack":
            return True
        m = regex.search(name)
        return bool(m) and _in_range(int(m.group(1)), index_range)

    for folder, filenames in _walk(root):
        try:
            parts = [_rel(folder, root), str(os.stat(folder).st_mtime_ns)]
        except OSError:
            continue
        # A stack is a whole scan in one file: each is looked at.
        names = [n for n in filenames if usable(n)] if settings.layout == "stack" else dict.fromkeys(
            n for n in (next((n for n in filenames if usable(n)), None),
                        next((n for n in reversed(filenames) if usable(n)), None)) if n)
        for name in names:
            try:
                st = os.stat(folder / name)
                parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append(f"{name}:missing")
        digest.update(("\t".join(parts) + "\n").encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


NOTE_COLUMNS = ["role", "source", "scan_id", "note"]


def notes_table(scans: list[Scan], skipped: list[dict]) -> pd.DataFrame:
    """What discovery noticed: slices it left out of scans, and folders that gave no scan."""
    import pandas as pd  # a job's import: the parse-time modules need no pandas

    rows = [{"role": s.role, "source": s.source, "scan_id": s.scan_id, "note": n} for s in scans for n in s.notes]
    return pd.DataFrame(rows + list(skipped), columns=NOTE_COLUMNS)


def check_unique_ids(scans: list[Scan]) -> None:
    seen: dict[str, str] = {}
    for scan in scans:
        if scan.scan_id in seen:
            raise ValueError(
                f"scan id collision {scan.scan_id!r}: {seen[scan.scan_id]} and {scan.source}"
            )
        seen[scan.scan_id] = scan.source


def scans_table(scans: list[Scan]) -> pd.DataFrame:
    """The sample sheet: one row per scan."""
    import pandas as pd  # a job's import: the parse-time modules need no pandas

    rows = [
        {
            "scan_id": s.scan_id,
            "role": s.role,
            "battery_id": s.battery_id,
            "battery_path": s.battery_path,
            "axis": s.axis,
            "layout": s.layout,
            "source": s.source,
            "n_slices": len(s.slices),
            "first_slice": s.slices[0].index,
            "last_slice": s.slices[-1].index,
            "slice_indices": compact_indices([sl.index for sl in s.slices]),
            "height": s.height,
            "width": s.width,
            "fingerprint": s.fingerprint(),
        }
        for s in scans
    ]
    columns = ["scan_id", "role", "battery_id", "battery_path", "axis", "layout", "source",
               "n_slices", "first_slice", "last_slice", "slice_indices", "height", "width", "fingerprint"]
    return pd.DataFrame(rows, columns=columns)


def slices_table(scans: list[Scan]) -> pd.DataFrame:
    """One row per slice to read: the crop stage's input list."""
    import pandas as pd  # a job's import: the parse-time modules need no pandas

    rows = [
        {"scan_id": s.scan_id, "slice_index": sl.index, "path": sl.path, "page": sl.page}
        for s in scans
        for sl in s.slices
    ]
    return pd.DataFrame(rows, columns=["scan_id", "slice_index", "path", "page"])


def files_fingerprint(paths: list[str]) -> str:
    """16 hex digits from the paths, sizes and modification times of ``paths``; a missing file counts as such."""
    digest = hashlib.sha1()
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            digest.update(f"{path}\tmissing\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def compact_indices(indices: list[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` → ``"1-3,7,9-10"``: readable in a spreadsheet."""
    parts, start, prev = [], None, None
    for i in sorted(indices):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)


def discover_sources(source_list: list[dict], discovery: dict, filter_index_range: dict | None,
                     skipped: list[dict] | None = None) -> list[Scan]:
    """``discover_all`` from the discovery job's params (sources as ``vars(Source)``)."""
    roots = {s["role"]: s["path"] for s in source_list}
    config = {
        "input_dir": roots["inspect"],
        "training": {"normal_dir": roots.get("train_normal"), "annotated_dir": roots.get("train_defect")},
        "discovery": discovery,
        "filter_index_range": filter_index_range,
    }
    return discover_all(config, skipped=skipped)


def discover_all(config: dict, read_sizes: bool = True, skipped: list[dict] | None = None) -> list[Scan]:
    """Every scan of every source, in a fixed order; ids are unique across sources."""
    settings = DiscoverySettings.from_config(config["discovery"])
    scans = []
    from .planning import index_range, sources

    for src in sources(config):
        scans += discover(src.path, src.role, settings, index_range(config), read_sizes=read_sizes, skipped=skipped)
    check_unique_ids(scans)
    return scans
