"""Rule decide: for each scan of a batch, one model's flagged boxes, cracks across slices and
slice labels, and every slice drawn with its boxes into anomaly/ or normal/."""

from functools import partial

from anodect import logs
from anodect.decisions import settings_from_params
from anodect.render import decide_and_draw_batch
from anodect.workflow import scan_slices

logs.to_file(snakemake.log[0])
decide_and_draw_batch(
    snakemake.wildcards.model,
    snakemake.params.scans,
    snakemake.input.model_output,
    snakemake.input.crops,
    partial(scan_slices, snakemake.input.slices),
    settings_from_params(snakemake.params.settings, snakemake.input.get("model_meta")),
    snakemake.params.class_label,
    snakemake.params.thickness,
    snakemake.output[0],
)
