"""Rule generate_demo: write the demo, synthetic or injected into real CT."""

from anodect import logs
from anodect.config import rois_from_config
from anodect.demo.realct import generate_configured

logs.to_file(snakemake.log[0])
rng = snakemake.params.filter_index_range
generate_configured(
    snakemake.params.demo,
    rois_from_config({"roi_config": snakemake.params.rois}),
    None if rng is None else (rng["min"], rng["max"]),
    workers=snakemake.threads,
)
