"""Rule decide: one model's flagged boxes, cracks across slices and slice labels for one scan,
and every slice drawn with its boxes into anomaly/ or normal/."""

import logging
from pathlib import Path

from anodect import logs
from anodect.decisions import decide_scan, settings_from_params
from anodect.render import render_decided
from anodect.workflow import scan_slices

logs.to_file(snakemake.log[0])
scan = snakemake.params.scan
folder = Path(snakemake.output.detections).parent
decide_scan(
    snakemake.wildcards.model,
    scan,
    snakemake.input.model_output,
    snakemake.input.crops,
    scan_slices(snakemake.input.slices, scan["scan_id"]),
    settings_from_params(snakemake.params.settings, snakemake.input.get("model_meta")),
    folder,
)
counts = render_decided(
    folder,
    snakemake.input.crops,
    snakemake.params.class_label,
    snakemake.output.images,
    snakemake.params.thickness,
)
logging.getLogger("render").info("%s", counts)
