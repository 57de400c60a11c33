# Anode-crack inspection of battery CT: scans -> ROI crops -> models -> decisions -> report.
# Wiring only; the logic lives in the anodect package (src/anodect).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/discovery.smk"
include: "workflow/rules/crops.smk"


# Each model's own rules (training, scoring), from the registry (anodect.registry).
for rule_file in registry.rule_files():

    include: rule_file


include: "workflow/rules/decisions.smk"
include: "workflow/rules/pod.smk"
include: "workflow/rules/report.smk"


# Small-file aggregations: on a cluster they run in the main process instead of
# waiting in the queue. (evaluate, plot_report and publish read every scan's crops
# or images, so they stay jobs.)
localrules:
    qc_table,
    summarise,
    report,


rule all:
    default_target: True
    input:
        all_targets,


# One output folder, one run, across working directories (anodect.runlock); at the
# end, a few lines in the run's own output: skipped slices, unread annotations, NO DATA
# batteries, and where qc.tsv and the report are (anodect.runsummary).
onstart:
    runlock.acquire(RESULTS)


onsuccess:
    runlock.release(RESULTS)
    print(runsummary.run_summary(RESULTS))


onerror:
    runlock.release(RESULTS)
    print(runsummary.run_summary(RESULTS, failed=True))
