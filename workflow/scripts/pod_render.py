"""Rule pod_render: cracks of controlled sizes rendered into copies of normal scans no model trained on."""

from anodect import logs
from anodect.pod.stage import render

logs.to_file(snakemake.log[0])
render(
    snakemake.params.scans,
    snakemake.params.crops,
    snakemake.params.truth,
    snakemake.params.settings,
    dict(snakemake.output.items()),
)
