"""The crack segmenter as the pipeline sees it: names, model choice, checks and model card.

Plain Python at import: the planner imports it. Training and scoring are in ``stage``.
"""

from __future__ import annotations

from pathlib import Path

from ..registry import METADATA, ModelChoice, ModelPlugin

WEIGHTS = "weights.pt"


class SegmenterPlugin(ModelPlugin):
    key = "segmenter"
    hashed_files = {"weights_sha256": "weights.pt"}
    display = "Crack segmenter"
    tool = "segmenter"
    evidence = "maps"
    colour = "#9467bd"
    threshold_key = "segmenter_threshold"
    # A crack's outline is where the map says "crack" (probability 0.5), whatever the crop threshold:
    # the held-out threshold sits near 1 and would outline only the crack's core.
    decision_keys = {"map_threshold": "segmenter_map_threshold", "min_region_area": "min_region_area",
                     "region_join": "segmenter_region_join"}
    train_rules = ("train_segmenter",)
    score_rule = "score_segmenter"
    packages = ()

    def decision_params(self, config: dict) -> dict:
        # Its map is a probability: a box is ranked by its region's own peak, not its crop's best.
        return {**super().decision_params(config), "box_score": "peak"}

    def taught_renderer(self, config: dict) -> str | None:
        return "project"  # it learns from cracks anodect.synthesis draws into normal scans

    def score_folder(self, params: dict, crops_dir: str, scan_ids: list[str], out_dir: str, threads: int) -> None:
        from ..devices import set_threads
        from .stage import load, score_batch

        set_threads(threads)
        score_batch(load(params["model"], params["settings"]), crops_dir, scan_ids, out_dir)

    def choice(self, config: dict) -> ModelChoice:
        """``segmenter.model``. ``auto``: train when normal scans are given, else off."""
        choice = config["segmenter"]["model"]
        if choice == "auto":
            choice = "train" if config.get("training", {}).get("normal_dir") else "none"
        if choice in ("train", "none"):
            return ModelChoice(choice, None)
        return ModelChoice("path", choice)

    def uses_annotations(self, config: dict) -> bool:
        """Whether it learns from annotated real cracks too (``segmenter.annotated`` and annotations given)."""
        training = config.get("training", {})
        return bool(config["segmenter"]["annotated"] and training.get("annotated_dir")
                    and training.get("annotations_dir"))

    def problems(self, config: dict) -> list[str]:
        choice = self.choice(config)
        if choice.kind == "train" and not config.get("training", {}).get("normal_dir"):
            return ["segmenter.model: 'train' needs training.normal_dir (scans of normal cells)"]
        if choice.kind == "path":
            missing = [n for n in (METADATA, WEIGHTS) if not (Path(choice.path) / n).is_file()]
            if missing:
                return [f"segmenter.model: {choice.path} lacks {', '.join(missing)} (a crack segmenter folder)"]
        return []

    def metadata_problems(self, config: dict, meta: dict, where: str) -> list[str]:
        problems = []
        if meta.get("context") is not None and meta["context"] != config.get("crop_context", 0):
            problems.append(f"crop_context: the crack segmenter in {where} was trained with {meta['context']!r}, "
                            f"the config says {config.get('crop_context', 0)!r} (match it, or train a new one)")
        if config["segmenter_threshold"] == "auto" and (meta.get("auto_threshold") or {}).get("slice") is None:
            problems.append(f"segmenter_threshold: auto, but the crack segmenter in {where} set no automatic "
                            "threshold (trained on one cell): give a number")
        return problems

    def model_id(self, meta: dict) -> str:
        return meta.get("model_id") or "no model.json"

    def card(self, meta: dict) -> tuple[str, str | None]:
        """Network, training (time, patches, cracks rendered), the held-out threshold."""
        from ..report import fmt

        if not meta:
            return "a crack segmenter given in the config; how it was made is not recorded here", None
        st = meta.get("settings", {})
        auto = meta.get("auto_threshold") or {}
        cracks = st.get("cracks", {})
        parts = [f"U-Net {'-'.join(str(c) for c in st.get('channels', []))} channels ({meta.get('n_weights', '?')} "
                 f"weights, no pretrained weights), input: the slice, its neighbours and its residual against the "
                 f"scan's slices {'-'.join(str(d) for d in (st.get('inputs') or {}).get('distant', []))} slice "
                 f"numbers away",
                 f"trained {meta.get('steps', '?')} steps ({meta.get('patches', '?')} patches, "
                 f"{meta.get('cracks_rendered', '?')} cracks rendered: depth {cracks.get('depth')} grey levels, width "
                 f"{cracks.get('width')} px, length {cracks.get('length')} px, {cracks.get('slices')} slices) in "
                 f"{float((meta.get('timings_s') or {}).get('train', 0)):.0f} s on {meta.get('device', '?')} from "
                 f"{len(meta.get('training_scans', []))} normal scans"]
        if auto.get("slice") is not None:
            stats = (auto.get("heldout_score_stats") or {}).get("slice", {})
            parts.append(f"automatic threshold {fmt(auto['slice'])}: {100 * auto['false_alarm_rate']:g}% false alarms "
                         f"per crop over {auto.get('n_crops')} crops of {auto.get('n_cells')} held-out cells gives "
                         f"{fmt(auto.get('at_rate'))} (held-out p50 {fmt(stats.get('p50'))}, max "
                         f"{fmt(stats.get('max'))}), floored at {fmt(auto.get('floor'))}")
        elif auto:
            parts.append(f"no automatic threshold: {auto.get('note', '')}")
        return ". ".join(parts), None


PLUGIN = SegmenterPlugin()
