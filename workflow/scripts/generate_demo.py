"""Rule generate_demo: write the demo, synthetic or injected into real CT."""

from anodect import logs
from anodect.config import rois_from_config
from anodect.generator import DemoSettings, generate
from anodect.realct import RealCTSettings
from anodect.realct import generate as generate_real_ct

logs.to_file(snakemake.log[0])
demo = snakemake.params.demo
rois = rois_from_config({"roi_config": snakemake.params.rois})
if demo["source"] == "real_ct":
    generate_real_ct(demo["out_dir"], RealCTSettings.from_config({"demo": demo}), rois)
else:
    rng = snakemake.params.filter_index_range
    generate(
        demo["out_dir"],
        DemoSettings.from_config({"demo": demo}),
        rois,
        crack_range=None if rng is None else (rng["min"], rng["max"]),
        workers=snakemake.threads,
    )
