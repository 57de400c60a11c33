"""Rule evaluate: both models against the ground truth (when there is one) and against each other."""

from anodect import logs
from anodect.comparison import run_comparison

logs.to_file(snakemake.log[0])
run_comparison(
    snakemake.params.scans,
    snakemake.params.settings,
    # Per-scan files inside the batch folders the rule takes as inputs.
    {**dict(snakemake.input.items()), **snakemake.params.files},
    snakemake.params.truth,
    snakemake.params.gallery_max,
    dict(snakemake.output.items()),
)
