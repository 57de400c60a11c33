"""Checkpoint discover_scans: the sample sheet, the slice list of every scan, and what was left out."""

import logging

from anodect import logs
from anodect.discovery import notes_table, scans_table, slices_table
from anodect.io import write_table
from anodect.discovery import discover_sources

logs.to_file(snakemake.log[0])
skipped = []
scans = discover_sources(
    snakemake.params.sources,
    snakemake.params.discovery,
    snakemake.params.filter_index_range,
    skipped,
)
write_table(snakemake.output.slices, slices_table(scans))
write_table(snakemake.output.scans, scans_table(scans))
write_table(snakemake.output.notes, notes_table(scans, skipped))
logging.getLogger("discover_scans").info(
    "%d scans, %d slices, %d notes", len(scans), sum(len(s.slices) for s in scans), len(skipped)
)
