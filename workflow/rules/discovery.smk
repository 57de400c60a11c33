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
        sources=[vars(src) for src in aw.sources(config)],
        discovery=config["discovery"],
        filter_index_range=config["filter_index_range"],
        # Reruns discovery when scans appear in, vanish from or are exported again into
        # the user's folders. Only the main process looks: a cluster job's parse puts
        # this job in its DAG too, and must not walk the input tree.
        listing=lambda wildcards: (
            preflight.listing_fingerprint(config)
            if workflow.is_main_process
            else "not looked at"
        ),
    script:
        "../scripts/discover_scans.py"
