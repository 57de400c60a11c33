"""Rule publish: one model's images in the original layout, and its AI_RESULTS CSVs."""

from anodect import logs
from anodect.render import publish_scans

logs.to_file(snakemake.log[0])
publish_scans(
    snakemake.params.scans,
    snakemake.params.files["images"],
    snakemake.params.files["slices.csv"],
    snakemake.params.files["detections.csv"],
    snakemake.output[0],
    snakemake.params.export_csv,
    snakemake.params.min_slices,
)
