"""Rule report: the self-contained HTML comparison report."""

from anodect import logs
from anodect.report import write_report

logs.to_file(snakemake.log[0])
inputs = snakemake.input
write_report(
    snakemake.output[0],
    dict(inputs.items()),
    snakemake.params.models,
    inputs.batteries,
    {name: getattr(inputs, name) for name in ("figures", "profiles", "gallery")},
    inputs.scans,
    inputs.qc,
    list(inputs.benchmarks),
    snakemake.params.benchmark_root,
    snakemake.params.model_files,
    snakemake.params.run_config,
    inputs.notes,
)
