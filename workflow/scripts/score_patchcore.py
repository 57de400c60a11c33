"""Rule score_patchcore: image scores and anomaly maps for every slice x ROI of each scan of a batch."""

from anodect import logs
from anodect.batches import scan_context, scan_file
from anodect.devices import set_threads
from anodect.io import atomic_dir
from anodect.patchcore.model import PatchCoreSettings
from anodect.patchcore.stage import load, score_scan

logs.to_file(snakemake.log[0])
set_threads(snakemake.threads)
settings = PatchCoreSettings.from_config(snakemake.params.settings)
# Loaded once for the whole batch: the load and the imports are most of a small scan's job.
model = load(snakemake.params.folder, settings, snakemake.params.resize_size)
# The batch's folder appears whole or not at all: a killed job leaves no half batch.
with atomic_dir(snakemake.output[0]) as out:
    for scan_id in snakemake.params.scans:
        with scan_context(scan_id):
            score_scan(model, scan_file(snakemake.input.crops, scan_id, ".npz"), scan_file(out, scan_id, ".npz"))
