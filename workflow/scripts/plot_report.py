"""Rule plot_report: threshold sweeps, slice profiles per battery and the disagreement gallery."""

from anodect import logs
from anodect.comparison import files_by_scan, read_outputs
from anodect.figures import write_figures
from anodect.io import read_table

logs.to_file(snakemake.log[0])
scans = snakemake.params.scans
files = snakemake.params.files  # per-scan files inside the batch folders the rule takes
models = snakemake.params.models
write_figures(
    report=read_outputs(dict(snakemake.input.items())),
    models=models,
    cracks=read_table(snakemake.input.cracks_table),
    crop_paths=files_by_scan(files["crops"], scans),
    outputs=dict(snakemake.output.items()),
    evidence_paths={model: files_by_scan(files[model], scans) for model in models},
    max_profiles=snakemake.params.max_profiles,
)
