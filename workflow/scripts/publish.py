"""Rule publish: one model's images in the original layout, and its AI_RESULTS CSVs."""

from pathlib import Path

from anodect import logs
from anodect.io import read_table
from anodect.render import publish

logs.to_file(snakemake.log[0])
scans = snakemake.params.scans
# Inputs are listed scan by scan in the order of the sample sheet.
staged = {s["scan_id"]: path for s, path in zip(scans, snakemake.input.images)}
tables = {
    s["scan_id"]: (read_table(sl), read_table(det))
    for s, sl, det in zip(scans, snakemake.input.slices, snakemake.input.detections)
}
publish(scans, staged, tables, Path(snakemake.output[0]), snakemake.params.export_csv)
