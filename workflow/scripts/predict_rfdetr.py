"""Rule predict_rfdetr: every box above the score floor on every ROI crop of each scan of a batch."""

from anodect import logs
from anodect.devices import set_threads
from anodect.rfdetr.stage import load_detector, predict_batch

logs.to_file(snakemake.log[0])
set_threads(snakemake.threads)
settings = snakemake.params.settings
# Loaded once for the whole batch: the load and the imports are most of a small scan's job.
detector = load_detector(snakemake.params.checkpoint, settings)
predict_batch(detector, snakemake.input.crops, snakemake.params.scans, snakemake.output[0], settings["score_floor"],
              snakemake.threads)
