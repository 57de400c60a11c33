"""Rule crop_rois: each scan of a batch, filtered slices to ROI crops and a QC table."""

import logging

from anodect import logs
from anodect.batches import scan_context, scan_file
from anodect.config import rois_from_config
from anodect.crops import crop_scan
from anodect.io import atomic_dir, write_table
from anodect.workflow import scan_slices

logs.to_file(snakemake.log[0])
log = logging.getLogger("crop_rois")
rois = rois_from_config({"roi_config": snakemake.params.rois})
# The batch's folders appear whole or not at all: a killed job leaves no half batch.
with atomic_dir(snakemake.output.crops) as crops_dir, atomic_dir(snakemake.output.qc) as qc_dir:
    for record in snakemake.params.scans:
        scan_id = record["scan_id"]
        shape = (record["height"], record["width"])
        with scan_context(scan_id):
            crop_set, qc = crop_scan(
                scan_id,
                scan_slices(snakemake.input.slices, scan_id),
                rois,
                snakemake.params.window,
                expected_shape=shape if min(shape) > 0 else None,
                context=snakemake.params.context,
                # Read from the config, not a param: toggling strict must not recrop every scan.
                strict=snakemake.config["strict"],
            )
            write_table(scan_file(qc_dir, scan_id, ".tsv"), qc)
            crop_set.save(scan_file(crops_dir, scan_id, ".npz"))
        log.info("%s: %d slices kept, %d skipped, window %.1f..%.1f", scan_id, crop_set.n_slices,
                 int((qc["status"] != "ok").sum()), *crop_set.window)
