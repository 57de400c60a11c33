rule decide:
    # Decisions and the drawings of them in one job: a threshold change reruns both
    # anyway, and one job instead of two halves what Snakemake plans and starts.
    input:
        evidence=evidence_folder,
        # The model's model.json when its threshold is `auto`: the threshold lives there.
        model_meta=decision_model_meta,
        crops=FOLDERS["crops"],
        slices=ancient(f"{RESULTS}/slices.tsv"),
        # The batch's records (a param) come from the sample sheet: declared, so a
        # cluster job of this rule knows it depends on the discovery checkpoint.
        sheet=ancient(f"{RESULTS}/scans.tsv"),
    output:
        # One folder per scan inside: detections.csv, cracks.csv, slices.csv, images/.
        directory(FOLDERS["decisions"]),
    log:
        f"{RESULTS}/logs/decide/{{model}}/{{batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/decide/{{model}}/{{batch}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=batch_minutes(10, 5),
    params:
        settings=lambda wildcards: plan.decision_params(config, wildcards.model),
        scans=batch_records,
        class_label=config["class_label"],
        thickness=config["decisions"]["box_thickness"],
    script:
        "../scripts/decide.py"


rule publish:
    input:
        publish_folders,
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
        scans=lambda wildcards: scan_records("inspect"),
        files=publish_files,
        export_csv=config["export_ai_csv_files"],
        min_slices=config["decisions"]["min_consecutive_slices"],
    script:
        "../scripts/publish.py"


rule summarise:
    input:
        lambda wildcards: decision_folders(MODELS),
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
        scans=lambda wildcards: scan_records("inspect"),
        files=summary_files,
        models=MODELS,
        min_slices=config["decisions"]["min_consecutive_slices"],
    script:
        "../scripts/summarise.py"
