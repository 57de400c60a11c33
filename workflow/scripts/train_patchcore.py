"""Rule train_patchcore: a memory bank from the crops of normal scans."""

from pathlib import Path

from anodect import logs
from anodect.patchcore.model import PatchCoreSettings
from anodect.patchcore.stage import train

logs.to_file(snakemake.log[0])
train(
    list(snakemake.params.crops),
    snakemake.params.scans,
    PatchCoreSettings.from_config(snakemake.params.settings),
    Path(snakemake.output.meta).parent,
    snakemake.threads,
)
