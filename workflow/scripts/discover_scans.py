"""Checkpoint discover_scans: the sample sheet and the slice list of every scan."""

import logging

from anodect import logs
from anodect.discovery import scans_table, slices_table
from anodect.io import write_table
from anodect.workflow import discover_all

logs.to_file(snakemake.log[0])
config = {
    "input_dir": next(s["path"] for s in snakemake.params.sources if s["role"] == "inspect"),
    "training": {
        "normal_dir": next((s["path"] for s in snakemake.params.sources if s["role"] == "train_normal"), None),
        "annotated_dir": next((s["path"] for s in snakemake.params.sources if s["role"] == "train_defect"), None),
    },
    "discovery": snakemake.params.discovery,
    "filter_index_range": snakemake.params.filter_index_range,
}
scans = discover_all(config)
write_table(snakemake.output.slices, slices_table(scans))
write_table(snakemake.output.scans, scans_table(scans))
logging.getLogger("discover_scans").info("%d scans, %d slices", len(scans), sum(len(s.slices) for s in scans))
