"""Rule predict_rfdetr: every box above the score floor on every ROI crop of each scan of a batch."""

from anodect import logs
from anodect.batches import scan_context, scan_file
from anodect.devices import set_threads
from anodect.io import atomic_dir
from anodect.rfdetr.stage import load_detector, predict_scan

logs.to_file(snakemake.log[0])
set_threads(snakemake.threads)
settings = snakemake.params.settings
# Loaded once for the whole batch: the load and the imports are most of a small scan's job.
detector = load_detector(snakemake.params.checkpoint, settings)
# The batch's folder appears whole or not at all: a killed job leaves no half batch.
with atomic_dir(snakemake.output[0]) as out:
    for scan_id in snakemake.params.scans:
        with scan_context(scan_id):
            predict_scan(detector, scan_file(snakemake.input.crops, scan_id, ".npz"), scan_file(out, scan_id, ".csv"),
                         settings["score_floor"], snakemake.threads)
