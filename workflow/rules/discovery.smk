checkpoint discover_scans:
    input:
        demo_manifest(),
    output:
        scans=f"{RESULTS}/scans.tsv",
        slices=f"{RESULTS}/slices.tsv",
        notes=f"{RESULTS}/discovery_notes.tsv",
    log:
        f"{RESULTS}/logs/discover_scans.log",
    benchmark:
        f"{RESULTS}/benchmarks/discover_scans.tsv"
    conda:
        "../../envs/anodect.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        sources=[vars(src) for src in plan.sources(config)],
        discovery=config["discovery"],
        filter_index_range=config["filter_index_range"],
        # Reruns discovery when scans appear in, vanish from or are exported again into
        # the user's folders; only the main process looks.
        listing=lambda wildcards: preflight.listing_fingerprint(
            config, look=workflow.is_main_process
        ),
    script:
        "../scripts/discover_scans.py"
