"""Rule predict_rfdetr: every box above the score floor on every ROI crop of one scan."""

from anodect import logs
from anodect.devices import set_threads
from anodect.rfdetr.stage import load_detector, predict_scan

logs.to_file(snakemake.log[0])
set_threads(snakemake.threads)
settings = snakemake.params.settings
detector = load_detector(snakemake.params.checkpoint, settings)
predict_scan(detector, snakemake.input.crops, snakemake.output[0], settings["score_floor"], snakemake.threads)
