"""RF-DETR as the pipeline sees it: names, model choice, checks and model card.

Plain Python at import: the planner imports it. The training set, training and
predictions are in ``dataset``, ``model`` and ``stage``.
"""

from __future__ import annotations

from pathlib import Path

from ..registry import ModelChoice, ModelPlugin

CHECKPOINT = "checkpoint.pth"

# Where RF-DETR's training started (``start_weights.kind`` in its model.json), in words.
START_WEIGHTS = {"coco": "rfdetr's COCO release", "checkpoint": "a given checkpoint", "random": "random weights"}

# Said beside RF-DETR's figures whenever it was trained from random weights.
UNTRAINED = ("RF-DETR started from random weights, so its figures measure an untrained detector, not what RF-DETR "
             "does on CT: a detection transformer needs pretrained weights (or far more training than this run) to "
             "find cracks 1-3 px wide. To give it weights, run once where the network reaches rfdetr's release "
             "(rfdetr.pretrain_weights: auto puts rfdetr's COCO release in rfdetr's cache, ~/.roboflow/models or "
             "$RF_HOME), copy that release file there, or set rfdetr.pretrain_weights to a checkpoint.")


class RFDETRPlugin(ModelPlugin):
    key = "rfdetr"
    hashed_files = {"checkpoint_sha256": CHECKPOINT}
    display = "RF-DETR"
    tool = "rf_detr"
    evidence = "boxes"
    colour = "#ff7f0e"
    threshold_key = "rf_detr_threshold"
    decision_keys = {"nms_iou": "nms_iou"}
    train_rules = ("rfdetr_dataset", "train_rfdetr")
    score_rule = "predict_rfdetr"
    packages = ("rfdetr",)

    def taught_renderer(self, config: dict) -> str | None:
        # Its dataset's rendered crops come from anodect.synthesis (rfdetr.dataset.rendered_crops).
        trains = self.trains(config) and config["rfdetr"].get("dataset", {}).get("rendered_crops", 0) > 0
        return "project" if trains else None

    def score_folder(self, params: dict, crops_dir: str, scan_ids: list[str], out_dir: str, threads: int) -> None:
        from ..devices import set_threads
        from .stage import load_detector, predict_batch

        set_threads(threads)
        settings = params["settings"]
        predict_batch(load_detector(params["model"], settings), crops_dir, scan_ids, out_dir,
                      settings["score_floor"], threads)

    def choice(self, config: dict) -> ModelChoice:
        """``rfdetr.model``. ``auto``: train when annotated scans and their annotations are
        given, else the original tool's checkpoint."""
        training = config.get("training", {})
        choice = config["rfdetr"]["model"]
        if choice == "auto":
            choice = "train" if training.get("annotated_dir") and training.get("annotations_dir") else "original"
        if choice in ("train", "none"):
            return ModelChoice(choice, None)
        if choice == "original":
            return ModelChoice("original", str(Path(config["output_dir_model_rf_detr"]) / config["rf_detr_checkpoint"]))
        return ModelChoice("path", choice)

    def model_path(self, config: dict) -> str:
        return self.choice(config).path or f"{config['output_inference_dir']}/rfdetr/model/{CHECKPOINT}"

    def problems(self, config: dict) -> list[str]:
        from ..planning import inside

        rf = config["rfdetr"]
        problems = []
        block = 56 if rf["size"] == "base" else 32  # patch size x windows of the rfdetr variant
        if rf["resolution"] % block:
            problems.append(f"rfdetr.resolution: {rf['resolution']} is not a multiple of {block} "
                            f"(patch size x windows of rfdetr {rf['size']})")
        lo, hi = rf["dataset"]["defects_per_crop"]
        if lo > hi:
            problems.append(f"rfdetr.dataset.defects_per_crop: first value ({lo}) is greater than the second ({hi})")
        choice = self.choice(config)
        training = config.get("training", {})
        if choice.kind == "none":
            return problems
        if choice.kind == "train":
            missing = [k for k in ("annotated_dir", "annotations_dir", "normal_dir") if not training.get(k)]
            problems += [f"rfdetr.model: 'train' needs training.{k}" for k in missing]
            folder = training.get("annotations_dir")
            demo = config.get("demo", {})
            generated = demo.get("enabled") and folder and inside(folder, demo["out_dir"])
            if folder and not generated and not Path(folder).is_dir():
                problems.append(f"training.annotations_dir: folder {folder!r} not found")
            return problems
        path = Path(choice.path)
        if path.is_file():
            return problems
        key = "output_dir_model_rf_detr/rf_detr_checkpoint" if choice.kind == "original" else "rfdetr.model"
        hint = (" (set training.annotated_dir and training.annotations_dir to train one, or rfdetr.model: none)"
                if choice.kind == "original" else "")
        return problems + [f"{key}: RF-DETR checkpoint {path} not found{hint}"]

    def metadata_problems(self, config: dict, meta: dict, where: str) -> list[str]:
        rf = config["rfdetr"]
        wanted = {"rfdetr.size": (meta.get("size"), rf.get("size")),
                  "rfdetr.resolution": ((meta.get("settings") or {}).get("resolution"), rf.get("resolution")),
                  "crop_context": (meta.get("context"), config.get("crop_context", 0))}
        return [f"{key}: the RF-DETR checkpoint {self.choice(config).path} was trained with {have!r}, the config "
                f"says {want!r} (match the config to the model, or train a new one)"
                for key, (have, want) in wanted.items() if have is not None and want is not None and have != want]

    def model_id(self, meta: dict) -> str:
        sha = meta.get("checkpoint_sha256", "")
        return sha[:12] if sha else "checkpoint without model.json"

    def card(self, meta: dict) -> tuple[str, str | None]:
        """Starting weights, training length and time, best validation mAP."""
        from ..report import fmt

        if not meta:
            return "a checkpoint given in the config; how it was trained is not recorded here", None
        start = meta.get("start_weights")
        if start is None:  # models trained before start weights were recorded
            given = meta.get("settings", {}).get("pretrain_weights")
            start = ({"kind": "random", "path": None, "note": "rfdetr.pretrain_weights: null"} if given is None else
                     {"kind": "checkpoint", "path": given, "note": "rfdetr.pretrain_weights"})
        where = ""
        if start.get("path"):
            where = f" {Path(start['path']).name}"
            if start.get("sha256"):
                where += f" (sha256 {start['sha256'][:12]})"
        history = meta.get("history", [])
        text = (f"RF-DETR {meta.get('size', '')}, started from {START_WEIGHTS.get(start['kind'], start['kind'])}"
                f"{where} ({start.get('note', '')}); trained {len(history)} epochs in "
                f"{float(meta.get('train_seconds', 0)):.0f} s on {meta.get('device', '?')}, dataset "
                f"{meta.get('dataset_id', '?')}")
        best = best_map(history)
        if best:
            text += f"; best validation mAP@50 {fmt(best[1])} ({best[0]}, epoch {best[2] + 1})"
        return text, (UNTRAINED if start["kind"] == "random" else None)


def best_map(history: list[dict]) -> tuple[str, float, int] | None:
    """The best validation mAP@50 over the epochs, of the EMA or the plain weights."""
    best = None
    for row in history:
        for key, label in (("val/ema_mAP_50", "EMA weights"), ("val/mAP_50", "plain weights")):
            value = row.get(key)
            if value is not None and (best is None or value > best[1]):
                best = (label, float(value), int(row.get("epoch", 0)))
    return best


PLUGIN = RFDETRPlugin()
