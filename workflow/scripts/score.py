"""Rules score_patchcore, score_segmenter, predict_rfdetr (and pod_score): one model's evidence for
every scan of a batch, the model loaded once for the batch (``ModelPlugin.score_folder``)."""

from anodect import logs, registry

logs.to_file(snakemake.log[0])
registry.get(snakemake.params.model).score_folder(
    snakemake.params.score,
    snakemake.input.crops,
    snakemake.params.scans,
    snakemake.output[0],
    snakemake.threads,
)
