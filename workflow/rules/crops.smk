rule crop_rois:
    input:
        # ancient: adding a scan rewrites the slice list, which must not rerun
        # the crops of every other batch. The slice files are not inputs (hundreds
        # per scan would dominate planning): their fingerprints are in a param.
        slices=ancient(f"{RESULTS}/slices.tsv"),
        scans=ancient(f"{RESULTS}/scans.tsv"),
    output:
        crops=directory(FOLDERS["crops"]),
        qc=directory(FOLDERS["qc"]),
    log:
        f"{RESULTS}/logs/crop_rois/{{batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/crop_rois/{{batch}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=batch_minutes(5, 2),
    params:
        # The batch's scans with the fingerprints of their slice files (paths, sizes,
        # times): a rewritten slice or a scan joining or leaving reruns this batch.
        scans=batch_records,
        rois=config["roi_config"],
        window=config["window"],
        context=config["crop_context"],
    script:
        "../scripts/crop_rois.py"


rule qc_table:
    input:
        lambda wildcards: folders("qc"),
    output:
        f"{RESULTS}/qc.tsv",
    log:
        f"{RESULTS}/logs/qc_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/qc_table.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        files=lambda wildcards: scan_files("qc"),
    script:
        "../scripts/qc_table.py"
