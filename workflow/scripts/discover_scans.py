"""Checkpoint discover_scans: the sample sheet and the slice list of every scan."""

import logging

from anodect import logs
from anodect.discovery import scans_table, slices_table
from anodect.io import write_table
from anodect.workflow import discover_sources

logs.to_file(snakemake.log[0])
scans = discover_sources(snakemake.params.sources, snakemake.params.discovery, snakemake.params.filter_index_range)
write_table(snakemake.output.slices, slices_table(scans))
write_table(snakemake.output.scans, scans_table(scans))
logging.getLogger("discover_scans").info("%d scans, %d slices", len(scans), sum(len(s.slices) for s in scans))
