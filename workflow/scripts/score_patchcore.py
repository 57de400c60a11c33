"""Rule score_patchcore: image scores and anomaly maps for every slice x ROI of each scan of a batch."""

from anodect import logs
from anodect.devices import set_threads
from anodect.patchcore.model import PatchCoreSettings
from anodect.patchcore.stage import load, score_batch

logs.to_file(snakemake.log[0])
set_threads(snakemake.threads)
settings = PatchCoreSettings.from_config(snakemake.params.settings)
# Loaded once for the whole batch: the load and the imports are most of a small scan's job.
scorer = load(snakemake.params.folder, settings, snakemake.params.resize_size)
score_batch(scorer, snakemake.input.crops, snakemake.params.scans, snakemake.output[0])
