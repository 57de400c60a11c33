"""Rule pod_score: one model's evidence for the POD study's clean scans and cracked copies."""

from anodect import logs, registry
from anodect.pod.stage import scan_ids

logs.to_file(snakemake.log[0])
# The scans are known once pod_render has run: read from its cells.json, not planned.
registry.get(snakemake.params.model).score_folder(
    snakemake.params.score,
    snakemake.input.crops,
    scan_ids(snakemake.input.cells),
    snakemake.output[0],
    snakemake.threads,
)
