rule decide:
    # Decisions and the drawings of them in one job: a threshold change reruns both
    # anyway, and one job instead of two halves what Snakemake plans and starts.
    input:
        model_output=lambda wildcards: FOLDERS[OUTPUT_KIND[wildcards.model]].format(
            batch=wildcards.batch
        ),
        # PatchCore's model.json when its threshold is `auto`: the threshold lives there.
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
        runtime=lambda wildcards: 10 + 5 * len(batch_rows(wildcards.batch)),
    params:
        settings=lambda wildcards: aw.decision_params(config, wildcards.model),
        scans=lambda wildcards: batch_rows(wildcards.batch),
        class_label=config["class_label"],
        thickness=config["decisions"]["box_thickness"],
    script:
        "../scripts/decide.py"


rule publish:
    input:
        lambda wildcards: folders(
            "decisions", "inspect", model=aw.model_of_tool(wildcards.tool)
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
        files=lambda wildcards: {
            name: scan_files(
                "decisions", "inspect", name, model=aw.model_of_tool(wildcards.tool)
            )
            for name in ("images", "slices.csv", "detections.csv")
        },
        export_csv=config["export_ai_csv_files"],
    script:
        "../scripts/publish.py"


rule summarise:
    input:
        lambda wildcards: [
            f
            for m in aw.models(config)
            for f in folders("decisions", "inspect", model=m)
        ],
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
        files=lambda wildcards: {
            name: [
                f
                for m in aw.models(config)
                for f in scan_files("decisions", "inspect", f"{name}.csv", model=m)
            ]
            for name in ("detections", "cracks", "slices")
        },
        models=aw.models(config),
        min_slices=config["decisions"]["min_consecutive_slices"],
    script:
        "../scripts/summarise.py"
