"""Rule score_segmenter: crack probability maps for every slice x ROI of each scan of a batch."""

from anodect import logs
from anodect.devices import set_threads
from anodect.segmenter.stage import load, score_batch

logs.to_file(snakemake.log[0])
set_threads(snakemake.threads)
# Loaded once for the whole batch: the load and the imports are most of a small scan's job.
model = load(snakemake.params.folder, snakemake.params.settings)
score_batch(model, snakemake.input.crops, snakemake.params.scans, snakemake.output[0])
