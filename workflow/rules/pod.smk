# The probability-of-detection study (anodect.pod, issue #28): cracks rendered into
# normal scans no model trained on, each model scoring them as it runs, hit/miss
# POD curves. Thresholds enter at pod_judge only, so a threshold change reruns the
# judging and the analysis, never the scoring.


rule pod_render:
    input:
        crops=lambda wildcards: folders("crops", "inspect"),
        truth=truth_files,
    output:
        crops=directory(f"{RESULTS}/pod/crops"),
        footprints=directory(f"{RESULTS}/pod/footprints"),
        cracks=f"{RESULTS}/pod/cracks.csv",
        cells=f"{RESULTS}/pod/cells.json",
    log:
        f"{RESULTS}/logs/pod_render.log",
    benchmark:
        f"{RESULTS}/benchmarks/pod_render.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        scans=lambda wildcards: scan_records("inspect"),
        crops=lambda wildcards: dict(
            zip(scan_ids("inspect"), scan_files("crops", "inspect"))
        ),
        truth=plan.evaluation_truth(config),
        settings=config["pod"],
    script:
        "../scripts/pod_render.py"


rule pod_score:
    input:
        crops=rules.pod_render.output.crops,
        cells=rules.pod_render.output.cells,
        model=lambda wildcards: model_files(wildcards.model)(wildcards),
    output:
        directory(f"{RESULTS}/pod/{{model}}/evidence"),
    log:
        f"{RESULTS}/logs/pod_score/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pod_score/{{model}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: lambda wildcards: config[wildcards.model]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        score=lambda wildcards: PLUGINS[wildcards.model].score_params(config),
        model=lambda wildcards: wildcards.model,
    script:
        "../scripts/pod_score.py"


rule pod_judge:
    input:
        evidence=rules.pod_score.output[0],
        crops=rules.pod_render.output.crops,
        footprints=rules.pod_render.output.footprints,
        cracks=rules.pod_render.output.cracks,
        cells=rules.pod_render.output.cells,
        model_meta=decision_model_meta,
        # The clean scans' evidence is the run's own: the same model on the same crops.
        run_evidence=lambda wildcards: folders(wildcards.model, "inspect"),
        run_crops=lambda wildcards: folders("crops", "inspect"),
    output:
        hits=f"{RESULTS}/pod/{{model}}/hits.csv",
        false_calls=f"{RESULTS}/pod/{{model}}/false_calls.json",
    log:
        f"{RESULTS}/logs/pod_judge/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pod_judge/{{model}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        settings=lambda wildcards: plan.decision_params(config, wildcards.model),
        run_evidence=lambda wildcards: dict(
            zip(scan_ids("inspect"), scan_files(wildcards.model, "inspect"))
        ),
        run_crops=lambda wildcards: dict(
            zip(scan_ids("inspect"), scan_files("crops", "inspect"))
        ),
    script:
        "../scripts/pod_judge.py"


rule pod_analyse:
    input:
        cracks=rules.pod_render.output.cracks,
        hits=expand(rules.pod_judge.output.hits, model=MODELS),
        false_calls=expand(rules.pod_judge.output.false_calls, model=MODELS),
    output:
        csv=f"{RESULTS}/pod/pod.csv",
        json=f"{RESULTS}/pod/pod.json",
        figures=report(
            directory(f"{RESULTS}/pod/figures"),
            patterns=["{name}.png"],
            caption="../report/pod.rst",
            category="Comparison",
            subcategory="Probability of detection",
        ),
    log:
        f"{RESULTS}/logs/pod_analyse.log",
    benchmark:
        f"{RESULTS}/benchmarks/pod_analyse.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        models=MODELS,
        settings=config["pod"],
        # Which models learn from the study's renderer: their curves are reported apart.
        taught={m: PLUGINS[m].taught_renderer(config) for m in MODELS},
    script:
        "../scripts/pod_analyse.py"
