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
    read_outputs(dict(snakemake.input.items())),
    models,
    read_table(snakemake.input.cracks_table),
    files_by_scan(files["crops"], scans),
    dict(snakemake.output.items()),
    files_by_scan(files["patchcore"], scans) if "patchcore" in models else None,
    files_by_scan(files["rfdetr"], scans) if "rfdetr" in models else None,
    snakemake.params.max_profiles,
)
