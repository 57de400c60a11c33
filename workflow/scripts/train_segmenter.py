"""Rule train_segmenter: the crack segmenter from cracks rendered into the normal scans' crops,
and the real cracks users annotated when there are any."""

from pathlib import Path

from anodect import logs
from anodect.segmenter.model import SegmenterSettings
from anodect.segmenter.stage import train

logs.to_file(snakemake.log[0])
params = snakemake.params
train(
    crop_paths=list(params.crops),
    scans=params.scans,
    settings=SegmenterSettings.from_config(params.settings),
    out_dir=Path(snakemake.output.meta).parent,
    threads=snakemake.threads,
    # Crops and records both follow the sample sheet's order.
    annotated=list(zip(params.annotated_scans, params.annotated, strict=True)),
    annotations_dir=params.annotations_dir,
    strict=snakemake.config["strict"],
)
