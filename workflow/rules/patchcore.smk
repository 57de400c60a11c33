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
        **aw.gpu_resources(config, "patchcore"),
        mem_mb=4000,
        runtime=60,
    params:
        settings=aw.patchcore_params(config, "train"),
        scans=lambda wildcards: aw.scan_records(sample_sheet(), "train_normal"),
        crops=lambda wildcards: scan_files("crops", "train_normal"),
    script:
        "../scripts/train_patchcore.py"


rule score_patchcore:
    input:
        crops=FOLDERS["crops"],
        model=patchcore_model_files,
        # The batch's scans (a param) come from the sample sheet: declared, so a
        # cluster job of this rule knows it depends on the discovery checkpoint.
        sheet=ancient(f"{RESULTS}/scans.tsv"),
    output:
        directory(FOLDERS["scores"]),
    log:
        f"{RESULTS}/logs/score_patchcore/{{batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_patchcore/{{batch}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: config["patchcore"]["threads"]
    resources:
        **aw.gpu_resources(config, "patchcore"),
        mem_mb=2000,
        runtime=batch_minutes(10, 10),
    params:
        scans=batch_scan_ids,
        settings=aw.patchcore_params(config, "score"),
        folder=aw.patchcore_model_folder(config) or f"{RESULTS}/patchcore/model",
        resize_size=config["resize_size"],
    script:
        "../scripts/score_patchcore.py"
