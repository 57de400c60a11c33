rule decide:
    # Decisions and the drawings of them in one job: a threshold change reruns both
    # anyway, and one job per scan and model instead of two halves what Snakemake
    # plans and what the cluster starts.
    input:
        model_output=model_output,
        # PatchCore's model.json when its threshold is `auto`: the threshold lives there.
        model_meta=decision_model_meta,
        crops=f"{RESULTS}/crops/{{scan}}.npz",
        slices=ancient(f"{RESULTS}/slices.tsv"),
        # The scan's record (a param) comes from the sample sheet: declared, so a
        # cluster job of this rule knows it depends on the discovery checkpoint.
        sheet=ancient(f"{RESULTS}/scans.tsv"),
    output:
        detections=f"{RESULTS}/decisions/{{model}}/{{scan}}/detections.csv",
        cracks=f"{RESULTS}/decisions/{{model}}/{{scan}}/cracks.csv",
        slices=f"{RESULTS}/decisions/{{model}}/{{scan}}/slices.csv",
        images=directory(f"{RESULTS}/decisions/{{model}}/{{scan}}/images"),
    log:
        f"{RESULTS}/logs/decide/{{model}}/{{scan}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/decide/{{model}}/{{scan}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    params:
        settings=lambda wildcards: aw.decision_params(config, wildcards.model),
        scan=lambda wildcards: scan_record(wildcards.scan),
        class_label=config["class_label"],
        thickness=config["decisions"]["box_thickness"],
    script:
        "../scripts/decide.py"


rule publish:
    input:
        images=lambda wildcards: decision_files(
            aw.model_of_tool(wildcards.tool), "images"
        ),
        slices=lambda wildcards: decision_files(
            aw.model_of_tool(wildcards.tool), "slices.csv"
        ),
        detections=lambda wildcards: decision_files(
            aw.model_of_tool(wildcards.tool), "detections.csv"
        ),
    output:
        directory(f"{RESULTS}/inference_{{tool}}"),
    log:
        f"{RESULTS}/logs/publish/{{tool}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/publish/{{tool}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        scans=lambda wildcards: aw.scan_records(sample_sheet(), "inspect"),
        export_csv=config["export_ai_csv_files"],
    script:
        "../scripts/publish.py"


rule summarise:
    input:
        detections=lambda wildcards: all_decision_files("detections.csv"),
        cracks=lambda wildcards: all_decision_files("cracks.csv"),
        slices=lambda wildcards: all_decision_files("slices.csv"),
    output:
        detections=f"{RESULTS}/tables/detections.csv",
        cracks=f"{RESULTS}/tables/cracks.csv",
        slices=f"{RESULTS}/tables/slices.csv",
        batteries=f"{RESULTS}/tables/batteries.csv",
    log:
        f"{RESULTS}/logs/summarise.log",
    benchmark:
        f"{RESULTS}/benchmarks/summarise.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        scans=lambda wildcards: aw.scan_records(sample_sheet(), "inspect"),
        models=aw.models(config),
        min_slices=config["decisions"]["min_consecutive_slices"],
    script:
        "../scripts/summarise.py"
