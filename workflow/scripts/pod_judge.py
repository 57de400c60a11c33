"""Rule pod_judge: one model's hits and false calls at its operating threshold."""

from anodect import logs
from anodect.pod.stage import judge

logs.to_file(snakemake.log[0])
judge(
    snakemake.wildcards.model,
    snakemake.params.settings,
    snakemake.input.get("model_meta"),
    dict(snakemake.input.items()),
    dict(snakemake.output.items()),
    snakemake.params.run_evidence,
    snakemake.params.run_crops,
)
