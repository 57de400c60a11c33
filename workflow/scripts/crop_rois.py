"""Rule crop_rois: one scan's filtered slices to its ROI crops and QC table."""

import logging

from anodect import logs
from anodect.config import rois_from_config
from anodect.crops import crop_scan
from anodect.io import write_table
from anodect.workflow import read_sheet, scan_record, scan_slices

logs.to_file(snakemake.log[0])
scan_id = snakemake.wildcards.scan
record = scan_record(read_sheet(snakemake.input.scans), scan_id)
shape = (record["height"], record["width"])
crop_set, qc = crop_scan(
    scan_id,
    scan_slices(snakemake.input.slices, scan_id),
    rois_from_config({"roi_config": snakemake.params.rois}),
    snakemake.params.window,
    expected_shape=shape if min(shape) > 0 else None,
    context=snakemake.params.context,
    # Read from the config, not a param: toggling strict must not recrop every scan.
    strict=snakemake.config["strict"],
)
write_table(snakemake.output.qc, qc)
crop_set.save(snakemake.output.crops)
logging.getLogger("crop_rois").info(
    "%s: %d slices kept, %d skipped, window %.1f..%.1f",
    scan_id,
    crop_set.n_slices,
    int((qc["status"] != "ok").sum()),
    *crop_set.window,
)
