"""The models of the pipeline, listed once.

Each model is a subpackage of ``anodect`` (``patchcore/``, ``rfdetr/``, ...) whose
``plugin`` module exposes ``PLUGIN``, a :class:`ModelPlugin`: its names, config keys,
how it is trained or loaded, which kind of evidence it writes, and what its model
card says. Nothing outside a model's own subpackage and this registry names a model:
the rules, decisions, evaluation and report ask the plugin.

Adding a model: a subpackage with a ``plugin`` module, its rules in
``workflow/rules/models/<key>.smk``, its config section in the schema, and one line
in ``ENTRIES``.

This module and the ``plugin`` modules are imported while Snakemake plans, so they
need nothing beyond the standard library at import time.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path

# Report order. The one place a model is added.
ENTRIES = ("anodect.patchcore.plugin", "anodect.segmenter.plugin", "anodect.rfdetr.plugin")

# The kinds of per-scan evidence (anodect.evidence): the batch folder each kind is
# written to, under the model's own folder.
EVIDENCE_FOLDER = {"maps": "scores", "boxes": "predictions"}

# Every model anodect makes is saved with this file beside it: how it was made.
METADATA = "model.json"


@dataclass(frozen=True)
class ModelChoice:
    """What a model's ``model:`` key resolves to.

    Attributes:
        kind: ``train`` (trained by this run), ``original`` (the original tool's files),
            ``path`` (a model the user gives) or ``none`` (the model is off).
        path: the folder or file read; None for train and none.
    """

    kind: str
    path: str | None


class ModelPlugin:
    """What the pipeline asks of a model. Subclasses set the names and override the hooks.

    Attributes:
        key: the pipeline's key (config section, folder under ``output_inference_dir``).
        display: the name readers see.
        tool: the original tool's spelling, for ``inference_<tool>`` (users' scripts read it).
        evidence: ``maps`` (a score map per crop, ``evidence.ScoreMaps``) or ``boxes``
            (scored boxes per crop, ``evidence.BoxTable``).
        colour: the model's colour in every figure.
        threshold_key: the top-level key of its decision threshold.
        decision_keys: decision param -> key of ``decisions`` in the config.
        train_rules: the rules that make the model when the run trains it (the last
            one writes ``model.json``).
        score_rule: the per-batch rule that writes its evidence.
        packages: the distributions whose versions its model card reports.
        rules: its rule file, relative to the workflow's root (or absolute).
    """

    key: str = ""
    display: str = ""
    tool: str = ""
    evidence: str = "maps"
    colour: str = "#444444"
    threshold_key: str = ""
    decision_keys: dict = {}
    train_rules: tuple = ()
    score_rule: str = ""
    packages: tuple = ()

    @property
    def rules(self) -> str:
        return f"workflow/rules/{self.key}.smk"

    # ---- model choice ---------------------------------------------------------------------

    def choice(self, config: dict) -> ModelChoice:
        """The ``model:`` key of the model's section, ``auto`` resolved."""
        raise NotImplementedError

    def enabled(self, config: dict) -> bool:
        return self.choice(config).kind != "none"

    def trains(self, config: dict) -> bool:
        return self.choice(config).kind == "train"

    def model_path(self, config: dict) -> str:
        """Where the scoring jobs read the model: the given one, or where this run trains it."""
        return self.choice(config).path or f"{config['output_inference_dir']}/{self.key}/model"

    def model_files(self, config: dict) -> list[str]:
        """The files of a ready model (inputs of the scoring jobs); [] when the run trains it."""
        path = self.choice(config).path
        if path is None:
            return []
        p = Path(path)
        if p.is_dir():
            return [str(f) for f in sorted(p.iterdir()) if f.is_file()]
        meta = p.with_name(METADATA)
        return [str(p)] + ([str(meta)] if meta.is_file() and meta != p else [])

    def metadata_path(self, config: dict) -> str | None:
        """The ``model.json`` of a ready model, when it has one."""
        path = self.choice(config).path
        if path is None:
            return None
        p = Path(path)
        meta = p / METADATA if p.is_dir() else p.with_name(METADATA)
        return str(meta) if meta.is_file() else None

    # ---- params ---------------------------------------------------------------------------

    def job_settings(self, config: dict, rule: str) -> dict:
        """The keys of the model's section that rule ``rule``'s output depends on (the schema's ``x-jobs``)."""
        from .config import load_schema

        props = load_schema()["properties"][self.key]["properties"]
        section = config[self.key]
        return {k: section[k] for k, p in props.items() if rule in p.get("x-jobs", ()) and k in section}

    def decision_params(self, config: dict) -> dict:
        """What the model's decision jobs depend on: its own threshold and the tracking rules.

        Another model's threshold is left out, so changing it never reruns these jobs.
        """
        d = config["decisions"]
        params = {k: d[k] for k in ("min_consecutive_slices", "max_gap", "link_margin")}
        params["threshold"] = config[self.threshold_key]
        params.update({name: d[key] for name, key in self.decision_keys.items()})
        return params

    def auto_threshold(self, config: dict) -> bool:
        """Whether the threshold is the model's own (``auto``), read from its ``model.json``."""
        return config.get(self.threshold_key) == "auto"

    def gpu_resources(self, config: dict) -> dict:
        """``gpu=1`` for the model's training and scoring jobs when its ``device`` asks for CUDA.

        ``auto`` asks for none: on a cluster, a job that should get a GPU says so.
        """
        device = str(config[self.key].get("device", "auto"))
        return {"gpu": 1} if device.startswith("cuda") else {}

    # ---- scoring outside the batch rules (the POD study) ------------------------------------

    def score_params(self, config: dict) -> dict:
        """What ``score_folder`` needs from the config (plain values: a rule's params).

        Default: the score rule's settings (the schema's ``x-jobs``) and where the model is.
        """
        return {"settings": self.job_settings(config, self.score_rule), "model": self.model_path(config)}

    def taught_renderer(self, config: dict) -> str | None:
        """The crack renderer (``pod.renderer``'s names) whose cracks the model learns from, None for
        none: a POD study with that renderer grades it on cracks it was taught to draw."""
        return None

    def score_folder(self, params: dict, crops_dir: str, scan_ids: list[str], out_dir: str, threads: int) -> None:
        """Score the crop files ``crops_dir/<scan_id>.npz`` into ``out_dir`` as the score rule
        does (one evidence file per scan, the model loaded once)."""
        raise NotImplementedError(f"{self.key} cannot score a folder of crops")

    # ---- checks before a run --------------------------------------------------------------

    def problems(self, config: dict) -> list[str]:
        """What keeps the model's choice from running, each naming its key."""
        return []

    def metadata_problems(self, config: dict, meta: dict, where: str) -> list[str]:
        """A ready model's ``model.json`` against the config: each difference named."""
        return []

    # model.json key -> the model file whose sha256 it records ("" for the model path itself)
    hashed_files: dict = {}

    def file_problems(self, config: dict) -> list[str]:
        """A ready model's files against the sha256 its ``model.json`` records: a truncated or
        altered file stops the run before any job, not in the scoring job after the crops ran."""
        import json

        from .fileinfo import file_sha256

        choice = self.choice(config)
        meta_path = self.metadata_path(config) if choice.kind == "path" else None
        if not meta_path:
            return []
        try:
            meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []  # metadata_problems names an unreadable model.json
        out = []
        for key, name in self.hashed_files.items():
            folder = Path(choice.path)
            path = folder / name if name and folder.is_dir() else folder
            if not meta.get(key) or not path.is_file():
                continue  # nothing recorded, or missing (problems() names it)
            if file_sha256(path) != meta[key]:
                out.append(f"{self.key}.model: {path} does not match the sha256 in {meta_path} (altered or "
                           "truncated: copy the model again, or retrain)")
        return out

    # ---- the report -----------------------------------------------------------------------

    def model_id(self, meta: dict) -> str:
        return meta.get("model_id") or "no model.json"

    def card(self, meta: dict) -> tuple[str, str | None]:
        """How the model was made (one paragraph), and a warning when its figures do not
        measure a trained model."""
        return (str(meta) if meta else "a model given in the config; how it was made is not recorded"), None

    def score_label(self) -> str:
        """What a crop's score is, for axis labels."""
        return "score" if self.evidence == "maps" else "top confidence"


