"""Rule crop_rois: each scan of a batch, filtered slices to ROI crops and a QC table."""

from functools import partial

from anodect import logs
from anodect.config import rois_from_config
from anodect.crops import crop_batch
from anodect.sheets import scan_slices

logs.to_file(snakemake.log[0])
crop_batch(
    snakemake.params.scans,
    partial(scan_slices, snakemake.input.slices),
    rois_from_config({"roi_config": snakemake.params.rois}),
    snakemake.params.window,
    snakemake.params.context,
    # Read from the config, not a param: toggling strict must not recrop every scan.
    snakemake.config["strict"],
    snakemake.output.crops,
    snakemake.output.qc,
)
