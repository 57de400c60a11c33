rule rfdetr_dataset:
    input:
        annotated=lambda wildcards: folders("crops", "train_defect"),
        normal=normal_crops,
        annotations=lambda wildcards: annotation_files_input(),
    output:
        directory(f"{RESULTS}/rfdetr/dataset"),
    log:
        f"{RESULTS}/logs/rfdetr_dataset.log",
    benchmark:
        f"{RESULTS}/benchmarks/rfdetr_dataset.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        settings=dict(config["rfdetr"]["dataset"]),
        annotations_dir=config["training"]["annotations_dir"],
        class_label=config["class_label"],
        scans=lambda wildcards: scan_records("train_defect"),
        annotated=lambda wildcards: scan_files("crops", "train_defect"),
        normal=lambda wildcards: scan_files("crops", "train_normal"),
    script:
        "../scripts/rfdetr_dataset.py"


rule train_rfdetr:
    input:
        f"{RESULTS}/rfdetr/dataset",
    output:
        checkpoint=f"{RESULTS}/rfdetr/model/checkpoint.pth",
        meta=f"{RESULTS}/rfdetr/model/model.json",
    log:
        f"{RESULTS}/logs/train_rfdetr.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_rfdetr.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: config["rfdetr"]["threads"]
    resources:
        **PLUGINS["rfdetr"].gpu_resources(config),
        mem_mb=6000,
        runtime=240,
    params:
        settings=plan.model_settings(config, "rfdetr", "train_rfdetr"),
        class_label=config["class_label"],
    script:
        "../scripts/train_rfdetr.py"


rule predict_rfdetr:
    input:
        crops=FOLDERS["crops"],
        model=model_files("rfdetr"),
        # The batch's scans (a param) come from the sample sheet: declared, so a
        # cluster job of this rule knows it depends on the discovery checkpoint.
        sheet=ancient(f"{RESULTS}/scans.tsv"),
    output:
        directory(FOLDERS["rfdetr"]),
    log:
        f"{RESULTS}/logs/predict_rfdetr/{{batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict_rfdetr/{{batch}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: config["rfdetr"]["threads"]
    resources:
        **PLUGINS["rfdetr"].gpu_resources(config),
        mem_mb=3000,
        runtime=batch_minutes(10, 10),
    params:
        scans=batch_scan_ids,
        # The score rule's settings and where the model is (ModelPlugin.score_params).
        score=PLUGINS["rfdetr"].score_params(config),
        model="rfdetr",
    script:
        "../scripts/score.py"
