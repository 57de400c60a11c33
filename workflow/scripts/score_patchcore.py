"""Rule score_patchcore: image scores and anomaly maps for every slice x ROI of one scan."""

from anodect import logs
from anodect.devices import set_threads
from anodect.patchcore.model import PatchCoreSettings
from anodect.patchcore.stage import load, score_scan

logs.to_file(snakemake.log[0])
set_threads(snakemake.threads)
settings = PatchCoreSettings.from_config(snakemake.params.settings)
model = load(snakemake.params.folder, settings, snakemake.params.resize_size)
score_scan(model, snakemake.input.crops, snakemake.output[0])
