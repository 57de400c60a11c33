"""Rule pod_analyse: POD curves, a90 and a90/95 per model and predictor, false calls, figures."""

from anodect import logs
from anodect.pod.stage import analyse

logs.to_file(snakemake.log[0])
analyse(
    snakemake.params.models,
    dict(snakemake.input.items()),
    snakemake.params.settings,
    dict(snakemake.output.items()),
    snakemake.params.taught,
)
