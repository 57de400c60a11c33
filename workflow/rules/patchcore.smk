rule train_patchcore:
    input:
        crops=normal_crops,
    output:
        meta=f"{RESULTS}/patchcore/model/model.json",
        bank=f"{RESULTS}/patchcore/model/memory_bank.npy",
    log:
        f"{RESULTS}/logs/train_patchcore.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_patchcore.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: config["patchcore"]["threads"]
    resources:
        **PLUGINS["patchcore"].gpu_resources(config),
        mem_mb=4000,
        runtime=60,
    params:
        settings=plan.model_settings(config, "patchcore", "train_patchcore"),
        scans=lambda wildcards: scan_records("train_normal"),
        crops=lambda wildcards: scan_files("crops", "train_normal"),
    script:
        "../scripts/train_patchcore.py"


rule score_patchcore:
    input:
        crops=FOLDERS["crops"],
        model=model_files("patchcore"),
        # The batch's scans (a param) come from the sample sheet: declared, so a
        # cluster job of this rule knows it depends on the discovery checkpoint.
        sheet=ancient(f"{RESULTS}/scans.tsv"),
    output:
        directory(FOLDERS["patchcore"]),
    log:
        f"{RESULTS}/logs/score_patchcore/{{batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_patchcore/{{batch}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: config["patchcore"]["threads"]
    resources:
        **PLUGINS["patchcore"].gpu_resources(config),
        mem_mb=2000,
        runtime=batch_minutes(10, 10),
    params:
        scans=batch_scan_ids,
        # The score rule's settings and where the model is (ModelPlugin.score_params).
        score=PLUGINS["patchcore"].score_params(config),
        model="patchcore",
    script:
        "../scripts/score.py"
