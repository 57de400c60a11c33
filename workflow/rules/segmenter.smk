rule train_segmenter:
    input:
        crops=normal_crops,
        # The annotated scans' real cracks, when segmenter.annotated and annotations are given.
        annotated=lambda wildcards: (
            folders("crops", "train_defect")
            if PLUGINS["segmenter"].uses_annotations(config)
            else []
        ),
        annotations=lambda wildcards: (
            annotation_files_input()
            if PLUGINS["segmenter"].uses_annotations(config)
            else []
        ),
    output:
        meta=f"{RESULTS}/segmenter/model/model.json",
        weights=f"{RESULTS}/segmenter/model/weights.pt",
    log:
        f"{RESULTS}/logs/train_segmenter.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_segmenter.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: config["segmenter"]["threads"]
    resources:
        **PLUGINS["segmenter"].gpu_resources(config),
        mem_mb=3000,
        runtime=60,
    params:
        settings=plan.model_settings(config, "segmenter", "train_segmenter"),
        scans=lambda wildcards: scan_records("train_normal"),
        crops=lambda wildcards: scan_files("crops", "train_normal"),
        annotated_scans=lambda wildcards: (
            scan_records("train_defect")
            if PLUGINS["segmenter"].uses_annotations(config)
            else []
        ),
        annotated=lambda wildcards: (
            scan_files("crops", "train_defect")
            if PLUGINS["segmenter"].uses_annotations(config)
            else []
        ),
        annotations_dir=config["training"]["annotations_dir"],
    script:
        "../scripts/train_segmenter.py"


rule score_segmenter:
    input:
        crops=FOLDERS["crops"],
        model=model_files("segmenter"),
        # The batch's scans (a param) come from the sample sheet: declared, so a
        # cluster job of this rule knows it depends on the discovery checkpoint.
        sheet=ancient(f"{RESULTS}/scans.tsv"),
    output:
        directory(FOLDERS["segmenter"]),
    log:
        f"{RESULTS}/logs/score_segmenter/{{batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_segmenter/{{batch}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: config["segmenter"]["threads"]
    resources:
        **PLUGINS["segmenter"].gpu_resources(config),
        mem_mb=2000,
        runtime=batch_minutes(10, 10),
    params:
        scans=batch_scan_ids,
        # The score rule's settings and where the model is (ModelPlugin.score_params).
        score=PLUGINS["segmenter"].score_params(config),
        model="segmenter",
    script:
        "../scripts/score.py"
