"""The two models, named once: the pipeline's key, the name readers see, and the
original tool's spelling (its output folders are ``inference_patchcore`` and
``inference_rf_detr``, which users' scripts already read)."""

from __future__ import annotations

MODELS = ("patchcore", "rfdetr")
DISPLAY = {"patchcore": "PatchCore", "rfdetr": "RF-DETR"}
TOOL = {"patchcore": "patchcore", "rfdetr": "rf_detr"}


def output_folder(model: str) -> str:
    """The original tool's output folder of ``model`` (under ``output_inference_dir``)."""
    return f"inference_{TOOL[model]}"


def model_of_tool(tool: str) -> str:
    """The pipeline's key of the original's spelling (``rf_detr`` -> ``rfdetr``)."""
    return {t: m for m, t in TOOL.items()}[tool]


# Where RF-DETR's training started (``start_weights.kind`` in its model.json), in words.
START_WEIGHTS = {"coco": "rfdetr's COCO release", "checkpoint": "a given checkpoint", "random": "random weights"}
