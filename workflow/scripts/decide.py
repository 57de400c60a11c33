"""Rule decide: for each scan of a batch, one model's flagged boxes, cracks across slices and
slice labels, and every slice drawn with its boxes into anomaly/ or normal/."""

from functools import partial

from anodect import logs
from anodect.decisions import decide_batch, settings_from_params
from anodect.sheets import scan_slices

logs.to_file(snakemake.log[0])
model = snakemake.wildcards.model
decide_batch(
    model,
    snakemake.params.scans,
    snakemake.input.evidence,
    snakemake.input.crops,
    partial(scan_slices, snakemake.input.slices),
    settings_from_params(snakemake.params.settings, snakemake.input.get("model_meta"), model),
    snakemake.params.class_label,
    snakemake.params.thickness,
    snakemake.output[0],
)
