"""Configuration: schema validation with defaults, and the checks a schema cannot express.

The pipeline reads one ``config.yaml``. A config written for the original tool is
accepted as it is: its keys keep their meaning and every new key has a default.
Problems are collected and reported together, each naming the key at fault, so a
user fixes the file once instead of once per run.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

SCHEMA_PATH = Path(str(resources.files("anodect") / "schemas" / "config.schema.yaml"))


class ConfigError(ValueError):
    """A configuration that cannot be run; the message lists every problem found."""


@dataclass(frozen=True)
class Roi:
    """A region of interest in full-slice pixel coordinates; max bounds are exclusive.

    The original tool crops ``img[y_min:y_max, x_min:x_max]``; the same convention
    is kept so its ROI numbers mean the same pixels here.
    """

    name: str
    x_min: int
    y_min: int
    x_max: int
    y_max: int

    @property
    def width(self) -> int:
        return self.x_max - self.x_min

    @property
    def height(self) -> int:
        return self.y_max - self.y_min

    def as_box(self) -> tuple[int, int, int, int]:
        return (self.x_min, self.y_min, self.x_max, self.y_max)

    def crop_shape(self, context: int = 0) -> tuple[int, int]:
        """(height, width) of this ROI's crop with ``context`` pixels around it (``crops.CropSet``)."""
        return self.height + 2 * context, self.width + 2 * context


# libyaml's loader where PyYAML has it: the schema is read at every parse, a cluster
# job's included, and the pure-Python loader took 0.14 s of it.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _parsed_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader, C or Python


def load_schema() -> dict:
    """The config schema, read once per process (a copy: callers may change it)."""
    return copy.deepcopy(_parsed_schema())


def schema_defaults() -> dict:
    """Every default the schema gives, as a config would hold them once validated.

    Settings dataclasses keep their own defaults for use outside a run; a test
    holds them equal to these, so the schema stays the one source.
    """
    schema = load_schema()
    defaults: dict = {}
    _fill_defaults(defaults, schema, schema)
    return defaults


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Fill ``default`` values of object properties in place, recursively."""
    if "$ref" in schema:
        ref = schema["$ref"].lstrip("#/").split("/")
        target = root
        for part in ref:
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    if isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                _fill_defaults(instance[key], sub, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill_defaults(item, schema["items"], root)


def validate_schema(config: dict) -> dict:
    """Validate ``config`` against the schema and fill in defaults (in place).

    Raises:
        ConfigError: listing every schema violation with the key path it concerns.
    """
    lines = schema_problems(config)
    if lines:
        raise ConfigError("config does not match its schema:\n" + "\n".join(f"  - {line}" for line in lines))
    return config


def schema_problems(config: dict) -> list[str]:
    """Fill in the schema's defaults (in place) and list every violation, each naming its key."""
    schema = load_schema()
    _fill_defaults(config, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    return [f"{_key_of(e.absolute_path)}: {e.message}" for e in errors]


def _key_of(path: Iterable) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<config>"


def load_config(path: str | Path) -> dict:
    """Read a YAML config file, validate it and fill defaults."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    return validate_schema(config)


def rois_from_config(config: dict) -> list[Roi]:
    return [
        Roi(r["name"], int(r["x_min"]), int(r["y_min"]), int(r["x_max"]), int(r["y_max"]))
        for r in config["roi_config"]
    ]


def roi_problems(rois: list[Roi], image_shape: tuple[int, int] | None) -> list[str]:
    """Check ROIs for emptiness, equal size, unique names and fit inside the image.

    Args:
        rois: the configured ROIs.
        image_shape: (height, width) of the slices, or None when not known yet.

    Returns:
        One message per problem, each starting with the key it concerns.
    """
    problems = []
    seen = set()
    for i, roi in enumerate(rois):
        key = f"roi_config[{i}] ({roi.name})"
        if roi.name in seen:
            problems.append(f"{key}: duplicate ROI name {roi.name!r}")
        seen.add(roi.name)
        if roi.x_max <= roi.x_min or roi.y_max <= roi.y_min:
            problems.append(
                f"{key}: empty box, need x_min < x_max and y_min < y_max "
                f"(got x {roi.x_min}..{roi.x_max}, y {roi.y_min}..{roi.y_max})"
            )
            continue
        if image_shape is not None:
            h, w = image_shape
            if roi.x_max > w or roi.y_max > h:
                problems.append(
                    f"{key}: box x {roi.x_min}..{roi.x_max}, y {roi.y_min}..{roi.y_max} "
                    f"lies outside the {w}x{h} (width x height) image"
                )
    sizes = {(r.width, r.height) for r in rois if r.width > 0 and r.height > 0}
    if len(sizes) > 1:
        # Crops of one scan are stacked into one [slice, roi, H, W] array and
        # batched through the models, which needs one size.
        listing = ", ".join(f"{r.name}={r.width}x{r.height}" for r in rois)
        problems.append(f"roi_config: all ROIs must have the same width x height ({listing})")
    return problems


def range_problems(config: dict) -> list[str]:
    problems = []
    rng = config.get("filter_index_range")
    if rng is not None and rng["min"] > rng["max"]:
        problems.append(
            f"filter_index_range: min ({rng['min']}) is greater than max ({rng['max']})"
        )
    demo = config.get("demo", {})
    if demo.get("enabled"):
        if demo["first_slice"] > demo["last_slice"]:
            problems.append(
                f"demo.first_slice ({demo['first_slice']}) is greater than "
                f"demo.last_slice ({demo['last_slice']})"
            )
        for key in ("crack_slices", "cracks_per_cell", "contrast", "width", "length"):
            lo, hi = demo[key]
            if lo > hi:
                problems.append(f"demo.{key}: first value ({lo}) is greater than the second ({hi})")
    win = config.get("window", {})
    if win.get("mode") == "fixed" and win["min"] >= win["max"]:
        problems.append(f"window: min ({win['min']}) must be below max ({win['max']})")
    if win.get("mode") in ("percentile", "auto") and win["low_percentile"] >= win["high_percentile"]:
        problems.append(
            f"window: low_percentile ({win['low_percentile']}) must be below "
            f"high_percentile ({win['high_percentile']})"
        )
    return problems


def raise_if(problems: list[str], source: str = "config") -> None:
    if problems:
        raise ConfigError(
            f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )
