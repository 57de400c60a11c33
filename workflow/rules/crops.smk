rule crop_rois:
    input:
        # ancient: adding a scan rewrites the slice list, which must not rerun
        # the crops of every other scan. The slice files are not inputs (hundreds
        # per scan would dominate planning): their fingerprint is a param.
        slices=ancient(f"{RESULTS}/slices.tsv"),
        scans=ancient(f"{RESULTS}/scans.tsv"),
    output:
        crops=f"{RESULTS}/crops/{{scan}}.npz",
        qc=f"{RESULTS}/qc/{{scan}}.tsv",
    log:
        f"{RESULTS}/logs/crop_rois/{{scan}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/crop_rois/{{scan}}.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        # Paths, sizes and times of the scan's slice files: a rewritten slice reruns this scan.
        files=lambda wildcards: scan_record(wildcards.scan)["fingerprint"],
        rois=config["roi_config"],
        window=config["window"],
        context=config["crop_context"],
    script:
        "../scripts/crop_rois.py"


rule qc_table:
    input:
        lambda wildcards: expand(f"{RESULTS}/qc/{{scan}}.tsv", scan=scan_ids()),
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
    script:
        "../scripts/qc_table.py"
