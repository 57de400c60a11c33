rule evaluate:
    input:
        unpack(evidence_folders),
        slices=f"{RESULTS}/tables/slices.csv",
        cracks=f"{RESULTS}/tables/cracks.csv",
        batteries=f"{RESULTS}/tables/batteries.csv",
        crops=lambda wildcards: folders("crops", "inspect"),
        truth=truth_files,
        # Each model's model.json when its threshold is `auto`: the threshold lives there.
        threshold_meta=lambda wildcards: list(threshold_metas(wildcards).values()),
    output:
        metrics_json=f"{RESULTS}/report/metrics.json",
        metrics_csv=f"{RESULTS}/report/metrics.csv",
        slices=f"{RESULTS}/report/slices.csv",
        crop_scores=f"{RESULTS}/report/crop_scores.csv",
        disagreements=f"{RESULTS}/report/disagreements.csv",
        truth_boxes=f"{RESULTS}/report/truth_boxes.csv",
        truth_cracks=f"{RESULTS}/report/truth_cracks.csv",
    log:
        f"{RESULTS}/logs/evaluate.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        scans=lambda wildcards: scan_records("inspect"),
        files=comparison_files,
        settings={model: plan.decision_params(config, model) for model in MODELS},
        threshold_meta=threshold_metas,
        truth=plan.evaluation_truth(config),
        gallery_max=config["evaluation"]["gallery_max"],
    script:
        "../scripts/evaluate.py"


rule plot_report:
    input:
        unpack(evidence_folders),
        **rules.evaluate.output,
        cracks_table=f"{RESULTS}/tables/cracks.csv",
        crops=lambda wildcards: folders("crops", "inspect"),
    output:
        figures=report(
            directory(f"{RESULTS}/report/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Comparison",
            subcategory="Threshold sweeps",
        ),
        profiles=report(
            directory(f"{RESULTS}/report/profiles"),
            patterns=["{scan}.png"],
            caption="../report/profiles.rst",
            category="Comparison",
            subcategory="Slice profiles",
            labels={"scan": "{scan}"},
        ),
        gallery=report(
            directory(f"{RESULTS}/report/gallery"),
            patterns=["{name}.png"],
            caption="../report/gallery.rst",
            category="Comparison",
            subcategory="Disagreements",
            labels={"slice": "{name}"},
        ),
    log:
        f"{RESULTS}/logs/plot_report.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_report.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        scans=lambda wildcards: scan_ids("inspect"),
        files=comparison_files,
        models=MODELS,
        max_profiles=config["evaluation"]["max_profiles"],
    script:
        "../scripts/plot_report.py"


rule report:
    input:
        unpack(pod_files),
        **rules.evaluate.output,
        figures=rules.plot_report.output.figures,
        profiles=rules.plot_report.output.profiles,
        gallery=rules.plot_report.output.gallery,
        batteries=f"{RESULTS}/tables/batteries.csv",
        scans=f"{RESULTS}/scans.tsv",
        qc=f"{RESULTS}/qc.tsv",
        notes=f"{RESULTS}/discovery_notes.tsv",
        benchmarks=benchmark_files,
        models=lambda wildcards: list(model_metadata_files(wildcards).values()),
    output:
        report(
            f"{RESULTS}/report/comparison.html",
            caption="../report/comparison.rst",
            category="Comparison",
            subcategory="Report",
        ),
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        models=MODELS,
        model_files=model_metadata_files,
        benchmark_root=f"{RESULTS}/benchmarks",
        run_config=json.loads(json.dumps(config)),
    script:
        "../scripts/report.py"
