"""Rule decide: for each scan of a batch, one model's flagged boxes, cracks across slices and
slice labels, and every slice drawn with its boxes into anomaly/ or normal/."""

import logging

from anodect import logs
from anodect.batches import scan_context, scan_file
from anodect.decisions import decide_scan, settings_from_params
from anodect.io import atomic_dir
from anodect.render import render_decided
from anodect.workflow import scan_slices

logs.to_file(snakemake.log[0])
model = snakemake.wildcards.model
suffix = ".npz" if model == "patchcore" else ".csv"
settings = settings_from_params(snakemake.params.settings, snakemake.input.get("model_meta"))
# The batch's folder appears whole or not at all: a killed job leaves no half batch.
with atomic_dir(snakemake.output[0]) as out:
    for scan in snakemake.params.scans:
        scan_id = scan["scan_id"]
        crops = scan_file(snakemake.input.crops, scan_id, ".npz")
        with scan_context(scan_id):
            decide_scan(model, scan, scan_file(snakemake.input.model_output, scan_id, suffix), crops,
                        scan_slices(snakemake.input.slices, scan_id), settings, out / scan_id)
            counts = render_decided(out / scan_id, crops, snakemake.params.class_label, out / scan_id / "images",
                                    snakemake.params.thickness)
        logging.getLogger("render").info("%s: %s", scan_id, counts)
