"""Rule render: every slice of one scan drawn with one model's boxes, into anomaly/ or normal/."""

import logging

from anodect import logs
from anodect.crops import CropSet
from anodect.io import read_table
from anodect.render import render_scan

logs.to_file(snakemake.log[0])
counts = render_scan(
    read_table(snakemake.input.slices),
    read_table(snakemake.input.detections),
    CropSet.read_meta(snakemake.input.crops)["window"],
    snakemake.params.class_label,
    snakemake.output[0],
    snakemake.params.thickness,
)
logging.getLogger("render").info("%s", counts)
