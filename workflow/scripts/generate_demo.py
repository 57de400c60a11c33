"""Rule generate_demo: write the synthetic battery-CT demo."""

from anodect import logs
from anodect.config import rois_from_config
from anodect.generator import DemoSettings, generate

logs.to_file(snakemake.log[0])
rng = snakemake.params.filter_index_range
generate(
    snakemake.params.demo["out_dir"],
    DemoSettings.from_config({"demo": snakemake.params.demo}),
    rois_from_config({"roi_config": snakemake.params.rois}),
    crack_range=None if rng is None else (rng["min"], rng["max"]),
    workers=snakemake.threads,
)
