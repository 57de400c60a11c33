"""Rule summarise: tidy tables over both models and every inspected scan."""

from anodect import logs
from anodect.decisions import summarise

logs.to_file(snakemake.log[0])
names = ("detections", "cracks", "slices")
summarise(
    snakemake.params.files,
    snakemake.params.scans,
    snakemake.params.models,
    {name: getattr(snakemake.output, name) for name in (*names, "batteries")},
    snakemake.params.min_slices,
)
