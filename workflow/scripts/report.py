"""Rule report: the self-contained HTML comparison report."""

from anodect import logs
from anodect.report import write_report

logs.to_file(snakemake.log[0])
inputs = snakemake.input
write_report(
    out_path=snakemake.output[0],
    comparison_files=dict(inputs.items()),
    models=snakemake.params.models,
    batteries=inputs.batteries,
    folders={name: getattr(inputs, name) for name in ("figures", "profiles", "gallery")},
    scans=inputs.scans,
    qc=inputs.qc,
    benchmarks=list(inputs.benchmarks),
    benchmark_root=snakemake.params.benchmark_root,
    model_files=snakemake.params.model_files,
    config=snakemake.params.run_config,
    notes=inputs.notes,
    pod={"json": inputs.pod_json, "figures": inputs.pod_figures} if "pod_json" in inputs.keys() else None,
)
