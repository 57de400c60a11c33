"""Rule evaluate: every model against the ground truth (when there is one) and against the others."""

from anodect import logs
from anodect.comparison import run_comparison

logs.to_file(snakemake.log[0])
files = snakemake.params.files  # per-scan files inside the batch folders the rule takes
settings = snakemake.params.settings
run_comparison(
    scans=snakemake.params.scans,
    settings=settings,
    evidence={model: files[model] for model in settings},
    crops=files["crops"],
    tables={name: snakemake.input[name] for name in ("slices", "cracks", "batteries")},
    threshold_meta=snakemake.params.threshold_meta,
    truth_spec=snakemake.params.truth,
    gallery_max=snakemake.params.gallery_max,
    outputs=dict(snakemake.output.items()),
)
