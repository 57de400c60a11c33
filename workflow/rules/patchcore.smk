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
    script:
        "../scripts/train_patchcore.py"


rule score_patchcore:
    input:
        crops=f"{RESULTS}/crops/{{scan}}.npz",
        model=patchcore_model_files,
    output:
        f"{RESULTS}/patchcore/scores/{{scan}}.npz",
    log:
        f"{RESULTS}/logs/score_patchcore/{{scan}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_patchcore/{{scan}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: config["patchcore"]["threads"]
    resources:
        **aw.gpu_resources(config, "patchcore"),
        mem_mb=2000,
        runtime=20,
    params:
        settings=aw.patchcore_params(config, "score"),
        folder=aw.patchcore_model_folder(config) or f"{RESULTS}/patchcore/model",
        resize_size=config["resize_size"],
    script:
        "../scripts/score_patchcore.py"