@functools.cache
def plugins() -> dict[str, ModelPlugin]:
    """key -> plugin, in report order."""
    out = {}
    for entry in ENTRIES:
        plugin = importlib.import_module(entry).PLUGIN
        out[plugin.key] = plugin
    return out


def get(key: str) -> ModelPlugin:
    try:
        return plugins()[key]
    except KeyError:
        raise KeyError(f"no model {key!r} (models: {', '.join(plugins())})") from None


def keys() -> list[str]:
    return list(plugins())


def by_tool(tool: str) -> ModelPlugin:
    """The plugin of the original's folder spelling (``rf_detr`` -> RF-DETR)."""
    return {p.tool: p for p in plugins().values()}[tool]


def models(config: dict) -> list[str]:
    """The models of a run, in report order."""
    return [k for k, p in plugins().items() if p.enabled(config)]


def rule_files() -> list[str]:
    """Every registered model's rule file, in registry order (the Snakefile includes them)."""
    return [p.rules for p in plugins().values()]


def output_folder(key: str) -> str:
    """The original tool's output folder of a model (under ``output_inference_dir``)."""
    return f"inference_{get(key).tool}"


def display(key: str) -> str:
    return get(key).display


def register(plugin: ModelPlugin) -> None:
    """Add a model at run time (tests): the same as a line in ``ENTRIES``."""
    plugins()[plugin.key] = plugin


def unregister(key: str) -> None:
    plugins().pop(key, None)


__all__ = ["ENTRIES", "EVIDENCE_FOLDER", "METADATA", "ModelChoice", "ModelPlugin", "by_tool", "display", "get", "keys",
           "models", "output_folder", "plugins", "register", "rule_files", "unregister"]
