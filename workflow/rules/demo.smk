if DEMO["enabled"]:

    rule generate_demo:
        output:
            manifest=f"{DEMO['out_dir']}/manifest.json",
            scans=directory(f"{DEMO['out_dir']}/scans"),
            annotations=directory(f"{DEMO['out_dir']}/annotations"),
            truth=directory(f"{DEMO['out_dir']}/truth"),
        log:
            f"{RESULTS}/logs/generate_demo.log",
        benchmark:
            f"{RESULTS}/benchmarks/generate_demo.tsv"
        conda:
            "../../envs/anodect.yaml"
        threads: 2
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            demo=DEMO,
            rois=config["roi_config"],
            filter_index_range=config["filter_index_range"],
        script:
            "../scripts/generate_demo.py"
